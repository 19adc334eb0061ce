//! A backup job: policy (decided first, from the config and the command line), then the run.

use super::event::{BackupOutcome, Estimate, Event, Meter, Observer, ShrinkRefusal, Step, Warning, WarningKind};
use super::{JobError, Stop, Target};
use crate::backup::retention::Retention;
use crate::backup::{self as engine, walk, BackupSummary, EngineEvent};
use crate::config::{Config, DiskConfig, Ledger, LedgerGeneration};
use std::path::{Path, PathBuf};

/// Command-line choices that go over the configured policy.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replace the configured sources when not empty.
    pub sources: Vec<PathBuf>,
    /// Added to the configured excludes.
    pub excludes: Vec<String>,
    /// Read before the configured exclude files.
    pub exclude_files: Vec<PathBuf>,
    pub include_caches: bool,
    pub cross_filesystems: bool,
    /// Fields set here win.
    pub retention: Retention,
    pub allow_shrink: bool,
}

pub use crate::backup::ShrinkGuard;

/// Everything that decides what a backup run does, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPolicy {
    pub sources: Vec<PathBuf>,
    /// Patterns, in the order they were given.
    pub excludes: Vec<String>,
    /// Files of patterns, read when the job runs.
    pub exclude_files: Vec<PathBuf>,
    /// Leave out directories with a CACHEDIR.TAG.
    pub exclude_caches: bool,
    /// Stay on each source's filesystem.
    pub one_file_system: bool,
    pub retention: Retention,
    pub shrink: ShrinkGuard,
}

impl BackupPolicy {
    /// The configured policy of `disk` over the config's defaults; without a disk, the
    /// defaults' excludes and retention (sources must then come from the command line).
    pub fn for_disk(config: &Config, disk: Option<&DiskConfig>) -> BackupPolicy {
        let d = &config.defaults;
        match disk {
            Some(disk) => BackupPolicy {
                sources: disk.sources.clone(),
                excludes: config.excludes_for(disk),
                exclude_files: d.exclude_file.iter().chain(disk.exclude_file.iter()).cloned().collect(),
                exclude_caches: disk.exclude_caches.or(d.exclude_caches).unwrap_or(true),
                one_file_system: disk.one_file_system.or(d.one_file_system).unwrap_or(true),
                retention: config.retention_for(disk),
                shrink: config.shrink_guard_for(Some(disk)),
            },
            None => BackupPolicy {
                sources: Vec::new(),
                excludes: d.excludes.clone(),
                exclude_files: Vec::new(),
                exclude_caches: true,
                one_file_system: true,
                retention: d.retention,
                shrink: config.shrink_guard_for(None),
            },
        }
    }

    /// This policy with the command line's choices on top; fails when nothing is left to back up.
    pub fn with(mut self, o: &Overrides) -> Result<BackupPolicy, JobError> {
        if !o.sources.is_empty() {
            self.sources = o.sources.clone();
        }
        if self.sources.is_empty() {
            return Err(JobError::NothingToBackUp);
        }
        self.excludes.extend(o.excludes.iter().cloned());
        self.exclude_files = o.exclude_files.iter().chain(self.exclude_files.iter()).cloned().collect();
        self.exclude_caches &= !o.include_caches;
        self.one_file_system &= !o.cross_filesystems;
        self.retention = self.retention.overridden_by(o.retention);
        self.shrink.allow |= o.allow_shrink;
        Ok(self)
    }

    fn walk_options(&self) -> Result<walk::WalkOptions, JobError> {
        let mut excludes = walk::Excludes::default();
        for p in &self.excludes {
            excludes.add(p);
        }
        for f in &self.exclude_files {
            excludes.add_file(f).map_err(|error| JobError::ExcludeFile { path: f.clone(), error })?;
        }
        Ok(walk::WalkOptions { excludes, one_file_system: self.one_file_system, exclude_caches: self.exclude_caches, skip: Vec::new() })
    }
}

/// One backup run, decided.
#[derive(Debug, Clone)]
pub struct BackupJob {
    pub target: Target,
    pub policy: BackupPolicy,
    pub threads: usize,
    /// Date the generation at this Unix time instead of now (tests of retention).
    pub time: Option<i64>,
}

/// What a finished backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub summary: BackupSummary,
    /// The ledger on the disk or the host could not be written (the backup itself is fine).
    pub ledger_warnings: Vec<String>,
    pub outcome: BackupOutcome,
}

impl BackupReport {
    /// The run's exit status: 0, or 23 (entries not backed up) / 24 (entries vanished while
    /// read) when the generation was made without everything, as rsync's.
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code
    }

    /// The engine's warnings, then the ledger's.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.summary.warnings.iter().chain(self.ledger_warnings.iter())
    }
}

impl BackupJob {
    /// Dock's job: the registered disk `luks_uuid` of the config file, mounted at `mount`,
    /// with its configured policy.
    pub fn for_registered_disk(config: &Path, luks_uuid: &str, mount: &Path) -> Result<BackupJob, JobError> {
        let config = Config::load(config)?;
        let target = Target::resolve(config, Some(mount), Some(luks_uuid))?;
        let policy = BackupPolicy::for_disk(&target.config, target.disk.as_ref()).with(&Overrides::default())?;
        Ok(BackupJob { target, policy, threads: super::threads(None), time: None })
    }

    /// Runs the backup (one new generation, then retention), then records it in the ledgers.
    pub fn run(&self, obs: &mut dyn Observer, stop: &Stop) -> Result<BackupReport, JobError> {
        let root = &self.target.root;
        let opts = engine::BackupOptions {
            root: root.clone(),
            sources: self.policy.sources.clone(),
            walk: self.policy.walk_options()?,
            retention: self.policy.retention,
            threads: self.threads,
            time: self.time,
            stop: stop.clone(),
            shrink: self.policy.shrink,
        };
        let estimate = engine::list_generations(root)
            .ok()
            .and_then(|g| g.last().and_then(|(_, i)| i.as_ref().map(|i| Estimate { files: i.files, bytes: i.bytes })));
        obs.event(&Event::Started { job: super::event::JobKind::Backup, estimate });
        let mut meter = Meter::new(estimate);
        let mut last = None;
        let summary = engine::backup_observed(&opts, &mut |ev| match ev {
            EngineEvent::Cleaned(p) => obs.event(&Event::Cleaned { path: p.to_path_buf() }),
            EngineEvent::Step(s) => {
                if s != engine::Step::Copying {
                    // The copy's last totals, whatever the meter's pace.
                    if let Some(p) = last.take().and_then(|(f, b, nf, nb)| meter.tick(f, b, nf, nb, true)) {
                        obs.event(&Event::Progress(p));
                    }
                }
                let step = match s {
                    engine::Step::Copying => Step::Copying,
                    engine::Step::Syncing => Step::Syncing,
                    engine::Step::Pruning => Step::Pruning,
                };
                obs.event(&Event::Step { step });
            }
            EngineEvent::Stats(s) => {
                last = Some((s.files, s.bytes, s.copied_files, s.new_bytes));
                if let Some(p) = meter.tick(s.files, s.bytes, s.copied_files, s.new_bytes, false) {
                    obs.event(&Event::Progress(p));
                }
            }
            EngineEvent::Pruned(g) => obs.event(&Event::Pruned { generation: g.to_string() }),
        });
        let summary = match summary {
            Err(engine::BackupError::Shrunk { name, detail }) => {
                obs.event(&Event::ShrinkRefused(ShrinkRefusal { source: name.clone(), detail: detail.clone() }));
                return Err(engine::BackupError::Shrunk { name, detail }.into());
            }
            r => r?,
        };
        obs.event(&Event::Step { step: Step::UpdatingLedger });
        let ledger_warnings = self.record_in_ledgers(&summary)?;
        for w in &summary.warnings {
            obs.event(&Event::Warning(Warning { kind: WarningKind::Entry, path: None, message: w.clone() }));
        }
        for w in &ledger_warnings {
            obs.event(&Event::Warning(Warning { kind: WarningKind::Ledger, path: None, message: w.clone() }));
        }
        let i = &summary.info;
        let outcome = BackupOutcome {
            generation: i.name.clone(),
            files: i.files,
            bytes: i.bytes,
            new_bytes: i.new_bytes,
            copied_files: i.copied_files,
            linked_files: i.linked_files,
            seconds: i.seconds,
            pruned: summary.pruned.clone(),
            warnings: summary.warnings.len() + ledger_warnings.len(),
            incomplete: i.incomplete.clone(),
            exit_code: summary.exit_code(),
        };
        obs.event(&Event::BackupFinished(outcome.clone()));
        Ok(BackupReport { summary, ledger_warnings, outcome })
    }

    /// The ledger: always on the disk, and on the host when the disk is a configured one.
    /// Failing to write either is a warning; the generations are what count.
    fn record_in_ledgers(&self, s: &BackupSummary) -> Result<Vec<String>, JobError> {
        let root = &self.target.root;
        let gens: Vec<LedgerGeneration> = engine::list_generations(root)?
            .into_iter()
            .map(|(g, info)| LedgerGeneration {
                time: g.time,
                files: info.as_ref().map_or(0, |i| i.files),
                bytes: info.as_ref().map_or(0, |i| i.bytes),
                name: g.name,
            })
            .collect();
        let (uuid, label) = match &self.target.disk {
            Some(d) => (d.luks_uuid.clone(), d.label.clone()),
            None => match Ledger::load_disk(root) {
                Ok(Some(l)) => (l.luks_uuid, l.label),
                _ => (String::new(), None),
            },
        };
        // Only the disk's identity as registered here goes into the ledgers: the disk's own copy
        // is untrusted and only supplies identity when no disk is configured.
        let mut ledger = Ledger::new(&uuid, label.as_deref());
        ledger.record_backup(gens, &s.info.name, s.info.time, super::hostname());
        let mut warnings = Vec::new();
        if let Err(e) = ledger.save_disk(root) {
            warnings.push(format!("ledger on disk: {e}"));
        }
        if self.target.disk.is_some() {
            if let Err(e) = ledger.save_host(&self.target.config.ledger_dir(), &uuid) {
                warnings.push(format!("host ledger: {e}"));
            }
        }
        Ok(warnings)
    }
}
