//! A dock's backup and verify progress, told to people at a human pace: the desktop's
//! notification is updated in place at most every few seconds, and the journal gets a line
//! at coarse steps (every 10% of the estimate, or every minute without one), at each phase
//! change and for each warning.

use super::agent_link::{Event, ProgressDetail};
use super::dock::Ui;
use crate::job::event::{Event as JobEvent, JobKind, Progress, Step};
use crate::backup::human_bytes;
use crate::job::Observer;

/// When a progress update is worth a notification and when a journal line (pure: the
/// clock is the job's own elapsed time, so tests need no sleeping).
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Least seconds between two notification updates.
    pub notify_every: f64,
    /// Most seconds between two journal lines while a job runs.
    pub log_every: f64,
    last_notify: Option<f64>,
    last_log: f64,
    last_decile: u32,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer { notify_every: 3.0, log_every: 60.0, last_notify: None, last_log: 0.0, last_decile: 0 }
    }
}

impl Pacer {
    /// `(notify, log)` for this update. A journal line always comes with a notification, so
    /// the desktop never lags behind the journal.
    pub fn on(&mut self, p: &Progress) -> (bool, bool) {
        let t = p.elapsed_seconds;
        let decile = p.fraction.map(|f| (f * 10.0).floor().clamp(0.0, 10.0) as u32);
        let log = decile.is_some_and(|d| d > self.last_decile) || t - self.last_log >= self.log_every;
        if log {
            self.last_log = t;
            if let Some(d) = decile {
                self.last_decile = self.last_decile.max(d);
            }
        }
        let notify = log || self.last_notify.is_none_or(|l| t - l >= self.notify_every);
        if notify {
            self.last_notify = Some(t);
        }
        (notify, log)
    }

    /// A new job (verify after backup) starts counting again.
    pub fn restart(&mut self) {
        *self = Pacer { notify_every: self.notify_every, log_every: self.log_every, ..Pacer::default() };
    }
}

/// "about 3 min left", "about 40 s left", "about 2 h 5 min left".
pub fn eta_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("about {s} s left"),
        60..3600 => format!("about {} min left", s.div_ceil(60)),
        _ => format!("about {} h {} min left", s / 3600, (s % 3600) / 60),
    }
}

/// What the notification and the journal say about a progress update.
pub fn progress_text(job: JobKind, p: &Progress) -> String {
    let mut t = match job {
        JobKind::Backup => format!("{} files, {} ({} new)", p.files, human_bytes(p.bytes), human_bytes(p.new_bytes)),
        JobKind::Verify => format!("verified {} files, {}", p.files, human_bytes(p.bytes)),
    };
    if let Some(f) = p.fraction {
        t.push_str(&format!(", {}%", (f * 100.0).floor() as u32));
    }
    if p.bytes_per_second > 0.0 {
        t.push_str(&format!(", {}/s", human_bytes(p.bytes_per_second as u64)));
    }
    if let Some(eta) = p.eta_seconds {
        t.push_str(&format!(", {}", eta_text(eta)));
    }
    t
}

pub fn detail(p: &Progress) -> ProgressDetail {
    ProgressDetail {
        files: p.files,
        bytes: p.bytes,
        new_bytes: p.new_bytes,
        bytes_per_second: p.bytes_per_second as u64,
        percent: p.fraction.map(|f| (f * 100.0).floor() as u8),
        eta_seconds: p.eta_seconds.map(|s| s.round() as u64),
    }
}

/// Observes a job on dock's behalf and tells the [`Ui`].
pub struct Forwarder<'a> {
    disk: String,
    ui: &'a mut dyn Ui,
    pacer: Pacer,
    job: JobKind,
    /// The finished backup's exit status: 0, or 23/24 for a generation made without everything.
    pub exit_code: i32,
}

impl<'a> Forwarder<'a> {
    pub fn new(disk: &str, ui: &'a mut dyn Ui, pacer: Pacer) -> Forwarder<'a> {
        Forwarder { disk: disk.to_string(), ui, pacer, job: JobKind::Backup, exit_code: 0 }
    }

    /// A phase: both a notification and a journal line.
    fn phase(&mut self, text: String) {
        self.ui.log(&format!("{}: {text}", self.disk));
        self.ui.event(Event::Progress { disk: self.disk.clone(), text, detail: None });
    }
}

impl Observer for Forwarder<'_> {
    fn event(&mut self, ev: &JobEvent) {
        match ev {
            JobEvent::Started { job, estimate } => {
                self.job = *job;
                self.pacer.restart();
                let text = match (job, estimate) {
                    (JobKind::Backup, Some(e)) => format!("backing up (about {} files, {})", e.files, human_bytes(e.bytes)),
                    (JobKind::Backup, None) => "backing up (the first generation: no estimate)".to_string(),
                    (JobKind::Verify, _) => "verifying".to_string(),
                };
                self.phase(text);
            }
            JobEvent::Cleaned { path } => self.ui.log(&format!("{}: removed leftover of an interrupted run: {}", self.disk, path.display())),
            JobEvent::Step { step: Step::Syncing } => self.phase("making the new generation durable".into()),
            JobEvent::Step { step: Step::Pruning } => self.phase("pruning old generations".into()),
            JobEvent::Step { .. } => {}
            JobEvent::Progress(p) => {
                let (notify, log) = self.pacer.on(p);
                let text = progress_text(self.job, p);
                if log {
                    self.ui.log(&format!("{}: {text}", self.disk));
                }
                if notify {
                    self.ui.event(Event::Progress { disk: self.disk.clone(), text, detail: Some(detail(p)) });
                }
            }
            JobEvent::Warning(w) => self.ui.log(&format!("{}: warning: {}", self.disk, w.message)),
            JobEvent::Pruned { generation } => self.ui.log(&format!("{}: pruned generation {generation}", self.disk)),
            JobEvent::Verified { generation, index, of, problems } => {
                let what = if *problems == 0 { "good".to_string() } else { format!("{problems} problems") };
                self.ui.log(&format!("{}: verified {generation} ({index}/{of}): {what}", self.disk));
            }
            JobEvent::ShrinkRefused(r) => self.ui.log(&format!("{}: shrink guard: source {} {}; no generation made", self.disk, r.source, r.detail)),
            JobEvent::BackupFinished(o) => {
                self.exit_code = o.exit_code;
                if let Some(inc) = &o.incomplete {
                    self.phase(format!(
                        "generation {} is incomplete: {} not backed up, {} vanished while read (listed in its {})",
                        o.generation,
                        inc.not_backed_up,
                        inc.vanished,
                        crate::backup::NOT_BACKED_UP_FILE
                    ));
                }
            }
            JobEvent::VerifyFinished(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, fraction: Option<f64>) -> Progress {
        Progress { files: 1, bytes: 1, new_files: 0, new_bytes: 0, elapsed_seconds: t, bytes_per_second: 1.0, fraction, eta_seconds: None }
    }

    #[test]
    fn notifications_every_few_seconds_journal_every_tenth() {
        let mut p = Pacer::default();
        let mut seen = Vec::new();
        for i in 0..40 {
            let t = i as f64 * 0.5;
            seen.push(p.on(&at(t, Some(i as f64 / 40.0))));
        }
        let notified = seen.iter().filter(|s| s.0).count();
        let logged: Vec<usize> = seen.iter().enumerate().filter(|(_, s)| s.1).map(|(i, _)| i).collect();
        // 20 s of updates: one notification per 3 s, plus those that come with a journal line.
        assert!((7..=14).contains(&notified), "{notified}");
        assert_eq!(logged, [4, 8, 12, 16, 20, 24, 28, 32, 36], "one line per 10%");
    }

    #[test]
    fn without_an_estimate_the_journal_gets_a_line_a_minute() {
        let mut p = Pacer::default();
        let logged: Vec<u32> = (0..300).filter(|&s| p.on(&at(s as f64, None)).1).collect();
        assert_eq!(logged, [60, 120, 180, 240]);
    }

    #[test]
    fn texts() {
        assert_eq!(eta_text(42.4), "about 42 s left");
        assert_eq!(eta_text(150.0), "about 3 min left");
        assert_eq!(eta_text(7500.0), "about 2 h 5 min left");
        let p = Progress { files: 12, bytes: 3 << 20, new_files: 2, new_bytes: 1 << 20, elapsed_seconds: 2.0, bytes_per_second: 1.5 * 1048576.0, fraction: Some(0.456), eta_seconds: Some(30.0) };
        assert_eq!(progress_text(JobKind::Backup, &p), "12 files, 3.0 MiB (1.0 MiB new), 45%, 1.5 MiB/s, about 30 s left");
    }
}
