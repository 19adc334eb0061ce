//! Closing a backup disk: find the mapping meant (name, mount point, device, label, UUID),
//! sync, unmount, unmap, flush, and power the disk off; a disk that vanished under its mapping
//! is cleaned up as a stale one.

use super::error::io_at;
use super::volume::{default_mapping_name, find_luks, flush_disk, luks_on, mapping_of, sysfs_of, Target};
use super::{busy, loopdev, mount, stale, sysfs, DiskError};
use crate::dm::{self, DmError};
use std::path::{Path, PathBuf};

/// An open mapping resolved from what the user typed for `close`.
#[derive(Debug)]
pub struct OpenMapping {
    pub info: dm::MappingInfo,
    /// Whole disks underneath (for the cache flush and power-off).
    pub disks: Vec<String>,
}

/// Finds the mapping meant by NAME, /dev/mapper/NAME, a mount point, DEVICE, LABEL or UUID.
/// `registered` is the LUKS UUID of the disk registered under `spec` (its label in the config),
/// if any: once the disk has vanished nothing present carries its label, and only the
/// registration still says which mapping is that disk's.
pub fn find_open(spec: &str, registered: Option<&str>) -> Result<OpenMapping, DiskError> {
    let ctl = dm::Control::open()?;
    let mut info = mapping_named(&ctl, spec)?;
    if info.is_none() {
        if let Some(u) = registered.and_then(|u| uuid::Uuid::parse_str(u).ok()) {
            info = mapping_of_uuid(&ctl, &u)?;
        }
    }
    let info = info.ok_or_else(|| DiskError::NotOpen(spec.into()))?;
    let mut disks = Vec::new();
    let kernel_name = format!("dm-{}", info.dev.1);
    for dev in ctl.deps(&info.name)? {
        // Only a device that really holds the mapping: after a pull-out its number may belong
        // to another disk now, which must not be flushed or powered off in its place.
        if !Path::new(&format!("/sys/dev/block/{}:{}/holders/{kernel_name}", dev.0, dev.1)).exists() {
            continue;
        }
        if let Some(d) = sysfs::name_of_dev(dev).and_then(|n| sysfs::device(&n)) {
            let whole = d.parent.unwrap_or(d.name);
            if !disks.contains(&whole) {
                disks.push(whole);
            }
        }
    }
    Ok(OpenMapping { info, disks })
}

/// The open mapping that `spec` alone names, if any (see [`find_open`]).
fn mapping_named(ctl: &dm::Control, spec: &str) -> Result<Option<dm::MappingInfo>, DiskError> {
    let by_name = |n: &str| -> Result<Option<dm::MappingInfo>, DiskError> { Ok(ctl.info(n)?) };
    let mut info = if dm::check_name(spec).is_ok() { by_name(spec)? } else { None };
    if info.is_none() {
        if let Some(n) = spec.strip_prefix("/dev/mapper/") {
            info = by_name(n)?;
        }
    }
    if info.is_none() {
        let p = Path::new(spec);
        if p.is_dir() {
            let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if let Some(m) = mount::mounts().map_err(io_at(p))?.into_iter().find(|m| m.mount_point == canon) {
                if let Some(n) = sysfs::name_of_dev(m.dev).and_then(|k| std::fs::read_to_string(format!("/sys/class/block/{k}/dm/name")).ok()) {
                    info = by_name(n.trim())?;
                }
            }
        } else if let Some(bd) = sysfs::device_of_path(p).filter(|d| d.name.starts_with("dm-")) {
            if let Ok(n) = std::fs::read_to_string(format!("/sys/class/block/{}/dm/name", bd.name)) {
                info = by_name(n.trim())?;
            }
        }
    }
    if info.is_none() {
        // A LUKS UUID whose disk may be gone: offdisk's own name for its mapping.
        if let Ok(u) = uuid::Uuid::parse_str(spec.strip_prefix("UUID=").unwrap_or(spec)) {
            info = by_name(&default_mapping_name(&u.hyphenated().to_string()))?;
        }
    }
    if info.is_none() {
        // A device, image, label or UUID: the mapping built on that LUKS volume.
        let luks = match Path::new(spec).is_file() {
            true => match loopdev::find_attached(Path::new(spec)) {
                Some(l) => luks_on(Target { disk: sysfs_of(&l)?, loop_dev: None, image: Some(spec.into()) }).ok(),
                None => None,
            },
            false => find_luks(spec, true).ok(),
        };
        if let Some(l) = luks {
            info = mapping_of(&l)?;
        }
    }
    Ok(info)
}

/// The mapping of the LUKS volume with UUID `u`: offdisk's own name for it (found even when
/// the disk is gone), else the mapping built on that volume while it is present.
fn mapping_of_uuid(ctl: &dm::Control, u: &uuid::Uuid) -> Result<Option<dm::MappingInfo>, DiskError> {
    let u = u.hyphenated().to_string();
    if let Some(m) = ctl.info(&default_mapping_name(&u))? {
        return Ok(Some(m));
    }
    match find_luks(&u, true) {
        Ok(l) => mapping_of(&l),
        Err(_) => Ok(None),
    }
}

/// What `close` did.
#[derive(Debug, Default)]
pub struct Closed {
    pub unmounted: Vec<PathBuf>,
    pub powered_off: Vec<String>,
    /// The disk had vanished under the mapping: what was cleaned up, as one line.
    pub vanished: Option<String>,
}

/// Syncs, unmounts, removes the mapping and flushes the disk. Refuses, naming the processes,
/// when files are still in use; nothing is changed then. When the disk has vanished under the
/// mapping, its mounts are detached (nothing can be written to it any more) and the mapping
/// removed, unless someone still uses it.
pub fn close(m: &OpenMapping) -> Result<Closed, DiskError> {
    if let Some(f) = stale::facts_of(&m.info.name).filter(|f| stale::staleness(f).is_some()) {
        let users = f.users.clone();
        // A stale mapping of another tool's naming is closed the same way: the user asked.
        let why = stale::staleness(&f).expect("stale");
        let verdict = match users.is_empty() {
            true => stale::Verdict::Remove { name: f.name.clone(), why, unmount: f.mounts.clone() },
            false => stale::Verdict::InUse { name: f.name.clone(), why, users },
        };
        let outcome = stale::apply(vec![verdict]).pop().expect("one outcome");
        return match &outcome {
            stale::Cleaned::Removed { unmounted, .. } => {
                Ok(Closed { unmounted: unmounted.clone(), powered_off: Vec::new(), vanished: Some(outcome.to_string()) })
            }
            _ => Err(DiskError::StaleKept(outcome.to_string())),
        };
    }
    let dev = m.info.dev;
    let mounts = mount::mount_points_of(dev).map_err(io_at(Path::new("/proc/self/mountinfo")))?;
    let mut holders = if mounts.is_empty() { Vec::new() } else { busy::holders_of(dev) };
    holders.extend(busy::openers_of_node(dev));
    if !holders.is_empty() {
        return Err(DiskError::Busy { what: m.info.name.clone(), holders });
    }
    nix::unistd::sync();
    let mut closed = Closed::default();
    for dir in &mounts {
        if let Err(err) = mount::unmount(dir) {
            if err.raw_os_error() == Some(libc::EBUSY) {
                return Err(DiskError::Busy { what: dir.display().to_string(), holders: busy::holders_of(dev) });
            }
            return Err(DiskError::Io { path: dir.clone(), err });
        }
        mount::remove_default_mount_dir(dir);
        closed.unmounted.push(dir.clone());
    }
    match dm::deactivate(&m.info.name) {
        Ok(()) => {}
        Err(DmError::Busy(_)) => {
            return Err(DiskError::Busy { what: m.info.name.clone(), holders: busy::openers_of_node(dev) });
        }
        Err(e) => return Err(e.into()),
    }
    for d in &m.disks {
        flush_disk(&Path::new("/dev").join(d));
    }
    Ok(closed)
}


/// Powers a disk off after close: USB disks are detached from their port (as udisks does);
/// SCSI/SATA disks are stopped and removed from the system; a loop device is detached.
pub fn power_off(disk: &str) -> Result<(), DiskError> {
    let sys = PathBuf::from("/sys/block").join(disk);
    if disk.starts_with("loop") {
        return match loopdev::detach(&Path::new("/dev").join(disk)) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()), // autoclear already did it
            Err(e) => Err(DiskError::PowerOff(disk.into(), e.to_string())),
        };
    }
    let real = std::fs::canonicalize(&sys).map_err(|e| DiskError::PowerOff(disk.into(), e.to_string()))?;
    // The USB device (not interface) directory holding this disk: the deepest ancestor with a
    // `remove` attribute and an idVendor file.
    let usb_dev = real.ancestors().find(|a| a.join("idVendor").exists() && a.join("remove").exists()).map(Path::to_path_buf);
    let delete = sys.join("device/delete");
    let deleted = delete.exists();
    if deleted {
        // The SCSI layer syncs the cache and stops the disk before it removes it.
        std::fs::write(&delete, "1").map_err(|e| DiskError::PowerOff(disk.into(), format!("{}: {e}", delete.display())))?;
    }
    if let Some(u) = usb_dev {
        std::fs::write(u.join("remove"), "1").map_err(|e| DiskError::PowerOff(disk.into(), e.to_string()))?;
        return Ok(());
    }
    if deleted {
        return Ok(());
    }
    Err(DiskError::PowerOff(disk.into(), "this kind of disk cannot be powered off by software".into()))
}
