//! Finding a backup disk's LUKS volume (by device, image, label or UUID) and its mapping, and
//! the small steps init, open and close share (undo a mapping, flush the disk's cache).
//!
//! The command line (`cli::disk`) reads passphrases and prints; everything that touches the
//! system is in `disk`, each step undone if a later one fails.

use super::error::io_at;
use super::{loopdev, probe, stale, sysfs, DiskError};
use crate::dm;
use crate::luks::Version;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A whole disk (or image on a loop device) that `init` or `open` works on.
#[derive(Debug)]
pub struct Target {
    pub disk: sysfs::BlockDevice,
    /// Keeps an image's loop device attached while we work (autoclear detaches it after).
    pub loop_dev: Option<loopdev::LoopDevice>,
    /// The image file, when the target is one.
    pub image: Option<PathBuf>,
}

pub(super) fn sysfs_of(path: &Path) -> Result<sysfs::BlockDevice, DiskError> {
    let meta = std::fs::metadata(path).map_err(io_at(path))?;
    if !meta.file_type().is_block_device() {
        return Err(DiskError::Io { path: path.into(), err: io::Error::new(io::ErrorKind::InvalidInput, "not a block device or image file") });
    }
    sysfs::device_of_path(path)
        .ok_or_else(|| DiskError::Io { path: path.into(), err: io::Error::from_raw_os_error(libc::ENODEV) })
}

/// Resolves a device path or an image file (attaching a loop device for it).
pub fn resolve_device(path: &Path, read_only: bool) -> Result<Target, DiskError> {
    let meta = std::fs::metadata(path).map_err(io_at(path))?;
    if meta.file_type().is_file() {
        let (dev_path, loop_dev) = match loopdev::find_attached(path) {
            Some(p) => (p, None),
            None => {
                let l = loopdev::attach(path, read_only).map_err(io_at(path))?;
                (l.path.clone(), Some(l))
            }
        };
        let disk = sysfs_of(&dev_path)?;
        return Ok(Target { disk, loop_dev, image: Some(path.to_path_buf()) });
    }
    Ok(Target { disk: sysfs_of(path)?, loop_dev: None, image: None })
}

/// Reads the LUKS identity of a block device, if it has a LUKS header.
pub(super) fn luks_at(path: &Path) -> Option<(u16, String, Option<String>)> {
    let mut f = File::open(path).ok()?;
    probe::luks_identity(&probe::read_head(&mut f).ok()?)
}

/// A LUKS volume found on a disk.
#[derive(Debug)]
pub struct LuksDevice {
    pub path: PathBuf,
    pub dev: (u32, u32),
    pub version: u16,
    pub uuid: String,
    pub label: Option<String>,
    /// The whole disk it is on.
    pub disk: String,
    pub target: Option<Target>,
}

/// Waits (briefly) for the kernel to list partitions of `disk` after a partition scan.
pub(super) fn wait_partitions(disk: &str, want: usize, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let parts = sysfs::partitions_of(disk);
        let nodes_ready = parts.iter().all(|p| Path::new("/dev").join(p).exists());
        if (parts.len() >= want && nodes_ready) || start.elapsed() > timeout {
            return parts;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The LUKS volume on a target: the device itself, or the first LUKS partition of a disk.
pub fn luks_on(target: Target) -> Result<LuksDevice, DiskError> {
    let disk = target.disk.clone();
    let disk_name = disk.parent.clone().unwrap_or_else(|| disk.name.clone());
    if let Some((version, uuid, label)) = luks_at(&disk.path) {
        return Ok(LuksDevice { path: disk.path.clone(), dev: disk.dev, version, uuid, label, disk: disk_name, target: Some(target) });
    }
    if !disk.is_partition {
        // A freshly attached image may still be scanning its partitions.
        let parts = if target.loop_dev.is_some() { wait_partitions(&disk.name, 1, Duration::from_secs(3)) } else { disk.partitions.clone() };
        for p in parts {
            let path = Path::new("/dev").join(&p);
            if let Some((version, uuid, label)) = luks_at(&path) {
                let dev = sysfs::device(&p).map(|d| d.dev).unwrap_or((0, 0));
                return Ok(LuksDevice { path, dev, version, uuid, label, disk: disk_name, target: Some(target) });
            }
        }
    }
    Err(DiskError::NoLuks(target.image.unwrap_or(disk.path)))
}

/// Every LUKS volume on the block devices present (disks and their partitions).
pub fn scan_luks() -> Vec<LuksDevice> {
    let mut out = Vec::new();
    for d in sysfs::disks() {
        let mut candidates = vec![(d.name.clone(), d.path.clone(), d.dev)];
        for p in &d.partitions {
            if let Some(pd) = sysfs::device(p) {
                candidates.push((p.clone(), pd.path, pd.dev));
            }
        }
        for (_, path, dev) in candidates {
            if let Some((version, uuid, label)) = luks_at(&path) {
                out.push(LuksDevice { path, dev, version, uuid, label, disk: d.name.clone(), target: None });
            }
        }
    }
    out
}

/// Finds the LUKS volume meant by DEVICE (path or image), LABEL or UUID.
pub fn find_luks(spec: &str, read_only: bool) -> Result<LuksDevice, DiskError> {
    let path = Path::new(spec);
    if spec.contains('/') || path.exists() {
        return luks_on(resolve_device(path, read_only)?);
    }
    let want = spec.strip_prefix("UUID=").or_else(|| spec.strip_prefix("LABEL=")).unwrap_or(spec);
    let matches: Vec<LuksDevice> = scan_luks()
        .into_iter()
        .filter(|l| l.uuid.eq_ignore_ascii_case(want) || l.label.as_deref() == Some(want))
        .collect();
    match matches.len() {
        0 => Err(DiskError::NotFound(spec.into())),
        1 => Ok(matches.into_iter().next().expect("one")),
        _ => Err(DiskError::Ambiguous(
            spec.into(),
            matches.iter().map(|m| m.path.display().to_string()).collect::<Vec<_>>().join(", "),
        )),
    }
}

/// The open mapping of a LUKS volume: a crypt mapping built on its device.
pub fn mapping_of(luks: &LuksDevice) -> Result<Option<dm::MappingInfo>, DiskError> {
    let ctl = dm::Control::open()?;
    for m in ctl.list()? {
        if ctl.deps(&m.name).map(|d| d.contains(&luks.dev)).unwrap_or(false) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// Removes stale offdisk mappings (their disk vanished while open), before opening `luks` or
/// on their own; returns one outcome each, for the caller to print (see [`stale`]).
pub fn clean_stale(luks: Option<&LuksDevice>) -> Vec<stale::Cleaned> {
    stale::clean(luks.map(|l| stale::Wanted { luks_uuid: &l.uuid, dev: l.dev }))
}

/// The mapping name udisks would use: `luks-<uuid>`.
pub fn default_mapping_name(uuid: &str) -> String {
    format!("luks-{uuid}")
}

/// Which mapping is an offdisk/udisks-style LUKS mapping (cryptsetup DM UUID).
pub fn is_luks_mapping(m: &dm::MappingInfo) -> bool {
    matches!(m.luks(), Some((Version::Luks1 | Version::Luks2, _)))
}

/// Unmounts and removes a mapping if dropped before `disarm` (undo on failure).
pub(super) struct MappingGuard {
    pub(super) name: Option<String>,
}
impl MappingGuard {
    pub(super) fn disarm(&mut self) {
        self.name = None;
    }
}
impl Drop for MappingGuard {
    fn drop(&mut self) {
        if let Some(n) = self.name.take() {
            let _ = dm::deactivate(&n);
        }
    }
}

/// Writes back the disk's caches: block-device fsync sends a cache flush to the drive.
pub fn flush_disk(path: &Path) {
    if let Ok(f) = File::open(path) {
        let _ = f.sync_all();
        let _ = dm::ioctl::flush_buffers(&f);
    }
}
