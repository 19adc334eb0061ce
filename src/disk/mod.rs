//! Block devices: probing signatures, GPT partitioning, loop devices, mkfs, mounts, and the
//! sysfs view of disks (model, serial, size, holders).

pub mod busy;
pub mod lifecycle;
pub mod gpt;
pub mod loopdev;
pub mod mkfs;
pub mod mount;
pub mod probe;
pub mod stale;
pub mod sysfs;

/// Directories made at the top of a new backup filesystem: the backup engine's
/// `generations/` (where `offdisk dock` and `offdisk backup` write the dated generations) and
/// `.offdisk/`, offdisk's own state on the disk (the hosts' identity records).
pub const TOP_LEVEL_DIRS: &[&str] = &[crate::backup::generation::GENERATIONS_DIR, OFFDISK_STATE_DIR];

/// offdisk's own directory at the top of a backup filesystem.
pub const OFFDISK_STATE_DIR: &str = ".offdisk";
