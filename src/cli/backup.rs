//! `offdisk backup/verify/generations/restore` (owned by the backup work).

use super::{count, CliResult, Failure};
use crate::backup::{self, retention::Retention, walk};
use crate::config::{Config, DiskConfig, Ledger, LedgerGeneration};
use crate::error::exit;
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Where to find the backup: a directory, or a configured disk.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Backup root directory (holds `generations/`); default: the configured disk's mount point.
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Configured disk to use, by LUKS UUID or label.
    #[arg(long, value_name = "UUID|LABEL")]
    pub disk: Option<String>,
    /// Configuration file [default: $OFFDISK_CONFIG or /etc/offdisk/config.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Worker threads for copying and hashing [default: number of CPUs, at least 2].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct RetentionArgs {
    /// Keep the N newest generations.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest generation of each of the last N days (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest generation of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest generation of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest generation of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
}

impl RetentionArgs {
    fn policy(&self) -> Retention {
        Retention {
            keep_last: self.keep_last,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Files and directories to back up [default: the disk's configured sources].
    #[arg(value_name = "SRC")]
    pub sources: Vec<PathBuf>,
    /// Leave out paths matching PATTERN (`*`, `?`, `**`, `[...]`; with `/` anchored at the root).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from FILE, one a line.
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Also back up directories marked with a CACHEDIR.TAG (left out by default).
    #[arg(long)]
    pub include_caches: bool,
    /// Descend into other filesystems mounted below a source (by default each source's own only).
    #[arg(long)]
    pub cross_filesystems: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Date the generation at this Unix time instead of now (testing retention).
    #[arg(long, hide = true, value_name = "SECONDS")]
    pub at: Option<i64>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Check only this generation (name, unique prefix, or `latest`) [default: all].
    #[arg(long, value_name = "G")]
    pub generation: Option<String>,
    /// Compare sizes and modification times only; do not read contents.
    #[arg(long)]
    pub quick: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub from: super::anywhere::FromArgs,
}

#[derive(Args, Debug)]
pub struct GenerationsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Delete generation G (never the newest complete one); renamed out of the list first.
    #[arg(long, value_name = "G", conflicts_with = "from")]
    pub delete: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub from: super::anywhere::FromArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Generation to restore from (name, unique prefix, or `latest`) [default: newest].
    #[arg(long, value_name = "G")]
    pub generation: Option<String>,
    /// Paths as they were backed up (e.g. /home/a/docs); recreated below DEST.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Directory to restore into.
    #[arg(long, value_name = "DEST")]
    pub to: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub from: super::anywhere::FromArgs,
    #[command(flatten)]
    pub policy: super::anywhere::RestorePolicyArgs,
}

/// The backup root and, when known, the configured disk it belongs to.
struct Resolved {
    root: PathBuf,
    config: Config,
    disk: Option<DiskConfig>,
}

fn resolve(t: &TargetArgs) -> Result<Resolved, Failure> {
    let config = Config::load_default(t.config.as_deref())?;
    for w in config.warnings() {
        eprintln!("offdisk: warning: {w}");
    }
    let disk = match &t.disk {
        Some(key) => Some(
            config
                .disk(key)
                .cloned()
                .ok_or_else(|| Failure::usage(format!("no disk {key:?} in the configuration")).with_hint("`offdisk status` lists known disks"))?,
        ),
        None if t.target.is_none() => {
            let mounted: Vec<_> = config.disks.iter().filter(|d| is_mounted(&d.mount_point())).collect();
            match mounted.as_slice() {
                [one] => Some((*one).clone()),
                [] => {
                    return Err(Failure::usage("no --target given and no configured disk is mounted")
                        .with_hint("open the disk first (`offdisk open`), or pass --target DIR"))
                }
                _ => return Err(Failure::usage("several configured disks are mounted").with_hint("choose one with --disk")),
            }
        }
        None => None,
    };
    let root = match (&t.target, &disk) {
        (Some(dir), _) => dir.clone(),
        (None, Some(d)) => {
            let m = d.mount_point();
            if !is_mounted(&m) {
                return Err(Failure::new(exit::DEVICE, format!("disk {} is not mounted at {}", d.name(), m.display()))
                    .with_hint("open it first with `offdisk open`"));
            }
            m
        }
        (None, None) => unreachable!("handled above"),
    };
    Ok(Resolved { root, config, disk })
}

/// A directory on a different device than its parent.
fn is_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Ok(p)) = (std::fs::metadata(dir), std::fs::metadata(dir.join(".."))) else { return false };
    m.is_dir() && (m.dev() != p.dev() || m.ino() == p.ino())
}

fn threads(t: &TargetArgs) -> usize {
    t.threads.filter(|&n| n > 0).unwrap_or_else(backup::default_threads)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string())
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn run_backup(a: BackupArgs, verbose: bool) -> CliResult {
    let r = resolve(&a.target)?;
    let sources = if !a.sources.is_empty() {
        a.sources.clone()
    } else {
        match &r.disk {
            Some(d) if !d.sources.is_empty() => d.sources.clone(),
            _ => return Err(Failure::usage("nothing to back up").with_hint("name sources (SRC...) or configure them for the disk")),
        }
    };
    let mut excludes = walk::Excludes::default();
    let retention;
    let mut exclude_files = a.exclude_from.clone();
    let (mut one_fs, mut caches) = (true, true);
    if let Some(d) = &r.disk {
        for p in r.config.excludes_for(d) {
            excludes.add(&p);
        }
        exclude_files.extend(r.config.defaults.exclude_file.iter().chain(d.exclude_file.iter()).cloned());
        retention = r.config.retention_for(d);
        one_fs = d.one_file_system.or(r.config.defaults.one_file_system).unwrap_or(true);
        caches = d.exclude_caches.or(r.config.defaults.exclude_caches).unwrap_or(true);
    } else {
        for p in &r.config.defaults.excludes {
            excludes.add(p);
        }
        retention = r.config.defaults.retention;
    }
    for p in &a.exclude {
        excludes.add(p);
    }
    for f in &exclude_files {
        excludes
            .add_file(f)
            .map_err(|e| Failure::usage(format!("exclude file {}: {e}", f.display())))?;
    }
    let retention = retention.overridden_by(a.retention.policy());
    let opts = backup::BackupOptions {
        root: r.root.clone(),
        sources,
        walk: walk::WalkOptions {
            excludes,
            one_file_system: one_fs && !a.cross_filesystems,
            exclude_caches: caches && !a.include_caches,
            skip: Vec::new(),
        },
        retention,
        threads: threads(&a.target),
        time: a.at,
        progress: !a.no_progress && !a.json && std::io::stderr().is_terminal(),
    };
    let s = backup::backup(&opts)?;

    // The ledger: always on the disk, and on the host when the disk is a configured one.
    let gens: Vec<LedgerGeneration> = backup::list_generations(&r.root)?
        .into_iter()
        .map(|(g, info)| LedgerGeneration {
            time: g.time,
            files: info.as_ref().map_or(0, |i| i.files),
            bytes: info.as_ref().map_or(0, |i| i.bytes),
            name: g.name,
        })
        .collect();
    let (uuid, label) = match &r.disk {
        Some(d) => (d.luks_uuid.clone(), d.label.clone()),
        None => match Ledger::load_disk(&r.root) {
            Ok(Some(l)) => (l.luks_uuid, l.label),
            _ => (String::new(), None),
        },
    };
    // Only the disk's identity as registered here goes into the ledgers: the disk's own copy
    // is untrusted and only supplies identity when no disk is configured.
    let mut ledger = Ledger::new(&uuid, label.as_deref());
    ledger.record_backup(gens, &s.info.name, s.info.time, hostname());
    let mut ledger_warnings = Vec::new();
    if let Err(e) = ledger.save_disk(&r.root) {
        ledger_warnings.push(format!("ledger on disk: {e}"));
    }
    if r.disk.is_some() {
        if let Err(e) = ledger.save_host(&r.config.ledger_dir(), &uuid) {
            ledger_warnings.push(format!("host ledger: {e}"));
        }
    }

    if a.json {
        let v = serde_json::json!({
            "generation": s.info.name,
            "path": s.path,
            "info": s.info,
            "pruned": s.pruned,
            "prune_seconds": s.prune_seconds,
            "cleaned_up": s.cleaned,
            "warnings": s.warnings.iter().chain(ledger_warnings.iter()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in s.warnings.iter().chain(ledger_warnings.iter()) {
            eprintln!("offdisk: warning: {w}");
        }
        if verbose {
            for c in &s.cleaned {
                eprintln!("offdisk: removed leftover of an interrupted run: {}", c.display());
            }
        }
        let i = &s.info;
        let rate = if i.seconds > 0.0 { i.new_bytes as f64 / i.seconds } else { 0.0 };
        let mut line = format!(
            "backup {}: {}, {} ({} new, {} linked) in {:.1} s, {}/s",
            i.name,
            count(i.files as usize, "file", "files"),
            human_bytes(i.bytes),
            human_bytes(i.new_bytes),
            count(i.linked_files as usize, "file", "files"),
            i.seconds,
            human_bytes(rate as u64)
        );
        if !s.pruned.is_empty() {
            line.push_str(&format!("; pruned {} in {:.1} s", count(s.pruned.len(), "generation", "generations"), s.prune_seconds));
        }
        if !s.warnings.is_empty() {
            line.push_str(&format!("; {}", count(s.warnings.len(), "warning", "warnings")));
        }
        println!("{line}");
    }
    Ok(exit::OK)
}

pub fn run_verify(a: VerifyArgs, _verbose: bool) -> CliResult {
    if a.from.from.is_some() {
        return super::anywhere::run_verify(&a.from, a.generation, a.quick, threads(&a.target), a.json);
    }
    let r = resolve(&a.target)?;
    let opts = backup::verify::VerifyOptions {
        root: r.root.clone(),
        generation: a.generation.clone(),
        quick: a.quick,
        threads: threads(&a.target),
    };
    let started = std::time::Instant::now();
    let report = backup::verify::verify(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        // The summary is the result, so it goes to standard output as backup's does.
        println!(
            "verify: {}, {}, {} ({} read) in {:.1} s: {}",
            count(report.generations.len(), "generation", "generations"),
            count(report.files as usize, "file", "files"),
            human_bytes(report.bytes),
            human_bytes(report.bytes_read),
            started.elapsed().as_secs_f64(),
            if report.problems.is_empty() { "all good".to_string() } else { count(report.problems.len(), "problem", "problems") }
        );
    }
    Ok(if report.problems.is_empty() { exit::OK } else { exit::USAGE })
}

pub fn run_generations(a: GenerationsArgs, _verbose: bool) -> CliResult {
    if a.from.from.is_some() {
        return super::anywhere::run_generations(&a.from, a.json);
    }
    let r = resolve(&a.target)?;
    if let Some(name) = &a.delete {
        let started = std::time::Instant::now();
        backup::delete_generation(&r.root, name)?;
        eprintln!("deleted {name} in {:.2} s", started.elapsed().as_secs_f64());
        return Ok(exit::OK);
    }
    let gens = backup::list_generations(&r.root)?;
    if a.json {
        let list: Vec<_> = gens
            .iter()
            .map(|(g, i)| {
                serde_json::json!({
                    "name": g.name,
                    "path": g.path,
                    "time": backup::generation::format_time_iso(g.time),
                    "unix_time": g.time,
                    "files": i.as_ref().map(|i| i.files),
                    "bytes": i.as_ref().map(|i| i.bytes),
                    "new_bytes": i.as_ref().map(|i| i.new_bytes),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
    } else {
        println!("{:<22} {:<20} {:>10} {:>11} {:>11}  PATH", "GENERATION", "TIME (UTC)", "FILES", "SIZE", "NEW");
        for (g, i) in &gens {
            let (files, bytes, new) = match i {
                Some(i) => (i.files.to_string(), human_bytes(i.bytes), human_bytes(i.new_bytes)),
                None => ("?".into(), "?".into(), "?".into()),
            };
            println!(
                "{:<22} {:<20} {:>10} {:>11} {:>11}  {}",
                g.name,
                backup::generation::format_time_iso(g.time),
                files,
                bytes,
                new,
                g.path.display()
            );
        }
    }
    Ok(exit::OK)
}

pub fn run_restore(a: RestoreArgs, _verbose: bool) -> CliResult {
    if a.from.from.is_some() {
        let opts = crate::offline::restore::RestoreOptions { generation: a.generation, paths: a.paths, dest: a.to, policy: a.policy.policy() };
        return super::anywhere::run_restore(&a.from, opts, a.json);
    }
    let r = resolve(&a.target)?;
    let opts = backup::restore::RestoreOptions {
        root: r.root.clone(),
        generation: a.generation.clone(),
        paths: a.paths.clone(),
        dest: a.to.clone(),
        threads: threads(&a.target),
    };
    let s = backup::restore::restore(&opts)?;
    if a.json {
        let v = serde_json::json!({ "generation": s.generation, "stats": s.stats, "warnings": s.warnings });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in &s.warnings {
            eprintln!("offdisk: warning: {w}");
        }
        println!(
            "restore from {}: {}, {} into {}{}",
            s.generation,
            count(s.stats.files as usize, "file", "files"),
            human_bytes(s.stats.bytes),
            a.to.display(),
            if s.warnings.is_empty() { String::new() } else { format!("; {}", count(s.warnings.len(), "warning", "warnings")) }
        );
    }
    Ok(if s.warnings.is_empty() { exit::OK } else { exit::USAGE })
}
