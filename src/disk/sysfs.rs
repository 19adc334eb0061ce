//! Block devices as sysfs and udev describe them: model, serial, size, removable, partitions,
//! holders, loop backing files, and what udev's blkid found (type, UUID, label).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SYS_BLOCK: &str = "/sys/block";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlockDevice {
    /// Kernel name: sdb, sdb1, nvme0n1p1, loop0, dm-0.
    pub name: String,
    pub path: PathBuf,
    pub dev: (u32, u32),
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    pub is_partition: bool,
    /// For a partition, its whole disk's name.
    pub parent: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// "usb", "ata", "nvme", "loop", ... where known.
    pub transport: Option<String>,
    pub holders: Vec<String>,
    pub partitions: Vec<String>,
    pub loop_backing: Option<PathBuf>,
    pub logical_block_size: u64,
    /// From udev's database (blkid): ID_FS_TYPE, ID_FS_UUID, ID_FS_LABEL, ID_PART_ENTRY_TYPE.
    pub fs_type: Option<String>,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
    pub part_type: Option<String>,
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn list_names(dir: impl AsRef<Path>) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Parses "MAJ:MIN".
pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses udev's database file (`/run/udev/data/bMAJ:MIN`): its `E:KEY=VALUE` lines.
pub fn parse_udev_data(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn udev_data(dev: (u32, u32)) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/run/udev/data/b{}:{}", dev.0, dev.1))
        .map(|t| parse_udev_data(&t))
        .unwrap_or_default()
}

/// Reads the device with kernel name `name` (whole disk or partition).
pub fn device(name: &str) -> Option<BlockDevice> {
    // /sys/class/block/NAME covers partitions as well as whole disks.
    let sys = PathBuf::from("/sys/class/block").join(name);
    let dev = parse_dev(&read_trim(sys.join("dev"))?)?;
    let is_partition = sys.join("partition").exists();
    let real = std::fs::canonicalize(&sys).ok()?;
    let parent = if is_partition {
        real.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned())
    } else {
        None
    };
    let disk_sys = match &parent {
        Some(p) => PathBuf::from(SYS_BLOCK).join(p),
        None => sys.clone(),
    };
    let udev = udev_data(dev);
    let real_s = real.to_string_lossy();
    let transport = if name.starts_with("loop") {
        Some("loop".to_string())
    } else if real_s.contains("/usb") {
        Some("usb".into())
    } else if name.starts_with("nvme") {
        Some("nvme".into())
    } else if real_s.contains("/ata") {
        Some("ata".into())
    } else if name.starts_with("dm-") {
        Some("dm".into())
    } else {
        udev.get("ID_BUS").cloned()
    };
    let model = read_trim(disk_sys.join("device/model"))
        .or_else(|| udev.get("ID_MODEL").map(|m| m.replace('_', " ")))
        .or_else(|| read_trim(sys.join("dm/name")).map(|n| format!("device-mapper {n}")));
    let serial = udev
        .get("ID_SERIAL_SHORT")
        .cloned()
        .or_else(|| read_trim(disk_sys.join("device/serial")))
        .or_else(|| udev.get("ID_SERIAL").cloned());
    let disk_name = parent.clone().unwrap_or_else(|| name.to_string());
    Some(BlockDevice {
        name: name.to_string(),
        path: PathBuf::from("/dev").join(name),
        dev,
        size: read_trim(sys.join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512,
        removable: read_trim(disk_sys.join("removable")).as_deref() == Some("1"),
        read_only: read_trim(sys.join("ro")).as_deref() == Some("1"),
        is_partition,
        parent,
        model,
        serial,
        transport,
        holders: list_names(sys.join("holders")),
        partitions: if is_partition { Vec::new() } else { partitions_of(name) },
        loop_backing: read_trim(disk_sys.join("loop/backing_file")).map(PathBuf::from),
        logical_block_size: read_trim(format!("{SYS_BLOCK}/{disk_name}/queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512),
        fs_type: udev.get("ID_FS_TYPE").cloned(),
        fs_uuid: udev.get("ID_FS_UUID").cloned(),
        fs_label: udev.get("ID_FS_LABEL").cloned(),
        part_type: udev.get("ID_PART_ENTRY_TYPE").cloned(),
    })
}

/// Partition names of the whole disk `disk`, in order.
pub fn partitions_of(disk: &str) -> Vec<String> {
    let base = PathBuf::from(SYS_BLOCK).join(disk);
    let mut parts: Vec<(u32, String)> = list_names(&base)
        .into_iter()
        .filter_map(|n| {
            let num = read_trim(base.join(&n).join("partition"))?.parse().ok()?;
            Some((num, n))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, n)| n).collect()
}

/// Kernel name of the block device with number (major, minor).
pub fn name_of_dev(dev: (u32, u32)) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The block device a path (e.g. /dev/sdb, /dev/disk/by-label/X, /dev/mapper/N) refers to.
pub fn device_of_path(path: &Path) -> Option<BlockDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_block_device() {
        return None;
    }
    let dev = (nix::sys::stat::major(m.rdev()) as u32, nix::sys::stat::minor(m.rdev()) as u32);
    device(&name_of_dev(dev)?)
}

/// The kernel's sequence number of the attachment of the disk under device `dev` (Linux 5.15+,
/// `/sys/block/DISK/diskseq`): unique within a boot, new at each plug-in or loop attach, kept
/// across partition rescans and `change` events. A partition gives its whole disk's, a
/// device-mapper device the one of the (first) device it is built on. `None`: not known.
pub fn disk_seq_of_dev(dev: (u32, u32)) -> Option<u64> {
    let mut dev = dev;
    // dm-crypt on a partition on a disk: at most a few levels; the bound only stops a loop.
    for _ in 0..8 {
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
        if let Some(slave) = list_names(sys.join("slaves")).first() {
            dev = parse_dev(&read_trim(sys.join("slaves").join(slave).join("dev"))?)?;
            continue;
        }
        let disk = if sys.join("partition").exists() { sys.parent()?.to_path_buf() } else { sys };
        return read_trim(disk.join("diskseq"))?.parse().ok();
    }
    None
}

/// [`disk_seq_of_dev`] of the block device node at `path`.
pub fn disk_seq(path: &Path) -> Option<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_block_device() {
        return None;
    }
    disk_seq_of_dev((nix::sys::stat::major(m.rdev()) as u32, nix::sys::stat::minor(m.rdev()) as u32))
}

/// [`disk_seq_of_dev`] of the filesystem mounted at `mount` (its device, then what that is on).
pub fn disk_seq_of_mount(mount: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(mount).ok()?.dev();
    disk_seq_of_dev((nix::sys::stat::major(d) as u32, nix::sys::stat::minor(d) as u32))
}

/// Whole disks worth showing: skips RAM disks, zram, optical drives, unbound loop devices and
/// device-mapper devices (those are listed as mappings).
pub fn disks() -> Vec<BlockDevice> {
    list_names(SYS_BLOCK)
        .into_iter()
        .filter(|n| !(n.starts_with("ram") || n.starts_with("zram") || n.starts_with("sr") || n.starts_with("dm-") || n.starts_with("md")))
        .filter_map(|n| device(&n))
        .filter(|d| d.size > 0 && (d.transport.as_deref() != Some("loop") || d.loop_backing.is_some()))
        .collect()
}

/// Human-readable size in powers of 1000 like lsblk/udisks show disk sizes ("500.1 GB").
/// Deliberately not [`crate::backup::human_bytes`] (binary units, for file data): a disk is
/// sold and listed by the desktop in decimal, and `list`/`init` show the size people know.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udev_data_lines() {
        let t = "S:disk/by-id/usb-X\nE:ID_SERIAL_SHORT=ABC123\nE:ID_FS_TYPE=crypto_LUKS\nG:systemd\n";
        let m = parse_udev_data(t);
        assert_eq!(m.get("ID_SERIAL_SHORT").map(String::as_str), Some("ABC123"));
        assert_eq!(m.get("ID_FS_TYPE").map(String::as_str), Some("crypto_LUKS"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(500_107_862_016), "500.1 GB");
        assert_eq!(parse_dev("8:16\n"), Some((8, 16)));
        assert_eq!(parse_dev("x"), None);
    }
}
