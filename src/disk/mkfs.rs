//! The filesystem inside the LUKS volume: ext4 made by mkfs.ext4, spawned directly (no shell).

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

/// ext4 labels are at most 16 bytes.
pub const EXT4_LABEL_MAX: usize = 16;

/// The mkfs.ext4 argument list (pure, tested): quiet, labelled, no lazy init of the inode
/// tables so the disk is complete when init returns, and no reserved blocks (a backup disk
/// has no root daemons to save space for).
pub fn mkfs_args(device: &Path, label: &str) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = ["-q", "-F", "-L", label, "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"]
        .iter()
        .map(|s| (*s).into())
        .collect();
    a.push(device.as_os_str().to_owned());
    a
}

/// Runs mkfs.ext4 on `device` with the label `label`.
pub fn mkfs_ext4(device: &Path, label: &str) -> io::Result<()> {
    if label.len() > EXT4_LABEL_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("ext4 labels are at most {EXT4_LABEL_MAX} bytes")));
    }
    let out = Command::new("mkfs.ext4")
        .args(mkfs_args(device, label))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run mkfs.ext4 ({e}): install e2fsprogs")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_is_passed_as_one_argument() {
        let a = mkfs_args(Path::new("/dev/mapper/x"), "my disk; rm -rf");
        let i = a.iter().position(|s| s == "-L").unwrap();
        assert_eq!(a[i + 1], "my disk; rm -rf");
        assert_eq!(a.last().unwrap(), "/dev/mapper/x");
    }
}
