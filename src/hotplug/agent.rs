//! `offdisk agent`: the desktop side of docking, started with the session (systemd user
//! unit or XDG autostart). It listens for dock sessions on its private socket (see
//! [`super::agent_link`] for who may connect), turns their events into notifications, and
//! answers passphrase requests through a pinentry dialog after the user chose "Unlock".
//! It also reminds about disks not refreshed for a while.
//!
//! `offdisk agent --console` is the same for a terminal without a desktop: it answers
//! offdisk's requests in systemd's ask-password directory (it must run as root there,
//! like systemd's own tty agent, because only root's answers are believed).

use super::agent_link::{AgentListener, DockConn, Event, TrustedPeer};
use super::ask_password;
use super::notify::{self, Choice, Level};
use super::pinentry::{self, PinRequest};
use super::{state, HotplugError};
use crate::secret::{Passphrase, SecretBytes};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the agent shows and asks through; the real one is [`Desktop`].
pub trait Desk {
    /// Shows a notification, replacing `replaces`; returns its id when the server gave one.
    fn notify(&mut self, summary: &str, body: &str, level: Level, replaces: Option<u32>) -> Option<u32>;
    /// Shows the "Unlock?" question and returns at once; `done` gets the user's choice
    /// later, from any thread. Returns the notification's id when there is one.
    fn ask_unlock(&mut self, summary: &str, body: &str, done: Box<dyn FnOnce(Choice) + Send>) -> Option<u32>;
    /// The question was answered elsewhere: replace it with a short note.
    fn withdraw(&mut self, notification: Option<u32>, disk: &str);
    fn get_pin(&mut self, req: &PinRequest) -> Result<Option<Passphrase>, HotplugError>;
}

/// Notifications over D-Bus and a pinentry program.
pub struct Desktop {
    pub pinentry: Option<PathBuf>,
}

impl Desk for Desktop {
    fn notify(&mut self, summary: &str, body: &str, level: Level, replaces: Option<u32>) -> Option<u32> {
        match notify::show(summary, body, level, replaces) {
            Ok(id) => Some(id),
            Err(e) => {
                eprintln!("offdisk agent: {e}");
                None
            }
        }
    }
    fn ask_unlock(&mut self, summary: &str, body: &str, done: Box<dyn FnOnce(Choice) + Send>) -> Option<u32> {
        // `done` moves into the waiting thread only on success; keep a way to call it otherwise.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(done)));
        let s2 = slot.clone();
        let call = Box::new(move |c| {
            if let Some(f) = s2.lock().ok().and_then(|mut g| g.take()) {
                f(c)
            }
        });
        match notify::ask_unlock(summary, body, call) {
            Ok(id) => Some(id),
            Err(e) => {
                // No notification server: go straight to the dialog rather than leave dock waiting.
                eprintln!("offdisk agent: {e}");
                if let Some(f) = slot.lock().ok().and_then(|mut g| g.take()) {
                    f(Choice::Unlock);
                }
                None
            }
        }
    }
    fn withdraw(&mut self, notification: Option<u32>, disk: &str) {
        if let Some(id) = notification {
            let _ = notify::show(&format!("Backup disk {disk}"), "The passphrase was given elsewhere.", Level::Low, Some(id));
        }
    }
    fn get_pin(&mut self, req: &PinRequest) -> Result<Option<Passphrase>, HotplugError> {
        let prog = self.pinentry.clone().or_else(pinentry::find_program).ok_or_else(|| HotplugError::Pinentry("no pinentry program found".into()))?;
        pinentry::get_pin(&prog, req)
    }
}

enum Msg {
    Event(Event),
    Choice { ask_id: String, choice: Choice },
    End(Option<std::io::Error>),
}

/// A question on screen, waiting for the user.
struct PendingAsk {
    ask_id: String,
    disk: String,
    device: String,
    attempt: u32,
    max: u32,
    error: Option<String>,
    notification: Option<u32>,
}

fn pin_request(disk: &str, device: &str, attempt: u32, max: u32, error: Option<String>) -> PinRequest {
    PinRequest {
        title: "offdisk".into(),
        description: format!("Enter the passphrase of backup disk \"{disk}\"\n{device}\n(attempt {attempt} of {max})"),
        prompt: "Passphrase:".into(),
        error,
    }
}

fn answer_with_pin(conn: &mut DockConn, desk: &mut dyn Desk, req: &PinRequest) -> std::io::Result<()> {
    match desk.get_pin(req) {
        Ok(answer) => conn.reply(answer.as_ref()),
        Err(e) => {
            eprintln!("offdisk agent: {e}");
            conn.reply(None)
        }
    }
}

/// Handles one dock session until dock hangs up. Events are read on their own thread, so
/// an "Unlock?" question still on screen never holds up later events: when the passphrase
/// is given elsewhere (a console agent), the question is withdrawn and progress goes on.
pub fn handle_session(conn: &mut DockConn, desk: &mut dyn Desk) -> std::io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<Msg>();
    let mut reader = conn.try_clone()?;
    let tx_events = tx.clone();
    std::thread::spawn(move || loop {
        match reader.next_event() {
            Ok(Some(ev)) => {
                if tx_events.send(Msg::Event(ev)).is_err() {
                    return;
                }
            }
            Ok(None) => return drop(tx_events.send(Msg::End(None))),
            Err(e) => return drop(tx_events.send(Msg::End(Some(e)))),
        }
    });
    let mut progress_id = None;
    let mut pending: Option<PendingAsk> = None;
    while let Ok(msg) = rx.recv() {
        let ev = match msg {
            Msg::End(None) => return Ok(()),
            Msg::End(Some(e)) => return Err(e),
            Msg::Choice { ask_id, choice } => {
                // Only the question still open counts; late clicks on withdrawn ones do not.
                let Some(p) = pending.take_if(|p| p.ask_id == ask_id) else { continue };
                match choice {
                    Choice::Unlock => answer_with_pin(conn, desk, &pin_request(&p.disk, &p.device, p.attempt, p.max, p.error))?,
                    Choice::Later => conn.reply(None)?,
                    // Left for another agent (tty, plymouth) or dock's timeout.
                    Choice::Dismissed => {}
                }
                continue;
            }
            Msg::Event(ev) => ev,
        };
        match ev {
            Event::Started { disk, device } => {
                desk.notify(&format!("Backup disk {disk} docked"), &format!("{device}\nStarting the backup."), Level::Normal, None);
            }
            Event::Ask { id, disk, device, attempt, max, error } => {
                if attempt > 1 {
                    // The user is already at it: the dialog comes back at once with the error.
                    answer_with_pin(conn, desk, &pin_request(&disk, &device, attempt, max, error))?;
                    continue;
                }
                let tx = tx.clone();
                let ask_id = id.clone();
                let done = Box::new(move |choice| {
                    let _ = tx.send(Msg::Choice { ask_id, choice });
                });
                let body = format!("{device}\noffdisk will back up onto it and close it.");
                let notification = desk.ask_unlock(&format!("Unlock backup disk {disk}?"), &body, done);
                pending = Some(PendingAsk { ask_id: id, disk, device, attempt, max, error, notification });
            }
            Event::AskDone { id } => {
                if let Some(p) = pending.take_if(|p| p.ask_id == id) {
                    desk.withdraw(p.notification, &p.disk);
                }
            }
            Event::Progress { disk, text, .. } => {
                progress_id = desk.notify(&format!("Backing up {disk}"), &text, Level::Low, progress_id).or(progress_id);
            }
            Event::Done { disk, summary } => {
                desk.notify(&format!("Backup of {disk} done"), &summary, Level::Normal, progress_id.take());
            }
            Event::Failed { disk, reason } => {
                desk.notify(&format!("Backup of {disk} failed"), &reason, Level::Critical, progress_id.take());
            }
            Event::SafeToUnplug { disk } => {
                desk.notify(&format!("{disk} is safe to unplug"), "The backup disk is closed.", Level::Normal, None);
            }
        }
    }
    Ok(())
}

/// Reminds about every disk not refreshed for `days` days.
pub fn remind_stale(desk: &mut dyn Desk, state_path: &Path, days: u64) -> usize {
    let stale = state::stale(&state::load(state_path), days, state::now());
    for (label, age) in &stale {
        desk.notify(
            &format!("Backup disk {label} not refreshed for {age} days"),
            "Dock it to bring the off-site copy up to date.",
            Level::Normal,
            None,
        );
    }
    stale.len()
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub runtime_dir: PathBuf,
    pub trusted: TrustedPeer,
    pub pinentry: Option<PathBuf>,
    pub state: PathBuf,
    pub stale_days: u64,
    /// Exit after the first dock session (tests).
    pub once: bool,
}

/// Runs the desktop agent until killed (or after one session with `once`).
pub fn run(opts: &AgentOptions) -> Result<(), HotplugError> {
    let listener = AgentListener::bind(&opts.runtime_dir)?;
    eprintln!("offdisk agent: listening on {}", listener.path().display());
    if opts.stale_days > 0 {
        let (state_path, days, pin) = (opts.state.clone(), opts.stale_days, opts.pinentry.clone());
        std::thread::spawn(move || loop {
            remind_stale(&mut Desktop { pinentry: pin.clone() }, &state_path, days);
            std::thread::sleep(Duration::from_secs(12 * 3600));
        });
    }
    loop {
        let mut conn = listener.accept(&opts.trusted).map_err(|e| HotplugError::io("accepting a dock connection", e))?;
        let pin = opts.pinentry.clone();
        let worker = std::thread::spawn(move || {
            if let Err(e) = handle_session(&mut conn, &mut Desktop { pinentry: pin }) {
                eprintln!("offdisk agent: dock session: {e}");
            }
        });
        if opts.once {
            let _ = worker.join();
            return Ok(());
        }
    }
}

/// Prints a dock session's events on the console, one line each; on a terminal, progress
/// updates rewrite one line in place. Returns when dock hangs up.
pub fn print_session(conn: &mut DockConn, out: &mut dyn std::io::Write, terminal: bool) {
    let mut in_place = false;
    while let Ok(Some(ev)) = conn.next_event() {
        let line = super::dock::describe_event(&ev);
        let progress = matches!(ev, Event::Progress { detail: Some(_), .. });
        let _ = if terminal && progress {
            in_place = true;
            write!(out, "\r\x1b[Koffdisk: {line}")
        } else {
            let nl = if std::mem::take(&mut in_place) { "\n" } else { "" };
            writeln!(out, "{nl}offdisk: {line}")
        };
        let _ = out.flush();
    }
    if in_place {
        let _ = writeln!(out);
    }
}

/// `--console`: answers offdisk's requests in `ask_dir` from the terminal (or, when stdin
/// is not a terminal, one line of stdin per request, for scripts), and shows the progress of
/// every dock that connects to `listen` (a root-only directory; see
/// [`AgentLinks::connect_console`](super::agent_link::AgentLinks::connect_console)).
/// `once`: stop after one answer (and after the dock session that asked, if one is shown).
pub fn run_console(ask_dir: &Path, require_root: bool, once: bool, listen: Option<&Path>) -> Result<(), HotplugError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| HotplugError::io("/proc/self/exe", e))?;
    let sessions = match listen {
        Some(dir) => Some(console_sessions(dir, TrustedPeer { uid: if require_root { 0 } else { nix::unistd::geteuid().as_raw() }, exe: exe.clone() })?),
        None => None,
    };
    let mut answered: HashSet<PathBuf> = HashSet::new();
    loop {
        let asks = ask_password::scan(ask_dir);
        answered.retain(|p| asks.iter().any(|a| &a.path == p));
        for a in asks {
            if answered.contains(&a.path) || !a.is_from_offdisk(&exe, require_root) {
                continue;
            }
            answered.insert(a.path.clone());
            let answer = read_console_passphrase(&format!("{} ", a.message.trim_end()))?;
            a.reply(answer.as_ref()).map_err(|e| HotplugError::io(format!("answering {}", a.socket.display()), e))?;
            if once {
                // Show the rest of the dock that asked, if it is connected.
                if let Some((_listener, active)) = &sessions {
                    while active.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The console's listener (its socket removed when this is dropped) and the sessions running.
type Sessions = (SocketGuard, std::sync::Arc<std::sync::atomic::AtomicUsize>);

struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Listens for docks and prints each session on stderr; the counter is the sessions running.
fn console_sessions(dir: &Path, trusted: TrustedPeer) -> Result<Sessions, HotplugError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let l = AgentListener::bind_console(dir)?;
    let guard = SocketGuard(l.path().to_path_buf());
    let active = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&active);
    std::thread::spawn(move || {
        while let Ok(mut conn) = l.accept(&trusted) {
            a.fetch_add(1, Ordering::SeqCst);
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                use std::io::IsTerminal;
                let terminal = std::io::stderr().is_terminal();
                print_session(&mut conn, &mut std::io::stderr(), terminal);
                a.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok((guard, active))
}

fn read_console_passphrase(prompt: &str) -> Result<Option<Passphrase>, HotplugError> {
    use std::io::IsTerminal;
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{prompt}: ")).map_err(|e| HotplugError::io("reading the passphrase", e))?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| HotplugError::io("reading the passphrase", e))?;
        line
    };
    let mut bytes = text.into_bytes();
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    let secret = SecretBytes::from_vec(bytes);
    Ok((!secret.is_empty()).then(|| Passphrase::new(secret)))
}
