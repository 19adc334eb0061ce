//! `offdisk luks ...`: the expert LUKS command family, with cryptsetup's option names
//! and exit codes (1 bad arguments, 2 no key with that passphrase, 3 out of memory,
//! 4 device error, 5 busy).

use super::prompt::{confirm_yes, read_passphrase, KeySource};
use super::{CliResult, Failure};
use crate::error::exit;
use crate::luks::{self, backup, dump, update, FormatOptions, PbkdfOptions, PbkdfType, Volume};
use crate::secret::Passphrase;
use clap::{Args, Subcommand};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Args, Debug)]
pub struct LuksArgs {
    #[command(subcommand)]
    pub command: Box<LuksCommand>,
}

#[derive(Subcommand, Debug)]
pub enum LuksCommand {
    /// Create a new LUKS2 volume on IMAGE (destroys its contents).
    Format(FormatArgs),
    /// Show the LUKS header of IMAGE.
    Dump(DumpArgs),
    /// Add a passphrase (keyslot), authorised by an existing one.
    AddKey(AddKeyArgs),
    /// Remove the keyslot a passphrase opens.
    RemoveKey(RemoveKeyArgs),
    /// Replace a passphrase with a new one.
    ChangeKey(ChangeKeyArgs),
    /// Wipe keyslot N.
    KillSlot(KillSlotArgs),
    /// Save the LUKS header and keyslots of IMAGE to a file.
    HeaderBackup(HeaderBackupArgs),
    /// Put a saved LUKS header back onto IMAGE (checked to fit this device first).
    HeaderRestore(HeaderRestoreArgs),
    /// Rewrite both LUKS2 header copies from the valid one (after damage or an interrupted update).
    Repair(RepairArgs),
    /// Measure the userspace ciphers and key derivation on this machine (as cryptsetup benchmark).
    Benchmark(BenchmarkArgs),
}

/// Key derivation options for new keyslots (as cryptsetup's).
#[derive(Args, Debug, Clone)]
pub struct PbkdfArgs {
    /// Key derivation function for the new keyslot.
    #[arg(long, value_name = "argon2id|argon2i|pbkdf2", default_value = "argon2id")]
    pub pbkdf: String,
    /// Argon2 memory cost in KiB (default: calibrated, at most 1 GiB and half of RAM).
    #[arg(long, value_name = "KiB")]
    pub pbkdf_memory: Option<u32>,
    /// Argon2 parallel lanes (default: min(4, CPUs)).
    #[arg(long, value_name = "N")]
    pub pbkdf_parallel: Option<u32>,
    /// Use this time cost (Argon2) or iteration count (PBKDF2) instead of calibrating.
    #[arg(long, value_name = "N")]
    pub pbkdf_force_iterations: Option<u32>,
    /// Milliseconds the key derivation should take on this machine.
    #[arg(short = 'i', long, value_name = "MS", default_value_t = 2000)]
    pub iter_time: u32,
    /// Hash for PBKDF2, the anti-forensic splitter and the key digest.
    #[arg(long, value_name = "sha1|sha256|sha512", default_value = "sha256")]
    pub hash: String,
}

impl PbkdfArgs {
    fn options(&self) -> Result<PbkdfOptions, Failure> {
        Ok(PbkdfOptions {
            kind: PbkdfType::parse(&self.pbkdf)?,
            hash: self.hash.clone(),
            iter_time_ms: self.iter_time,
            memory_kib: self.pbkdf_memory,
            parallel: self.pbkdf_parallel,
            force_iterations: self.pbkdf_force_iterations,
        })
    }
}

/// How a new LUKS2 volume is made, with cryptsetup luksFormat's option names, short flags and
/// defaults. Shared by `offdisk luks format` and `offdisk init`.
#[derive(Args, Debug, Clone)]
pub struct LuksFormatArgs {
    /// Cipher for data and keyslots.
    #[arg(short = 'c', long, default_value = "aes-xts-plain64")]
    pub cipher: String,
    /// Volume key size in bits (512 for aes-xts-plain64 means AES-256).
    #[arg(short = 's', long, value_name = "BITS", default_value_t = 512)]
    pub key_size: u32,
    /// Encryption sector size in bytes: 512, 1024, 2048 or 4096 (default: 4096 for image
    /// files and 4K-sector disks, 512 for other devices).
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// LUKS2 subsystem.
    #[arg(long)]
    pub subsystem: Option<String>,
    /// Use this UUID instead of a random one.
    #[arg(long)]
    pub uuid: Option<String>,
    #[command(flatten)]
    pub pbkdf: PbkdfArgs,
}

impl LuksFormatArgs {
    /// The LUKS layer's format options, with the LUKS2 `label`.
    pub fn options(&self, label: Option<String>) -> Result<FormatOptions, Failure> {
        if self.key_size == 0 || self.key_size % 8 != 0 {
            return Err(Failure::usage("--key-size is in bits and must be a multiple of 8"));
        }
        if let Some(ss) = self.sector_size {
            if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
                return Err(Failure::usage("--sector-size must be 512, 1024, 2048 or 4096"));
            }
        }
        Ok(FormatOptions {
            pbkdf: self.pbkdf.options()?,
            cipher: self.cipher.clone(),
            key_size_bits: self.key_size,
            sector_size: self.sector_size,
            label,
            subsystem: self.subsystem.clone(),
            uuid: self.uuid.clone(),
            volume_key: None,
        })
    }
}

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// Device or image file.
    pub image: PathBuf,
    /// Read the passphrase from this file ("-": standard input) instead of the terminal.
    #[arg(short = 'd', long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'q', long, visible_alias = "batch-mode")]
    pub batch: bool,
    /// LUKS version to write (only luks2).
    #[arg(short = 'M', long = "type", value_name = "luks2", default_value = "luks2")]
    pub luks_type: String,
    /// LUKS2 label.
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub format: LuksFormatArgs,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    pub image: PathBuf,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also show the volume key (needs a passphrase). Handle the output with care.
    #[arg(long)]
    pub dump_volume_key: bool,
    /// Passphrase file for --dump-volume-key ("-": standard input).
    #[arg(short = 'd', long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Only try this keyslot.
    #[arg(short = 'S', long, value_name = "N")]
    pub key_slot: Option<usize>,
}

#[derive(Args, Debug)]
pub struct AddKeyArgs {
    pub image: PathBuf,
    /// File with an existing passphrase ("-": standard input).
    #[arg(short = 'd', long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// File with the new passphrase.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// Keyslot for the new passphrase (default: the first free one).
    #[arg(short = 'S', long, value_name = "N")]
    pub key_slot: Option<usize>,
    #[command(flatten)]
    pub pbkdf: PbkdfArgs,
}

#[derive(Args, Debug)]
pub struct RemoveKeyArgs {
    pub image: PathBuf,
    /// File with the passphrase to remove ("-": standard input).
    #[arg(short = 'd', long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Do not ask for confirmation when removing the last keyslot.
    #[arg(short = 'q', long, visible_alias = "batch-mode")]
    pub batch: bool,
}

#[derive(Args, Debug)]
pub struct ChangeKeyArgs {
    pub image: PathBuf,
    /// File with the current passphrase ("-": standard input).
    #[arg(short = 'd', long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// File with the new passphrase.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// Only change this keyslot.
    #[arg(short = 'S', long, value_name = "N")]
    pub key_slot: Option<usize>,
    #[command(flatten)]
    pub pbkdf: PbkdfArgs,
}

#[derive(Args, Debug)]
pub struct KillSlotArgs {
    pub image: PathBuf,
    /// Keyslot to wipe.
    pub slot: usize,
    /// A passphrase of another keyslot, proving access (asked for unless --batch).
    #[arg(short = 'd', long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Do not ask for confirmation or another passphrase.
    #[arg(short = 'q', long, visible_alias = "batch-mode")]
    pub batch: bool,
}

#[derive(Args, Debug)]
pub struct HeaderBackupArgs {
    pub image: PathBuf,
    /// File to create (must not exist).
    #[arg(long, value_name = "FILE")]
    pub header_backup_file: PathBuf,
}

#[derive(Args, Debug)]
pub struct HeaderRestoreArgs {
    pub image: PathBuf,
    /// Backup made by header-backup (or cryptsetup luksHeaderBackup).
    #[arg(long, value_name = "FILE")]
    pub header_backup_file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(short = 'q', long, visible_alias = "batch-mode")]
    pub batch: bool,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    pub image: PathBuf,
}

#[derive(Args, Debug)]
pub struct BenchmarkArgs {
    /// Print a JSON list instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only this cipher (e.g. aes-xts-plain64); with --key-size, only that key size.
    #[arg(short = 'c', long)]
    pub cipher: Option<String>,
    /// Key size in bits for --cipher (default: the sizes cryptsetup benchmark reports).
    #[arg(short = 's', long, value_name = "BITS", requires = "cipher")]
    pub key_size: Option<u32>,
    /// Seconds to measure each cipher direction.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub seconds: f64,
}

pub fn run(args: LuksArgs, verbose: bool) -> CliResult {
    match *args.command {
        LuksCommand::Format(a) => run_format(a, verbose),
        LuksCommand::Dump(a) => run_dump(a),
        LuksCommand::AddKey(a) => run_add_key(a, verbose),
        LuksCommand::RemoveKey(a) => run_remove_key(a, verbose),
        LuksCommand::ChangeKey(a) => run_change_key(a, verbose),
        LuksCommand::KillSlot(a) => run_kill_slot(a, verbose),
        LuksCommand::HeaderBackup(a) => run_header_backup(a, verbose),
        LuksCommand::HeaderRestore(a) => run_header_restore(a, verbose),
        LuksCommand::Repair(a) => run_repair(a, verbose),
        LuksCommand::Benchmark(a) => run_benchmark(a),
    }
}

/// Opens the device; for writing a block device, exclusively (a mounted or open device is
/// busy). Also takes an advisory lock, shared for reading and exclusive for writing, so two
/// offdisk commands never update one header at the same time.
fn open_device(path: &Path, write: bool) -> Result<Flock<File>, Failure> {
    let file = open_file(path, write)?;
    let how = if write { FlockArg::LockExclusiveNonblock } else { FlockArg::LockSharedNonblock };
    Flock::lock(file, how).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            Failure::new(exit::BUSY, format!("{} is in use by another offdisk command", path.display()))
        } else {
            Failure::new(exit::DEVICE, format!("cannot lock {}: {errno}", path.display()))
        }
    })
}

fn open_file(path: &Path, write: bool) -> Result<File, Failure> {
    let mut o = OpenOptions::new();
    o.read(true).write(write);
    let is_block = std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false);
    if write && is_block {
        o.custom_flags(libc::O_EXCL);
    }
    o.open(path).map_err(|e| {
        let code = if e.raw_os_error() == Some(libc::EBUSY) { exit::BUSY } else { exit::DEVICE };
        Failure::new(code, format!("cannot open {}: {e}", path.display()))
    })
}

fn load(dev: &File, path: &Path) -> Result<Volume, Failure> {
    Volume::load(dev).map_err(|e| {
        let f: Failure = e.into();
        Failure { message: format!("{}: {}", path.display(), f.message), ..f }
    })
}

fn passphrase(file: &Option<PathBuf>, prompt: &str, confirm: bool) -> Result<Passphrase, Failure> {
    let src = match file {
        Some(p) => KeySource::File(p),
        None => KeySource::Terminal { prompt, confirm },
    };
    read_passphrase(src).map_err(|e| match file {
        Some(p) => Failure::usage(format!("reading key file {}: {e}", p.display())),
        None => Failure::usage(format!("reading passphrase: {e}")),
    })
}

fn confirm(batch: bool, question: &str) -> Result<(), Failure> {
    if batch {
        return Ok(());
    }
    match confirm_yes(question) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::usage("operation aborted")),
        Err(e) => Err(Failure::usage(format!("reading confirmation: {e}"))),
    }
}

fn run_format(a: FormatArgs, verbose: bool) -> CliResult {
    if a.luks_type != "luks2" {
        return Err(Failure::usage(format!("--type {}: offdisk formats only luks2", a.luks_type)));
    }
    let opts = a.format.options(a.label.clone())?;
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    confirm(a.batch, &format!("WARNING!\n========\nThis will overwrite data on {} irrevocably.", a.image.display()))?;
    let pass = passphrase(&a.key_file, &format!("Enter passphrase for {}: ", a.image.display()), true)?;
    let vol = luks::format(dev, &opts, &pass)?;
    if verbose {
        eprintln!("Key slot 0 created. UUID {}", vol.uuid());
    }
    Ok(exit::OK)
}

fn run_dump(a: DumpArgs) -> CliResult {
    let lock = open_device(&a.image, false)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    let key = if a.dump_volume_key {
        let pass = passphrase(&a.key_file, &format!("Enter passphrase for {}: ", a.image.display()), false)?;
        Some(vol.unlock(dev, &pass, a.key_slot)?)
    } else {
        None
    };
    // Every buffer that holds the key in hex is a `Zeroizing` one allocated at its final size,
    // so no reallocation leaves an unwiped copy on the heap, and it goes to fd 1 without
    // passing through std's stdout buffer (which is never cleared).
    let text: Zeroizing<Vec<u8>> = if a.json {
        let mut v = dump::describe(&vol);
        if let Some(u) = &key {
            let hex = u.key.to_hex();
            let mut s = String::with_capacity(hex.len());
            s.push_str(std::str::from_utf8(hex.expose()).expect("hex is ASCII"));
            v["volume_key"] = serde_json::Value::String(s);
            v["volume_key_slot"] = serde_json::json!(u.keyslot);
        }
        let rendered = json_at_final_size(&v);
        if let Some(serde_json::Value::String(hex)) = v.get_mut("volume_key") {
            zeroize::Zeroize::zeroize(hex);
        }
        rendered.map_err(|e| Failure::usage(e.to_string()))?
    } else {
        let plain = dump::text(&vol);
        let head = key.as_ref().map(|u| format!("Key slot {} unlocked.\nMK bits:\t{}\nMK dump:\t", u.keyslot, u.key.len() * 8));
        let key_len = head.as_ref().zip(key.as_ref()).map_or(0, |(h, u)| h.len() + 2 * u.key.len() + 1);
        let mut out = Zeroizing::new(Vec::with_capacity(plain.len() + key_len));
        out.extend_from_slice(plain.as_bytes());
        if let (Some(u), Some(head)) = (&key, &head) {
            let hex = u.key.to_hex();
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(hex.expose());
            out.push(b'\n');
        }
        out
    };
    match write_unbuffered_stdout(&text) {
        // A closed pipe (`| head`) is not an error worth a panic.
        Err(e) if e != nix::errno::Errno::EPIPE => Err(Failure::new(exit::DEVICE, format!("writing output: {e}"))),
        _ => Ok(exit::OK),
    }
}

/// `v` as pretty JSON plus a newline, in a wiped-on-drop buffer sized exactly beforehand
/// (a first pass only counts bytes), so serde never grows it by reallocating.
fn json_at_final_size(v: &serde_json::Value) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer_pretty(&mut n, v)?;
    let mut out = Zeroizing::new(Vec::with_capacity(n.0 + 1));
    let cap = out.capacity();
    serde_json::to_writer_pretty(&mut *out, v)?;
    out.push(b'\n');
    debug_assert_eq!(out.capacity(), cap, "no reallocation");
    Ok(out)
}

/// Writes all of `bytes` straight to fd 1 (no copy left in std's stdout buffer).
fn write_unbuffered_stdout(mut bytes: &[u8]) -> nix::Result<()> {
    std::io::Write::flush(&mut std::io::stdout()).ok();
    while !bytes.is_empty() {
        match nix::unistd::write(std::io::stdout(), bytes) {
            Ok(0) => return Err(nix::errno::Errno::EIO),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn new_passphrase(file: &Option<PathBuf>) -> Result<Passphrase, Failure> {
    passphrase(file, "Enter new passphrase: ", true)
}

fn run_add_key(a: AddKeyArgs, verbose: bool) -> CliResult {
    let pbkdf = a.pbkdf.options()?;
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    let existing = passphrase(&a.key_file, "Enter any existing passphrase: ", false)?;
    // Check the existing passphrase before asking for a new one.
    vol.unlock(dev, &existing, None)?;
    let new = new_passphrase(&a.new_key_file)?;
    let slot = update::add_key(dev, &vol, &existing, &new, a.key_slot, &pbkdf)?;
    if verbose {
        eprintln!("Key slot {slot} created.");
    }
    Ok(exit::OK)
}

fn run_remove_key(a: RemoveKeyArgs, verbose: bool) -> CliResult {
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    let pass = passphrase(&a.key_file, "Enter passphrase to be deleted: ", false)?;
    let u = vol.unlock(dev, &pass, None)?;
    if vol.active_slots().len() == 1 {
        confirm(a.batch, "This is the last keyslot. Device will become unusable after purging this key.")?;
    }
    update::kill_slot(dev, &vol, u.keyslot)?;
    if verbose {
        eprintln!("Key slot {} removed.", u.keyslot);
    }
    Ok(exit::OK)
}

fn run_change_key(a: ChangeKeyArgs, verbose: bool) -> CliResult {
    let pbkdf = a.pbkdf.options()?;
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    let old = passphrase(&a.key_file, "Enter passphrase to be changed: ", false)?;
    vol.unlock(dev, &old, a.key_slot)?;
    let new = new_passphrase(&a.new_key_file)?;
    let slot = update::change_key(dev, &vol, &old, &new, a.key_slot, &pbkdf)?;
    if verbose {
        eprintln!("Key slot {slot} changed.");
    }
    Ok(exit::OK)
}

fn run_kill_slot(a: KillSlotArgs, verbose: bool) -> CliResult {
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    if !vol.active_slots().contains(&a.slot) {
        return Err(luks::LuksError::SlotInactive(a.slot).into());
    }
    if !a.batch || a.key_file.is_some() {
        // As cryptsetup: prove access with a passphrase of a keyslot that stays.
        let pass = passphrase(&a.key_file, "Enter any remaining passphrase: ", false)?;
        vol.unlock(dev, &pass, None)?;
    }
    confirm(a.batch, &format!("WARNING!\n========\nThis will wipe keyslot {} of {}.", a.slot, a.image.display()))?;
    update::kill_slot(dev, &vol, a.slot)?;
    if verbose {
        eprintln!("Key slot {} wiped.", a.slot);
    }
    Ok(exit::OK)
}

fn run_header_backup(a: HeaderBackupArgs, verbose: bool) -> CliResult {
    let lock = open_device(&a.image, false)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    let n = backup::header_backup(dev, &vol, &a.header_backup_file)?;
    if verbose {
        eprintln!("Wrote {n} bytes of header to {}.", a.header_backup_file.display());
    }
    Ok(exit::OK)
}

fn run_header_restore(a: HeaderRestoreArgs, verbose: bool) -> CliResult {
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    let plan = backup::plan_restore(dev, &a.header_backup_file)?;
    let what = if plan.replaces_header { "replace the LUKS header (and keyslots)" } else { "write a LUKS header" };
    confirm(a.batch, &format!("WARNING!\n========\nThis will {what} on {}.", a.image.display()))?;
    let vol = backup::apply_restore(dev, &plan)?;
    if verbose {
        eprintln!("Restored header of LUKS volume {}.", vol.uuid());
    }
    Ok(exit::OK)
}

fn run_repair(a: RepairArgs, verbose: bool) -> CliResult {
    let lock = open_device(&a.image, true)?;
    let dev: &File = &lock;
    let vol = load(dev, &a.image)?;
    if let Ok(st) = vol.luks2("repair") {
        if st.primary_ok && st.secondary_ok {
            if verbose {
                eprintln!("No problems found.");
            }
            return Ok(exit::OK);
        }
        for p in &st.problems {
            eprintln!("{p}");
        }
    } else {
        return Ok(exit::OK);
    }
    update::repair(dev, &vol)?;
    eprintln!("Header repaired: both copies rewritten.");
    Ok(exit::OK)
}

fn run_benchmark(a: BenchmarkArgs) -> CliResult {
    use crate::luks::bench;
    use crate::luks::kdf::Argon2Kind;
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 60.0) {
        return Err(Failure::usage("--seconds must be between 0 and 60"));
    }
    let min = std::time::Duration::from_secs_f64(a.seconds);
    let set: Vec<(String, u32)> = match (&a.cipher, a.key_size) {
        (Some(c), Some(k)) => vec![(c.clone(), k)],
        (Some(c), None) => {
            let sizes: Vec<u32> = luks::cipher::BENCHMARK_SET.iter().filter(|(s, _)| s == c).map(|(_, k)| *k).collect();
            let sizes = if sizes.is_empty() { vec![if c.contains("-xts-") { 512 } else { 256 }] } else { sizes };
            sizes.into_iter().map(|k| (c.clone(), k)).collect()
        }
        (None, _) => luks::cipher::BENCHMARK_SET.iter().map(|(s, k)| (s.to_string(), *k)).collect(),
    };
    let mut kdfs = Vec::new();
    if a.cipher.is_none() {
        kdfs.extend(bench::PBKDF2_HASHES.iter().map(|h| bench::pbkdf2(*h)));
        kdfs.push(bench::argon2(Argon2Kind::Argon2i, 2000));
        kdfs.push(bench::argon2(Argon2Kind::Argon2id, 2000));
    }
    let mut ciphers = Vec::new();
    for (spec, bits) in &set {
        ciphers.push(bench::cipher(spec, *bits, min)?);
    }
    let out = if a.json {
        let mut all: Vec<serde_json::Value> = Vec::new();
        all.extend(kdfs.iter().map(|k| serde_json::to_value(k).expect("plain data")));
        all.extend(ciphers.iter().map(|c| serde_json::to_value(c).expect("plain data")));
        serde_json::to_string_pretty(&all).map_err(|e| Failure::usage(e.to_string()))? + "\n"
    } else {
        let mut o = String::from("# Userspace, one core, memory only (no storage I/O); MB = 10^6 bytes, 4096-byte sectors.\n");
        for k in &kdfs {
            match k {
                bench::KdfResult::Pbkdf2 { kdf, iterations_per_second, .. } => {
                    o += &format!("{:<18}{:>10} iterations per second for 256-bit key\n", kdf.replacen("pbkdf2", "PBKDF2", 1), iterations_per_second)
                }
                bench::KdfResult::Argon2 { kdf, time, memory_kib, threads, target_ms, .. } => {
                    o += &format!("{kdf:<10}{time:>4} iterations, {memory_kib} memory, {threads} parallel threads (CPUs) for 256-bit key (requested {target_ms} ms time)\n")
                }
            }
        }
        o += "#     Algorithm |       Key |      Encryption |      Decryption\n";
        for c in &ciphers {
            let (alg, mode) = short_name(&c.cipher);
            o += &format!("{:>15} {:>10}b {:>11.1} MB/s {:>11.1} MB/s\n", format!("{alg}-{mode}"), c.key_bits, c.encrypt_mb_s, c.decrypt_mb_s);
        }
        o
    };
    print!("{out}");
    Ok(exit::OK)
}

/// "aes-xts-plain64" -> ("aes", "xts"), as cryptsetup's table names ciphers.
fn short_name(spec: &str) -> (&str, &str) {
    let mut p = spec.split('-');
    (p.next().unwrap_or(spec), p.next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_json_is_rendered_at_its_final_size() {
        let v = serde_json::json!({"volume_key": "00ff".repeat(16), "keyslots": {"0": {"type": "luks2", "é": [1, 2]}}});
        let out = super::json_at_final_size(&v).unwrap();
        assert_eq!(&out[..], (serde_json::to_string_pretty(&v).unwrap() + "\n").as_bytes());
        assert_eq!(out.capacity(), out.len(), "allocated once, at its final size");
    }
}
