//! Block devices: probing signatures, GPT partitioning, loop devices, mkfs, mounts, and the
//! sysfs view of disks (model, serial, size, holders).

pub mod busy;
pub mod lifecycle;
pub mod gpt;
pub mod loopdev;
pub mod mkfs;
pub mod mount;
pub mod probe;
pub mod sysfs;

/// Directories made at the top of a new backup filesystem. `backups/` holds the dated
/// generations the backup engine writes; `.offdisk/` holds its per-disk state (ledger).
pub const TOP_LEVEL_DIRS: &[&str] = &["backups", ".offdisk"];
