//! `offdisk register/dock/agent` (owned by the hot-plug work).

use super::prompt::{read_passphrase, KeySource};
use super::{CliResult, Failure};
use crate::error::exit;
use crate::hotplug::agent::{self, AgentOptions};
use crate::hotplug::agent_link::{AgentLinks, TrustedPeer};
use crate::hotplug::dock::{self, AgentUi, DockOptions, Outcome};
use crate::hotplug::register::{register_device, unregister, RegisterSpec};
use crate::hotplug::system::SystemBackend;
use crate::hotplug::{ask_password, device, identity, lock, registry, state};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Console agents' sockets, under the run directory.
const CONSOLE_SUBDIR: &str = "console";

/// Paths shared by register and dock; the hidden ones exist for tests and packaging.
#[derive(Args, Debug, Clone)]
pub struct PathArgs {
    /// Configuration file with the registered disks.
    #[arg(long, value_name = "FILE", default_value = registry::CONFIG_PATH)]
    pub config: PathBuf,
    /// Host secret for identity records.
    #[arg(long, value_name = "FILE", default_value = identity::HOST_KEY_PATH, hide = true)]
    pub host_key: PathBuf,
    /// Lock files and mount points.
    #[arg(long, value_name = "DIR", default_value = lock::RUN_DIR, hide = true)]
    pub run_dir: PathBuf,
    /// Where the time of each disk's last dock is kept.
    #[arg(long, value_name = "FILE", default_value = state::STATE_PATH, hide = true)]
    pub state: PathBuf,
}

impl PathArgs {
    fn dock_options(&self) -> DockOptions {
        DockOptions {
            config: self.config.clone(),
            host_key: self.host_key.clone(),
            run_dir: self.run_dir.clone(),
            state: self.state.clone(),
            ..DockOptions::system()
        }
    }
}

/// What a registration records: the disk's sources, excludes, retention, unlock method and
/// mount point, and where the config and host key are. Shared by `offdisk register` and
/// `offdisk init` (which registers the disk it makes).
#[derive(Args, Debug, Clone)]
pub struct RegistrationArgs {
    /// A directory to back up onto the disk (repeatable).
    #[arg(long = "source", value_name = "DIR")]
    pub sources: Vec<PathBuf>,
    /// A pattern to leave out of the backup (repeatable).
    #[arg(short, long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Unlock unattended at every dock with this key file kept on the host
    /// (unlock = "key-file"); it holds a passphrase of the disk. Without it the passphrase is
    /// asked for at each dock.
    #[arg(long, value_name = "FILE")]
    pub unlock_key_file: Option<PathBuf>,
    /// Retention for this disk's generations (unset: the config's defaults).
    #[command(flatten)]
    pub retention: super::backup::RetentionArgs,
    /// Mount the disk here while it is open [default: /run/offdisk/<LUKS UUID>].
    #[arg(long, value_name = "DIR")]
    pub mount_point: Option<PathBuf>,
    /// This user's desktop agent is told about docks of the disk (and may answer its
    /// passphrase question) even when another user has the active session (user = NAME).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    #[command(flatten)]
    pub paths: PathArgs,
}

impl RegistrationArgs {
    /// The registration asked for, with absolute paths: the config wants them, and a key file
    /// named relative to here would be lost.
    pub fn spec(&self, label: Option<String>, replace: bool) -> Result<RegisterSpec, Failure> {
        let absolute = |p: &PathBuf| std::fs::canonicalize(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())));
        let sources = self.sources.iter().map(absolute).collect::<Result<Vec<_>, _>>()?;
        let key_file = self.unlock_key_file.as_ref().map(absolute).transpose()?;
        if let Some(u) = &self.user {
            if crate::hotplug::audience::resolve_user(u).is_none() {
                return Err(Failure::usage(format!("--user {u}: no such user")).with_hint("give a user name or UID from /etc/passwd"));
            }
        }
        Ok(RegisterSpec {
            label,
            sources,
            excludes: self.excludes.clone(),
            key_file,
            mount_point: self.mount_point.clone(),
            retention: retention_of(&self.retention),
            user: self.user.clone(),
            replace,
            udev_rules: Some(crate::hotplug::udisks_rule::RuleDir::system()),
            run_dir: Some(self.paths.run_dir.clone()),
        })
    }
}

#[derive(Args, Debug)]
#[command(after_help = "The disk is unlocked once to write this host's identity record inside it; \
a later dock checks that record, so a copy of the LUKS header alone is never taken for the disk.\n\n\
Desktops: register also writes the udev rule /etc/udev/rules.d/90-offdisk-<LUKS UUID>.rules \
(UDISKS_AUTO=0 on the LUKS partition and its unlocked device), so udisks neither automounts nor \
offers to unlock the disk and the only prompt is offdisk's; the disk still shows in file managers. \
It is in the admin's rules directory and stays when the package is removed; `offdisk unregister` \
removes it, --force rewrites it. A link or other non-file at its name is refused (nothing is \
registered). udev is told with `udevadm control --reload` and a change event for the disk; if that \
fails it is only reported, and the rule applies from the next plug-in.\n\n\
Registering does not start a backup: for a disk that is attached, no dock starts for the events of \
this attachment (see REGISTERING AN ATTACHED DISK in offdisk-dock(8)). It is backed up the next \
time it is plugged in or at the next boot; to back it up now, run `offdisk dock NAME` (NAME is the \
kernel name, e.g. sdb1, as the output says).")]
// register keeps its short -s for --source (init's -s is cryptsetup's --key-size), and its
// --key-file: the unattended key file is also what unlocks the disk now.
#[command(mut_arg("sources", |a| a.short('s').required(true)))]
#[command(mut_arg("unlock_key_file", |a| a.visible_alias("key-file")))]
pub struct RegisterArgs {
    /// The LUKS device (partition, disk or loop device) to register.
    pub device: PathBuf,
    /// Name shown in notifications (default: the LUKS label).
    #[arg(long)]
    pub label: Option<String>,
    /// Read the passphrase for this registration from FILE ("-" for stdin) instead of the terminal.
    #[arg(long, value_name = "FILE", conflicts_with = "unlock_key_file")]
    pub passphrase_file: Option<PathBuf>,
    /// Replace an existing registration of the same disk.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub registration: RegistrationArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "The disk, its generations and this host's record of them are left as they are; \
register it again to have it backed up at dock again. The udisks rule register wrote \
(/etc/udev/rules.d/90-offdisk-<LUKS UUID>.rules) is removed, so desktops offer to unlock it as any \
LUKS disk.")]
pub struct UnregisterArgs {
    /// The registered disk: its LUKS UUID or label.
    pub disk: String,
    /// Configuration file with the registered disks.
    #[arg(long, value_name = "FILE", default_value = registry::CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
#[command(after_help = "Run by offdisk-dock@.service when udev sees a LUKS device. Unregistered disks \
are left alone (exit 0); a second dock of a disk already being docked exits 0 at once. With \
--plugged, a disk registered while attached is left alone (exit 0) until it is plugged in again. \
Stopped by SIGTERM (the disk pulled out, or shutdown), or finding the disk pulled out, after \
closing everything: exit 143, which the unit counts as success.")]
pub struct DockArgs {
    /// Kernel name of the device (sdb1, loop0) as udev gives it, or /dev/NAME.
    pub device: String,
    /// Seconds to wait for a passphrase answer, per try.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Directory of systemd's password agent requests.
    #[arg(long, value_name = "DIR", default_value = ask_password::SYSTEM_DIR, hide = true)]
    pub ask_dir: PathBuf,
    /// Where desktop agents' runtime directories are (`<DIR>/<uid>/offdisk/agent.sock`).
    #[arg(long, value_name = "DIR", default_value = "/run/user", hide = true)]
    pub agents_dir: PathBuf,
    /// Least seconds between two progress updates sent to the desktop (tests use 0).
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, hide = true)]
    pub notify_every: f64,
    /// Started for a plug-in event (offdisk-dock@.service passes it): a disk registered while
    /// attached is left alone until it is plugged in again. Without it the disk is docked.
    #[arg(long)]
    pub plugged: bool,
    #[command(flatten)]
    pub paths: PathArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "Started with the desktop session (offdisk-agent.service or the XDG autostart \
entry). Only offdisk's own service, running as root, can talk to it.")]
pub struct AgentArgs {
    /// Answer offdisk's passphrase requests on this terminal instead (as root, no desktop).
    #[arg(long)]
    pub console: bool,
    /// Remind about disks not refreshed for this many days (0: never).
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub stale_days: u64,
    /// Pinentry program for the passphrase dialog (default: the first one installed).
    #[arg(long, value_name = "PROGRAM")]
    pub pinentry: Option<PathBuf>,
    /// Runtime directory for the agent's socket (default: $XDG_RUNTIME_DIR).
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Where offdisk dock keeps the time of each disk's last dock.
    #[arg(long, value_name = "FILE", default_value = state::STATE_PATH, hide = true)]
    pub state: PathBuf,
    /// Directory of systemd's password agent requests (with --console).
    #[arg(long, value_name = "DIR", default_value = ask_password::SYSTEM_DIR, hide = true)]
    pub ask_dir: PathBuf,
    /// Stop after one dock session or one answer (tests).
    #[arg(long, hide = true)]
    pub once: bool,
    /// Where docks find console agents (`<DIR>/console/<pid>.sock`, with --console).
    #[arg(long, value_name = "DIR", default_value = lock::RUN_DIR, hide = true)]
    pub run_dir: PathBuf,
}

pub fn run_register(a: RegisterArgs, _verbose: bool) -> CliResult {
    let r = &a.registration;
    let pass = match (&r.unlock_key_file, &a.passphrase_file) {
        (Some(k), _) => read_passphrase(KeySource::File(k)),
        (None, Some(p)) => read_passphrase(KeySource::File(p)),
        (None, None) => read_passphrase(KeySource::Terminal { prompt: "Passphrase of the disk to register: ", confirm: false }),
    }
    .map_err(|e| Failure::new(exit::NO_KEY, format!("reading the passphrase: {e}")))?;
    let spec = r.spec(a.label.clone(), a.force)?;
    let mut backend = SystemBackend::with_config(&r.paths.config);
    let done = register_device(&a.device, &pass, &r.paths.dock_options(), &spec, &mut backend)?;
    let reg = &done.reg;
    for note in &done.notes {
        eprintln!("{note}");
    }
    println!(
        "Registered backup disk {} (LUKS UUID {}), unlock by {}; it is backed up whenever it is docked.",
        reg.name(),
        reg.luks_uuid,
        reg.unlock.as_str()
    );
    if done.attached {
        println!("{}", attached_hint(&a.device));
    }
    Ok(exit::OK)
}

pub fn run_unregister(a: UnregisterArgs, _verbose: bool) -> CliResult {
    let done = unregister(&a.config, &a.disk, Some(&crate::hotplug::udisks_rule::RuleDir::system()))?;
    for note in &done.notes {
        eprintln!("{note}");
    }
    match &done.reg {
        Some(reg) => println!("Unregistered backup disk {} (LUKS UUID {}); docking it no longer backs it up.", reg.name(), reg.luks_uuid),
        None => println!("{} was not registered in {}; only its leftover udev rule was removed.", a.disk, a.config.display()),
    }
    Ok(exit::OK)
}

/// What register and init say about a disk registered while attached: no backup was started.
pub fn attached_hint(device: &std::path::Path) -> String {
    // The kernel name dock takes (a /dev/disk/by-* link resolved).
    let real = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| device.display().to_string());
    format!(
        "It is attached now and registering does not start a backup: it is backed up the next time it is plugged in; \
         to back it up now, run `offdisk dock {name}`."
    )
}

fn retention_of(r: &super::backup::RetentionArgs) -> crate::backup::retention::Retention {
    crate::backup::retention::Retention {
        keep_last: r.keep_last,
        keep_daily: r.keep_daily,
        keep_weekly: r.keep_weekly,
        keep_monthly: r.keep_monthly,
        keep_yearly: r.keep_yearly,
    }
}

pub fn run_dock(a: DockArgs, verbose: bool) -> CliResult {
    // First, before any thread exists: SIGTERM/SIGINT/SIGHUP stop the dock at its next safe
    // point instead of killing it with the disk mapped and mounted.
    let stop = crate::job::Stop::new();
    let on_signal = stop.clone();
    let received = crate::hotplug::signals::catch(move |s| {
        eprintln!("offdisk dock: {s} received: stopping at the next safe point, then unmounting and closing");
        on_signal.request();
    })
    .map_err(|e| Failure::new(exit::USAGE, format!("setting up signal handling: {e}")))?;
    let name = device::kernel_name_from_arg(&a.device)?;
    let dev = device::resolve(&name)?;
    // Desktop agents join once the disk is known, as the audience admits them.
    let mut links = AgentLinks::default();
    links.connect_console(&a.paths.run_dir.join(CONSOLE_SUBDIR));
    let mut ui = AgentUi::system(verbose);
    ui.ask_dir = a.ask_dir;
    ui.links = links;
    ui.timeout = Duration::from_secs(a.timeout);
    if let Some(aud) = &mut ui.audience {
        aud.agents_dir = a.agents_dir;
    }
    let mut opts = a.paths.dock_options();
    opts.pacer.notify_every = a.notify_every;
    opts.plugged = a.plugged;
    opts.stop = stop.clone();
    ui.stop = stop;
    let outcome = dock::dock(&dev, &opts, &mut SystemBackend::with_config(&a.paths.config), &mut ui).map_err(|e| {
        let stopped = matches!(e, crate::hotplug::HotplugError::Stopped { .. });
        let f = Failure::from(e);
        match received.signal() {
            // Stopped and cleaned up: exit as the signal would have ended us (128 + its
            // number; the unit counts 143, SIGTERM, as success). A stop whose teardown failed
            // keeps that failure's status.
            Some(s) if stopped => Failure { code: 128 + s as i32, ..f },
            _ => f,
        }
    })?;
    match outcome {
        Outcome::Ignored { luks_uuid } => {
            eprintln!("offdisk dock: {name}: LUKS {luks_uuid} is not a registered backup disk; left alone");
        }
        Outcome::AlreadyRunning { disk } => {
            eprintln!("offdisk dock: {disk}: a dock of this disk is already running");
        }
        Outcome::RegisteredWhileAttached { disk } => {
            eprintln!(
                "offdisk dock: {disk}: registered while attached, so not backed up now; it docks the next time it is \
                 plugged in (or now: `offdisk dock {name}`)"
            );
        }
        Outcome::Done { disk, summary, exit_code } => {
            println!("{disk}: {summary}; closed, safe to unplug");
            return Ok(exit_code);
        }
    }
    Ok(exit::OK)
}

pub fn run_agent(a: AgentArgs, _verbose: bool) -> CliResult {
    if a.console {
        agent::run_console(&a.ask_dir, true, a.once, Some(&a.run_dir.join(CONSOLE_SUBDIR)))?;
        return Ok(exit::OK);
    }
    let runtime_dir = a
        .runtime_dir
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
        .ok_or_else(|| Failure::usage("XDG_RUNTIME_DIR is not set").with_hint("run the agent inside a desktop session, or give --runtime-dir"))?;
    let opts = AgentOptions {
        runtime_dir,
        trusted: TrustedPeer::offdisk_service(),
        pinentry: a.pinentry,
        state: a.state,
        stale_days: a.stale_days,
        once: a.once,
    };
    agent::run(&opts)?;
    Ok(exit::OK)
}
