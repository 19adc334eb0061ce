//! Block devices: probing signatures, GPT partitioning, loop devices, mkfs, mounts, and the
//! sysfs view of disks (model, serial, size, holders); and a backup disk's life on top of them,
//! one module per job: find its volume ([`volume`]), make it ([`init`]), open it ([`open`]),
//! close it ([`close`]), show it ([`report`]).

pub mod busy;
pub mod close;
pub mod error;
pub mod gpt;
pub mod init;
pub mod loopdev;
pub mod mkfs;
pub mod mount;
pub mod open;
pub mod probe;
pub mod report;
pub mod stale;
pub mod sysfs;
pub mod volume;

pub use error::DiskError;

/// Directories made at the top of a new backup filesystem: the backup engine's
/// `generations/` (where `offdisk dock` and `offdisk backup` write the dated generations) and
/// `.offdisk/`, offdisk's own state on the disk (the hosts' identity records).
pub const TOP_LEVEL_DIRS: &[&str] = &[crate::backup::generation::GENERATIONS_DIR, OFFDISK_STATE_DIR];

/// offdisk's own directory at the top of a backup filesystem.
pub const OFFDISK_STATE_DIR: &str = ".offdisk";
