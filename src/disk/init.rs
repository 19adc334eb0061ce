//! Making a backup disk (GPT + LUKS2 + ext4 + the top-level layout): check it is free, write
//! it, and put back what was overwritten if a step fails.

use super::error::io_at;
use super::volume::{flush_disk, wait_partitions, MappingGuard, Target};
use super::{busy, gpt, mkfs, mount, probe, sysfs, DiskError};
use crate::dm;
use crate::luks;
use crate::secret::{Passphrase, VolumeKey};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `init` will destroy, and whether it may.
#[derive(Debug)]
pub struct InitCheck {
    pub found: Vec<(PathBuf, Vec<probe::Signature>)>,
}

/// Checks that a disk may be initialised: whole disk, not mounted, not held, and (unless
/// `force`) without any signature on it or its partitions.
pub fn check_init(disk: &sysfs::BlockDevice, force: bool) -> Result<InitCheck, DiskError> {
    if disk.is_partition {
        return Err(DiskError::IsPartition(disk.path.clone()));
    }
    let mut members = vec![disk.clone()];
    members.extend(disk.partitions.iter().filter_map(|p| sysfs::device(p)));
    let mounts = mount::mounts().map_err(io_at(Path::new("/proc/self/mountinfo")))?;
    for m in &members {
        let mp: Vec<PathBuf> = mounts.iter().filter(|e| e.dev == m.dev).map(|e| e.mount_point.clone()).collect();
        if !mp.is_empty() {
            return Err(DiskError::Mounted { device: m.path.clone(), mounts: mp });
        }
        if !m.holders.is_empty() {
            let holders = m.holders.iter().map(|h| busy::holder_description(h)).collect();
            return Err(DiskError::InUse { device: m.path.clone(), holders });
        }
        if busy::swap_active(&m.path) {
            return Err(DiskError::InUse { device: m.path.clone(), holders: vec!["swap".into()] });
        }
        // An exclusive open fails while anything else has claimed the device (a mount in another
        // namespace, a RAID or LVM member, a program that opened it with O_EXCL).
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(e) = OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&m.path) {
            if e.raw_os_error() == Some(libc::EBUSY) {
                return Err(DiskError::InUse { device: m.path.clone(), holders: vec!["another program or the kernel (exclusive open refused)".into()] });
            }
        }
    }
    let mut found = Vec::new();
    for m in &members {
        let sigs = probe::probe(&m.path).map_err(io_at(&m.path))?;
        if !sigs.is_empty() {
            found.push((m.path.clone(), sigs));
        }
    }
    if !force {
        if let Some((device, sigs)) = found.first() {
            return Err(DiskError::NotBlank { device: device.clone(), found: sigs.clone() });
        }
    }
    Ok(InitCheck { found })
}

/// What `init` made; `on_mounted` is what the caller's step on the new filesystem returned.
#[derive(Debug)]
pub struct InitOutcome<R> {
    pub partition: PathBuf,
    pub luks_uuid: String,
    pub key_delivery: dm::KeyDelivery,
    pub on_mounted: R,
}

/// Makes `target` a backup disk: GPT with one LUKS partition, LUKS2 (format options and
/// passphrase given), ext4 labelled `label`, the top-level layout, then closes everything.
/// While the new filesystem is mounted, `on_mounted(mount dir, LUKS UUID)` runs (registration);
/// its result, success or not, comes back in the outcome: the disk is made either way.
/// Call `check_init` first.
pub fn init<R>(
    target: &Target,
    label: &str,
    opts: &luks::FormatOptions,
    pass: &Passphrase,
    progress: &dyn Fn(&str),
    on_mounted: impl FnOnce(&Path, &str) -> R,
) -> Result<InitOutcome<R>, DiskError> {
    let disk = &target.disk;
    let dev = OpenOptions::new().read(true).write(true).open(&disk.path).map_err(io_at(&disk.path))?;
    let size = dm::ioctl::block_size_bytes(&dev).map_err(io_at(&disk.path))?;
    let plan = gpt::GptPlan::new(size, disk.logical_block_size, label, uuid::Uuid::new_v4(), uuid::Uuid::new_v4())?;
    // Everything after the partition table needs device-mapper: refuse before writing anything.
    dm::Control::open()?;
    let saved = SavedRegions::read(&dev, size, plan.partition_bytes().0).map_err(io_at(&disk.path))?;
    match init_on(target, &dev, &plan, opts, pass, progress, label, on_mounted) {
        Ok(out) => Ok(out),
        Err(e) => {
            let restored = saved.restore(&dev).is_ok();
            Err(DiskError::InitFailed { source: Box::new(e), restored })
        }
    }
}

/// Where LUKS2 as offdisk formats it ends: its two metadata copies and the keyslot area.
const LUKS2_HEADER_AREA: u64 = 16 << 20;

/// The disk's bytes that `init` overwrites before the encrypted data area (protective MBR, GPT,
/// the LUKS2 header and keyslots) and its last MiB (backup GPT), kept to put back on failure.
struct SavedRegions {
    regions: Vec<(u64, Vec<u8>)>,
}

impl SavedRegions {
    fn read(dev: &File, size: u64, partition_start: u64) -> io::Result<SavedRegions> {
        use std::os::unix::fs::FileExt;
        let head = size.min(partition_start + LUKS2_HEADER_AREA);
        let tail = size.saturating_sub(1 << 20).max(head);
        let mut regions = Vec::new();
        for (off, len) in [(0, head), (tail, size - tail)] {
            let mut buf = vec![0u8; len as usize];
            dev.read_exact_at(&mut buf, off)?;
            regions.push((off, buf));
        }
        Ok(SavedRegions { regions })
    }

    /// Writes the saved bytes back, syncs, and has the kernel forget the new partition.
    fn restore(&self, dev: &File) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (off, buf) in &self.regions {
            dev.write_all_at(buf, *off)?;
        }
        dev.sync_all()?;
        let _ = dm::ioctl::reread_partitions(dev);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn init_on<R>(
    target: &Target,
    dev: &File,
    plan: &gpt::GptPlan,
    opts: &luks::FormatOptions,
    pass: &Passphrase,
    progress: &dyn Fn(&str),
    label: &str,
    on_mounted: impl FnOnce(&Path, &str) -> R,
) -> Result<InitOutcome<R>, DiskError> {
    let disk = &target.disk;
    progress("writing the partition table");
    gpt::write(dev, plan).map_err(io_at(&disk.path))?;
    dm::ioctl::reread_partitions(dev).map_err(io_at(&disk.path))?;
    let parts = wait_partitions(&disk.name, 1, Duration::from_secs(10));
    let part_name = parts.first().ok_or_else(|| DiskError::NoPartition(disk.path.clone()))?;
    let part_path = Path::new("/dev").join(part_name);
    let part = OpenOptions::new().read(true).write(true).open(&part_path).map_err(io_at(&part_path))?;

    progress("formatting LUKS2 (deriving the key takes a moment)");
    // We choose the volume key, so the new volume need not be unlocked again (one KDF run).
    let mut opts = opts.clone();
    let key = match opts.volume_key.clone() {
        Some(k) => k,
        None => VolumeKey::random((opts.key_size_bits / 8) as usize).map_err(io_at(&part_path))?,
    };
    opts.volume_key = Some(key.clone());
    if opts.sector_size.is_none() && disk.logical_block_size >= 4096 {
        opts.sector_size = Some(disk.logical_block_size as u32);
    }
    let volume = luks::format(&part, &opts, pass)?;
    part.sync_all().map_err(io_at(&part_path))?;
    drop(part);
    let segment = volume.crypt_segment()?;
    debug_assert!(segment.offset <= LUKS2_HEADER_AREA, "the rollback saves the LUKS2 header area");
    let uuid = volume.uuid().to_string();
    let name = format!("offdisk-init-{}", std::process::id());

    let mapped = dm::activate(
        &dm::CryptActivation {
            name: &name,
            version: volume.version(),
            luks_uuid: &uuid,
            segment: &segment,
            device: &part_path,
            read_only: false,
            flags: dm::CryptFlags::default(),
        },
        &key,
    )?;
    let mut guard = MappingGuard { name: Some(name.clone()) };

    progress("making the ext4 filesystem");
    mkfs::mkfs_ext4(&mapped.path, label).map_err(DiskError::Mkfs)?;
    let on_mounted = make_layout(&mapped.path, |dir| on_mounted(dir, &uuid))?;
    guard.disarm();
    dm::deactivate(&name)?;
    flush_disk(&disk.path);
    Ok(InitOutcome { partition: part_path, luks_uuid: uuid, key_delivery: mapped.key_delivery, on_mounted })
}

/// Mounts the new filesystem on a private directory, makes the top-level layout, runs
/// `on_mounted` there, syncs and unmounts.
fn make_layout<R>(device: &Path, on_mounted: impl FnOnce(&Path) -> R) -> Result<R, DiskError> {
    let dir = PathBuf::from(format!("/run/offdisk-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let r = (|| {
        mount::mount_ext4(device, &dir, false).map_err(|err| DiskError::Mount { device: device.into(), dir: dir.clone(), err })?;
        let made = (|| -> io::Result<R> {
            for d in super::TOP_LEVEL_DIRS {
                std::fs::create_dir_all(dir.join(d))?;
            }
            let r = on_mounted(&dir);
            nix::unistd::syncfs(&File::open(&dir)?).map_err(io::Error::from)?;
            Ok(r)
        })();
        let un = mount::unmount(&dir);
        let r = made.map_err(io_at(&dir))?;
        un.map_err(io_at(&dir))?;
        Ok(r)
    })();
    let _ = std::fs::remove_dir(&dir);
    r
}
