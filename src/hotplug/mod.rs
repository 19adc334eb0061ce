//! Docking: what happens when a registered disk appears (udev → systemd → `offdisk dock`).
//!
//! The chain, and who owns which step:
//! - `contrib/99-offdisk.rules`: udev tags every LUKS block device with
//!   `SYSTEMD_WANTS=offdisk-dock@<kernel name>.service`; nothing long runs inside udev.
//! - `contrib/offdisk-dock@.service`: a oneshot unit running `offdisk dock <kernel name>`.
//! - [`dock`]: validates the device, ignores unregistered disks, takes the per-disk
//!   [`lock`], gets the passphrase ([`ask_password`] for systemd's agents, [`agent_link`] for
//!   offdisk's desktop agents), unlocks, mounts, checks the disk's [`identity`], backs up,
//!   verifies, closes, and reports to the agents.
//! - [`agent`]: `offdisk agent`, the desktop side: [`notify`] notifications and [`pinentry`]
//!   dialogs, plus "not refreshed for N days" reminders from [`state`].

pub mod agent;
pub mod agent_link;
pub mod attached;
pub mod audience;
pub mod ask_password;
pub mod device;
pub mod dock;
pub mod identity;
pub mod lock;
pub mod notify;
pub mod pinentry;
pub mod progress;
pub mod register;
pub mod registry;
pub mod signals;
pub mod state;
pub mod system;
pub mod udisks_rule;

use crate::error::{exit, Diagnose};
use std::path::PathBuf;

fn stopped_tail(removed: &bool) -> &'static str {
    if *removed {
        ": the disk was removed; nothing lost: every complete generation on it is intact (an unfinished \
         one is cleaned up at the next dock) and what was opened is closed again"
    } else {
        "; what was opened is closed again"
    }
}

/// Errors of the hot-plug layer.
#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error("{0}: not a valid kernel block device name")]
    BadDeviceName(String),
    #[error("{}: not a block device", .0.display())]
    NotBlockDevice(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("configuration {}: {why}", .path.display())]
    Config { path: PathBuf, why: String },
    #[error("disk {0} is already registered")]
    AlreadyRegistered(String),
    #[error("disk {0} is not registered")]
    NotRegistered(String),
    /// Stopped by a signal (the disk was pulled out: systemd stops the unit; the system is
    /// stopping; a terminal) and everything opened was closed again.
    #[error("stopped before the end ({why}){}", stopped_tail(.removed))]
    Stopped { why: String, removed: bool },
    #[error("no passphrase given for disk {0}")]
    NoPassphrase(String),
    #[error("wrong passphrase for disk {disk} ({tries} tries)")]
    WrongPassphrase { disk: String, tries: u32 },
    #[error("disk {disk} is not the registered disk: {why}")]
    IdentityMismatch { disk: String, why: String },
    #[error("{step} failed: {why}")]
    Step { step: &'static str, why: String, code: i32 },
    #[error("password request: {0}")]
    Ask(String),
    #[error("desktop notification: {0}")]
    Notify(String),
    #[error("pinentry: {0}")]
    Pinentry(String),
    #[error("udev rule {}: {why}", .path.display())]
    UdevRule { path: PathBuf, why: String },
}

impl HotplugError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HotplugError::Io { what: what.into(), source }
    }
}

impl Diagnose for HotplugError {
    fn exit_code(&self) -> i32 {
        match self {
            HotplugError::BadDeviceName(_) | HotplugError::NotBlockDevice(_) => exit::DEVICE,
            HotplugError::Io { .. } => exit::DEVICE,
            HotplugError::NoPassphrase(_) | HotplugError::WrongPassphrase { .. } => exit::NO_KEY,
            HotplugError::IdentityMismatch { .. } => exit::DEVICE,
            HotplugError::Step { code, .. } => *code,
            HotplugError::AlreadyRegistered(_) => exit::BUSY,
            HotplugError::Stopped { removed: true, .. } => exit::PULLED,
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            HotplugError::NotRegistered(_) => Some("register it with `offdisk register DEVICE`".into()),
            HotplugError::IdentityMismatch { .. } => Some(
                "the LUKS header matches a registered disk but its contents do not; if this really is \
                 your disk, run `offdisk register --force DEVICE` again"
                    .into(),
            ),
            HotplugError::AlreadyRegistered(_) => Some("use --force to replace the registration".into()),
            HotplugError::UdevRule { .. } => Some(format!(
                "offdisk neither follows nor replaces a link or other non-file at a rule's name: move it aside \
                 (or set {} to another rules directory), then run the command again",
                udisks_rule::RULES_DIR_ENV
            )),
            _ => None,
        }
    }
}
