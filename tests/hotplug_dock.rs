//! The dock sequence with a fake disk: which steps run, in which order, what people are
//! told, and that everything opened is closed again on every path.

use offdisk::hotplug::agent_link::Event;
use offdisk::hotplug::device::DeviceInfo;
use offdisk::hotplug::dock::{dock, AskSpec, Backend, DockOptions, Outcome, Probe, Ui};
use offdisk::hotplug::identity::{self, HostKey};
use offdisk::hotplug::register::{register_device, unregister, RegisterSpec};
use offdisk::hotplug::udisks_rule::RuleDir;
use offdisk::hotplug::registry::{self, Registration};
use offdisk::hotplug::{state, HotplugError};
use offdisk::job::event::{BackupOutcome, Estimate, Event as JobEvent, JobKind, Meter, Step, VerifyOutcome};
use offdisk::job::{Observer, Stop};
use offdisk::secret::Passphrase;
use std::path::{Path, PathBuf};

const UUID: &str = "5d2f3c4a-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const PASS: &[u8] = b"right horse";

/// A disk whose "filesystem" is a directory copied into the mount point at mount and back
/// at unmount, so identity records written through the mount persist like on a real disk.
struct FakeDisk {
    uuid: String,
    contents: PathBuf,
    calls: Vec<String>,
    fail_backup: bool,
    /// The backup makes its generation without two entries (a partial run).
    partial: bool,
    /// Requested when dock unmounts: the stop (SIGTERM) of a pulled disk's unit arriving
    /// while dock already cleans up after the I/O error the pull caused.
    stop_at_unmount: Option<Stop>,
    /// The sequence number of the disk's attachment (a new one at each plug-in).
    seq: Option<u64>,
    /// The device is gone once the dock ends (pulled out).
    removed: bool,
    /// Removing the mapping fails (something still holds it).
    fail_close: bool,
}

impl FakeDisk {
    fn new(dir: &Path, uuid: &str) -> FakeDisk {
        let contents = dir.join(format!("disk-{uuid}"));
        std::fs::create_dir_all(&contents).unwrap();
        FakeDisk { uuid: uuid.into(), contents, calls: Vec::new(), fail_backup: false, partial: false, stop_at_unmount: None, seq: Some(7), removed: false, fail_close: false }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

impl Backend for FakeDisk {
    fn probe(&mut self, _dev: &Path) -> Result<Probe, HotplugError> {
        self.calls.push("probe".into());
        Ok(Probe { luks_uuid: self.uuid.clone(), label: Some("hdr-label".into()) })
    }
    fn unlock(&mut self, _dev: &Path, pass: &Passphrase) -> Result<bool, HotplugError> {
        let ok = pass.expose() == PASS;
        self.calls.push(format!("unlock:{ok}"));
        Ok(ok)
    }
    fn open_and_mount(&mut self, _reg: &Registration, at: &Path) -> Result<(), HotplugError> {
        self.calls.push("mount".into());
        copy_tree(&self.contents, at);
        Ok(())
    }
    /// A backup job's events as the engine would send them: 20 s of copying 100 files
    /// (a progress event every half second), a sync, one generation pruned.
    fn backup(&mut self, _reg: &Registration, mount: &Path, obs: &mut dyn Observer, _stop: &Stop) -> Result<String, HotplugError> {
        self.calls.push("backup".into());
        let estimate = Some(Estimate { files: 100, bytes: 100_000 });
        obs.event(&JobEvent::Started { job: JobKind::Backup, estimate });
        if self.fail_backup {
            return Err(HotplugError::Step { step: "backup", why: "disk full".into(), code: 1 });
        }
        obs.event(&JobEvent::Step { step: Step::Copying });
        for i in 1..=40u64 {
            let p = Meter::measure(estimate, i * 5 / 2, i * 2500, i, i * 1000, std::time::Duration::from_millis(i * 500));
            obs.event(&JobEvent::Progress(p));
        }
        obs.event(&JobEvent::Step { step: Step::Syncing });
        obs.event(&JobEvent::Step { step: Step::Pruning });
        obs.event(&JobEvent::Pruned { generation: "2020-01-01T000000Z".into() });
        std::fs::write(mount.join("generation-1"), b"data").unwrap();
        obs.event(&JobEvent::BackupFinished(BackupOutcome {
            generation: "g1".into(),
            files: 100,
            bytes: 100_000,
            new_bytes: 40_000,
            copied_files: 40,
            linked_files: 60,
            seconds: 20.0,
            pruned: vec!["2020-01-01T000000Z".into()],
            warnings: if self.partial { 2 } else { 0 },
            incomplete: self.partial.then(|| offdisk::backup::Incomplete { not_backed_up: 1, vanished: 1, paths: vec!["/home/a".into(), "/home/b".into()] }),
            exit_code: if self.partial { 23 } else { 0 },
        }));
        Ok("generation 1: 1 file".into())
    }
    fn verify(&mut self, _reg: &Registration, _mount: &Path, obs: &mut dyn Observer, _stop: &Stop) -> Result<String, HotplugError> {
        self.calls.push("verify".into());
        obs.event(&JobEvent::Started { job: JobKind::Verify, estimate: None });
        obs.event(&JobEvent::Verified { generation: "g1".into(), index: 1, of: 1, problems: 0 });
        obs.event(&JobEvent::VerifyFinished(VerifyOutcome { generations: 1, files: 100, bytes: 100_000, bytes_read: 0, problems: 0, seconds: 0.1 }));
        Ok("verified".into())
    }
    fn unmount(&mut self, at: &Path) -> Result<(), HotplugError> {
        self.calls.push("unmount".into());
        if let Some(s) = &self.stop_at_unmount {
            s.request();
        }
        std::fs::remove_dir_all(&self.contents).unwrap();
        copy_tree(at, &self.contents);
        std::fs::remove_dir_all(at).unwrap();
        std::fs::create_dir(at).unwrap();
        Ok(())
    }
    fn close(&mut self) -> Result<(), HotplugError> {
        self.calls.push("close".into());
        if self.fail_close {
            return Err(HotplugError::Step { step: "close", why: "luks-x is busy".into(), code: 5 });
        }
        Ok(())
    }
    fn disk_seq(&mut self, _dev: &Path) -> Option<u64> {
        self.seq
    }
    fn present(&mut self, _dev: &Path) -> bool {
        !self.removed
    }
}

/// Answers asks from a list (None = cancel) and records events.
#[derive(Default)]
struct ScriptedUi {
    answers: Vec<Option<&'static [u8]>>,
    asks: Vec<AskSpec>,
    events: Vec<Event>,
    logs: Vec<String>,
    /// Disks named to the UI, with how many events it had seen by then.
    known: Vec<(String, usize)>,
}

impl Ui for ScriptedUi {
    fn disk_known(&mut self, reg: &Registration) {
        self.known.push((reg.name().to_string(), self.events.len()));
    }
    fn event(&mut self, ev: Event) {
        self.events.push(ev);
    }
    fn log(&mut self, line: &str) {
        self.logs.push(line.to_string());
    }
    fn ask(&mut self, spec: &AskSpec) -> Result<Option<Passphrase>, HotplugError> {
        self.asks.push(spec.clone());
        let a = if self.answers.is_empty() { None } else { self.answers.remove(0) };
        Ok(a.map(Passphrase::from_slice))
    }
}

struct Env {
    dir: tempfile::TempDir,
    opts: DockOptions,
    dev: DeviceInfo,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let opts = DockOptions {
        config: dir.path().join("config.toml"),
        host_key: dir.path().join("host.key"),
        run_dir: dir.path().join("run"),
        state: dir.path().join("state.json"),
        ..DockOptions::system()
    };
    let dev = DeviceInfo { kernel_name: "sdx1".into(), path: "/dev/sdx1".into(), model: Some("Ext Disk".into()), serial: Some("S123".into()), size_bytes: None };
    Env { dir, opts, dev }
}

fn spec_at(e: &Env) -> RegisterSpec {
    RegisterSpec {
        label: Some("offsite-A".into()),
        sources: vec!["/home".into()],
        mount_point: Some(e.dir.path().join("mnt")),
        run_dir: Some(e.opts.run_dir.clone()),
        ..Default::default()
    }
}

fn registered(e: &Env) -> FakeDisk {
    let mut disk = FakeDisk::new(e.dir.path(), UUID);
    register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &spec_at(e), &mut disk).unwrap();
    assert_eq!(disk.calls, ["probe", "unlock:true", "mount", "unmount", "close"]);
    disk.calls.clear();
    disk
}

#[test]
fn registration_writes_config_and_identity_record() {
    let e = env();
    let disk = registered(&e);
    let regs = registry::load(&e.opts.config).unwrap();
    let reg = registry::find(&regs, UUID).unwrap();
    assert_eq!(reg.label.as_deref(), Some("offsite-A"));
    let key = HostKey::load(&e.opts.host_key).unwrap();
    let id = reg.identity.clone().unwrap();
    assert_eq!(identity::check(&disk.contents, &key, UUID, &id), Ok(()));
    // A second registration of the same disk needs --force.
    let mut again = FakeDisk::new(e.dir.path(), UUID);
    let r = register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &spec_at(&e), &mut again);
    assert!(matches!(r, Err(HotplugError::AlreadyRegistered(_))));
    assert_eq!(again.calls, ["probe"], "nothing unlocked for a refused registration");
}

#[test]
fn registered_disk_is_backed_up_verified_and_closed() {
    let e = env();
    let mut disk = registered(&e);
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let out = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap();
    assert_eq!(out, Outcome::Done { disk: "offsite-A".into(), summary: "generation 1: 1 file; verified".into(), exit_code: 0 });
    assert_eq!(disk.calls, ["probe", "unlock:true", "mount", "backup", "verify", "unmount", "close"]);
    assert!(disk.contents.join("generation-1").exists(), "the backup reached the disk");
    assert_eq!(ui.asks.len(), 1);
    assert_eq!(ui.asks[0].device, "Ext Disk (serial S123)");
    assert!(ui.asks[0].id.ends_with(UUID));
    assert_eq!(ui.known, [("offsite-A".to_string(), 0)], "the UI learns the disk (and so who may hear) before any event");
    assert!(matches!(ui.events.first(), Some(Event::Started { .. })));
    assert!(ui.events.iter().any(|e| matches!(e, Event::Progress { detail: Some(_), .. })));
    let n = ui.events.len();
    assert!(matches!(&ui.events[n - 2], Event::Done { .. }));
    assert_eq!(ui.events[n - 1], Event::SafeToUnplug { disk: "offsite-A".into() });
    let st = state::load(&e.opts.state);
    assert!(st[UUID].last_success.is_some());
    assert!(!e.dir.path().join("mnt").exists(), "the registered mount point was used and removed after");
}

#[test]
fn progress_reaches_desktop_and_journal_in_order_and_at_a_human_pace() {
    let e = env();
    let mut disk = registered(&e);
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap();
    let texts: Vec<String> = ui.events.iter().filter_map(|e| match e { Event::Progress { text, .. } => Some(text.clone()), _ => None }).collect();
    // Phases in order, numbers between them.
    let phase = |t: &str| texts.iter().position(|x| x == t).unwrap_or_else(|| panic!("no {t:?} in {texts:#?}"));
    let (start, sync, prune, verify) = (
        phase("backing up (about 100 files, 97.7 KiB)"),
        phase("making the new generation durable"),
        phase("pruning old generations"),
        phase("verifying"),
    );
    assert!(start < sync && sync < prune && prune < verify, "{texts:#?}");
    let numbers: Vec<&Event> = ui.events.iter().filter(|e| matches!(e, Event::Progress { detail: Some(_), .. })).collect();
    // 40 updates over 20 s reach the desktop every few seconds (and with each journal line).
    assert!((7..=14).contains(&numbers.len()), "{} updates: {numbers:#?}", numbers.len());
    let details: Vec<_> = numbers.iter().map(|e| match e { Event::Progress { detail: Some(d), .. } => d.clone(), _ => unreachable!() }).collect();
    assert!(details.windows(2).all(|w| w[0].files <= w[1].files && w[0].bytes < w[1].bytes), "in order: {details:#?}");
    assert!(details.iter().all(|d| d.percent.is_some() && d.bytes_per_second == 5000));
    assert_eq!(details.last().unwrap().percent, Some(100));
    assert!(details[0].eta_seconds.unwrap() > details[details.len() - 2].eta_seconds.unwrap(), "ETA counts down");
    let first = match numbers[0] { Event::Progress { text, .. } => text.clone(), _ => unreachable!() };
    assert!(first.contains(" files, ") && first.contains('%') && first.contains("left"), "{first}");
    // The journal: phases, one progress line per 10%, the prune.
    let progress_lines: Vec<&String> = ui.logs.iter().filter(|l| l.contains('%')).collect();
    assert_eq!(progress_lines.len(), 10, "{:#?}", ui.logs);
    assert!(progress_lines[0].starts_with("offsite-A: ") && progress_lines[0].contains(", 10%,"), "{}", progress_lines[0]);
    assert!(ui.logs.iter().any(|l| l == "offsite-A: pruned generation 2020-01-01T000000Z"), "{:#?}", ui.logs);
    assert!(ui.logs.iter().any(|l| l == "offsite-A: verified g1 (1/1): good"), "{:#?}", ui.logs);
    // Then the result, and the all-clear.
    let n = ui.events.len();
    assert!(matches!(&ui.events[n - 2], Event::Done { .. }) && matches!(&ui.events[n - 1], Event::SafeToUnplug { .. }));
}

#[test]
fn unregistered_disk_is_not_touched() {
    let e = env();
    let _known = registered(&e);
    let mut stranger = FakeDisk::new(e.dir.path(), "99999999-1b2c-4d5e-8f90-a1b2c3d4e5f6");
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let out = dock(&e.dev, &e.opts, &mut stranger, &mut ui).unwrap();
    assert!(matches!(out, Outcome::Ignored { .. }));
    assert_eq!(stranger.calls, ["probe"]);
    assert!(ui.asks.is_empty() && ui.events.is_empty(), "nobody is asked or told");
}

#[test]
fn wrong_passphrase_is_asked_again_then_abandoned() {
    let e = env();
    let mut disk = registered(&e);
    let mut ui = ScriptedUi { answers: vec![Some(b"nope"), Some(b"nope2"), Some(b"nope3"), Some(PASS)], ..Default::default() };
    let err = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap_err();
    assert!(matches!(err, HotplugError::WrongPassphrase { tries: 3, .. }));
    assert_eq!(disk.calls, ["probe", "unlock:false", "unlock:false", "unlock:false"], "never opened, so nothing to close");
    assert_eq!(ui.asks.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(ui.asks[0].error, None);
    assert_eq!(ui.asks[1].error.as_deref(), Some("Wrong passphrase; 2 tries left"));
    assert_eq!(ui.asks[2].error.as_deref(), Some("Wrong passphrase; 1 try left"));
    assert!(ui.events.iter().any(|e| matches!(e, Event::Failed { reason, .. } if reason.contains("wrong passphrase"))));
    assert!(matches!(ui.events.last(), Some(Event::SafeToUnplug { .. })));
    assert!(state::load(&e.opts.state)[UUID].last_success.is_none());
}

#[test]
fn right_passphrase_on_second_try_proceeds() {
    let e = env();
    let mut disk = registered(&e);
    let mut ui = ScriptedUi { answers: vec![Some(b"typo"), Some(PASS)], ..Default::default() };
    assert!(matches!(dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap(), Outcome::Done { .. }));
    assert_eq!(ui.asks.len(), 2);
}

#[test]
fn cancelled_request_abandons_cleanly() {
    let e = env();
    let mut disk = registered(&e);
    let mut ui = ScriptedUi { answers: vec![None], ..Default::default() };
    assert!(matches!(dock(&e.dev, &e.opts, &mut disk, &mut ui), Err(HotplugError::NoPassphrase(_))));
    assert_eq!(disk.calls, ["probe"]);
}

#[test]
fn disk_with_cloned_header_fails_identity_and_is_closed_untouched() {
    let e = env();
    let _real = registered(&e);
    // Same LUKS UUID (a copied header), other contents: no identity record.
    let mut clone = FakeDisk::new(&e.dir.path().join("clone"), UUID);
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let err = dock(&e.dev, &e.opts, &mut clone, &mut ui).unwrap_err();
    assert!(matches!(err, HotplugError::IdentityMismatch { .. }), "{err}");
    assert_eq!(clone.calls, ["probe", "unlock:true", "mount", "unmount", "close"], "no backup onto it");
    assert!(!clone.contents.join("generation-1").exists());
    // A forged record (written with another host's key) fails as well.
    let mut forged = FakeDisk::new(&e.dir.path().join("forged"), UUID);
    let regs = registry::load(&e.opts.config).unwrap();
    let id = regs[0].identity.clone().unwrap();
    identity::write_record(&forged.contents, &HostKey::from_bytes(&[9; 32]), UUID, &id).unwrap();
    // Put it where this host's record would be.
    let mine = identity::record_path(&forged.contents, &HostKey::load(&e.opts.host_key).unwrap());
    let theirs = identity::record_path(&forged.contents, &HostKey::from_bytes(&[9; 32]));
    std::fs::rename(theirs, mine).unwrap();
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    assert!(matches!(dock(&e.dev, &e.opts, &mut forged, &mut ui), Err(HotplugError::IdentityMismatch { .. })));
    assert!(!forged.calls.contains(&"backup".to_string()));
}

#[test]
fn failed_backup_still_closes_and_reports_reason() {
    let e = env();
    let mut disk = registered(&e);
    disk.fail_backup = true;
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    assert!(dock(&e.dev, &e.opts, &mut disk, &mut ui).is_err());
    assert_eq!(disk.calls, ["probe", "unlock:true", "mount", "backup", "unmount", "close"]);
    assert!(ui.events.iter().any(|e| matches!(e, Event::Failed { reason, .. } if reason.contains("disk full"))));
    assert!(matches!(ui.events.last(), Some(Event::SafeToUnplug { .. })));
}

#[test]
fn a_failure_followed_by_a_stop_during_cleanup_is_reported_as_the_stop() {
    let e = env();
    let mut disk = registered(&e);
    disk.fail_backup = true;
    disk.stop_at_unmount = Some(e.opts.stop.clone());
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let err = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap_err();
    assert!(matches!(&err, HotplugError::Stopped { why, removed: false } if why.contains("disk full")), "{err}");
    assert_eq!(disk.calls, ["probe", "unlock:true", "mount", "backup", "unmount", "close"]);
    let reason = ui.events.iter().find_map(|e| match e { Event::Failed { reason, .. } => Some(reason.clone()), _ => None }).unwrap();
    assert!(reason.starts_with("stopped before the end") && reason.contains("disk full"), "{reason}");
    assert!(matches!(ui.events.last(), Some(Event::SafeToUnplug { .. })));
}

#[test]
fn partial_backup_is_done_and_closed_but_says_so_in_its_exit_status() {
    let e = env();
    let mut disk = registered(&e);
    disk.partial = true;
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let out = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap();
    assert!(matches!(out, Outcome::Done { exit_code: 23, .. }), "{out:?}");
    assert_eq!(disk.calls, ["probe", "unlock:true", "mount", "backup", "verify", "unmount", "close"]);
    let said = |t: &str| ui.events.iter().any(|e| matches!(e, Event::Progress { text, .. } if text.contains(t)));
    assert!(said("generation g1 is incomplete: 1 not backed up, 1 vanished"), "{:#?}", ui.events);
    assert!(ui.logs.iter().any(|l| l.contains("is incomplete")), "{:#?}", ui.logs);
    assert!(matches!(ui.events.last(), Some(Event::SafeToUnplug { .. })));
}

#[test]
fn second_dock_while_one_runs_is_not_a_second_run() {
    let e = env();
    let mut disk = registered(&e);
    let _held = offdisk::hotplug::lock::try_lock(&e.opts.run_dir, UUID).unwrap().unwrap();
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    assert_eq!(dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap(), Outcome::AlreadyRunning { disk: "offsite-A".into() });
    assert_eq!(disk.calls, ["probe"]);
    assert!(ui.asks.is_empty());
}

#[test]
fn key_file_disk_is_unlocked_without_asking() {
    let e = env();
    let key = e.dir.path().join("disk.key");
    std::fs::write(&key, PASS).unwrap();
    let mut disk = FakeDisk::new(e.dir.path(), UUID);
    let s = RegisterSpec { key_file: Some(key.clone()), ..spec_at(&e) };
    register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &s, &mut disk).unwrap();
    let mut ui = ScriptedUi::default();
    assert!(matches!(dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap(), Outcome::Done { .. }));
    assert!(ui.asks.is_empty());
    std::fs::write(&key, b"changed").unwrap();
    let mut ui = ScriptedUi::default();
    assert!(matches!(dock(&e.dev, &e.opts, &mut disk, &mut ui), Err(HotplugError::WrongPassphrase { .. })));
    assert!(ui.asks.is_empty(), "a key-file disk never falls back to asking");
}

/// The udisks rule in a test rules directory (udev itself is not told).
fn with_rules(e: &Env) -> (RegisterSpec, RuleDir, PathBuf) {
    let rules = RuleDir { dir: e.dir.path().join("rules.d"), reload: false };
    std::fs::create_dir_all(&rules.dir).unwrap();
    let rule = rules.dir.join(format!("90-offdisk-{UUID}.rules"));
    (RegisterSpec { udev_rules: Some(rules.clone()), ..spec_at(e) }, rules, rule)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn register_writes_the_udisks_rule_force_replaces_it_unregister_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    let e = env();
    let (spec, rules, rule) = with_rules(&e);
    let mut disk = FakeDisk::new(e.dir.path(), UUID);
    let done = register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &spec, &mut disk).unwrap();
    let text = std::fs::read_to_string(&rule).unwrap();
    // Keyed by this disk's UUID (either case), on the LUKS device and on its cleartext mapping:
    // no automount, no prompt; not hidden.
    let luks = format!("SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"crypto_LUKS\", ENV{{ID_FS_UUID}}==\"{UUID}|{}\", ENV{{UDISKS_AUTO}}=\"0\"", UUID.to_uppercase());
    let clear = format!("ENV{{DM_UUID}}==\"CRYPT-LUKS[12]-{}-*|", UUID.replace('-', ""));
    assert!(text.lines().any(|l| l == luks) && text.contains(&clear), "{text}");
    assert!(!text.contains("UDISKS_IGNORE") && !text.contains("offsite-A"), "{text}");
    assert_eq!(std::fs::metadata(&rule).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(names_in(&rules.dir), [format!("90-offdisk-{UUID}.rules")], "no temporary left");
    assert!(done.notes.iter().any(|n| n.contains(&rule.display().to_string())), "{:?}", done.notes);

    // Re-registering (--force) rewrites it whatever it had become.
    std::fs::write(&rule, "stale\n").unwrap();
    let again = RegisterSpec { replace: true, ..spec.clone() };
    let done = register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &again, &mut disk).unwrap();
    assert_eq!(std::fs::read_to_string(&rule).unwrap(), text);
    assert!(done.notes[0].starts_with("replaced"), "{:?}", done.notes);
    assert_eq!(names_in(&rules.dir).len(), 1);

    // Unregistering (by label) takes the entry and the rule away, and only them.
    std::fs::write(rules.dir.join("70-admin.rules"), "# theirs\n").unwrap();
    let gone = unregister(&e.opts.config, "offsite-A", Some(&rules)).unwrap();
    assert_eq!(gone.reg.map(|r| r.luks_uuid).as_deref(), Some(UUID));
    assert!(registry::load(&e.opts.config).unwrap().is_empty());
    assert_eq!(names_in(&rules.dir), ["70-admin.rules"]);
    assert!(matches!(unregister(&e.opts.config, UUID, Some(&rules)), Err(HotplugError::NotRegistered(_))));
}

#[test]
fn a_symlink_at_the_rules_name_is_neither_followed_nor_replaced() {
    let e = env();
    let (spec, rules, rule) = with_rules(&e);
    let target = e.dir.path().join("precious");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, &rule).unwrap();
    let mut disk = FakeDisk::new(e.dir.path(), UUID);
    let r = register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &spec, &mut disk);
    assert!(matches!(&r, Err(HotplugError::UdevRule { why, .. }) if why.contains("symbolic link") && why.contains("not registered")), "{r:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&rule).unwrap().file_type().is_symlink());
    assert!(registry::load(&e.opts.config).unwrap().is_empty(), "no registration without its rule");
    assert_eq!(disk.calls.last().map(String::as_str), Some("close"), "the disk was closed again");

    // Unregistering a disk whose rule name holds a link keeps both the link and the entry.
    let plain = RegisterSpec { udev_rules: None, ..spec };
    register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &plain, &mut disk).unwrap();
    assert!(matches!(unregister(&e.opts.config, UUID, Some(&rules)), Err(HotplugError::UdevRule { .. })));
    assert!(std::fs::symlink_metadata(&rule).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert_eq!(registry::load(&e.opts.config).unwrap().len(), 1);
}

#[test]
fn a_plug_in_event_of_the_attachment_registered_during_starts_no_dock() {
    let e = env();
    // Registered while attached as attachment 7 (the fake's sequence number).
    let mut disk = registered(&e);
    let plugged = DockOptions { plugged: true, ..e.opts.clone() };
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let out = dock(&e.dev, &plugged, &mut disk, &mut ui).unwrap();
    assert_eq!(out, Outcome::RegisteredWhileAttached { disk: "offsite-A".into() });
    assert_eq!(disk.calls, ["probe"], "nothing unlocked, mounted or written");
    assert!(ui.asks.is_empty() && ui.events.is_empty(), "nobody asked or told: {:?}", ui.events);
    assert!(!e.opts.state.exists(), "no dock recorded");
    // By hand, the same attachment docks.
    disk.calls.clear();
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    assert!(matches!(dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap(), Outcome::Done { .. }));
    assert_eq!(ui.asks.len(), 1);
    // Plugged in again (a new attachment): the plug-in event docks.
    disk.seq = Some(8);
    disk.calls.clear();
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    assert!(matches!(dock(&e.dev, &plugged, &mut disk, &mut ui).unwrap(), Outcome::Done { .. }));
    assert_eq!(disk.calls, ["probe", "unlock:true", "mount", "backup", "verify", "unmount", "close"]);
}

#[test]
fn without_an_attachment_number_a_plug_in_docks_as_before() {
    let e = env();
    let mut disk = FakeDisk::new(e.dir.path(), UUID);
    disk.seq = None; // a kernel without diskseq: nothing is noted
    let done = register_device(&e.dev.path, &Passphrase::from_slice(PASS), &e.opts, &spec_at(&e), &mut disk).unwrap();
    assert!(!done.attached);
    let plugged = DockOptions { plugged: true, ..e.opts.clone() };
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    assert!(matches!(dock(&e.dev, &plugged, &mut disk, &mut ui).unwrap(), Outcome::Done { .. }));
}

#[test]
fn a_pull_handled_cleanly_is_a_stop_that_says_nothing_was_lost() {
    let e = env();
    let mut disk = registered(&e);
    disk.fail_backup = true; // the pull's I/O error
    disk.stop_at_unmount = Some(e.opts.stop.clone()); // then systemd's SIGTERM
    disk.removed = true;
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let err = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap_err();
    assert!(matches!(&err, HotplugError::Stopped { removed: true, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("stopped before the end") && text.contains("the disk was removed; nothing lost"), "{text}");
    assert!(matches!(ui.events.last(), Some(Event::SafeToUnplug { .. })));
}

#[test]
fn a_step_failing_on_a_pulled_disk_before_the_stop_arrives_is_the_pull() {
    // Verify reading a pulled disk fails at once, often before systemd's SIGTERM: still the
    // pull (exit 143, which the unit counts as success), not a failure of the disk.
    let e = env();
    let mut disk = registered(&e);
    disk.fail_backup = true; // the pull's I/O error, and no stop requested
    disk.removed = true;
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let err = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap_err();
    assert!(matches!(&err, HotplugError::Stopped { removed: true, .. }), "{err:?}");
    assert!(err.to_string().contains("the disk was removed; nothing lost"), "{err}");
    use offdisk::error::Diagnose;
    assert_eq!(err.exit_code(), 143);
    assert!(matches!(ui.events.last(), Some(Event::SafeToUnplug { .. })));
    // A disk still present that fails is that failure.
    let e = env();
    let mut disk = registered(&e);
    disk.fail_backup = true;
    let err = dock(&e.dev, &e.opts, &mut disk, &mut ScriptedUi { answers: vec![Some(PASS)], ..Default::default() }).unwrap_err();
    assert!(!matches!(err, HotplugError::Stopped { .. }), "{err:?}");
}

#[test]
fn a_stop_whose_teardown_failed_is_that_failure_not_a_clean_stop() {
    let e = env();
    let mut disk = registered(&e);
    disk.fail_backup = true;
    disk.stop_at_unmount = Some(e.opts.stop.clone());
    disk.removed = true;
    disk.fail_close = true;
    let mut ui = ScriptedUi { answers: vec![Some(PASS)], ..Default::default() };
    let err = dock(&e.dev, &e.opts, &mut disk, &mut ui).unwrap_err();
    assert!(!matches!(err, HotplugError::Stopped { .. }), "something is left open: {err:?}");
    use offdisk::error::Diagnose;
    assert_ne!(err.exit_code(), 0);
    assert!(!ui.events.iter().any(|e| matches!(e, Event::SafeToUnplug { .. })), "not safe to unplug");
}
