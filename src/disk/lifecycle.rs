//! A backup disk's life: find it, check it is free, make it (GPT + LUKS2 + ext4), open it
//! (unlock, map, mount) and close it (sync, unmount, unmap, flush, power off).
//!
//! The command line (`cli::disk`) reads passphrases and prints; everything that touches the
//! system is here, each step undone if a later one fails.

use super::{busy, gpt, loopdev, mkfs, mount, probe, stale, sysfs};
use crate::dm::{self, DmError};
use crate::error::{exit, Diagnose};
use crate::luks::{self, LuksError, Version};
use crate::secret::{Passphrase, VolumeKey};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{0} needs root privileges")]
    NotRoot(&'static str),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("no LUKS disk matches '{0}'")]
    NotFound(String),
    #[error("'{0}' matches more than one LUKS device: {1}")]
    Ambiguous(String, String),
    #[error("{0} has no LUKS header (on the device or any of its partitions)")]
    NoLuks(PathBuf),
    #[error("{0} is a partition; give the whole disk")]
    IsPartition(PathBuf),
    #[error("{device} is mounted on {}", .mounts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Mounted { device: PathBuf, mounts: Vec<PathBuf> },
    #[error("{device} is in use by {}", .holders.join(", "))]
    InUse { device: PathBuf, holders: Vec<String> },
    #[error("{device} is not blank: it holds {}", .found.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "))]
    NotBlank { device: PathBuf, found: Vec<probe::Signature> },
    #[error("{what} is still in use by {}", describe_holders(.holders))]
    Busy { what: String, holders: Vec<busy::Holder> },
    #[error("no open disk matches '{0}'")]
    NotOpen(String),
    #[error("the disk is too small or oddly shaped: {0}")]
    Gpt(#[from] gpt::GptError),
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(io::Error),
    #[error("mounting {device} on {dir}: {err}")]
    Mount { device: PathBuf, dir: PathBuf, err: io::Error },
    #[error("the partition {0} did not appear after writing the partition table")]
    NoPartition(PathBuf),
    #[error("cannot power off {0}: {1}")]
    PowerOff(String, String),
    #[error("{source}; {}", if *.restored { "what init had written was rolled back, the disk is as it was" } else { "rolling back failed: the disk may hold a partial partition table" })]
    InitFailed { source: Box<DiskError>, restored: bool },
    #[error("{0}")]
    StaleKept(String),
    #[error(transparent)]
    Dm(#[from] DmError),
    #[error(transparent)]
    Luks(#[from] LuksError),
}

fn describe_holders(holders: &[busy::Holder]) -> String {
    if holders.is_empty() {
        // Held inside the kernel: another mapping, a mount in another namespace, swap, ...
        return "the kernel (see `lsblk` and `dmsetup ls --tree`)".into();
    }
    holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> DiskError + '_ {
    move |err| DiskError::Io { path: path.to_path_buf(), err }
}

impl Diagnose for DiskError {
    fn exit_code(&self) -> i32 {
        match self {
            DiskError::Dm(e) => e.exit_code(),
            DiskError::Luks(e) => e.exit_code(),
            DiskError::InitFailed { source, .. } => source.exit_code(),
            DiskError::Mounted { .. } | DiskError::InUse { .. } | DiskError::Busy { .. } | DiskError::StaleKept(_) => exit::BUSY,
            // Not a LUKS device is a wrong argument, as for `luks dump` and cryptsetup (exit 1).
            DiskError::NoLuks(_) => exit::USAGE,
            DiskError::Io { .. } | DiskError::NotFound(_) | DiskError::NotOpen(_) => exit::DEVICE,
            DiskError::NoPartition(_) | DiskError::PowerOff(..) => exit::DEVICE,
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            DiskError::NotRoot(_) => "run it as root, e.g. `sudo offdisk ...`".into(),
            DiskError::Io { err, .. } => match err.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                    "the device vanished or does not exist: re-plug it and check `offdisk list`".into()
                }
                Some(libc::EACCES) | Some(libc::EPERM) => "run offdisk as root".into(),
                Some(libc::EIO) => "the disk reports I/O errors: check its cable and `dmesg`".into(),
                _ => return None,
            },
            DiskError::NotFound(_) => "see `offdisk list` for the disks present, or give the device path".into(),
            DiskError::Ambiguous(..) => "give the device path instead".into(),
            DiskError::IsPartition(_) => "offdisk init partitions the whole disk (e.g. /dev/sdb, not /dev/sdb1)".into(),
            DiskError::Mounted { .. } => "unmount it first (umount ...)".into(),
            DiskError::InUse { .. } => "close what uses it first (`offdisk close`, `cryptsetup close`, `swapoff`...)".into(),
            DiskError::NotBlank { .. } => {
                "make sure this is the right disk; add --force to erase what is on it".into()
            }
            DiskError::Busy { .. } => "close those programs (or leave the directory), then run `offdisk close` again".into(),
            DiskError::NotOpen(_) => "see `offdisk status` for open disks".into(),
            DiskError::Mkfs(_) => "install e2fsprogs (apt-get install e2fsprogs)".into(),
            DiskError::NoLuks(_) => "give the disk offdisk init made (or any LUKS disk); `offdisk list` shows what is on each".into(),
            DiskError::InitFailed { source, restored: true } => return source.hint(),
            DiskError::InitFailed { .. } => "run offdisk init again (with --force) or wipe the disk's first MiB".into(),
            DiskError::Dm(e) => return e.hint(),
            DiskError::Luks(e) => return e.hint(),
            _ => return None,
        })
    }
}

/// Refuses unless running as root (every operation here needs it).
pub fn require_root(what: &'static str) -> Result<(), DiskError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(DiskError::NotRoot(what))
    }
}

/// A whole disk (or image on a loop device) that `init` or `open` works on.
#[derive(Debug)]
pub struct Target {
    pub disk: sysfs::BlockDevice,
    /// Keeps an image's loop device attached while we work (autoclear detaches it after).
    pub loop_dev: Option<loopdev::LoopDevice>,
    /// The image file, when the target is one.
    pub image: Option<PathBuf>,
}

fn sysfs_of(path: &Path) -> Result<sysfs::BlockDevice, DiskError> {
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
fn luks_at(path: &Path) -> Option<(u16, String, Option<String>)> {
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
fn wait_partitions(disk: &str, want: usize, timeout: Duration) -> Vec<String> {
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
            let holders = m.holders.iter().map(|h| holder_description(h)).collect();
            return Err(DiskError::InUse { device: m.path.clone(), holders });
        }
        if swap_active(&m.path) {
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

fn holder_description(kernel_name: &str) -> String {
    match std::fs::read_to_string(format!("/sys/class/block/{kernel_name}/dm/name")) {
        Ok(n) => format!("{kernel_name} (device-mapper '{}')", n.trim()),
        Err(_) => kernel_name.to_string(),
    }
}

fn swap_active(path: &Path) -> bool {
    let Ok(swaps) = std::fs::read_to_string("/proc/swaps") else { return false };
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    swaps.lines().skip(1).any(|l| l.split_whitespace().next().map(Path::new) == Some(canon.as_path()))
}

/// Unmounts and removes a mapping if dropped before `disarm` (undo on failure).
struct MappingGuard {
    name: Option<String>,
}
impl MappingGuard {
    fn disarm(&mut self) {
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

/// Writes back the disk's caches: block-device fsync sends a cache flush to the drive.
pub fn flush_disk(path: &Path) {
    if let Ok(f) = File::open(path) {
        let _ = f.sync_all();
        let _ = dm::ioctl::flush_buffers(&f);
    }
}

/// What `open` did.
#[derive(Debug)]
pub struct Opened {
    pub mapping: String,
    pub mapper_path: PathBuf,
    pub mount_point: Option<PathBuf>,
    pub already_open: bool,
    pub key_delivery: Option<dm::KeyDelivery>,
}

/// Where and how to open.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub name: Option<String>,
    /// None: do not mount; Some(None): default mount point; Some(Some(dir)): there.
    pub mount: Option<Option<PathBuf>>,
    pub read_only: bool,
}

/// The mapping name udisks would use: `luks-<uuid>`.
pub fn default_mapping_name(uuid: &str) -> String {
    format!("luks-{uuid}")
}

/// Unlocks with the volume key already obtained and maps (and mounts) the volume.
pub fn activate_and_mount(luks: &LuksDevice, volume: &luks::Volume, key: &VolumeKey, o: &OpenRequest) -> Result<Opened, DiskError> {
    let segment = volume.crypt_segment()?;
    let name = o.name.clone().unwrap_or_else(|| default_mapping_name(&luks.uuid));
    let mapped = dm::activate(
        &dm::CryptActivation {
            name: &name,
            version: volume.version(),
            luks_uuid: volume.uuid(),
            segment: &segment,
            device: &luks.path,
            read_only: o.read_only,
            flags: dm::CryptFlags::default(),
        },
        key,
    )?;
    let mut guard = MappingGuard { name: Some(name.clone()) };
    let mount_point = match &o.mount {
        None => None,
        Some(dir) => Some(mount_mapping(&mapped.path, mapped.dev, dir.as_deref(), luks.label.as_deref(), &name, o.read_only)?),
    };
    guard.disarm();
    Ok(Opened { mapping: name, mapper_path: mapped.path, mount_point, already_open: false, key_delivery: Some(mapped.key_delivery) })
}

/// Mounts an open mapping (nosuid,nodev,noexec) on `dir` or the default mount point for its label.
pub fn mount_mapping(device: &Path, dev: (u32, u32), dir: Option<&Path>, luks_label: Option<&str>, name: &str, read_only: bool) -> Result<PathBuf, DiskError> {
    if let Some(existing) = mount::mount_points_of(dev).map_err(io_at(device))?.into_iter().next() {
        return Ok(existing);
    }
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            // The filesystem label (what mkfs.ext4 -L set) names the directory, as udisks does.
            let fs_label = sysfs::name_of_dev(dev).and_then(|n| sysfs::device(&n)).and_then(|d| d.fs_label).or_else(|| ext4_label(device));
            mount::default_mount_point(fs_label.as_deref().or(luks_label).unwrap_or(""), name)
        }
    };
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    if let Err(err) = mount::mount_ext4(device, &dir, read_only) {
        if created {
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(DiskError::Mount { device: device.into(), dir, err });
    }
    Ok(dir)
}

fn ext4_label(device: &Path) -> Option<String> {
    let mut f = File::open(device).ok()?;
    probe::identify(&probe::read_head(&mut f).ok()?).into_iter().find_map(|s| match s {
        probe::Signature::Ext { label } if !label.is_empty() => Some(label),
        _ => None,
    })
}

/// An open mapping resolved from what the user typed for `close`.
#[derive(Debug)]
pub struct OpenMapping {
    pub info: dm::MappingInfo,
    /// Whole disks underneath (for the cache flush and power-off).
    pub disks: Vec<String>,
}

/// Finds the mapping meant by NAME, /dev/mapper/NAME, a mount point, DEVICE, LABEL or UUID.
pub fn find_open(spec: &str) -> Result<OpenMapping, DiskError> {
    let ctl = dm::Control::open()?;
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
        remove_default_mount_dir(dir);
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

/// Removes an (empty) mount directory we would have made ourselves.
pub(crate) fn remove_default_mount_dir(dir: &Path) {
    if dir.starts_with("/media") || dir.starts_with("/run/media") {
        let _ = std::fs::remove_dir(dir);
    }
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

/// Open state of a LUKS volume, for status and list.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeState {
    pub device: PathBuf,
    pub luks_version: u16,
    pub uuid: String,
    pub label: Option<String>,
    pub mapping: Option<String>,
    pub mount_points: Vec<PathBuf>,
}

/// A disk as `list`/`status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskReport {
    pub name: String,
    pub path: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size: u64,
    pub removable: bool,
    pub transport: Option<String>,
    pub image: Option<PathBuf>,
    pub volumes: Vec<VolumeState>,
    /// Signatures other than LUKS (filesystems, partition tables) on the whole disk.
    pub contents: Vec<String>,
    /// How the disk or its partitions are in use outside LUKS: "/dev/sda2 mounted on /",
    /// "held by dm-0", "swap". Empty for a disk nothing uses.
    pub in_use: Vec<String>,
}

/// LUKS identity of a device: from its header when readable, else from udev's database.
fn identity_of(d: &sysfs::BlockDevice) -> Option<(u16, String, Option<String>)> {
    if let Some(i) = luks_at(&d.path) {
        return Some(i);
    }
    if d.fs_type.as_deref() == Some("crypto_LUKS") {
        return Some((0, d.fs_uuid.clone().unwrap_or_default(), d.fs_label.clone()));
    }
    None
}

/// The mapping held on a device, from sysfs (works without root).
fn holder_mapping(d: &sysfs::BlockDevice) -> Option<(String, (u32, u32))> {
    // The first holder that is a device-mapper mapping (has a dm name).
    d.holders.iter().find_map(|h| {
        let name = std::fs::read_to_string(format!("/sys/class/block/{h}/dm/name")).ok()?;
        let dev = sysfs::parse_dev(&std::fs::read_to_string(format!("/sys/class/block/{h}/dev")).ok()?)?;
        Some((name.trim().to_string(), dev))
    })
}

/// Every disk present with its LUKS volumes and their open/mounted state.
pub fn report() -> Vec<DiskReport> {
    let mounts = mount::mounts().unwrap_or_default();
    sysfs::disks()
        .into_iter()
        .map(|d| {
            let mut members = vec![d.clone()];
            members.extend(d.partitions.iter().filter_map(|p| sysfs::device(p)));
            let volumes = members
                .iter()
                .filter_map(|m| {
                    let (v, uuid, label) = identity_of(m)?;
                    let mapping = holder_mapping(m);
                    let mount_points = mapping
                        .as_ref()
                        .map(|(_, dev)| mounts.iter().filter(|e| e.dev == *dev).map(|e| e.mount_point.clone()).collect())
                        .unwrap_or_default();
                    Some(VolumeState { device: m.path.clone(), luks_version: v, uuid, label, mapping: mapping.map(|m| m.0), mount_points })
                })
                .collect::<Vec<_>>();
            let in_use = members.iter().flat_map(|m| uses_of(m, &mounts)).collect();
            let contents = if volumes.is_empty() {
                File::open(&d.path)
                    .ok()
                    .and_then(|mut f| probe::read_head(&mut f).ok())
                    .map(|h| probe::identify(&h).iter().map(|s| s.to_string()).collect())
                    .or_else(|| d.fs_type.clone().map(|t| vec![t]))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            DiskReport {
                name: d.name.clone(),
                path: d.path.clone(),
                model: d.model.clone(),
                serial: d.serial.clone(),
                size: d.size,
                removable: d.removable,
                transport: d.transport.clone(),
                image: d.loop_backing.clone(),
                volumes,
                contents,
                in_use,
            }
        })
        .collect()
}

/// What uses a disk or partition directly: mounts of it, swap on it, devices stacked on it
/// (a LUKS volume's own mapping is reported with the volume instead).
fn uses_of(m: &sysfs::BlockDevice, mounts: &[mount::MountEntry]) -> Vec<String> {
    let mut uses: Vec<String> = mounts.iter().filter(|e| e.dev == m.dev).map(|e| format!("{} mounted on {}", m.path.display(), e.mount_point.display())).collect();
    if swap_active(&m.path) {
        uses.push(format!("{} is swap", m.path.display()));
    }
    if identity_of(m).is_none() {
        uses.extend(m.holders.iter().map(|h| format!("{} held by {}", m.path.display(), holder_description(h))));
    }
    uses
}

/// Which mapping is an offdisk/udisks-style LUKS mapping (cryptsetup DM UUID).
pub fn is_luks_mapping(m: &dm::MappingInfo) -> bool {
    matches!(m.luks(), Some((Version::Luks1 | Version::Luks2, _)))
}
