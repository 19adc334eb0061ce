//! The kernel's device-mapper, driven through its ioctls: dm-crypt mappings for LUKS volumes.
//! All `unsafe` code of the project that talks to the kernel lives in this module (`ioctl`).
//!
//! - [`table`]: pure construction of the crypt table, byte-for-byte what cryptsetup loads.
//! - [`keyring`]: the volume key as a `logon` key in the kernel keyring.
//! - [`ioctl`]: struct layouts and the raw calls.
//!
//! - [`udev`]: the udev cookie and flags on resume and remove, and the wait for udev.
//!
//! Activation follows cryptsetup's order: create the device (name + DM UUID), load the table
//! (the key enters dm-crypt here), resume (marked for the dm udev rules, waiting for udev to
//! finish its event), then check `/dev/mapper/NAME`.
//! Any failure after the create removes the half-made device again.

#[allow(unsafe_code)]
pub mod ioctl;
pub mod keyring;
pub mod table;
pub mod udev;

use crate::error::{exit, Diagnose};
use crate::luks::{CryptSegment, Version};
use crate::secret::VolumeKey;
use ioctl::{DmBuffer, DmCmd};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
pub use table::{dm_uuid, parse_dm_uuid, CryptFlags, KeyReference};

/// Where device-mapper's control node and named nodes live.
pub const CONTROL: &str = "/dev/mapper/control";
pub const MAPPER_DIR: &str = "/dev/mapper";

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper is not available in this kernel ({0})")]
    NoDeviceMapper(String),
    #[error("permission denied talking to device-mapper")]
    NotPermitted,
    #[error("a device-mapper device named '{0}' already exists")]
    Exists(String),
    #[error("no device-mapper device named '{0}'")]
    NotFound(String),
    #[error("'{0}' is still in use (mounted or held open)")]
    Busy(String),
    #[error("the kernel refused the crypt table for '{name}': {err}")]
    TableRefused { name: String, err: io::Error },
    #[error("invalid mapping: {0}")]
    Table(#[from] table::TableError),
    #[error("invalid mapping name '{0}': use 1-127 characters without '/'")]
    BadName(String),
    #[error("device {path}: {err}")]
    Device { path: PathBuf, err: io::Error },
    #[error("device-mapper {op} failed: {err}")]
    Ioctl { op: &'static str, err: io::Error },
    #[error("timed out waiting for udev to create {0}")]
    NodeTimeout(PathBuf),
}

impl Diagnose for DmError {
    fn exit_code(&self) -> i32 {
        match self {
            DmError::Exists(_) | DmError::Busy(_) => exit::BUSY,
            DmError::NotFound(_) | DmError::Device { .. } | DmError::NoDeviceMapper(_) => exit::DEVICE,
            DmError::Ioctl { err, .. } if err.raw_os_error() == Some(libc::ENOMEM) => exit::NO_MEMORY,
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            DmError::NoDeviceMapper(_) => {
                "load the modules with `modprobe -a dm_mod dm_crypt` (a kernel without device-mapper cannot open LUKS volumes)".into()
            }
            DmError::NotPermitted => "run offdisk as root (sudo offdisk ...)".into(),
            DmError::Exists(n) => format!("choose another --name, or close the existing mapping with `offdisk close {n}`"),
            DmError::NotFound(_) => "see `offdisk status` for open disks".into(),
            DmError::Busy(_) => "close the programs using it (see `fuser -vm` on its mount point), then try again".into(),
            DmError::TableRefused { .. } => {
                "check that dm_crypt and the cipher's kernel modules are loaded (`modprobe dm_crypt`; see `dmesg`)".into()
            }
            DmError::Device { err, .. } if err.kind() == io::ErrorKind::NotFound => {
                "the device vanished: re-plug it and try again".into()
            }
            DmError::NodeTimeout(_) => "check that systemd-udevd is running (`udevadm settle`)".into(),
            _ => return None,
        })
    }
}

fn ioctl_err(op: &'static str, name: &str, err: io::Error) -> DmError {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => DmError::NotPermitted,
        Some(libc::ENXIO) => DmError::NotFound(name.to_string()),
        Some(libc::EBUSY) => DmError::Busy(name.to_string()),
        _ => DmError::Ioctl { op, err },
    }
}

/// An open `/dev/mapper/control`.
pub struct Control {
    file: File,
}

/// What device-mapper reports about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    pub name: String,
    pub uuid: String,
    pub dev: (u32, u32),
    pub open_count: i32,
    pub read_only: bool,
    pub target_count: u32,
    pub suspended: bool,
}

impl MappingInfo {
    /// `/dev/mapper/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(MAPPER_DIR).join(&self.name)
    }
    /// The LUKS version and UUID when this is a cryptsetup-style LUKS mapping.
    pub fn luks(&self) -> Option<(Version, String)> {
        parse_dm_uuid(&self.uuid)
    }
}

impl Control {
    /// Opens the control node and checks the interface version.
    pub fn open() -> Result<Control, DmError> {
        let file = match std::fs::OpenOptions::new().read(true).write(true).open(CONTROL) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
                return Err(DmError::NotPermitted)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if Path::new("/sys/class/misc/device-mapper").exists() {
                    return Err(DmError::NoDeviceMapper(format!("{CONTROL} is missing although the driver is loaded")));
                }
                return Err(DmError::NoDeviceMapper(format!("{CONTROL} does not exist")));
            }
            Err(e) => return Err(DmError::NoDeviceMapper(format!("{CONTROL}: {e}"))),
        };
        let c = Control { file };
        let mut b = DmBuffer::new(0);
        ioctl::dm_ioctl(&c.file, DmCmd::Version, &mut b).map_err(|e| ioctl_err("version", "", e))?;
        if b.version()[0] != 4 {
            return Err(DmError::NoDeviceMapper(format!("unsupported dm interface {:?}", b.version())));
        }
        Ok(c)
    }

    fn named(name: &str, room: usize) -> Result<DmBuffer, DmError> {
        check_name(name)?;
        let mut b = DmBuffer::new(room);
        b.set_name(name).map_err(|_| DmError::BadName(name.into()))?;
        Ok(b)
    }

    /// Status of the device `name`, or `None` when there is none.
    pub fn info(&self, name: &str) -> Result<Option<MappingInfo>, DmError> {
        let mut b = Self::named(name, 0)?;
        match ioctl::dm_ioctl(&self.file, DmCmd::DevStatus, &mut b) {
            Ok(()) => Ok(Some(info_from(&b))),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(e) => Err(ioctl_err("status", name, e)),
        }
    }

    /// All device-mapper devices.
    pub fn list(&self) -> Result<Vec<MappingInfo>, DmError> {
        let mut room = 16 * 1024;
        loop {
            let mut b = DmBuffer::new(room);
            ioctl::dm_ioctl(&self.file, DmCmd::ListDevices, &mut b).map_err(|e| ioctl_err("list", "", e))?;
            if b.buffer_full() {
                room *= 4;
                continue;
            }
            let mut out = Vec::new();
            for (name, _) in ioctl::parse_name_list(b.payload()) {
                if let Some(i) = self.info(&name)? {
                    out.push(i);
                }
            }
            return Ok(out);
        }
    }

    /// The live table of `name` (keys included, as the kernel returns them: mask before showing).
    pub fn table(&self, name: &str) -> Result<Vec<ioctl::TargetSpec>, DmError> {
        let mut room = 16 * 1024;
        loop {
            let mut b = Self::named(name, room)?;
            b.set_flags(ioctl::DM_STATUS_TABLE_FLAG | ioctl::DM_SECURE_DATA_FLAG);
            ioctl::dm_ioctl(&self.file, DmCmd::TableStatus, &mut b).map_err(|e| ioctl_err("table", name, e))?;
            if b.buffer_full() {
                room *= 4;
                continue;
            }
            return Ok(ioctl::parse_target_specs(b.payload(), b.target_count()));
        }
    }

    /// The block devices `name` is built on, as (major, minor).
    pub fn deps(&self, name: &str) -> Result<Vec<(u32, u32)>, DmError> {
        let mut b = Self::named(name, 4096)?;
        ioctl::dm_ioctl(&self.file, DmCmd::TableDeps, &mut b).map_err(|e| ioctl_err("deps", name, e))?;
        Ok(ioctl::parse_deps(b.payload()).into_iter().map(ioctl::dev_major_minor).collect())
    }

    fn create(&self, name: &str, uuid: &str) -> Result<(), DmError> {
        let mut b = Self::named(name, 0)?;
        b.set_uuid(uuid).map_err(|_| DmError::BadName(name.into()))?;
        ioctl::dm_ioctl(&self.file, DmCmd::DevCreate, &mut b).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => DmError::Exists(name.into()),
            _ => ioctl_err("create", name, e),
        })
    }

    fn load(&self, name: &str, length: u64, params: &[u8], read_only: bool) -> Result<(), DmError> {
        let mut b = Self::named(name, ioctl::DM_TARGET_SPEC_SIZE + params.len() + 16)?;
        let used = ioctl::put_target_spec(b.payload_mut(), 0, length, "crypt", params)
            .map_err(|err| DmError::Ioctl { op: "table load", err })?;
        debug_assert!(used > 0);
        b.set_target_count(1);
        let mut flags = ioctl::DM_SECURE_DATA_FLAG;
        if read_only {
            flags |= ioctl::DM_READONLY_FLAG;
        }
        b.set_flags(flags);
        let r = ioctl::dm_ioctl(&self.file, DmCmd::TableLoad, &mut b);
        b.wipe();
        r.map_err(|err| match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => DmError::NotPermitted,
            _ => DmError::TableRefused { name: name.into(), err },
        })
    }

    /// Resumes (activates) `name` and waits until udev has processed the change event.
    fn resume(&self, name: &str) -> Result<(), DmError> {
        let mut b = Self::named(name, 0)?;
        self.with_cookie(DmCmd::DevSuspend, &mut b).map_err(|e| ioctl_err("resume", name, e))
    }

    /// Runs a uevent-generating ioctl marked with a udev cookie (see [`udev`]) and waits for
    /// udev to finish with its event. A wait that fails or runs out is not an error: the
    /// device-mapper change is done, and callers wait for the node they need anyway.
    fn with_cookie(&self, cmd: DmCmd, b: &mut DmBuffer) -> io::Result<()> {
        let cookie = udev::Cookie::new(udev::MAPPING_FLAGS);
        if let Some(c) = &cookie {
            b.set_event_nr(c.event_nr());
        }
        ioctl::dm_ioctl(&self.file, cmd, b)?;
        if let Some(c) = cookie {
            let _ = c.wait(b.flags());
        }
        Ok(())
    }

    /// Removes the device `name`. Retries briefly while udev still holds it (as cryptsetup does).
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut b = Self::named(name, 0)?;
            match self.with_cookie(DmCmd::DevRemove, &mut b) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(ioctl_err("remove", name, e)),
            }
        }
        wait_for_node_gone(name);
        Ok(())
    }
}

fn info_from(b: &DmBuffer) -> MappingInfo {
    let flags = b.flags();
    MappingInfo {
        name: b.name(),
        uuid: b.uuid(),
        dev: ioctl::dev_major_minor(b.dev()),
        open_count: b.open_count(),
        read_only: flags & ioctl::DM_READONLY_FLAG != 0,
        target_count: b.target_count(),
        suspended: flags & ioctl::DM_SUSPEND_FLAG != 0,
    }
}

/// A mapping name is what udev turns into `/dev/mapper/NAME`.
pub fn check_name(name: &str) -> Result<(), DmError> {
    if name.is_empty() || name.len() >= ioctl::DM_NAME_LEN || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(DmError::BadName(name.into()));
    }
    Ok(())
}

/// What to activate: a LUKS data segment on a block device.
pub struct CryptActivation<'a> {
    pub name: &'a str,
    pub version: Version,
    pub luks_uuid: &'a str,
    pub segment: &'a CryptSegment,
    /// The block device holding the LUKS header and data.
    pub device: &'a Path,
    pub read_only: bool,
    pub flags: CryptFlags,
}

/// How the key reached dm-crypt (reported, and asserted in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDelivery {
    Keyring,
    Inline,
}

/// An active crypt mapping.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub name: String,
    pub path: PathBuf,
    pub dev: (u32, u32),
    pub key_delivery: KeyDelivery,
}

/// The backing device's (major, minor) and size in bytes.
pub fn block_device_identity(path: &Path) -> Result<((u32, u32), u64), DmError> {
    let dev_err = |err: io::Error| DmError::Device { path: path.to_path_buf(), err };
    let file = File::open(path).map_err(dev_err)?;
    let meta = file.metadata().map_err(dev_err)?;
    if !meta.file_type().is_block_device() {
        return Err(dev_err(io::Error::new(io::ErrorKind::InvalidInput, "not a block device")));
    }
    let rdev = meta.rdev();
    let size = ioctl::block_size_bytes(&file).map_err(dev_err)?;
    Ok(((nix::sys::stat::major(rdev) as u32, nix::sys::stat::minor(rdev) as u32), size))
}

/// Creates and resumes the dm-crypt mapping for `a` with `key`, and waits for its node.
///
/// LUKS2 keys go through the kernel keyring as cryptsetup does; if the keyring or dm-crypt's
/// keyring support is unavailable, the key is loaded inline instead. LUKS1 is always inline
/// (what cryptsetup does too).
pub fn activate(a: &CryptActivation<'_>, key: &VolumeKey) -> Result<Mapped, DmError> {
    check_name(a.name)?;
    let (dev, size) = block_device_identity(a.device)?;
    let ctl = Control::open()?;
    if ctl.info(a.name)?.is_some() {
        return Err(DmError::Exists(a.name.into()));
    }
    // Build both tables before touching the kernel, so a bad segment fails early.
    let inline = table::crypt_table(a.segment, &KeyReference::Inline(key), dev, size, a.flags)?;
    let keyring_desc = match (a.version, a.segment.digest_id) {
        (Version::Luks2, Some(d)) => Some(table::keyring_description(a.luks_uuid, d)),
        _ => None,
    };
    let uuid = dm_uuid(a.version, a.luks_uuid, a.name);
    ctl.create(a.name, &uuid)?;

    let loaded = (|| {
        if let Some(desc) = &keyring_desc {
            if let Ok(logon) = keyring::LogonKey::add(desc, key) {
                let t = table::crypt_table(
                    a.segment,
                    &KeyReference::Keyring { description: desc.clone(), key_size: key.len() },
                    dev,
                    size,
                    a.flags,
                )?;
                let r = ctl.load(a.name, t.length, t.params.expose(), a.read_only);
                drop(logon); // dm-crypt has its own copy now (or failed); revoke ours.
                match r {
                    Ok(()) => return Ok(KeyDelivery::Keyring),
                    Err(DmError::NotPermitted) => return Err(DmError::NotPermitted),
                    Err(_) => {} // e.g. a dm-crypt without keyring support: fall back.
                }
            }
        }
        ctl.load(a.name, inline.length, inline.params.expose(), a.read_only)?;
        Ok(KeyDelivery::Inline)
    })();
    let key_delivery = match loaded.and_then(|d| ctl.resume(a.name).map(|_| d)) {
        Ok(d) => d,
        Err(e) => {
            let _ = ctl.remove(a.name);
            return Err(e);
        }
    };
    let info = ctl.info(a.name)?.ok_or_else(|| DmError::NotFound(a.name.into()))?;
    let path = match wait_for_node(a.name, info.dev) {
        Ok(p) => p,
        Err(e) => {
            let _ = ctl.remove(a.name);
            return Err(e);
        }
    };
    Ok(Mapped { name: a.name.into(), path, dev: info.dev, key_delivery })
}

/// Removes a mapping by name.
pub fn deactivate(name: &str) -> Result<(), DmError> {
    let ctl = Control::open()?;
    if ctl.info(name)?.is_none() {
        return Err(DmError::NotFound(name.into()));
    }
    ctl.remove(name)
}

/// Replaces the key (hex run) in crypt table parameters by zeros, as `dmsetup table` shows it.
pub fn mask_key(params: &str) -> String {
    let mut words: Vec<String> = params.split(' ').map(str::to_string).collect();
    if let Some(k) = words.get_mut(1) {
        if !k.starts_with(':') && k != "-" {
            *k = "0".repeat(k.len());
        }
    }
    words.join(" ")
}

/// Waits until udev has made `/dev/mapper/NAME` for `dev`. Without a running udev, makes the
/// node itself (as libdevmapper does when udev is absent).
pub fn wait_for_node(name: &str, dev: (u32, u32)) -> Result<PathBuf, DmError> {
    let path = Path::new(MAPPER_DIR).join(name);
    let is_ours = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.file_type().is_block_device() && m.rdev() == nix::sys::stat::makedev(dev.0 as _, dev.1 as _))
            .unwrap_or(false)
    };
    let udev_running = Path::new("/run/udev/control").exists();
    let start = Instant::now();
    let mut settled = false;
    while start.elapsed() < Duration::from_secs(if udev_running { 20 } else { 0 }) {
        if is_ours(&path) {
            return Ok(path);
        }
        if !settled && start.elapsed() > Duration::from_secs(2) {
            settled = true;
            let _ = std::process::Command::new("udevadm").args(["settle", "--timeout=10"]).status();
            continue;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_ours(&path) {
        return Ok(path);
    }
    // No udev (or it does not handle dm events): make the node like libdevmapper's fallback.
    let _ = std::fs::remove_file(&path);
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(dev.0 as _, dev.1 as _),
    )
    .map_err(|_| DmError::NodeTimeout(path.clone()))?;
    Ok(path)
}

fn wait_for_node_gone(name: &str) {
    let path = Path::new(MAPPER_DIR).join(name);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match std::fs::symlink_metadata(&path) {
            Err(_) => return,
            Ok(m) if !m.file_type().is_symlink() && !Path::new("/run/udev/control").exists() => {
                // A node we made ourselves without udev.
                let _ = std::fs::remove_file(&path);
                return;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = std::process::Command::new("udevadm").args(["settle", "--timeout=5"]).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_inline_keys_only() {
        assert_eq!(mask_key("aes-cbc-essiv:sha256 abcd 0 7:1 4096"), "aes-cbc-essiv:sha256 0000 0 7:1 4096");
        let kr = "aes-xts-plain64 :64:logon:cryptsetup:u-d0 0 7:0 32768";
        assert_eq!(mask_key(kr), kr);
    }

    #[test]
    fn names() {
        assert!(check_name("luks-abc").is_ok());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(&"n".repeat(128)).is_err());
    }
}
