//! `offdisk dock`: the whole job for one docked disk, as one decision and one sequence.
//!
//! 1. Probe the LUKS header. Not registered → nothing is touched (the common case: any
//!    LUKS disk plugged in reaches here).
//! 2. Take the per-disk lock; already held → another dock is running, step aside.
//! 3. Get the passphrase (key file, or agents: up to `max_tries` asks) and unlock.
//! 4. Open and mount (nosuid,nodev,noexec), then check the identity record *before*
//!    writing anything: a cloned header with other contents stops here.
//! 5. Back up with the disk's policy, quick-verify, unmount, close; report each step.
//!
//! The kernel, LUKS and backup work sits behind [`Backend`], the people behind [`Ui`],
//! so the sequence (and its cleanup on every failure path) is tested without root.

use super::agent_link::{AgentLinks, Event};
use super::audience::{self, Audience};
use super::ask_password::{self, Pending, Reply, Request};
use super::device::DeviceInfo;
use super::identity::{self, HostKey};
use super::progress::{Forwarder, Pacer};
use super::registry::{self, Registration, UnlockMethod};
use super::{lock, state, HotplugError};
use crate::job::{Observer, Stop};
use crate::secret::{Passphrase, SecretBytes};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the header says, before any unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub luks_uuid: String,
    pub label: Option<String>,
}

/// The steps that touch the disk. Implemented by [`super::system::SystemBackend`] for real
/// and by fakes in tests.
pub trait Backend {
    fn probe(&mut self, dev: &Path) -> Result<Probe, HotplugError>;
    /// `Ok(false)`: no keyslot opens with this passphrase.
    fn unlock(&mut self, dev: &Path, pass: &Passphrase) -> Result<bool, HotplugError>;
    /// Activates the mapping for the unlocked key and mounts it nosuid,nodev,noexec on `at`.
    fn open_and_mount(&mut self, reg: &Registration, at: &Path) -> Result<(), HotplugError>;
    /// Runs the backup job with the disk's policy, its events to `obs`; returns a one-line summary.
    fn backup(&mut self, reg: &Registration, mount: &Path, obs: &mut dyn Observer, stop: &Stop) -> Result<String, HotplugError>;
    /// Quick verify of what was just written, its events to `obs`; returns a one-line summary.
    fn verify(&mut self, reg: &Registration, mount: &Path, obs: &mut dyn Observer, stop: &Stop) -> Result<String, HotplugError>;
    fn unmount(&mut self, at: &Path) -> Result<(), HotplugError>;
    /// Removes the mapping (and forgets the key).
    fn close(&mut self) -> Result<(), HotplugError>;
    /// The sequence number of the disk's current attachment ([`crate::disk::sysfs::disk_seq`]).
    fn disk_seq(&mut self, dev: &Path) -> Option<u64> {
        crate::disk::sysfs::disk_seq(dev)
    }
    /// Whether the device is still there (after a stop: pulled out, or the system stopping?).
    fn present(&mut self, dev: &Path) -> bool {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device())
    }
}

/// One passphrase request as the UI sees it.
#[derive(Debug, Clone)]
pub struct AskSpec {
    pub id: String,
    pub disk: String,
    pub device: String,
    pub attempt: u32,
    pub max: u32,
    pub error: Option<String>,
}

/// Telling and asking people.
pub trait Ui {
    /// The docked disk is a registered one (before any event about it): the UI decides
    /// who hears about it.
    fn disk_known(&mut self, _reg: &Registration) {}
    fn event(&mut self, ev: Event);
    /// A line for the journal only (progress at coarse steps, warnings, phases).
    fn log(&mut self, _line: &str) {}
    /// `Ok(None)`: cancelled or nobody answered in time.
    fn ask(&mut self, spec: &AskSpec) -> Result<Option<Passphrase>, HotplugError>;
}

/// Paths and limits; [`DockOptions::system`] has the installed defaults.
#[derive(Debug, Clone)]
pub struct DockOptions {
    pub config: PathBuf,
    pub host_key: PathBuf,
    pub run_dir: PathBuf,
    pub state: PathBuf,
    pub max_tries: u32,
    /// Set by dock's signal handling: stop at the next safe point and tear down.
    pub stop: Stop,
    /// How often progress reaches the desktop and the journal.
    pub pacer: Pacer,
    /// Started for a plug-in event (the unit's `--plugged`): a disk registered during this
    /// same attachment is left alone ([`super::attached`]). By hand (`false`) it docks.
    pub plugged: bool,
}

impl DockOptions {
    pub fn system() -> DockOptions {
        DockOptions {
            config: PathBuf::from(registry::CONFIG_PATH),
            host_key: PathBuf::from(identity::HOST_KEY_PATH),
            run_dir: PathBuf::from(lock::RUN_DIR),
            state: PathBuf::from(state::STATE_PATH),
            max_tries: 3,
            stop: Stop::new(),
            pacer: Pacer::default(),
            plugged: false,
        }
    }
    pub fn mount_point(&self, luks_uuid: &str) -> PathBuf {
        let safe: String = luks_uuid.chars().filter(|c| c.is_ascii_hexdigit() || *c == '-').collect();
        self.run_dir.join("mnt").join(safe)
    }
}

/// How a dock ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a registered disk: left alone.
    Ignored { luks_uuid: String },
    /// Another dock of this disk holds the lock.
    AlreadyRunning { disk: String },
    /// A plug-in event of the attachment the disk was registered during: registering starts
    /// no backup, so nothing was asked or opened.
    RegisteredWhileAttached { disk: String },
    /// Backed up, verified, closed. `exit_code` is 0, or 23/24 when the new generation
    /// lacks entries that could not be read or vanished (as `offdisk backup`'s).
    Done { disk: String, summary: String, exit_code: i32 },
}

/// Runs the dock of `dev`. Errors after step 2 have already been reported to the UI.
pub fn dock(dev: &DeviceInfo, opts: &DockOptions, backend: &mut dyn Backend, ui: &mut dyn Ui) -> Result<Outcome, HotplugError> {
    let probe = backend.probe(&dev.path)?;
    let regs = registry::load(&opts.config)?;
    let Some(reg) = registry::find(&regs, &probe.luks_uuid) else {
        return Ok(Outcome::Ignored { luks_uuid: probe.luks_uuid });
    };
    let disk = reg.name().to_string();
    if opts.plugged && super::attached::registered_during(&opts.run_dir, &reg.luks_uuid, backend.disk_seq(&dev.path)) {
        return Ok(Outcome::RegisteredWhileAttached { disk });
    }
    let Some(_lock) = lock::try_lock(&opts.run_dir, &reg.luks_uuid)? else {
        return Ok(Outcome::AlreadyRunning { disk });
    };
    ui.disk_known(reg);
    ui.event(Event::Started { disk: disk.clone(), device: dev.describe() });
    let mut run = Run { dev, opts, reg, backend, ui, opened: false, mounted: None, exit_code: 0 };
    let result = run.steps();
    let clean = run.cleanup();
    let result = match result {
        // Asked to stop (SIGTERM: the disk was pulled, or the system is stopping): whatever
        // failed failed because of it. Asked after the failure too: a disk pulled out fails
        // the step under way at once (I/O errors), and systemd's stop comes while dock is
        // already cleaning up, so the failure is the pull's, not a damaged disk's.
        // Only when the teardown worked: a stop that left something open fails as that.
        // A step that failed because the disk is gone, before systemd's stop arrived (verify
        // reading a pulled disk fails at once), is the same pull.
        Err(e) if clean.is_ok() && (opts.stop.requested() || !run.backend.present(&dev.path)) => {
            let removed = !run.backend.present(&dev.path);
            Err(HotplugError::Stopped { why: e.to_string(), removed })
        }
        r => r,
    };
    let (ok, text) = match &result {
        Ok(summary) => (true, summary.clone()),
        Err(e) => (false, e.to_string()),
    };
    let _ = state::record(&opts.state, &reg.luks_uuid, &disk, ok && clean.is_ok(), &text);
    match (&result, &clean) {
        (Ok(summary), Ok(())) => run.ui.event(Event::Done { disk: disk.clone(), summary: summary.clone() }),
        (Err(e), _) => run.ui.event(Event::Failed { disk: disk.clone(), reason: e.to_string() }),
        (Ok(_), Err(e)) => run.ui.event(Event::Failed { disk: disk.clone(), reason: format!("backup done, but {e}") }),
    }
    match clean {
        Ok(()) => run.ui.event(Event::SafeToUnplug { disk: disk.clone() }),
        Err(e) => {
            return Err(result.err().unwrap_or(e));
        }
    }
    let exit_code = run.exit_code;
    result.map(|summary| Outcome::Done { disk, summary, exit_code })
}

struct Run<'a> {
    dev: &'a DeviceInfo,
    opts: &'a DockOptions,
    reg: &'a Registration,
    backend: &'a mut dyn Backend,
    ui: &'a mut dyn Ui,
    opened: bool,
    mounted: Option<PathBuf>,
    /// The backup's exit status (partial runs).
    exit_code: i32,
}

impl Run<'_> {
    fn steps(&mut self) -> Result<String, HotplugError> {
        let disk = self.reg.name().to_string();
        // Checked before asking anyone anything: without them the dock cannot prove the disk.
        let key = HostKey::load(&self.opts.host_key)
            .map_err(|e| HotplugError::io(format!("host key {}", self.opts.host_key.display()), e))?;
        let disk_id = self.reg.identity.clone().ok_or_else(|| HotplugError::IdentityMismatch {
            disk: disk.clone(),
            why: "the registration has no identity (registered by an older offdisk?)".into(),
        })?;
        self.unlock(&disk)?;
        if self.opts.stop.requested() {
            return Err(HotplugError::NoPassphrase(disk));
        }
        // The config's mount point, so `offdisk backup --disk` finds the disk there while docked.
        let at = self.reg.mount_point.clone().unwrap_or_else(|| self.opts.mount_point(&self.reg.luks_uuid));
        std::fs::create_dir_all(&at).map_err(|e| HotplugError::io(format!("creating {}", at.display()), e))?;
        self.opened = true;
        self.backend.open_and_mount(self.reg, &at)?;
        self.mounted = Some(at.clone());
        identity::check(&at, &key, &self.reg.luks_uuid, &disk_id)
            .map_err(|why| HotplugError::IdentityMismatch { disk: disk.clone(), why })?;
        let mut forward = Forwarder::new(&disk, &mut *self.ui, self.opts.pacer.clone());
        let summary = self.backend.backup(self.reg, &at, &mut forward, &self.opts.stop)?;
        let verified = self.backend.verify(self.reg, &at, &mut forward, &self.opts.stop)?;
        self.exit_code = forward.exit_code;
        Ok(format!("{summary}; {verified}"))
    }

    fn unlock(&mut self, disk: &str) -> Result<(), HotplugError> {
        if self.reg.unlock == UnlockMethod::KeyFile {
            let path = self.reg.key_file.as_deref().ok_or_else(|| HotplugError::Config {
                path: self.opts.config.clone(),
                why: format!("disk {disk} uses unlock = \"key-file\" but has no key_file"),
            })?;
            let pass = read_key_file(path).map_err(|e| HotplugError::io(format!("key file {}", path.display()), e))?;
            return match self.backend.unlock(&self.dev.path, &pass)? {
                true => Ok(()),
                false => Err(HotplugError::WrongPassphrase { disk: disk.into(), tries: 1 }),
            };
        }
        let mut error = None;
        for attempt in 1..=self.opts.max_tries {
            let spec = AskSpec {
                id: format!("{}{}", ask_password::ID_PREFIX, self.reg.luks_uuid),
                disk: disk.to_string(),
                device: self.dev.describe(),
                attempt,
                max: self.opts.max_tries,
                error: error.take(),
            };
            let Some(pass) = self.ui.ask(&spec)? else {
                return Err(HotplugError::NoPassphrase(disk.into()));
            };
            if self.opts.stop.requested() {
                return Err(HotplugError::NoPassphrase(disk.into()));
            }
            if self.backend.unlock(&self.dev.path, &pass)? {
                return Ok(());
            }
            let left = self.opts.max_tries - attempt;
            error = Some(format!("Wrong passphrase; {left} {} left", if left == 1 { "try" } else { "tries" }));
        }
        Err(HotplugError::WrongPassphrase { disk: disk.into(), tries: self.opts.max_tries })
    }

    /// Unmounts and closes whatever was opened. The disk is safe to unplug only if both worked.
    fn cleanup(&mut self) -> Result<(), HotplugError> {
        if let Some(at) = self.mounted.take() {
            self.backend.unmount(&at)?;
            let _ = std::fs::remove_dir(&at);
        }
        if std::mem::take(&mut self.opened) {
            self.backend.close()?;
        }
        Ok(())
    }
}

/// Largest key file read, as cryptsetup's default --keyfile-size limit (8 MiB).
pub const MAX_KEY_FILE: u64 = 8 * 1024 * 1024;

/// A registered disk's key file: its whole content is the passphrase (as cryptsetup's key
/// files), read straight into locked memory of its exact size.
pub fn read_key_file(path: &Path) -> std::io::Result<Passphrase> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_KEY_FILE {
        return Err(std::io::Error::other("key file is larger than 8 MiB"));
    }
    if len == 0 {
        return Err(std::io::Error::other("key file is empty"));
    }
    let mut key = SecretBytes::zeroed(len as usize);
    f.read_exact(key.expose_mut())?;
    if f.read(&mut [0u8; 1])? != 0 {
        return Err(std::io::Error::other("key file changed while it was read"));
    }
    Ok(Passphrase::new(key))
}

/// The real UI of a dock: events go to the journal (stderr) and to the desktop agents
/// [`Audience`] admits; passphrases are asked through systemd's ask-password directory and
/// those agents at once, and the first answer wins.
pub struct AgentUi {
    pub ask_dir: PathBuf,
    pub links: AgentLinks,
    pub timeout: Duration,
    pub verbose: bool,
    /// `Some`: desktop agents are connected as the audience admits them, checked again
    /// before every event and while a question waits. `None`: `links` as given.
    pub audience: Option<Audience>,
    /// What an agent joining mid-dock is told first: Started, and the open question.
    replay: Vec<Event>,
    /// Set by dock's signal handling: a question still waiting is withdrawn.
    pub stop: Stop,
}

impl AgentUi {
    /// Talks to `links` only (tests, and console agents before the disk is known).
    pub fn new(ask_dir: PathBuf, links: AgentLinks, timeout: Duration) -> AgentUi {
        AgentUi { ask_dir, links, timeout, verbose: false, audience: None, replay: Vec::new(), stop: Stop::new() }
    }

    pub fn system(verbose: bool) -> AgentUi {
        AgentUi {
            audience: Some(Audience::system()),
            verbose,
            ..AgentUi::new(PathBuf::from(ask_password::SYSTEM_DIR), AgentLinks::default(), Duration::from_secs(300))
        }
    }

    /// Closes the links of users no longer admitted and connects the agents of users newly
    /// admitted (telling them what they missed).
    fn sync(&mut self) {
        let Some(a) = &self.audience else { return };
        let admitted = a.admitted();
        self.links.retain_uids(&admitted);
        for uid in admitted {
            let path = a.socket_of(uid);
            if self.links.has(&path) {
                continue;
            }
            let Ok(mut link) = AgentLinks::connect_one(&path, uid) else { continue };
            if self.replay.iter().all(|ev| link.send(ev)) {
                self.links.push(link);
            }
        }
    }
}

/// One journal line per event; never a secret (events carry none).
pub fn describe_event(ev: &Event) -> String {
    match ev {
        Event::Started { disk, device } => format!("{disk}: docked ({device}), starting"),
        Event::Ask { disk, attempt, max, .. } => format!("{disk}: asking for the passphrase ({attempt}/{max})"),
        Event::AskDone { .. } => "passphrase request closed".into(),
        Event::Progress { disk, text, .. } => format!("{disk}: {text}"),
        Event::Done { disk, summary } => format!("{disk}: done: {summary}"),
        Event::Failed { disk, reason } => format!("{disk}: failed: {reason}"),
        Event::SafeToUnplug { disk } => format!("{disk}: closed, safe to unplug"),
    }
}

impl Ui for AgentUi {
    fn disk_known(&mut self, reg: &Registration) {
        let Some(a) = &mut self.audience else { return };
        a.registered = reg.user.as_deref().and_then(|u| {
            let uid = audience::resolve_user(u);
            if uid.is_none() {
                eprintln!("offdisk dock: {}: registered user {u:?} does not exist here; only the active session's user is told", reg.name());
            }
            uid
        });
        self.sync();
        if self.verbose {
            let uids: Vec<String> = self.links.uids().iter().map(u32::to_string).collect();
            eprintln!("offdisk dock: {} agent(s) connected (users {})", self.links.len(), uids.join(", "));
        }
    }

    fn event(&mut self, ev: Event) {
        if self.verbose || !matches!(ev, Event::Progress { .. }) {
            eprintln!("offdisk dock: {}", describe_event(&ev));
        }
        if matches!(ev, Event::Started { .. }) {
            self.replay = vec![ev.clone()];
        }
        self.sync();
        self.links.send(&ev);
    }

    fn log(&mut self, line: &str) {
        eprintln!("offdisk dock: {line}");
    }

    fn ask(&mut self, spec: &AskSpec) -> Result<Option<Passphrase>, HotplugError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut message = format!("Passphrase for backup disk {} ({})", spec.disk, spec.device);
        if let Some(e) = &spec.error {
            message = format!("{e}. {message}");
        }
        let pending = Pending::post(&self.ask_dir, &Request { id: spec.id.clone(), message, icon: Some("drive-harddisk".into()), timeout: self.timeout })?;
        eprintln!("offdisk dock: {}", describe_event(&Event::Ask { id: spec.id.clone(), disk: spec.disk.clone(), device: String::new(), attempt: spec.attempt, max: spec.max, error: None }));
        let ask = Event::Ask {
            id: spec.id.clone(),
            disk: spec.disk.clone(),
            device: spec.device.clone(),
            attempt: spec.attempt,
            max: spec.max,
            error: spec.error.clone(),
        };
        self.sync();
        self.links.send(&ask);
        self.replay.push(ask);
        let answer = loop {
            self.sync();
            if let Some(r) = pending.try_recv()? {
                break Some(r);
            }
            if pending.expired() || self.stop.requested() {
                break None;
            }
            let (ready, n_links) = {
                let mut fds = vec![PollFd::new(pending.fd(), PollFlags::POLLIN)];
                fds.extend(self.links.fds().into_iter().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
                let _ = poll(&mut fds, PollTimeout::from(500u16));
                let ready: Vec<usize> = fds[1..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect();
                (ready, fds.len() - 1)
            };
            let _ = n_links;
            // Highest index first, so dropping a dead link does not shift the others.
            let mut got = None;
            for i in ready.into_iter().rev() {
                if let Some(r) = self.links.read_reply(i) {
                    got = Some(r);
                    break;
                }
            }
            if got.is_some() {
                break got;
            }
        };
        drop(pending);
        self.replay.retain(|ev| !matches!(ev, Event::Ask { .. }));
        self.links.send(&Event::AskDone { id: spec.id.clone() });
        Ok(match answer {
            Some(Reply::Passphrase(p)) if !p.is_empty() => Some(p),
            _ => None,
        })
    }
}
