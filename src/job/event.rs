//! What a running job tells its observer: typed events, in order, and the progress meter
//! that turns the engine's running totals into rate and ETA.
//!
//! Order of a backup: [`Event::Started`] (with an estimate when an earlier generation gives
//! one), [`Event::Cleaned`] per leftover removed, [`Event::Step`] `Copying`, [`Event::Progress`]
//! (at most four a second, plus a final one), `Step` `Syncing`, then `Pruning` and
//! [`Event::Pruned`] per generation removed, `Step` `UpdatingLedger`, [`Event::Warning`] per
//! warning, and [`Event::BackupFinished`]. A verify: `Started`, per generation `Step`
//! `Verifying` and [`Event::Verified`], then [`Event::VerifyFinished`]. A run that fails or is
//! stopped ends without a finished event: its `Err` says why ([`Event::ShrinkRefused`] comes
//! first when the shrink guard is the reason).

use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which job is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Backup,
    Verify,
}

/// How big the run probably is: the previous generation's counts (backup) or the
/// generations' recorded counts (verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Walking the sources, linking unchanged files and copying the rest.
    Copying,
    /// Directory metadata and the syncs that make the generation complete.
    Syncing,
    /// Removing generations the retention policy no longer keeps.
    Pruning,
    /// Recording the disk's generations in its ledger (on the disk and on the host).
    UpdatingLedger,
    /// Checking one generation against its manifest.
    Verifying,
}

/// Running totals with rate and, given an estimate, the fraction done and time left.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// Files (regular, hard links) so far, and their content bytes.
    pub files: u64,
    pub bytes: u64,
    /// Of those, copied (not linked to the previous generation).
    pub new_files: u64,
    pub new_bytes: u64,
    pub elapsed_seconds: f64,
    /// Content bytes handled per second (linked files count: they are part of the tree).
    pub bytes_per_second: f64,
    /// 0..1 of the estimate; `None` without an estimate or once past it.
    pub fraction: Option<f64>,
    pub eta_seconds: Option<f64>,
}

/// Why a warning was given. Warnings never fail a run by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// About one entry of the sources or the target (the engine's message names it).
    Entry,
    /// An entry that could not be backed up (permission, I/O error, name too long): the
    /// generation is complete but incomplete in content (see [`Incomplete`]).
    NotBackedUp,
    /// An entry that vanished while the run walked it.
    Vanished,
    /// The ledger on the disk or on the host could not be written.
    Ledger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub path: Option<PathBuf>,
    pub message: String,
}

/// Entries a complete generation lacks (a partial run, as rsync's exit 23/24): the
/// generation's `info.json` record (all of them are in its `not-backed-up.tsv`).
pub use crate::backup::Incomplete;

/// The shrink guard refused to make a generation (the run then fails with
/// `BackupError::Shrunk`; nothing was pruned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShrinkRefusal {
    /// The source that shrank.
    pub source: String,
    /// Its files and bytes now and in the previous generation, and the limit.
    pub detail: String,
}

/// A finished backup, in numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupOutcome {
    pub generation: String,
    pub files: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub copied_files: u64,
    pub linked_files: u64,
    pub seconds: f64,
    pub pruned: Vec<String>,
    pub warnings: usize,
    /// `Some` when entries are missing from the generation.
    pub incomplete: Option<Incomplete>,
    /// 0, or [`crate::error::exit::PARTIAL`] (23) / [`crate::error::exit::VANISHED`] (24)
    /// when `incomplete`.
    pub exit_code: i32,
}

/// A finished verify, in numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyOutcome {
    pub generations: usize,
    pub files: u64,
    pub bytes: u64,
    pub bytes_read: u64,
    pub problems: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Started { job: JobKind, estimate: Option<Estimate> },
    /// A leftover of an interrupted run was removed before starting.
    Cleaned { path: PathBuf },
    Step { step: Step },
    Progress(Progress),
    Warning(Warning),
    Pruned { generation: String },
    /// One generation checked (`index` of `of`, from 1).
    Verified { generation: String, index: usize, of: usize, problems: usize },
    ShrinkRefused(ShrinkRefusal),
    BackupFinished(BackupOutcome),
    VerifyFinished(VerifyOutcome),
}

/// Receives a job's events on the calling thread, in order.
pub trait Observer {
    fn event(&mut self, ev: &Event);
}

impl<F: FnMut(&Event)> Observer for F {
    fn event(&mut self, ev: &Event) {
        self(ev)
    }
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: &Event) {}
}

/// Turns running totals into [`Progress`], and decides when one is worth sending.
#[derive(Debug, Clone)]
pub struct Meter {
    started: Instant,
    estimate: Option<Estimate>,
    last_sent: Option<Instant>,
    /// Least time between two progress events.
    pub every: Duration,
}

impl Meter {
    pub fn new(estimate: Option<Estimate>) -> Meter {
        Meter { started: Instant::now(), estimate, last_sent: None, every: Duration::from_millis(250) }
    }

    /// Progress at `elapsed` (pure: tests give the time).
    pub fn measure(estimate: Option<Estimate>, files: u64, bytes: u64, new_files: u64, new_bytes: u64, elapsed: Duration) -> Progress {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        let fraction = estimate.and_then(|e| {
            let f = if e.bytes > 0 {
                bytes as f64 / e.bytes as f64
            } else if e.files > 0 {
                files as f64 / e.files as f64
            } else {
                return None;
            };
            (f <= 1.0).then_some(f)
        });
        // Too early to say until a little of the work is done.
        let eta_seconds = fraction.filter(|&f| f >= 0.005 && secs > 0.0).map(|f| secs * (1.0 - f) / f);
        Progress { files, bytes, new_files, new_bytes, elapsed_seconds: secs, bytes_per_second: rate, fraction, eta_seconds }
    }

    /// The progress for these totals if one is due now (or `force`), else `None`.
    pub fn tick(&mut self, files: u64, bytes: u64, new_files: u64, new_bytes: u64, force: bool) -> Option<Progress> {
        let now = Instant::now();
        if !force && self.last_sent.is_some_and(|t| now.duration_since(t) < self.every) {
            return None;
        }
        self.last_sent = Some(now);
        Some(Self::measure(self.estimate, files, bytes, new_files, new_bytes, now.duration_since(self.started)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_fraction_and_eta() {
        let est = Some(Estimate { files: 100, bytes: 1000 });
        let p = Meter::measure(est, 10, 250, 5, 100, Duration::from_secs(5));
        assert_eq!(p.bytes_per_second, 50.0);
        assert_eq!(p.fraction, Some(0.25));
        assert_eq!(p.eta_seconds, Some(15.0));
        // Past the estimate: no fraction, no ETA, still a rate.
        let p = Meter::measure(est, 10, 2000, 5, 100, Duration::from_secs(5));
        assert_eq!((p.fraction, p.eta_seconds), (None, None));
        // No estimate (first backup): rate only.
        let p = Meter::measure(None, 10, 100, 10, 100, Duration::from_secs(1));
        assert_eq!((p.fraction, p.eta_seconds, p.bytes_per_second), (None, None, 100.0));
        // An estimate of files only (empty files).
        let p = Meter::measure(Some(Estimate { files: 4, bytes: 0 }), 1, 0, 1, 0, Duration::from_secs(2));
        assert_eq!((p.fraction, p.eta_seconds), (Some(0.25), Some(6.0)));
    }

    #[test]
    fn meter_sends_at_most_every_interval_unless_forced() {
        let mut m = Meter::new(None);
        m.every = Duration::from_secs(3600);
        assert!(m.tick(1, 1, 1, 1, false).is_some(), "the first one goes out");
        assert!(m.tick(2, 2, 2, 2, false).is_none());
        assert_eq!(m.tick(3, 3, 3, 3, true).map(|p| p.files), Some(3));
    }
}
