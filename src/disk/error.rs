//! What can go wrong with a backup disk's life (find, init, open, close), each error rendered
//! as what went wrong plus what to do.

use super::{busy, gpt, probe};
use crate::dm::DmError;
use crate::error::{exit, Diagnose};
use crate::luks::LuksError;
use std::io;
use std::path::{Path, PathBuf};

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

pub(super) fn io_at(path: &Path) -> impl Fn(io::Error) -> DiskError + '_ {
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
