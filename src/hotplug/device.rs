//! The docked device as udev names it: the kernel name from the unit instance, checked
//! and resolved to `/dev/NAME` here (never through a shell), and the model and serial
//! people recognise it by, read from udev's database and sysfs.

use super::HotplugError;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// What the notification and the log say about a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub kernel_name: String,
    pub path: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: Option<u64>,
}

impl DeviceInfo {
    /// "Model (serial)" or the kernel name when udev knows nothing.
    pub fn describe(&self) -> String {
        match (&self.model, &self.serial) {
            (Some(m), Some(s)) => format!("{m} (serial {s})"),
            (Some(m), None) => m.clone(),
            (None, Some(s)) => format!("serial {s}"),
            (None, None) => self.kernel_name.clone(),
        }
    }
}

/// A kernel block device name: `sdb1`, `nvme0n1p2`, `loop3`, `mmcblk0p1`, `dm-4`.
/// Anything else (slashes, dots, spaces, escapes) is refused before it reaches a path.
pub fn valid_kernel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// Accepts `sdb1`, `/dev/sdb1` or a systemd instance string; returns the kernel name.
pub fn kernel_name_from_arg(arg: &str) -> Result<String, HotplugError> {
    let name = arg.strip_prefix("/dev/").unwrap_or(arg);
    if valid_kernel_name(name) {
        Ok(name.to_string())
    } else {
        Err(HotplugError::BadDeviceName(arg.chars().take(80).collect()))
    }
}

/// `/dev/NAME`, checked to be a block device, with what udev and sysfs know about it.
pub fn resolve(kernel_name: &str) -> Result<DeviceInfo, HotplugError> {
    resolve_in(kernel_name, Path::new("/dev"), Path::new("/run/udev/data"), Path::new("/sys/class/block"))
}

pub fn resolve_in(kernel_name: &str, dev: &Path, udev_db: &Path, sys_block: &Path) -> Result<DeviceInfo, HotplugError> {
    if !valid_kernel_name(kernel_name) {
        return Err(HotplugError::BadDeviceName(kernel_name.chars().take(80).collect()));
    }
    let path = dev.join(kernel_name);
    let meta = std::fs::metadata(&path).map_err(|e| HotplugError::io(format!("{}", path.display()), e))?;
    if !meta.file_type().is_block_device() {
        return Err(HotplugError::NotBlockDevice(path));
    }
    let mut info = DeviceInfo { kernel_name: kernel_name.to_string(), path, ..Default::default() };
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    if let Ok(text) = std::fs::read_to_string(udev_db.join(format!("b{major}:{minor}"))) {
        let props = parse_udev_db(&text);
        let get = |k: &str| props.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        info.model = get("ID_MODEL").map(|m| m.replace('_', " "));
        info.serial = get("ID_SERIAL_SHORT").or_else(|| get("ID_SERIAL"));
    }
    let sys = sys_block.join(kernel_name);
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if info.model.is_none() {
        // Partitions have no device/ of their own: look at the parent disk.
        info.model = read(sys.join("device/model")).or_else(|| read(sys.join("../device/model")));
    }
    info.size_bytes = read(sys.join("size")).and_then(|s| s.parse::<u64>().ok()).map(|s| s * 512);
    Ok(info)
}

/// `E:KEY=VALUE` lines of a udev database file.
pub fn parse_udev_db(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), super::ask_password::one_line(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names() {
        for ok in ["sdb1", "nvme0n1p2", "loop3", "mmcblk0p1", "dm-4", "sr0"] {
            assert!(valid_kernel_name(ok), "{ok}");
        }
        for bad in ["", "../sda", "sda;rm -rf /", "sd b", "-sda", "sda/..", "a\\x2fb", "$(id)", ".."] {
            assert!(!valid_kernel_name(bad), "{bad:?}");
        }
        assert_eq!(kernel_name_from_arg("/dev/sdc").unwrap(), "sdc");
        assert!(kernel_name_from_arg("/dev/../etc/passwd").is_err());
    }

    #[test]
    fn non_block_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sdz"), b"").unwrap();
        let e = resolve_in("sdz", dir.path(), dir.path(), dir.path()).unwrap_err();
        assert!(matches!(e, HotplugError::NotBlockDevice(_)));
        assert!(matches!(resolve_in("nope", dir.path(), dir.path(), dir.path()), Err(HotplugError::Io { .. })));
    }

    #[test]
    fn udev_db_lines() {
        let p = parse_udev_db("S:disk/by-id/x\nE:ID_MODEL=Ext_Disk\nE:ID_SERIAL_SHORT=ABC\x1b[31m\nG:systemd\n");
        assert_eq!(p, vec![("ID_MODEL".into(), "Ext_Disk".into()), ("ID_SERIAL_SHORT".into(), "ABC [31m".into())]);
    }
}
