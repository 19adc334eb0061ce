//! `--from DEV_OR_IMAGE` for `generations`, `verify` and `restore`, and `offdisk ls`:
//! reading a backup disk on another machine, as an ordinary user, without root,
//! device-mapper or mounting. Parsing and rendering only: the work is in
//! [`crate::offline`].

use crate::backup::human_bytes;
use super::prompt::{read_passphrase, KeySource};
use super::{CliResult, Failure};
use crate::backup::generation::format_time_iso;
use crate::error::exit;
use crate::offline::{self, ls, restore, source::FileKind, verify, BackupDisk};
use clap::Args;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Reading the disk directly (flattened into `generations`, `verify`, `restore`).
#[derive(Args, Debug, Clone, Default)]
pub struct FromArgs {
    /// Read the backup disk DEV_OR_IMAGE directly in userspace, as any user who can read it:
    /// a whole disk (its GPT partition is found), its LUKS partition, or an image file of
    /// either. No root, device-mapper or mount is needed.
    #[arg(long, value_name = "DEV_OR_IMAGE", conflicts_with_all = ["target", "disk"])]
    pub from: Option<PathBuf>,
    /// With --from: read the passphrase from FILE (`-`: standard input) instead of asking on
    /// the terminal. The whole content is the key, as cryptsetup uses key files.
    #[arg(long, value_name = "FILE", requires = "from")]
    pub key_file: Option<PathBuf>,
}

/// What a restore may recreate beyond plain files.
#[derive(Args, Debug, Clone, Default)]
pub struct RestorePolicyArgs {
    /// Keep set-user-ID and set-group-ID bits (by default they are dropped, with a warning).
    #[arg(long)]
    pub keep_setid: bool,
    /// Recreate device nodes (by default they are skipped, with a warning; needs root).
    #[arg(long)]
    pub devices: bool,
}

impl RestorePolicyArgs {
    pub fn rules(&self) -> crate::backup::dest::Rules {
        crate::backup::dest::Rules { keep_setid: self.keep_setid, devices: self.devices }
    }
}

/// The how-to shown at the end of `offdisk ls --help` and in offdisk-ls(8).
pub const READING_ANYWHERE: &str = "\
Reading a backup disk on another machine:

  offdisk generations --from /dev/sdb
  offdisk ls --from /dev/sdb /home/alice
  offdisk restore --from /dev/sdb /home/alice/thesis --to ~/restored
  offdisk verify --from backup.img --key-file ./passphrase

--from takes a whole disk (its GPT partition is found), its LUKS partition, or an image file \
of either. The disk is unlocked, decrypted and read in userspace: no root, device-mapper, \
kernel module or mount is needed, only read access to the device (e.g. the `disk` group) or \
the image, and nothing is written to it.";

#[derive(Args, Debug)]
#[command(after_long_help = READING_ANYWHERE)]
pub struct LsArgs {
    /// The backup disk: a whole disk, its LUKS partition, or an image file of either.
    #[arg(long, value_name = "DEV_OR_IMAGE")]
    pub from: PathBuf,
    /// Read the passphrase from FILE (`-`: standard input) instead of asking on the terminal.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Generation to list (name, unique prefix, or `latest`) [default: newest].
    #[arg(long, value_name = "G")]
    pub generation: Option<String>,
    /// Path as it was backed up (e.g. /home/a/docs); `/` lists the top of the generation.
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: PathBuf,
    /// Print the listing as JSON.
    #[arg(long)]
    pub json: bool,
}

fn open(f: &FromArgs) -> Result<BackupDisk, Failure> {
    let path = f.from.as_ref().ok_or_else(|| Failure::usage("--from DEV_OR_IMAGE is needed"))?;
    let key_file = f.key_file.clone();
    let mut ask = |loc: &offline::volume::Located| match &key_file {
        Some(k) => read_passphrase(KeySource::File(k)),
        None => {
            let what = match &loc.partition {
                Some(p) => format!("{} (partition {})", loc.path.display(), p.number),
                None => loc.path.display().to_string(),
            };
            read_passphrase(KeySource::Terminal { prompt: &format!("Enter passphrase for {what}: "), confirm: false })
        }
    };
    let disk = BackupDisk::open(path, &mut ask)?;
    for w in &disk.warnings {
        eprintln!("offdisk: warning: {w}");
    }
    Ok(disk)
}

pub fn run_generations(f: &FromArgs, json: bool) -> CliResult {
    let disk = open(f)?;
    let src = &disk.source;
    let gens = offline::generations(src)?;
    let rows: Vec<_> = gens.iter().map(|g| (&g.generation, offline::info(src, &g.node))).collect();
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(g, i)| {
                serde_json::json!({
                    "name": g.name,
                    "path": g.path,
                    "time": format_time_iso(g.time),
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
        for (g, i) in &rows {
            let (files, bytes, new) = match i {
                Some(i) => (i.files.to_string(), human_bytes(i.bytes), human_bytes(i.new_bytes)),
                None => ("?".into(), "?".into(), "?".into()),
            };
            println!("{:<22} {:<20} {:>10} {:>11} {:>11}  {}", g.name, format_time_iso(g.time), files, bytes, new, g.path.display());
        }
    }
    Ok(exit::OK)
}

pub fn run_verify(f: &FromArgs, generation: Option<String>, quick: bool, threads: usize, json: bool) -> CliResult {
    let disk = open(f)?;
    let started = std::time::Instant::now();
    let report = verify::verify(&disk.source, &verify::VerifyOptions { generation, quick, threads })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        eprintln!(
            "verify: {} generations, {} files, {} ({} read) in {:.1} s: {}",
            report.generations.len(),
            report.files,
            human_bytes(report.bytes),
            human_bytes(report.bytes_read),
            started.elapsed().as_secs_f64(),
            if report.problems.is_empty() { "all good".to_string() } else { format!("{} problems", report.problems.len()) }
        );
    }
    Ok(if report.problems.is_empty() { exit::OK } else { exit::USAGE })
}

pub fn run_restore(f: &FromArgs, opts: restore::RestoreOptions, json: bool) -> CliResult {
    let disk = open(f)?;
    let dest = opts.dest.clone();
    let s = restore::restore(&disk.source, &opts)?;
    if json {
        let v = serde_json::json!({ "generation": s.generation, "stats": s.stats, "warnings": s.warnings });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        super::backup::print_restore_end(&s.generation, &s.warnings, s.stats.skipped_xattrs, s.stats.files, s.stats.bytes, &dest);
    }
    Ok(if s.warnings.is_empty() { exit::OK } else { exit::USAGE })
}

pub fn run_ls(a: LsArgs, _verbose: bool) -> CliResult {
    let disk = open(&FromArgs { from: Some(a.from.clone()), key_file: a.key_file.clone() })?;
    let listing = ls::ls(&disk.source, a.generation.as_deref(), &a.path)?;
    let esc = |b: &[u8]| crate::backup::record::escape(b);
    if a.json {
        let list: Vec<_> = listing
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": esc(e.path.as_os_str().as_bytes()),
                    "mode": ls::mode_string(e.stat.kind, e.stat.perm),
                    "uid": e.stat.uid,
                    "gid": e.stat.gid,
                    "size": e.stat.size,
                    "mtime": format!("{}.{:09}", e.stat.mtime.0, e.stat.mtime.1),
                    "target": e.target.as_deref().map(esc),
                    "error": e.error,
                })
            })
            .collect();
        let v = serde_json::json!({ "generation": listing.generation, "entries": list });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::OK);
    }
    let mut failed = 0;
    for e in &listing.entries {
        let name = esc(e.path.as_os_str().as_bytes());
        if let Some(err) = &e.error {
            failed += 1;
            println!("?????????? {name}: {err}");
            continue;
        }
        let size = match e.stat.kind {
            FileKind::CharDev | FileKind::BlockDev => format!("{},{}", e.stat.rdev.0, e.stat.rdev.1),
            _ => e.stat.size.to_string(),
        };
        let when = format_time_iso(e.stat.mtime.0);
        let arrow = e.target.as_deref().map(|t| format!(" -> {}", esc(t))).unwrap_or_default();
        println!("{} {:>6} {:>6} {:>12} {} {name}{arrow}", ls::mode_string(e.stat.kind, e.stat.perm), e.stat.uid, e.stat.gid, size, when);
    }
    eprintln!("{} entries in generation {}", listing.entries.len(), listing.generation);
    Ok(if failed == 0 { exit::OK } else { exit::USAGE })
}
