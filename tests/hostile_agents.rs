//! Issue 8, item 6: a local user's desktop agent must not hear about a dock, cancel it or
//! answer its passphrase question unless that user has the active local session (logind's
//! state) or is the disk's registered user.
//!
//! Each agent here is a real listener on `<agents>/<uid>/offdisk/agent.sock`, run as its own
//! user (this test binary re-executed with another UID when the tests run as root; as the
//! caller's own UID otherwise), that logs every line it gets and answers every question with
//! a guess. Dock's side is the production [`AgentUi`] with an [`Audience`] over a logind
//! state directory written here in logind's format.
//!
//! Before this change dock connected every socket under /run/user (`connect_all`): the
//! stranger below would have logged the dock's events and its guess would have unlocked.

use offdisk::hotplug::agent_link::Event;
use offdisk::hotplug::audience::{Audience, Logind};
use offdisk::hotplug::dock::{AgentUi, AskSpec, Ui};
use offdisk::hotplug::registry::{Registration, UnlockMethod};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const SOCK_ENV: &str = "OFFDISK_TEST_AGENT_SOCK";
const LOG_ENV: &str = "OFFDISK_TEST_AGENT_LOG";

/// Not a test: the body of a stand-in agent when re-executed with [`SOCK_ENV`] set.
#[test]
fn stand_in_agent() {
    let Some(sock) = std::env::var_os(SOCK_ENV) else { return };
    let log_path = PathBuf::from(std::env::var_os(LOG_ENV).unwrap());
    let listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut log = std::fs::OpenOptions::new().append(true).create(true).open(&log_path).unwrap();
    writeln!(log, "listening").unwrap();
    // One connection at a time, in order: the log is the agent's whole story.
    loop {
        let (s, _) = listener.accept().unwrap();
        let mut answer = s.try_clone().unwrap();
        writeln!(log, "connected").unwrap();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            let ty = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["type"].as_str().map(str::to_string));
            writeln!(log, "{}", ty.as_deref().unwrap_or(&line)).unwrap();
            if line.contains("\"type\":\"ask\"") {
                let _ = answer.write_all(b"+guess\n");
            }
        }
        writeln!(log, "closed").unwrap();
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A stand-in agent of `uid`, killed when dropped.
struct Agent {
    child: Child,
    uid: u32,
    log: PathBuf,
    sock: PathBuf,
}

impl Agent {
    fn start(agents: &Path, uid: u32) -> Agent {
        let home = agents.join(uid.to_string());
        std::fs::create_dir_all(home.join("offdisk")).unwrap();
        for d in [home.clone(), home.join("offdisk")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            nix::unistd::chown(&d, Some(uid.into()), None).unwrap();
        }
        let sock = home.join("offdisk/agent.sock");
        let log = home.join("agent.log");
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "stand_in_agent", "--nocapture", "--test-threads=1"]).env(SOCK_ENV, &sock).env(LOG_ENV, &log);
        cmd.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(home.join("agent.err")).unwrap());
        if uid != me() {
            cmd.uid(uid).gid(uid);
        }
        let child = cmd.spawn().unwrap();
        let agent = Agent { child, uid, log, sock };
        agent.wait_for("listening");
        agent
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Waits (for a state, with a generous bound against hangs) until `line` is logged.
    fn wait_for(&self, line: &str) {
        for _ in 0..3000 {
            if self.lines().iter().any(|l| l == line) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent {} never logged {line:?}: {:?}", self.uid, self.lines());
    }

    /// Everything the agent heard, once every connection made to it has been handled:
    /// a probe connection (its own token) is served only after the earlier ones are closed.
    fn heard(&self) -> Vec<String> {
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let probe = format!("probe-{}", PROBES.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.write_all(format!("{probe}\n").as_bytes()).unwrap();
        drop(s);
        self.wait_for(&probe);
        let mut blocks: Vec<Vec<String>> = Vec::new();
        for l in self.lines().into_iter().skip(1) {
            match blocks.last_mut() {
                Some(b) if l != "connected" => b.push(l),
                _ => blocks.push(vec![l]),
            }
        }
        // Probe connections (this one may not have logged its end yet) are not the dock's.
        blocks.into_iter().filter(|b| !b.iter().any(|l| l.starts_with("probe-"))).flatten().collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three users: the stranger (logged in, not at the seat), the user at the seat, and the
/// disk's owner. Root can run them as three UIDs; anyone else plays each part in turn.
fn users() -> Option<(u32, u32, u32)> {
    (me() == 0).then_some((60101, 60102, 60103))
}

struct Desk {
    dir: tempfile::TempDir,
    agents: PathBuf,
    logind: Logind,
}

fn desk() -> Desk {
    let dir = tempfile::tempdir().unwrap();
    // Other users' agents must reach their directories below it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agents = dir.path().join("user");
    std::fs::create_dir(&agents).unwrap();
    std::fs::set_permissions(&agents, std::fs::Permissions::from_mode(0o755)).unwrap();
    let logind = Logind { seats: dir.path().join("seats"), sessions: dir.path().join("sessions") };
    std::fs::create_dir(&logind.seats).unwrap();
    std::fs::create_dir(&logind.sessions).unwrap();
    Desk { dir, agents, logind }
}

impl Desk {
    /// `uid` gets the active local session on seat0 (other sessions of the seat stay inactive).
    fn activate(&self, uid: u32) {
        let id = format!("s{uid}");
        std::fs::write(self.logind.sessions.join(&id), format!("UID={uid}\nACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=wayland\nCLASS=user\nSEAT=seat0\n")).unwrap();
        std::fs::write(self.logind.seats.join("seat0"), format!("IS_SEAT0=1\nACTIVE={id}\nACTIVE_UID={uid}\n")).unwrap();
    }

    fn ui(&self, timeout: Duration) -> AgentUi {
        let mut ui = AgentUi::new(self.dir.path().join("ask"), Default::default(), timeout);
        std::fs::create_dir_all(&ui.ask_dir).unwrap();
        ui.audience = Some(Audience { agents_dir: self.agents.clone(), logind: self.logind.clone(), registered: None });
        ui
    }
}

fn registration(user: Option<u32>) -> Registration {
    Registration {
        luks_uuid: "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10".into(),
        label: Some("offsite-A".into()),
        sources: vec![],
        excludes: vec![],
        unlock: UnlockMethod::Passphrase,
        key_file: None,
        identity: None,
        mount_point: None,
        retention: Default::default(),
        user: user.map(|u| u.to_string()),
    }
}

fn ask() -> AskSpec {
    AskSpec { id: "offdisk-dock:0b4f".into(), disk: "offsite-A".into(), device: "Ext Disk".into(), attempt: 1, max: 3, error: None }
}

fn started() -> Event {
    Event::Started { disk: "offsite-A".into(), device: "Ext Disk".into() }
}

fn progress() -> Event {
    Event::Progress { disk: "offsite-A".into(), text: "50%".into(), detail: None }
}

/// A dock the agents may hear: docked, a question, progress, then the end.
fn run_dock(ui: &mut AgentUi, reg: &Registration) -> Option<Vec<u8>> {
    ui.disk_known(reg);
    ui.event(started());
    let answer = ui.ask(&ask()).unwrap().map(|p| p.expose().to_vec());
    ui.event(progress());
    ui.event(Event::SafeToUnplug { disk: "offsite-A".into() });
    answer
}

const HEARD_ALL: [&str; 7] = ["connected", "started", "ask", "ask-done", "progress", "safe-to-unplug", "closed"];

#[test]
fn a_logged_in_user_who_is_not_at_the_seat_hears_nothing_and_cannot_answer() {
    let d = desk();
    let (stranger, at_seat) = match users() {
        Some((s, a, _)) => (s, a),
        None => (me(), me() + 1),
    };
    let agent = Agent::start(&d.agents, stranger);
    d.activate(at_seat);
    let mut ui = d.ui(Duration::from_millis(500));
    let answer = run_dock(&mut ui, &registration(None));
    drop(ui);
    assert_eq!(answer, None, "the stranger's guess was taken as the passphrase");
    assert!(agent.heard().is_empty(), "the stranger heard: {:?}", agent.heard());
}

#[test]
fn no_logind_and_no_registered_user_means_no_desktop_agent() {
    let d = desk();
    let uid = users().map_or(me(), |u| u.0);
    if uid == 0 {
        return; // root's agent is always told; users() gives root other UIDs to test with
    }
    let agent = Agent::start(&d.agents, uid);
    let mut ui = d.ui(Duration::from_millis(300));
    assert_eq!(run_dock(&mut ui, &registration(None)), None);
    drop(ui);
    assert!(agent.heard().is_empty(), "{:?}", agent.heard());
}

#[test]
fn the_user_at_the_seat_hears_everything_and_answers() {
    let d = desk();
    let uid = users().map_or(me(), |u| u.1);
    let agent = Agent::start(&d.agents, uid);
    d.activate(uid);
    let mut ui = d.ui(Duration::from_secs(120));
    assert_eq!(run_dock(&mut ui, &registration(None)).as_deref(), Some(&b"guess"[..]));
    drop(ui);
    assert_eq!(agent.heard(), HEARD_ALL);
}

#[test]
fn the_registered_user_hears_the_dock_of_their_disk_from_anywhere() {
    let d = desk();
    let (owner, at_seat) = match users() {
        Some((_, a, o)) => (o, a),
        None => (me(), me() + 1),
    };
    let agent = Agent::start(&d.agents, owner);
    d.activate(at_seat);
    let mut ui = d.ui(Duration::from_secs(120));
    assert_eq!(run_dock(&mut ui, &registration(Some(owner))).as_deref(), Some(&b"guess"[..]));
    drop(ui);
    assert_eq!(agent.heard(), HEARD_ALL);
    // The same agent, when the disk is someone else's, hears nothing.
    let mut ui = d.ui(Duration::from_millis(300));
    assert_eq!(run_dock(&mut ui, &registration(Some(at_seat))), None);
    drop(ui);
    assert_eq!(agent.heard(), HEARD_ALL, "nothing more");
}

#[test]
fn a_user_switch_moves_the_dock_to_the_new_user_at_the_seat() {
    let d = desk();
    let Some((_, first, second)) = users() else {
        // One UID: only the half where the user who leaves the seat is cut off.
        let agent = Agent::start(&d.agents, me());
        d.activate(me());
        let mut ui = d.ui(Duration::from_secs(1));
        ui.disk_known(&registration(None));
        ui.event(started());
        d.activate(me() + 1);
        ui.event(progress());
        drop(ui);
        assert_eq!(agent.heard(), ["connected", "started", "closed"]);
        return;
    };
    let a = Agent::start(&d.agents, first);
    let b = Agent::start(&d.agents, second);
    d.activate(first);
    let mut ui = d.ui(Duration::from_secs(120));
    ui.disk_known(&registration(None));
    ui.event(started());
    d.activate(second);
    // The new user at the seat is told what they missed, then gets the question.
    assert_eq!(ui.ask(&ask()).unwrap().map(|p| p.expose().to_vec()).as_deref(), Some(&b"guess"[..]));
    ui.event(progress());
    drop(ui);
    assert_eq!(a.heard(), ["connected", "started", "closed"], "the user who left the seat hears nothing more");
    assert_eq!(b.heard(), ["connected", "started", "ask", "ask-done", "progress", "closed"]);
}
