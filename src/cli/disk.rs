//! `offdisk init/open/close/status/list`: a backup disk from blank to open and mounted, and back
//! to safe to unplug.

use super::prompt::{read_passphrase, KeySource};
use super::{CliResult, Failure};
use crate::disk::open::{self, OpenRequest};
use crate::disk::volume::{self, LuksDevice};
use crate::disk::error::require_root;
use crate::disk::{close, init, report, DiskError};
use crate::disk::sysfs::human_size;
use crate::error::exit;
use super::hotplug::RegistrationArgs;
use super::luks::LuksFormatArgs;
use crate::hotplug::register::{register_mounted, RegisterSpec};
use crate::hotplug::registry;
use crate::luks;
use crate::secret::Passphrase;
use clap::Args;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "The new disk is registered as a backup disk (see offdisk register): give what to back up \
onto it with --source, or --no-register to only make the disk. Registering does not start a backup: \
the disk is backed up the next time it is plugged in, or now with `offdisk dock NAME` (init says which \
NAME).\n\n\
Example: offdisk init /dev/sdb --label OFFSITE1 --source /home --source /etc\n         \
offdisk init --batch --key-file pw disk.img --label TEST --no-register")]
pub struct InitArgs {
    /// The whole disk (e.g. /dev/sdb) or a disk image file (a loop device is attached for it).
    pub device: PathBuf,
    /// Name of the disk: the LUKS2 label, the ext4 label and the partition name.
    #[arg(long, short = 'L')]
    pub label: String,
    /// Erase the disk even if it holds a filesystem, LUKS header or partition table.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (the passphrase must come from --key-file or --unlock-key-file).
    #[arg(long, short = 'q')]
    pub batch: bool,
    /// Read the new passphrase from this file ("-": standard input) instead of the terminal, as
    /// cryptsetup does. (A key file kept for unattended unlock at each dock is --unlock-key-file.)
    #[arg(long, short = 'd')]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub format: LuksFormatArgs,
    /// Only make the disk; do not register it as a backup disk.
    #[arg(long, conflicts_with_all = ["sources", "excludes", "unlock_key_file", "mount_point"])]
    pub no_register: bool,
    #[command(flatten)]
    pub registration: RegistrationArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "Example: offdisk open OFFSITE1 --mount\n         offdisk open /dev/sdb --mount /mnt/backup --read-only")]
pub struct OpenArgs {
    /// The disk: device path (whole disk or partition), image file, LUKS label or LUKS UUID.
    pub target: String,
    /// Device-mapper name (default: luks-<UUID>, as udisks names it).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Mount the filesystem (nosuid,nodev,noexec) on DIR, or on /media/<label> without DIR.
    #[arg(long, short = 'm', num_args = 0..=1, value_name = "DIR")]
    pub mount: Option<Option<PathBuf>>,
    /// Open and mount read-only.
    #[arg(long, short = 'r')]
    pub read_only: bool,
    /// Read the passphrase from this file ("-": standard input) instead of the terminal.
    #[arg(long, short = 'd')]
    pub key_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "Example: offdisk close OFFSITE1 --power-off")]
pub struct CloseArgs {
    /// The open disk: mapping name, /dev/mapper path, mount point, device, image, label or UUID.
    pub target: String,
    /// Power the disk off afterwards (USB disks are detached from their port).
    #[arg(long)]
    pub power_off: bool,
    /// Config file with the registered disks, whose labels close a disk that is gone
    /// (default: $OFFDISK_CONFIG or /etc/offdisk/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Config file with the registered disks (default: $OFFDISK_CONFIG or /etc/offdisk/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn passphrase(key_file: Option<&Path>, prompt: &str, confirm: bool) -> Result<Passphrase, Failure> {
    let src = match key_file {
        Some(p) => KeySource::File(p),
        None => KeySource::Terminal { prompt, confirm },
    };
    read_passphrase(src).map_err(|e| {
        Failure::new(exit::USAGE, format!("reading the passphrase: {e}")).with_hint("give the passphrase with --key-file FILE (\"-\" for standard input)")
    })
}

fn describe_disk(d: &crate::disk::sysfs::BlockDevice, image: Option<&Path>) -> String {
    let mut s = format!("{} ({})", d.path.display(), human_size(d.size));
    if let Some(i) = image {
        s += &format!(", image {}", i.display());
    }
    if let Some(m) = &d.model {
        s += &format!(", model {m}");
    }
    if let Some(sn) = &d.serial {
        s += &format!(", serial {sn}");
    }
    if d.removable {
        s += ", removable";
    }
    s
}

/// The registration `init` makes, checked before the disk is touched: sources given, and a
/// config that loads. `None` with --no-register.
fn init_registration(a: &InitArgs) -> Result<Option<RegisterSpec>, Failure> {
    if a.no_register {
        return Ok(None);
    }
    if a.registration.sources.is_empty() {
        return Err(Failure::usage("offdisk init registers the new disk as a backup disk: say what to back up onto it")
            .with_hint("give --source DIR (repeatable), or --no-register to only make the disk"));
    }
    let spec = a.registration.spec(None, false)?;
    registry::load(&a.registration.paths.config)?;
    Ok(Some(spec))
}

pub fn run_init(a: InitArgs, verbose: bool) -> CliResult {
    if a.label.is_empty() || a.label.len() > crate::disk::mkfs::EXT4_LABEL_MAX || a.label.contains('/') {
        return Err(Failure::usage("the label must be 1-16 bytes without '/' (it is also the ext4 label)"));
    }
    // The unattended-unlock key file holds the passphrase, so it may give the new one too.
    let pass_file = a.key_file.as_deref().or(a.registration.unlock_key_file.as_deref());
    if a.batch && pass_file.is_none() {
        return Err(Failure::usage("--batch needs --key-file or --unlock-key-file (nobody is there to type a passphrase)"));
    }
    let opts = a.format.options(Some(a.label.clone()))?;
    let registration = init_registration(&a)?;
    require_root("offdisk init")?;
    let target = volume::resolve_device(&a.device, false)?;
    let check = init::check_init(&target.disk, a.force)?;

    eprintln!("Disk: {}", describe_disk(&target.disk, target.image.as_deref()));
    if check.found.is_empty() {
        eprintln!("It is blank.");
    } else {
        for (dev, sigs) in &check.found {
            let what: Vec<String> = sigs.iter().map(|s| s.to_string()).collect();
            eprintln!("On {}: {}", dev.display(), what.join(", "));
        }
    }
    eprintln!("Everything on it will be erased; it becomes an encrypted backup disk named '{}'.", a.label);
    if !a.batch {
        eprint!("Type the label '{}' to go ahead: ", a.label);
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::usage(format!("reading confirmation: {e}")))?;
        if line.trim_end_matches(['\n', '\r']) != a.label {
            eprintln!("Not confirmed; nothing was changed.");
            return Ok(exit::USAGE);
        }
    }
    let pass = passphrase(pass_file, "Enter the new passphrase: ", true)?;
    if let (Some(_), Some(unlock), Some(_)) = (&a.key_file, &a.registration.unlock_key_file, &registration) {
        if passphrase(Some(unlock), "", false)? != pass {
            return Err(Failure::usage(format!("--unlock-key-file {} does not hold the new passphrase (--key-file)", unlock.display()))
                .with_hint("give the same file to both, or only --unlock-key-file"));
        }
    }
    let progress = |s: &str| {
        if verbose || !a.batch {
            eprintln!("... {s}");
        }
    };
    let paths = &a.registration.paths;
    let out = init::init(&target, &a.label, &opts, &pass, &progress, |mount, luks_uuid| {
        registration.as_ref().map(|spec| {
            progress("registering it as a backup disk");
            register_mounted(&paths.config, &paths.host_key, luks_uuid, Some(&a.label), mount, spec)
        })
    })
    .map_err(|e| {
        // Name what the user typed: the image file, not only the loop device it is on.
        let f = Failure::from(e);
        match &target.image {
            Some(img) => Failure { message: format!("init of {} (on {}) failed: {}", img.display(), target.disk.path.display(), f.message), ..f },
            None => Failure { message: format!("init of {} failed: {}", target.disk.path.display(), f.message), ..f },
        }
    })?;
    // An image is only found by label while attached, so name the image itself.
    let open_as = if target.image.is_some() { a.device.display().to_string() } else { a.label.clone() };
    println!(
        "{} is ready: LUKS2 {} on {}, ext4 labelled '{}'. Open it with `offdisk open {} --mount`.",
        a.device.display(),
        out.luks_uuid,
        out.partition.display(),
        a.label,
        open_as
    );
    if verbose {
        eprintln!("volume key went to dm-crypt via {:?}", out.key_delivery);
    }
    match out.on_mounted {
        None => Ok(exit::OK),
        Some(Ok(done)) => {
            let reg = &done.reg;
            for note in &done.notes {
                eprintln!("{note}");
            }
            println!(
                "Registered it as backup disk {} in {}, unlock by {}; it is backed up whenever it is docked.",
                reg.name(),
                paths.config.display(),
                reg.unlock.as_str()
            );
            // An image's loop device is detached again: it docks when attached.
            if done.attached && target.image.is_none() {
                println!("{}", super::hotplug::attached_hint(&out.partition));
            }
            Ok(exit::OK)
        }
        Some(Err(e)) => {
            let f = Failure::from(e);
            Err(Failure {
                message: format!("the disk is ready but registering it failed: {}", f.message),
                hint: Some(f.hint.unwrap_or_else(|| "fix that, then run `offdisk register` on its LUKS partition".into())),
                ..f
            })
        }
    }
}

pub fn run_open(a: OpenArgs, verbose: bool) -> CliResult {
    require_root("offdisk open")?;
    if let Some(n) = &a.name {
        crate::dm::check_name(n).map_err(DiskError::from)?;
    }
    let luks: LuksDevice = volume::find_luks(&a.target, a.read_only)?;
    let req = OpenRequest { name: a.name.clone(), mount: a.mount.clone(), read_only: a.read_only };
    for c in volume::clean_stale(Some(&luks)) {
        eprintln!("{c}");
    }

    if let Some(m) = volume::mapping_of(&luks)? {
        // Already open: say so, and mount if asked.
        let mut msg = format!("{} is already open as {}", luks.path.display(), m.path().display());
        if let Some(dir) = &req.mount {
            let mp = open::mount_mapping(&m.path(), m.dev, dir.as_deref(), luks.label.as_deref(), &m.name, a.read_only || m.read_only)?;
            msg += &format!(", mounted on {}", mp.display());
        }
        println!("{msg}");
        return Ok(exit::OK);
    }

    let file = std::fs::File::open(&luks.path).map_err(|err| DiskError::Io { path: luks.path.clone(), err })?;
    let volume = luks::Volume::load(&file)?;
    volume.check_activatable()?;
    let who = luks.label.clone().unwrap_or_else(|| luks.path.display().to_string());
    let pass = passphrase(a.key_file.as_deref(), &format!("Enter passphrase for {who}: "), false)?;
    let unlocked = volume.unlock(&file, &pass, None)?;
    drop(pass);
    let opened = open::activate_and_mount(&luks, &volume, &unlocked.key, &req)?;
    drop(unlocked);
    let mut msg = format!("Opened {} as {}", luks.path.display(), opened.mapper_path.display());
    if let Some(mp) = &opened.mount_point {
        msg += &format!(", mounted on {}", mp.display());
    }
    println!("{msg}");
    if verbose {
        eprintln!("volume key went to dm-crypt via {:?}", opened.key_delivery);
    }
    Ok(exit::OK)
}

pub fn run_close(a: CloseArgs, _verbose: bool) -> CliResult {
    require_root("offdisk close")?;
    // A registered label still names a disk that is gone. A config that cannot be read does
    // not stop closing by any other name.
    let config = crate::config::Config::load_default(a.config.as_deref());
    let registered = config.as_ref().ok().and_then(|c| c.disk(&a.target)).map(|d| d.luks_uuid.clone());
    let m = match close::find_open(&a.target, registered.as_deref()) {
        Err(e @ DiskError::NotOpen(_)) => {
            if let Err(ce) = &config {
                eprintln!("offdisk: warning: registered labels not looked up: {ce}");
            }
            return Err(e.into());
        }
        r => r?,
    };
    let closed = close::close(&m)?;
    if let Some(line) = &closed.vanished {
        // The disk was pulled out while open: what was left of it is gone now.
        eprintln!("{line}");
        for c in volume::clean_stale(None) {
            eprintln!("{c}");
        }
        println!("{} is closed; its disk had already been unplugged.", m.info.name);
        return Ok(exit::OK);
    }
    for d in &closed.unmounted {
        eprintln!("Unmounted {}", d.display());
    }
    eprintln!("Closed {}", m.info.name);
    for c in volume::clean_stale(None) {
        eprintln!("{c}");
    }
    if a.power_off {
        for d in &m.disks {
            close::power_off(d)?;
            eprintln!("Powered off {d}");
        }
    }
    let disks: Vec<String> = m.disks.iter().map(|d| format!("/dev/{d}")).collect();
    println!("{} is safe to unplug.", if disks.is_empty() { m.info.name.clone() } else { disks.join(", ") });
    Ok(exit::OK)
}

fn print_reports(reports: &[report::DiskReport], all: bool) {
    if reports.is_empty() {
        println!("No disks found.");
        return;
    }
    for r in reports {
        if !all && r.volumes.is_empty() {
            continue;
        }
        let mut line = format!("{}  {}", r.path.display(), human_size(r.size));
        if let Some(m) = &r.model {
            line += &format!("  {m}");
        }
        if let Some(s) = &r.serial {
            line += &format!("  serial {s}");
        }
        if r.removable {
            line += "  removable";
        }
        if let Some(i) = &r.image {
            line += &format!("  image {}", i.display());
        }
        println!("{line}");
        if r.volumes.is_empty() {
            let c = if r.contents.is_empty() { None } else { Some(r.contents.join(", ")) };
            match (r.in_use.is_empty(), c) {
                (true, c) => println!("  {}", c.unwrap_or_else(|| "blank or unknown".into())),
                (false, c) => println!("  in use: {}{}", r.in_use.join(", "), c.map(|c| format!(" ({c})")).unwrap_or_default()),
            }
        }
        for v in &r.volumes {
            let ver = if v.luks_version == 0 { "LUKS".to_string() } else { format!("LUKS{}", v.luks_version) };
            let label = v.label.as_deref().map(|l| format!(" '{l}'")).unwrap_or_default();
            let state = match (&v.mapping, v.mount_points.first()) {
                (None, _) => "closed".to_string(),
                (Some(m), None) => format!("open as /dev/mapper/{m}"),
                (Some(m), Some(mp)) => format!("open as /dev/mapper/{m}, mounted on {}", mp.display()),
            };
            println!("  {} {ver}{label} {}: {state}", v.device.display(), v.uuid);
        }
    }
}

/// A registered disk as `status` shows it: present or not, open or not, how current.
#[derive(Debug, serde::Serialize)]
struct KnownDisk {
    name: String,
    luks_uuid: String,
    label: Option<String>,
    present: Option<PathBuf>,
    mapping: Option<String>,
    mount_points: Vec<PathBuf>,
    last_refreshed: Option<i64>,
    last_generation: Option<String>,
    freshness: String,
}

fn known_disks(config: &crate::config::Config, reports: &[report::DiskReport]) -> Vec<KnownDisk> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let ledger_dir = config.ledger_dir();
    config
        .disks
        .iter()
        .map(|d| {
            let volume = reports.iter().flat_map(|r| r.volumes.iter()).find(|v| v.uuid.eq_ignore_ascii_case(&d.luks_uuid));
            // An unreadable record is said, not shown as "never refreshed": that would hide a
            // disk that may hold weeks of backups.
            let (ledger, freshness) = match crate::config::Ledger::load_host(&ledger_dir, &d.luks_uuid) {
                Ok(Some(l)) => {
                    let f = l.staleness(now).to_string();
                    (Some(l), f)
                }
                Ok(None) => (None, crate::config::staleness(None, now).to_string()),
                Err(e) => (None, format!("ledger unreadable ({e})")),
            };
            KnownDisk {
                name: d.name().to_string(),
                luks_uuid: d.luks_uuid.clone(),
                label: d.label.clone(),
                present: volume.map(|v| v.device.clone()),
                mapping: volume.and_then(|v| v.mapping.clone()),
                mount_points: volume.map(|v| v.mount_points.clone()).unwrap_or_default(),
                last_refreshed: ledger.as_ref().and_then(|l| l.last_refreshed),
                last_generation: ledger.and_then(|l| l.last_generation),
                freshness,
            }
        })
        .collect()
}

pub fn run_status(a: StatusArgs, _verbose: bool) -> CliResult {
    // No config file yet is the same as nothing registered yet.
    let config = match crate::config::Config::load_default(a.config.as_deref()) {
        Err(crate::config::ConfigError::NotFound(_)) => crate::config::Config::default(),
        r => r?,
    };
    // Leftovers of disks pulled out while open would show as open: clean them first (root
    // only; without root device-mapper cannot be asked and nothing happens).
    for c in volume::clean_stale(None) {
        eprintln!("{c}");
    }
    let reports: Vec<_> = report::report().into_iter().filter(|r| !r.volumes.is_empty()).collect();
    let known = known_disks(&config, &reports);
    if a.json {
        let v = serde_json::json!({ "known": known, "present": reports });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::OK);
    }
    if known.is_empty() {
        println!("No backup disks registered yet.");
        println!("  Make one: offdisk init DEVICE --label NAME --source DIR   (e.g. offdisk init /dev/sdb --label OFFSITE1 --source /home)");
        println!("  Or register a LUKS disk you already have: offdisk register DEVICE --source DIR");
        println!();
    } else {
        println!("Registered backup disks:");
        for k in &known {
            let state = match (&k.present, &k.mapping, k.mount_points.first()) {
                (None, _, _) => "not present".to_string(),
                (Some(p), None, _) => format!("present at {}, closed", p.display()),
                (Some(p), Some(m), None) => format!("present at {}, open as /dev/mapper/{m}", p.display()),
                (Some(p), Some(m), Some(mp)) => format!("present at {}, open as /dev/mapper/{m}, mounted on {}", p.display(), mp.display()),
            };
            let last = k.last_generation.as_deref().map(|g| format!(" (last generation {g})")).unwrap_or_default();
            println!("  {} {}: {state}; {}{last}", k.name, k.luks_uuid, k.freshness);
        }
        println!();
    }
    if reports.is_empty() {
        println!("No LUKS disks present.");
    } else {
        println!("LUKS disks present:");
        print_reports(&reports, false);
        for r in &reports {
            for v in &r.volumes {
                if !known.iter().any(|k| k.luks_uuid.eq_ignore_ascii_case(&v.uuid)) {
                    println!("  (not registered: {} — `offdisk register` makes it a backup disk)", v.uuid);
                }
            }
        }
    }
    Ok(exit::OK)
}

pub fn run_list(a: ListArgs, _verbose: bool) -> CliResult {
    let reports = report::report();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
        return Ok(exit::OK);
    }
    print_reports(&reports, true);
    Ok(exit::OK)
}
