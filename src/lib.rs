//! offdisk: turn a removable disk into an encrypted off-site backup disk and keep it current.
//!
//! Layers, bottom up:
//! - [`fsaccess`]: every file reached through an open directory handle, no link followed;
//!   bounded state-file reads and atomic writes (used by everything that touches a filesystem).
//! - [`secret`]: zeroize-on-drop, locked-memory types for passphrases and keys.
//! - [`luks`]: LUKS1/LUKS2 on-disk format in pure Rust (parse, unlock, format, keyslots).
//! - [`dm`]: the kernel device-mapper through its ioctls (dm-crypt tables, keyring).
//! - [`disk`]: block devices, partitions, loop devices, mkfs, mounts.
//! - [`ext4`]: a read-only ext2/3/4 reader for untrusted images (beside `disk`).
//! - [`backup`]: dated generations as plain trees of files, manifests, verify, retention.
//! - [`offline`]: reading a backup disk without root or a mount (beside `backup`): userspace
//!   LUKS decryption, ext4, and the generation logic over a no-follow source.
//! - [`config`]: registered disks, their sources and policy; the per-disk ledger.
//! - [`job`]: a backup or verify run as one API: a disk's policy resolved from the config,
//!   the engine run with an observer of typed events, the ledgers updated.
//! - [`hotplug`]: dock handling, password agents, desktop notifications.
//! - [`cli`]: the `offdisk` command line.

// `unsafe` only where the kernel or locked memory needs it: dm::ioctl and secret, each
// block with a SAFETY note; everything else is safe code, checked by the compiler.
#![deny(unsafe_code)]

pub mod backup;
pub mod cli;
pub mod config;
pub mod disk;
pub mod dm;
pub mod error;
pub mod ext4;
pub mod fsaccess;
pub mod hotplug;
pub mod job;
pub mod luks;
pub mod offline;
#[allow(unsafe_code)]
pub mod secret;
