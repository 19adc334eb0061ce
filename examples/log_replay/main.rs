//! Power-cut replay for the VM tests: reads a dm-log-writes log and rebuilds the logged disk
//! as it stood after any entry, or as a power cut could have left it, and runs a check on
//! each such state. A test tool, not part of offdisk.
//!
//! ```text
//! log_replay info   LOG [--device-bytes N]              entries, flushes, marks, per step
//! log_replay replay LOG IMAGE (--to N | --to-mark NAME) [--from M]
//!                                                       IMAGE as after entries [0, N)
//! log_replay run    LOG IMAGE --states N [--random R] [--deep D] [--seed S]
//!                   [--watch OFFSET:LEN] [--plan-only] -- CHECK [ARGS...]
//! ```
//!
//! `run` plans the crash states (see `plan`), brings IMAGE to each in turn — forward through
//! the log, the random subsets written and undone around the check — and runs CHECK with:
//! `PC_STATE` (1-based), `PC_TOTAL`, `PC_KIND` (mark|flush|random), `PC_STEP`, `PC_PHASE`
//! (before|during|after), `PC_PREFIX` (entries kept for good), `PC_KEPT` / `PC_DROPPED`
//! (writes after the last flush kept / lost), `PC_DEEP` (1: run the expensive checks too),
//! `PC_WATCH_KEY` (equal for two states only if the watched byte range is equal),
//! `PC_PART_START` / `PC_PART_SECTORS` (the first GPT partition, 512-byte sectors; empty
//! without a valid GPT) and `PC_GPT` (primary|backup|none). CHECK exits 0 when the state is
//! consistent. The summary ends with `powercut: N states checked, M failed`.

mod gpt;
mod image;
mod log;
mod plan;

use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Replays dm-log-writes logs: crash states of a logged disk")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Summarise a log: entries, flushes, marks and the entries between them.
    Info {
        log: PathBuf,
        /// Size of the logged device (bounds where entries may write).
        #[arg(long)]
        device_bytes: Option<u64>,
    },
    /// Rebuild IMAGE as it stood after entries [0, N) (IMAGE holds the state at entry FROM).
    Replay {
        log: PathBuf,
        image: PathBuf,
        #[arg(long, conflicts_with = "to_mark")]
        to: Option<usize>,
        /// Up to (not including) the first mark of this name.
        #[arg(long)]
        to_mark: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: usize,
    },
    /// Check crash states: plan them, rebuild each, run CHECK on it.
    Run {
        log: PathBuf,
        image: PathBuf,
        #[arg(long)]
        states: usize,
        #[arg(long, default_value_t = 0)]
        random: usize,
        #[arg(long, default_value_t = 0)]
        deep: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// OFFSET:LEN in bytes of the range whose changes PC_WATCH_KEY tracks.
        #[arg(long, value_parser = parse_watch)]
        watch: Option<image::Watch>,
        /// Keep this file holding the plaintext of the LUKS data segment of each state (for
        /// checking the filesystem without dm-crypt); needs --final and --passphrase-file.
        #[arg(long, requires_all = ["final_image", "passphrase_file"])]
        decrypt: Option<PathBuf>,
        /// The disk as the scenario left it: where its LUKS volume and key are found.
        #[arg(long = "final")]
        final_image: Option<PathBuf>,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Print the plan only.
        #[arg(long)]
        plan_only: bool,
        #[arg(last = true, required_unless_present = "plan_only")]
        check: Vec<String>,
    },
}

fn parse_watch(s: &str) -> Result<image::Watch, String> {
    let (a, b) = s.split_once(':').ok_or("want OFFSET:LEN")?;
    Ok(image::Watch { start: a.parse().map_err(|e| format!("{e}"))?, len: b.parse().map_err(|e| format!("{e}"))? })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("log_replay: {e}");
            ExitCode::from(2)
        }
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn open_log(path: &PathBuf, device_bytes: u64) -> Res<log::Log> {
    Ok(log::Log::open(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?, device_bytes)?)
}

fn open_image(path: &PathBuf) -> Res<(File, u64)> {
    let f = OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

fn run(cli: Cli) -> Res<ExitCode> {
    match cli.cmd {
        Cmd::Info { log, device_bytes } => {
            let log = open_log(&log, device_bytes.unwrap_or(u64::MAX / 65536 * 65536))?;
            info(&log);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { log, image, to, to_mark, from } => {
            let (f, len) = open_image(&image)?;
            let log = open_log(&log, len)?;
            let end = match (to, to_mark) {
                (Some(n), _) => n,
                (None, Some(m)) => log.marks().into_iter().find(|(_, name)| *name == m).map(|(i, _)| i).ok_or_else(|| format!("no mark '{m}' in the log"))?,
                (None, None) => log.entries.len(),
            };
            if end > log.entries.len() || from > end {
                return Err(format!("entries {from}..{end} are not in a log of {}", log.entries.len()).into());
            }
            let mut img = image::Image::new(&log, f, None);
            img.applied = from;
            img.advance_to(end)?;
            img.sync()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { log, image, states, random, deep, seed, watch, decrypt, final_image, passphrase_file, plan_only, check } => {
            let (f, len) = open_image(&image)?;
            let log = open_log(&log, len)?;
            let plain = match (decrypt, final_image, passphrase_file) {
                (Some(d), Some(fin), Some(pass)) => Some(plain_view(&d, &fin, &pass)?),
                _ => None,
            };
            let p = plan::plan(&log, &plan::PlanOptions { states, random, deep, seed });
            if plan_only {
                for (k, s) in p.iter().enumerate() {
                    println!("{} {} {} {} prefix={} kept={} dropped={} deep={}", k + 1, s.kind.name(), s.context.step, s.context.phase, s.prefix, s.extra.len(), s.dropped, s.deep);
                }
                return Ok(ExitCode::SUCCESS);
            }
            run_checks(&log, f, watch, plain, &p, &check)
        }
    }
}

/// The first partition of a disk image, as offdisk's LUKS code reads a device.
struct PartitionIo {
    file: File,
    offset: u64,
    len: u64,
}

impl offdisk::luks::io::BlockIo for PartitionIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, self.offset + offset)
    }
    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only"))
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
}

/// Unlocks the final disk's LUKS volume (its volume key and data segment never change after
/// init) and sets up the plaintext file for the states.
fn plain_view(path: &PathBuf, final_image: &PathBuf, pass_file: &PathBuf) -> Res<image::Plain> {
    let fin = File::open(final_image).map_err(|e| format!("{}: {e}", final_image.display()))?;
    let part = gpt::first_partition(&fin).ok_or("the final disk has no valid partition table")?;
    let io = PartitionIo { file: fin, offset: part.start * 512, len: part.sectors * 512 };
    let vol = offdisk::luks::Volume::load_io(&io)?;
    let pass = offdisk::secret::Passphrase::from_slice(&std::fs::read(pass_file)?);
    let key = vol.unlock_io(&io, &pass, None)?.key;
    let seg = vol.crypt_segment()?;
    let len = seg.size.unwrap_or(io.len.saturating_sub(seg.offset));
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.set_len(len)?;
    Ok(image::Plain {
        file,
        start: io.offset + seg.offset,
        len,
        cipher: offdisk::luks::cipher::SectorCipher::new(&seg.cipher, key.expose())?,
        sector_size: seg.sector_size as u64,
        iv_tweak: seg.iv_tweak,
    })
}

fn info(log: &log::Log) {
    let e = &log.entries;
    let count = |f: &dyn Fn(&log::Entry) -> bool| e.iter().filter(|x| f(x)).count();
    println!("sectorsize {}", log.sectorsize);
    println!("entries {}", e.len());
    println!("writes {}", count(&|x| x.changes_device() && !x.is_discard()));
    println!("discards {}", count(&|x| x.is_discard()));
    println!("flushes {}", count(&|x| x.is_flush() && !x.is_mark()));
    println!("fua {}", count(&|x| x.is_fua()));
    let bytes: u64 = e.iter().filter(|x| x.changes_device() && !x.is_discard()).map(|x| x.nr_sectors * log.sectorsize).sum();
    println!("bytes_written {bytes}");
    let mut prev = 0;
    for (i, m) in log.marks() {
        let between = &e[prev..i];
        let w = between.iter().filter(|x| x.changes_device()).count();
        let b = between.iter().filter(|x| x.is_barrier()).count();
        println!("mark {i} {m} (since the previous mark: {w} writes, {b} flush/FUA)");
        prev = i + 1;
    }
}

#[derive(Default)]
struct Tally {
    states: usize,
    by_kind: BTreeMap<&'static str, usize>,
    deep: usize,
    failed: usize,
}

fn run_checks(log: &log::Log, f: File, watch: Option<image::Watch>, plain: Option<image::Plain>, p: &[plan::State], check: &[String]) -> Res<ExitCode> {
    let mut img = image::Image::new(log, f, watch);
    img.plain = plain;
    let mut tallies: BTreeMap<(String, &'static str), Tally> = BTreeMap::new();
    let (mut t_replay, mut t_cheap, mut t_deep) = (0f64, (0f64, 0usize), (0f64, 0usize));
    let mut failed = Vec::new();
    for (k, s) in p.iter().enumerate() {
        let started = Instant::now();
        img.advance_to(s.prefix)?;
        for &e in &s.extra {
            img.apply_temporary(e)?;
        }
        let part = gpt::first_partition(&img.file);
        t_replay += started.elapsed().as_secs_f64();
        println!(
            "# state {}/{}: {} in {} ({}), prefix {} of {}, kept {} lost {}{}",
            k + 1,
            p.len(),
            s.kind.name(),
            s.context.step,
            s.context.phase,
            s.prefix,
            log.entries.len(),
            s.extra.len(),
            s.dropped,
            if s.deep { ", deep" } else { "" }
        );
        let checked = Instant::now();
        let status = Command::new(&check[0])
            .args(&check[1..])
            .env("PC_STATE", (k + 1).to_string())
            .env("PC_TOTAL", p.len().to_string())
            .env("PC_KIND", s.kind.name())
            .env("PC_STEP", &s.context.step)
            .env("PC_PHASE", s.context.phase)
            .env("PC_PREFIX", s.prefix.to_string())
            .env("PC_KEPT", s.extra.len().to_string())
            .env("PC_DROPPED", s.dropped.to_string())
            .env("PC_DEEP", if s.deep { "1" } else { "0" })
            .env("PC_WATCH_KEY", img.watch_key())
            .env("PC_PART_START", part.map(|p| p.start.to_string()).unwrap_or_default())
            .env("PC_PART_SECTORS", part.map(|p| p.sectors.to_string()).unwrap_or_default())
            .env("PC_GPT", match part {
                None => "none",
                Some(p) if p.from_backup => "backup",
                Some(_) => "primary",
            })
            .status()
            .map_err(|e| format!("{}: {e}", check[0]))?;
        let secs = checked.elapsed().as_secs_f64();
        let t = if s.deep { &mut t_deep } else { &mut t_cheap };
        t.0 += secs;
        t.1 += 1;
        let undo = Instant::now();
        img.undo_temporary()?;
        t_replay += undo.elapsed().as_secs_f64();
        let tally = tallies.entry((s.context.step.clone(), s.context.phase)).or_default();
        tally.states += 1;
        *tally.by_kind.entry(s.kind.name()).or_default() += 1;
        tally.deep += s.deep as usize;
        if !status.success() {
            tally.failed += 1;
            failed.push(format!("state {} ({} in {} {}, prefix {}, extra {:?})", k + 1, s.kind.name(), s.context.step, s.context.phase, s.prefix, s.extra));
        }
    }
    println!("# crash states per step:");
    for ((step, phase), t) in &tallies {
        let kinds: Vec<String> = t.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("#   {step:<14} {phase:<7} {:>5} states ({}; deep {}), {} failed", t.states, kinds.join(", "), t.deep, t.failed);
    }
    let avg = |(s, n): (f64, usize)| if n == 0 { 0.0 } else { s / n as f64 };
    println!(
        "# timing: replay {:.3} s in all ({:.1} ms/state); check {:.2} s/state cheap ({} states), {:.2} s/state deep ({} states)",
        t_replay,
        1000.0 * t_replay / p.len().max(1) as f64,
        avg(t_cheap),
        t_cheap.1,
        avg(t_deep),
        t_deep.1
    );
    for f in &failed {
        println!("# failed: {f}");
    }
    println!("powercut: {} states checked, {} failed", p.len(), failed.len());
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
