//! A backup disk changed by whoever held it while it was away: every entry offdisk reads or
//! writes there may be a symlink, a FIFO, a device or garbage. Each attack is its own test;
//! each asserts the refusal (or the harmless outcome) and, with inotify and a snapshot, that
//! nothing outside the target was read, created, changed or deleted.

mod backup_support;
use backup_support::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

struct Case {
    _dir: tempfile::TempDir,
    src: PathBuf,
    target: PathBuf,
    outside: Outside,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A source with one file, a target with one complete generation, and an armed-later
/// outside directory.
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    offdisk_ok(&["backup", "--no-progress", "--target", s(&target), s(&src)]);
    let outside = Outside::new(&dir.path().join("host"));
    Case { _dir: dir, src, target, outside }
}

fn mkfifo(p: &Path) {
    rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ledger_temporary_symlink_does_not_overwrite_a_host_file() {
    let mut c = case();
    // The old code wrote the disk ledger through `.offdisk-ledger.json.tmp` with File::create.
    symlink(c.outside.dir.join("victim"), c.target.join(".offdisk-ledger.json.tmp")).unwrap();
    c.outside.arm();
    offdisk_ok(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    c.outside.assert_untouched("ledger temporary symlink");
    let ledger = fs::read_to_string(c.target.join("offdisk-ledger.json")).unwrap();
    assert!(ledger.contains("last_generation"));
}

#[test]
fn ledger_symlink_is_replaced_not_followed() {
    let mut c = case();
    fs::remove_file(c.target.join("offdisk-ledger.json")).unwrap();
    symlink(c.outside.dir.join("victim"), c.target.join("offdisk-ledger.json")).unwrap();
    c.outside.arm();
    offdisk_ok(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    c.outside.assert_untouched("ledger symlink");
    assert!(fs::symlink_metadata(c.target.join("offdisk-ledger.json")).unwrap().is_file());
}

#[test]
fn ledger_uuid_from_the_disk_never_forms_a_host_path() {
    let mut c = case();
    let base = c.outside.dir.join("sub");
    let ledger_dir = base.join("a").join("ledger");
    let uuid = "0b9e9c8e-6a0e-4c49-9a57-6f8c3f1b2d10";
    let config = c.target.parent().unwrap().join("config.toml");
    fs::write(&config, format!("ledger_dir = {:?}\n[[disk]]\nluks_uuid = \"{uuid}\"\nlabel = \"office\"\n", ledger_dir)).unwrap();
    // The disk claims another identity, with a path in it.
    let hostile = r#"{"format":1,"luks_uuid":"../../../escaped","label":"x","generations":[],"last_refreshed":null,"last_generation":null,"host":null}"#;
    fs::write(c.target.join("offdisk-ledger.json"), hostile).unwrap();
    fs::create_dir_all(&ledger_dir).unwrap();
    c.outside.arm();
    let out = std::process::Command::new(bin())
        .args(["backup", "--no-progress", "--config", s(&config), "--disk", "office", "--target", s(&c.target), s(&c.src)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Only <ledger_dir>/<registered uuid>.json was written, carrying the registered UUID.
    let names: Vec<_> = fs::read_dir(&ledger_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, [format!("{uuid}.json")]);
    let host: serde_json::Value = serde_json::from_str(&fs::read_to_string(ledger_dir.join(format!("{uuid}.json"))).unwrap()).unwrap();
    assert_eq!(host["luks_uuid"], uuid);
    // Nothing else appeared anywhere under the outside directory (the ledger dir aside).
    let ev: Vec<_> = c.outside.events().into_iter().filter(|e| !e.starts_with("a:") && !e.starts_with("sub:")).collect();
    assert!(ev.is_empty(), "{ev:?}");
    assert!(!c.outside.dir.join("escaped.json").exists() && !base.join("escaped.json").exists());
    assert!(!c.target.parent().unwrap().join("escaped.json").exists());
}

#[test]
fn generations_symlink_is_refused_by_backup_listing_and_delete() {
    let mut c = case();
    let gens = c.target.join("generations");
    fs::rename(&gens, c.target.join("moved")).unwrap();
    // A host directory that looks like a backup root's generations/.
    fs::create_dir(c.outside.dir.join("sub/2020-01-01T000000Z")).unwrap();
    symlink(c.outside.dir.join("sub"), &gens).unwrap();
    c.outside.arm();
    let b = run(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    assert!(!b.status.success());
    assert!(stderr(&b).contains("generations") && stderr(&b).contains("symbolic link"), "{}", stderr(&b));
    let l = run(&["generations", "--target", s(&c.target)]);
    assert!(!l.status.success(), "listed a host directory as generations");
    let d = run(&["generations", "--target", s(&c.target), "--delete", "2020-01-01T000000Z"]);
    assert!(!d.status.success());
    let v = run(&["verify", "--target", s(&c.target)]);
    assert!(!v.status.success());
    c.outside.assert_untouched("generations symlink");
}

#[test]
fn lock_file_symlink_creates_nothing_elsewhere() {
    let mut c = case();
    let _ = fs::remove_file(c.target.join(".offdisk.lock"));
    let planted = c.outside.dir.join("sub/created-by-root");
    symlink(&planted, c.target.join(".offdisk.lock")).unwrap();
    c.outside.arm();
    let b = run(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    assert!(!b.status.success());
    assert!(stderr(&b).contains(".offdisk.lock") && stderr(&b).contains("symbolic link"), "{}", stderr(&b));
    assert!(!planted.exists());
    c.outside.assert_untouched("lock symlink");
}

#[test]
fn lock_file_fifo_is_refused_without_hanging() {
    let mut c = case();
    let _ = fs::remove_file(c.target.join(".offdisk.lock"));
    mkfifo(&c.target.join(".offdisk.lock"));
    c.outside.arm();
    let out = run_bounded(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)], 120).expect("backup hung on a FIFO lock file");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    c.outside.assert_untouched("lock fifo");
}

fn only_generation(t: &Path) -> PathBuf {
    generation_dirs(t).pop().unwrap()
}

#[test]
fn info_json_fifo_does_not_hang_generations() {
    let mut c = case();
    let g = only_generation(&c.target);
    fs::remove_file(g.join("info.json")).unwrap();
    mkfifo(&g.join("info.json"));
    c.outside.arm();
    let out = run_bounded(&["generations", "--target", s(&c.target)], 120).expect("generations hung on a FIFO info.json");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(g.file_name().unwrap().to_str().unwrap()), "{text}");
    c.outside.assert_untouched("info fifo");
}

#[test]
fn metadata_linked_to_dev_zero_is_refused_and_bounded() {
    let mut c = case();
    let g = only_generation(&c.target);
    fs::remove_file(g.join("metadata.tsv")).unwrap();
    symlink("/dev/zero", g.join("metadata.tsv")).unwrap();
    c.outside.arm();
    // The next backup cannot use that generation for links: it copies everything, warns.
    let b = run_bounded(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)], 300).expect("backup hung");
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(stderr(&b).contains("metadata.tsv") || stderr(&b).contains("copying everything"), "{}", stderr(&b));
    let v = run_bounded(&["verify", "--target", s(&c.target), "--generation", g.file_name().unwrap().to_str().unwrap()], 300)
        .expect("verify hung");
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains("metadata.tsv"));
    c.outside.assert_untouched("metadata -> /dev/zero");
}

#[test]
fn metadata_with_an_endless_line_is_refused_with_bounded_memory() {
    let c = case();
    let g = only_generation(&c.target);
    // A regular file: header, then 64 MiB without a newline.
    let mut big = b"#offdisk-metadata\tversion=1\n".to_vec();
    big.resize(64 << 20, b'a');
    fs::write(g.join("metadata.tsv"), &big).unwrap();
    let v = run(&["verify", "--target", s(&c.target)]);
    assert!(!v.status.success());
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(out.contains("metadata.tsv") && out.contains("longer than"), "{out}");
}

#[test]
fn a_missing_target_is_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let typo = dir.path().join("mnt/bakup/x");
    let b = run(&["backup", "--no-progress", "--target", s(&typo), s(&src)]);
    assert!(!b.status.success());
    assert!(stderr(&b).contains("does not exist") && stderr(&b).contains("bakup"), "{}", stderr(&b));
    assert!(!dir.path().join("mnt").exists(), "created the mistyped target");
    for cmd in [vec!["generations"], vec!["verify"], vec!["restore", "/x", "--to", s(&dir.path().join("dest"))]] {
        let mut args = cmd.clone();
        args.extend(["--target", s(&typo)]);
        let o = run(&args);
        assert!(!o.status.success(), "{cmd:?} on a missing target succeeded");
        assert!(stderr(&o).contains("bakup"), "{cmd:?}: {}", stderr(&o));
    }
    // An existing directory that holds no backups: named, not an empty list.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for cmd in ["generations", "verify"] {
        let o = run(&[cmd, "--target", s(&empty)]);
        assert!(!o.status.success(), "{cmd} on a target without generations/ succeeded");
        assert!(stderr(&o).contains("no generations/"), "{cmd}: {}", stderr(&o));
    }
}
