//! `offdisk backup/verify/generations/restore` (owned by the backup work).

use super::{count, CliResult, Failure};
use crate::backup::{self, retention::Retention};
use crate::config::Config;
use crate::error::exit;
use crate::job::{self, BackupJob, BackupPolicy, Target, VerifyJob};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

/// The exit statuses of `offdisk backup`, for its help and man page.
/// The rules of every restore, shown by `offdisk restore --help` and offdisk-restore(8).
pub const RESTORE_RULES: &str = "\
Each PATH is recreated below DEST at the same relative place (/home/a/docs becomes \
DEST/home/a/docs), with contents, modes, nanosecond mtimes, symlinks, hard links, xattrs and \
ACLs, and owners when run as root. Contents are checked against the generation's BLAKE3 \
checksums on the way.

DEST may already hold anything, and a restore from a mounted disk (--target, --disk) and one \
from the disk read in userspace (--from) follow the same rules:
  - nothing already in DEST is overwritten: an existing file, symlink or node is left \
alone and named (\"exists, not overwritten\"); restore into an empty DEST to get every file;
  - nothing in DEST is followed: a symbolic link (or file) where a directory goes is named \
and everything below it left out;
  - a PATH that runs through a symbolic link stored in the generation is refused;
  - set-user-ID and set-group-ID bits of files come back only with --keep-setid, device \
nodes only with --devices; FIFOs and sockets are recreated.

Exit status: 0 everything restored exactly; 1 something was left out, changed (set-id bits \
dropped) or did not match its checksum (each one named as a warning), or wrong usage; 2 wrong \
passphrase (--from); 4 the disk or DEST could not be read or written.";

pub const BACKUP_EXIT_STATUS: &str = "\
Exit status:
  0   the generation is complete and holds everything the sources had.
  1   failed: wrong usage, a refused target, or the shrink guard refused the run (a source
      is empty or lost more than shrink_limit, default 50%, of its files or bytes); no
      generation was made and nothing was pruned.
  4   an I/O error on the backup disk, or no space left; every complete generation is intact.
  5   another offdisk run is using the target.
  23  partial: the generation was made, but some entries could not be backed up (permission
      denied, I/O error, a name too long for the target); the summary, --json and the
      generation's not-backed-up.tsv name them (as rsync's 23).
  24  the generation was made, but some entries vanished or were replaced while being read
      (as rsync's 24).

Files reached on either side are never followed through symbolic links: see offdisk-format(5).";

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
    pub fn policy(&self) -> Retention {
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
    /// Make the generation even if a source lost more than the shrink guard allows (default:
    /// half of its files or bytes since the previous generation), or became empty.
    #[arg(long)]
    pub allow_shrink: bool,
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
fn resolve(t: &TargetArgs) -> Result<Target, Failure> {
    let config = Config::load_default(t.config.as_deref())?;
    for w in config.warnings() {
        eprintln!("offdisk: warning: {w}");
    }
    Ok(Target::resolve(config, t.target.as_deref(), t.disk.as_deref())?)
}

fn threads(t: &TargetArgs) -> usize {
    job::threads(t.threads)
}

use crate::backup::human_bytes;

pub fn run_backup(a: BackupArgs, verbose: bool) -> CliResult {
    let r = resolve(&a.target)?;
    let overrides = job::Overrides {
        sources: a.sources.clone(),
        excludes: a.exclude.clone(),
        exclude_files: a.exclude_from.clone(),
        include_caches: a.include_caches,
        cross_filesystems: a.cross_filesystems,
        retention: a.retention.policy(),
        allow_shrink: a.allow_shrink,
    };
    let policy = BackupPolicy::for_disk(&r.config, r.disk.as_ref()).with(&overrides)?;
    let backup = BackupJob { target: r, policy, threads: threads(&a.target), time: a.at };
    let mut bar = super::progress::Progress::new(!a.no_progress && !a.json && std::io::stderr().is_terminal());
    let report = backup.run(&mut |ev: &job::Event| bar.event(ev), &job::Stop::new());
    bar.finish();
    let report = report?;
    let s = &report.summary;

    if a.json {
        let v = serde_json::json!({
            "generation": s.info.name,
            "path": s.path,
            "info": s.info,
            "pruned": s.pruned,
            "prune_seconds": s.prune_seconds,
            "cleaned_up": s.cleaned,
            "warnings": report.warnings().collect::<Vec<_>>(),
            "not_backed_up": s.not_backed_up,
            "vanished": s.vanished,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in report.warnings() {
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
        if let Some(inc) = &i.incomplete {
            let mut l = format!("incomplete: {} not backed up", count(inc.not_backed_up as usize, "entry", "entries"));
            if inc.vanished > 0 {
                l.push_str(&format!(", {} vanished or changed while being read", inc.vanished));
            }
            l.push_str(&format!(" (all listed in {}): {}", backup::NOT_BACKED_UP_FILE, inc.paths.join(", ")));
            println!("{l}");
        }
    }
    Ok(report.exit_code())
}

pub fn run_verify(a: VerifyArgs, _verbose: bool) -> CliResult {
    if a.from.from.is_some() {
        return super::anywhere::run_verify(&a.from, a.generation, a.quick, threads(&a.target), a.json);
    }
    let r = resolve(&a.target)?;
    let verify = VerifyJob { root: r.root, generation: a.generation.clone(), quick: a.quick, threads: threads(&a.target) };
    let run = verify.run(&mut job::Quiet, &job::Stop::new())?;
    let report = &run.report;
    if a.json {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
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
            run.seconds,
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

/// The warnings and summary a restore ends with, in the same words for both routes (a
/// mounted disk, `--from`): the wording is the library's.
pub(super) fn print_restore_end(generation: &str, warnings: &[String], skipped_xattrs: u64, files: u64, bytes: u64, dest: &std::path::Path) {
    for w in warnings {
        eprintln!("offdisk: warning: {w}");
    }
    if let Some(note) = backup::restore::skipped_xattrs_note(skipped_xattrs) {
        eprintln!("offdisk: warning: {note}");
    }
    println!("{}", backup::restore::summary_line(generation, files, bytes, dest, warnings.len()));
}

pub fn run_restore(a: RestoreArgs, _verbose: bool) -> CliResult {
    if a.from.from.is_some() {
        let opts = crate::offline::restore::RestoreOptions {
            generation: a.generation,
            paths: a.paths,
            dest: a.to,
            rules: a.policy.rules(),
            threads: threads(&a.target),
        };
        return super::anywhere::run_restore(&a.from, opts, a.json);
    }
    let r = resolve(&a.target)?;
    let opts = backup::restore::RestoreOptions {
        root: r.root.clone(),
        generation: a.generation.clone(),
        paths: a.paths.clone(),
        dest: a.to.clone(),
        threads: threads(&a.target),
        rules: a.policy.rules(),
    };
    let s = backup::restore::restore(&opts)?;
    if a.json {
        let v = serde_json::json!({ "generation": s.generation, "stats": s.stats, "warnings": s.warnings });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_restore_end(&s.generation, &s.warnings, s.stats.skipped_xattrs, s.stats.files, s.stats.bytes, &a.to);
    }
    Ok(if s.warnings.is_empty() { exit::OK } else { exit::USAGE })
}
