//! Mounting the opened volume (nosuid,nodev,noexec: nothing on a disk that was away can
//! run or act as a device on this host) and finding what is mounted from /proc/self/mountinfo.

use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub dev: (u32, u32),
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub options: String,
}

/// Undoes mountinfo's octal escapes (`\040` for space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of /proc/self/mountinfo; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (maj, min) = l.get(2)?.split_once(':')?;
            Some(MountEntry {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                mount_point: PathBuf::from(unescape(l.get(4)?)),
                options: l.get(5)?.to_string(),
                fs_type: r.first()?.to_string(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

/// Current mounts of this process's namespace.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Mount points of the block device (major, minor).
pub fn mount_points_of(dev: (u32, u32)) -> io::Result<Vec<PathBuf>> {
    Ok(mounts()?.into_iter().filter(|m| m.dev == dev).map(|m| m.mount_point).collect())
}

/// The flags every backup disk is mounted with: set-id bits and device nodes on it mean
/// nothing to this host (backups keep them as data) and nothing on it is executed.
pub const MOUNT_FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// Mounts ext4 `device` on `dir` with nosuid,nodev,noexec (and ro when asked).
pub fn mount_ext4(device: &Path, dir: &Path, read_only: bool) -> io::Result<()> {
    let mut flags = MOUNT_FLAGS;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(Some(device), dir, Some("ext4"), flags, None::<&str>).map_err(io::Error::from)
}

/// Unmounts `dir` (no lazy or forced unmount: a busy filesystem is reported, not detached).
pub fn unmount(dir: &Path) -> io::Result<()> {
    nix::mount::umount2(dir, MntFlags::empty()).map_err(io::Error::from)
}

/// The default mount point for a volume labelled `label`: /media/LABEL like udisks on Debian
/// (/run/media/LABEL where /media does not exist).
pub fn default_mount_point(label: &str, fallback_name: &str) -> PathBuf {
    let base = if Path::new("/media").is_dir() { "/media" } else { "/run/media" };
    let name: String = if label.is_empty() { fallback_name.to_string() } else { label.to_string() };
    let safe: String = name.chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
    let safe = if safe == "." || safe == ".." { fallback_name.to_string() } else { safe };
    Path::new(base).join(safe)
}

/// Removes an (empty) mount directory we would have made ourselves.
pub(crate) fn remove_default_mount_dir(dir: &Path) {
    if dir.starts_with("/media") || dir.starts_with("/run/media") {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let t = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 shared:2 - ext4 /dev/mapper/luks-x rw,errors=continue\n\
                 22 23 0:20 / /proc rw,nosuid - proc proc rw\nbroken line\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (98, 0));
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/my disk"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, "/dev/mapper/luks-x");
        assert_eq!(m[1].fs_type, "proc");
    }

    #[test]
    fn backup_disks_are_mounted_nosuid_nodev_noexec() {
        for f in [MsFlags::MS_NOSUID, MsFlags::MS_NODEV, MsFlags::MS_NOEXEC] {
            assert!(MOUNT_FLAGS.contains(f), "{f:?}");
        }
    }

    #[test]
    fn default_mount_point_is_sanitised() {
        let p = default_mount_point("a/b", "luks-1");
        assert!(p.ends_with("a_b"));
        assert!(default_mount_point("", "luks-1").ends_with("luks-1"));
        assert!(default_mount_point("..", "luks-1").ends_with("luks-1"));
    }
}
