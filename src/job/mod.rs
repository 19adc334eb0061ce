//! Backup and verify jobs: a disk's policy resolved from the configuration, run through the
//! engine with an observer, and the ledgers updated afterwards. `offdisk backup`/`verify`
//! (which only parse and render) and `offdisk dock` both run these.
//!
//! This layer sits between [`crate::config`] (which it reads) and [`crate::hotplug`] / [`crate::cli`]
//! (which call it): the engine in [`crate::backup`] knows nothing of configured disks or ledgers.
//!
//! # API
//! - [`Target::resolve`]`(&config, --target, --disk)`: which backup root, and which configured
//!   disk it belongs to (`--disk` alone uses the disk's mount point; neither picks the one
//!   configured disk that is mounted).
//! - [`BackupPolicy::for_disk`]`(&config, disk)`: sources, excludes, exclude files, caches rule,
//!   one-filesystem rule, retention and shrink guard as configured;
//!   [`BackupPolicy::with`]`(&Overrides)` puts command-line choices on top.
//! - [`BackupJob`]`{ target, policy, threads, time }` → [`BackupJob::run`]`(&mut observer, &stop)`
//!   → [`BackupReport`] (the engine's summary, ledger warnings, the outcome); the ledger on the
//!   disk (always) and on the host (configured disks) are updated.
//!   [`BackupJob::for_registered_disk`] is dock's way in: config file, LUKS UUID, mount point.
//! - [`VerifyJob`] → [`VerifyJob::run`] → [`VerifyRun`] (the engine's report and the time taken).
//! - Events ([`event`]): the observer sees typed [`Event`]s in order; [`Stop`] asks a running
//!   job to stop at the next safe point (the run then fails with `Stopped`, leaving every
//!   complete generation as it was).

pub mod backup;
pub mod event;
pub mod verify;

pub use self::backup::{BackupJob, BackupPolicy, BackupReport, Overrides, ShrinkGuard};
pub use self::event::{Event, Observer, Quiet};
pub use self::verify::{VerifyJob, VerifyRun};
pub use crate::backup::Stop;

use crate::backup::BackupError;
use crate::config::{Config, ConfigError, DiskConfig};
use crate::error::{exit, Diagnose};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no disk {0:?} in the configuration")]
    UnknownDisk(String),
    #[error("no --target given and no configured disk is mounted")]
    NothingMounted,
    #[error("several configured disks are mounted")]
    SeveralMounted,
    #[error("disk {disk} is not mounted at {}", .at.display())]
    NotMounted { disk: String, at: PathBuf },
    #[error("nothing to back up")]
    NothingToBackUp,
    #[error("exclude file {}: {error}", .path.display())]
    ExcludeFile { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backup(#[from] BackupError),
}

impl Diagnose for JobError {
    fn exit_code(&self) -> i32 {
        match self {
            JobError::NotMounted { .. } => exit::DEVICE,
            JobError::Config(e) => e.exit_code(),
            JobError::Backup(e) => e.exit_code(),
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            JobError::UnknownDisk(_) => Some("`offdisk status` lists known disks".into()),
            JobError::NothingMounted => Some("open the disk first (`offdisk open`), or pass --target DIR".into()),
            JobError::SeveralMounted => Some("choose one with --disk".into()),
            JobError::NotMounted { .. } => Some("open it first with `offdisk open`".into()),
            JobError::NothingToBackUp => Some("name sources (SRC...) or configure them for the disk".into()),
            JobError::ExcludeFile { .. } => None,
            JobError::Config(e) => e.hint(),
            JobError::Backup(e) => e.hint(),
        }
    }
}

/// The backup root a job works on and, when known, the configured disk it belongs to.
#[derive(Debug, Clone)]
pub struct Target {
    pub root: PathBuf,
    pub config: Config,
    pub disk: Option<DiskConfig>,
}

impl Target {
    /// `root` given: that directory (with `disk`'s policy when named). Only `disk`: its mount
    /// point, which must be mounted. Neither: the one configured disk that is mounted.
    pub fn resolve(config: Config, root: Option<&Path>, disk: Option<&str>) -> Result<Target, JobError> {
        let disk = match disk {
            Some(key) => Some(config.disk(key).cloned().ok_or_else(|| JobError::UnknownDisk(key.to_string()))?),
            None if root.is_none() => {
                let mounted: Vec<_> = config.disks.iter().filter(|d| is_mounted(&d.mount_point())).collect();
                match mounted.as_slice() {
                    [one] => Some((*one).clone()),
                    [] => return Err(JobError::NothingMounted),
                    _ => return Err(JobError::SeveralMounted),
                }
            }
            None => None,
        };
        let root = match (root, &disk) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Some(d)) => {
                let m = d.mount_point();
                if !is_mounted(&m) {
                    return Err(JobError::NotMounted { disk: d.name().to_string(), at: m });
                }
                m
            }
            (None, None) => unreachable!("handled above"),
        };
        Ok(Target { root, config, disk })
    }
}

/// A directory on a different device than its parent.
fn is_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Ok(p)) = (std::fs::metadata(dir), std::fs::metadata(dir.join(".."))) else { return false };
    m.is_dir() && (m.dev() != p.dev() || m.ino() == p.ino())
}

/// Threads for copying and hashing: `asked` when positive, else the engine's default.
pub fn threads(asked: Option<usize>) -> usize {
    asked.filter(|&n| n > 0).unwrap_or_else(crate::backup::default_threads)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string())
}
