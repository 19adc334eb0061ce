//! Asking through both channels at once, and the desktop agent's handling of a dock
//! session (with a scripted desk standing in for the notification server and pinentry).

use offdisk::hotplug::agent::{handle_session, remind_stale, Desk};
use offdisk::hotplug::agent_link::{AgentLinks, DockConn, Event};
use offdisk::hotplug::ask_password::{self, scan};
use offdisk::hotplug::dock::{AgentUi, AskSpec, Ui};
use offdisk::hotplug::notify::{Choice, Level};
use offdisk::hotplug::pinentry::PinRequest;
use offdisk::hotplug::{state, HotplugError};
use offdisk::secret::Passphrase;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn spec(attempt: u32) -> AskSpec {
    AskSpec { id: format!("{}abcd", ask_password::ID_PREFIX), disk: "offsite-A".into(), device: "Ext Disk (serial S1)".into(), attempt, max: 3, error: None }
}

#[test]
fn systemd_agent_answer_reaches_dock_and_request_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let mut ui = AgentUi::new(dir.path().to_path_buf(), AgentLinks::default(), Duration::from_secs(20));
    let d = dir.path().to_path_buf();
    let agent = std::thread::spawn(move || loop {
        if let Some(a) = scan(&d).pop() {
            assert!(a.message.contains("offsite-A") && a.message.contains("S1"), "{}", a.message);
            a.reply(Some(&Passphrase::from_slice(b"from tty agent"))).unwrap();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    });
    let got = ui.ask(&spec(1)).unwrap().unwrap();
    assert_eq!(got.expose(), b"from tty agent");
    agent.join().unwrap();
    assert!(scan(dir.path()).is_empty(), "request withdrawn once answered");
}

#[test]
fn desktop_agent_answer_reaches_dock_and_others_are_told_done() {
    let dir = tempfile::tempdir().unwrap();
    let (dock_end, agent_end) = UnixStream::pair().unwrap();
    let mut links = AgentLinks::default();
    // The pair's peer is this process, same uid: what connect_one would have accepted.
    links.push(AgentLinks::connect_one_stream(dock_end, nix::unistd::geteuid().as_raw()));
    let mut ui = AgentUi::new(dir.path().to_path_buf(), links, Duration::from_secs(20));
    let agent = std::thread::spawn(move || {
        let mut c = DockConn::from_stream(agent_end);
        let ev = c.next_event().unwrap().unwrap();
        let Event::Ask { attempt, error, device, .. } = ev else { panic!("{ev:?}") };
        assert_eq!((attempt, error.as_deref(), device.as_str()), (2, Some("Wrong passphrase; 2 tries left"), "Ext Disk (serial S1)"));
        c.reply(Some(&Passphrase::from_slice(b"from desktop"))).unwrap();
        let done = c.next_event().unwrap().unwrap();
        assert!(matches!(done, Event::AskDone { .. }));
    });
    let mut s = spec(2);
    s.error = Some("Wrong passphrase; 2 tries left".into());
    assert_eq!(ui.ask(&s).unwrap().unwrap().expose(), b"from desktop");
    agent.join().unwrap();
    assert!(scan(dir.path()).is_empty());
}

#[test]
fn unanswered_request_times_out_as_no_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let mut ui = AgentUi::new(dir.path().to_path_buf(), AgentLinks::default(), Duration::from_millis(300));
    assert!(ui.ask(&spec(1)).unwrap().is_none());
    assert!(scan(dir.path()).is_empty());
}

/// Records notifications; answers the Unlock question and pinentry from scripts.
#[derive(Default)]
struct ScriptedDesk {
    /// summary, body, level, the id it replaces
    shown: Vec<(String, String, Level, Option<u32>)>,
    choices: Vec<Option<Choice>>,
    withdrawn: Vec<(Option<u32>, String)>,
    pins: Vec<Option<&'static [u8]>>,
    pin_requests: Vec<PinRequest>,
    unlock_questions: usize,
}

impl Desk for ScriptedDesk {
    fn notify(&mut self, summary: &str, body: &str, level: Level, replaces: Option<u32>) -> Option<u32> {
        self.shown.push((summary.into(), body.into(), level, replaces));
        if let Some(id) = replaces {
            return Some(id);
        }
        Some(self.shown.len() as u32)
    }
    fn ask_unlock(&mut self, summary: &str, body: &str, done: Box<dyn FnOnce(Choice) + Send>) -> Option<u32> {
        self.unlock_questions += 1;
        self.shown.push((summary.into(), body.into(), Level::Critical, None));
        // None: the user does nothing (the question stays open).
        if let Some(c) = self.choices.remove(0) {
            done(c);
        }
        Some(self.shown.len() as u32)
    }
    fn withdraw(&mut self, notification: Option<u32>, disk: &str) {
        self.withdrawn.push((notification, disk.to_string()));
    }
    fn get_pin(&mut self, req: &PinRequest) -> Result<Option<Passphrase>, HotplugError> {
        self.pin_requests.push(req.clone());
        Ok(self.pins.remove(0).map(Passphrase::from_slice))
    }
}

fn send(s: &mut UnixStream, ev: &Event) {
    use std::io::Write;
    let mut l = serde_json::to_string(ev).unwrap();
    l.push('\n');
    s.write_all(l.as_bytes()).unwrap();
}

fn read_reply(s: &mut UnixStream) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    out
}

#[test]
fn agent_turns_a_dock_session_into_notifications_and_answers() {
    let (mut dock, agent_end) = UnixStream::pair().unwrap();
    let worker = std::thread::spawn(move || {
        let mut desk = ScriptedDesk { choices: vec![Some(Choice::Unlock)], pins: vec![Some(b"wrong"), Some(b"right")], ..Default::default() };
        handle_session(&mut DockConn::from_stream(agent_end), &mut desk).unwrap();
        desk
    });
    let ask = |attempt, error: Option<&str>| Event::Ask { id: "offdisk-dock:u".into(), disk: "offsite-A".into(), device: "Ext Disk (serial S1)".into(), attempt, max: 3, error: error.map(str::to_string) };
    send(&mut dock, &Event::Started { disk: "offsite-A".into(), device: "Ext Disk (serial S1)".into() });
    send(&mut dock, &ask(1, None));
    assert_eq!(read_reply(&mut dock), b"+wrong");
    send(&mut dock, &ask(2, Some("Wrong passphrase; 2 tries left")));
    assert_eq!(read_reply(&mut dock), b"+right");
    send(&mut dock, &Event::AskDone { id: "offdisk-dock:u".into() });
    send(&mut dock, &Event::Progress { disk: "offsite-A".into(), text: "copying".into(), detail: None });
    send(&mut dock, &Event::Progress { disk: "offsite-A".into(), text: "3 files, 1 KiB, 50%".into(), detail: None });
    send(&mut dock, &Event::Done { disk: "offsite-A".into(), summary: "generation 2".into() });
    send(&mut dock, &Event::SafeToUnplug { disk: "offsite-A".into() });
    drop(dock);
    let desk = worker.join().unwrap();
    assert_eq!(desk.unlock_questions, 1, "the second try goes straight to the dialog");
    assert_eq!(desk.pin_requests.len(), 2);
    assert!(desk.pin_requests[0].description.contains("offsite-A") && desk.pin_requests[0].description.contains("S1"));
    assert_eq!(desk.pin_requests[1].error.as_deref(), Some("Wrong passphrase; 2 tries left"));
    let summaries: Vec<&str> = desk.shown.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        summaries,
        ["Backup disk offsite-A docked", "Unlock backup disk offsite-A?", "Backing up offsite-A", "Backing up offsite-A", "Backup of offsite-A done", "offsite-A is safe to unplug"]
    );
    // One progress notification, updated in place, then replaced by the result.
    let first = Some(3);
    assert_eq!((desk.shown[2].3, desk.shown[3].3, desk.shown[4].3), (None, first, first));
    assert_eq!(desk.shown[3].1, "3 files, 1 KiB, 50%");
    assert_eq!(desk.shown[4].1, "generation 2");
}

#[test]
fn not_now_cancels_and_failure_is_critical() {
    let (mut dock, agent_end) = UnixStream::pair().unwrap();
    let worker = std::thread::spawn(move || {
        let mut desk = ScriptedDesk { choices: vec![Some(Choice::Later)], ..Default::default() };
        handle_session(&mut DockConn::from_stream(agent_end), &mut desk).unwrap();
        desk
    });
    send(&mut dock, &Event::Ask { id: "i".into(), disk: "B".into(), device: "d".into(), attempt: 1, max: 3, error: None });
    assert_eq!(read_reply(&mut dock), b"-");
    send(&mut dock, &Event::Failed { disk: "B".into(), reason: "no passphrase given for disk B".into() });
    drop(dock);
    let desk = worker.join().unwrap();
    assert!(desk.pin_requests.is_empty());
    let last = desk.shown.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str(), last.2), ("Backup of B failed", "no passphrase given for disk B", Level::Critical));
}

#[test]
fn stale_disks_are_reminded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.json");
    let mut st = state::State::new();
    let old = state::now() - 12 * 86_400;
    st.insert("u1".into(), state::DiskState { label: "offsite-A".into(), last_success: Some(old), last_attempt: Some(old), last_result: None });
    st.insert("u2".into(), state::DiskState { label: "offsite-B".into(), last_success: Some(state::now()), last_attempt: None, last_result: None });
    std::fs::write(&p, serde_json::to_string(&st).unwrap()).unwrap();
    let mut desk = ScriptedDesk::default();
    assert_eq!(remind_stale(&mut desk, &p, 7), 1);
    assert_eq!(desk.shown[0].0, "Backup disk offsite-A not refreshed for 12 days");
}

#[test]
fn question_answered_elsewhere_is_withdrawn_and_events_keep_flowing() {
    let (mut dock, agent_end) = UnixStream::pair().unwrap();
    let worker = std::thread::spawn(move || {
        // The user never reacts to the "Unlock?" question.
        let mut desk = ScriptedDesk { choices: vec![None], ..Default::default() };
        handle_session(&mut DockConn::from_stream(agent_end), &mut desk).unwrap();
        desk
    });
    send(&mut dock, &Event::Ask { id: "offdisk-dock:u".into(), disk: "C".into(), device: "d".into(), attempt: 1, max: 3, error: None });
    // Answered on the console instead: dock withdraws the request and goes on.
    send(&mut dock, &Event::AskDone { id: "offdisk-dock:u".into() });
    send(&mut dock, &Event::Done { disk: "C".into(), summary: "generation 3".into() });
    send(&mut dock, &Event::SafeToUnplug { disk: "C".into() });
    drop(dock);
    let desk = worker.join().unwrap();
    assert_eq!(desk.withdrawn, vec![(Some(1), "C".to_string())]);
    assert!(desk.pin_requests.is_empty());
    assert_eq!(desk.shown.last().unwrap().0, "C is safe to unplug");
}

#[test]
fn console_agent_shows_the_same_progress() {
    use offdisk::hotplug::agent::print_session;
    use offdisk::hotplug::agent_link::ProgressDetail;
    let detail = |p| Some(ProgressDetail { files: 3, bytes: 1024, new_bytes: 0, bytes_per_second: 512, percent: Some(p), eta_seconds: Some(10) });
    for terminal in [false, true] {
        let (mut dock, agent_end) = UnixStream::pair().unwrap();
        send(&mut dock, &Event::Started { disk: "offsite-A".into(), device: "Ext Disk".into() });
        send(&mut dock, &Event::Progress { disk: "offsite-A".into(), text: "backing up".into(), detail: None });
        send(&mut dock, &Event::Progress { disk: "offsite-A".into(), text: "3 files, 40%".into(), detail: detail(40) });
        send(&mut dock, &Event::Progress { disk: "offsite-A".into(), text: "3 files, 90%".into(), detail: detail(90) });
        send(&mut dock, &Event::Done { disk: "offsite-A".into(), summary: "generation 2".into() });
        drop(dock);
        let mut out = Vec::new();
        print_session(&mut DockConn::from_stream(agent_end), &mut out, terminal);
        let text = String::from_utf8(out).unwrap();
        if terminal {
            assert_eq!(
                text,
                "offdisk: offsite-A: docked (Ext Disk), starting\noffdisk: offsite-A: backing up\n\
                 \r\x1b[Koffdisk: offsite-A: 3 files, 40%\r\x1b[Koffdisk: offsite-A: 3 files, 90%\n\
                 offdisk: offsite-A: done: generation 2\n"
            );
        } else {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines, ["offdisk: offsite-A: docked (Ext Disk), starting", "offdisk: offsite-A: backing up", "offdisk: offsite-A: 3 files, 40%", "offdisk: offsite-A: 3 files, 90%", "offdisk: offsite-A: done: generation 2"]);
        }
    }
}
