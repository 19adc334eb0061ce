//! What a newcomer sees on a first try (issue 14's paper cuts): errors as sentences with a
//! hint, never a raw "(os error 2)"; summaries on standard output with counts in the right
//! number; `status` saying how to register a disk; `list` showing the disk holding `/` as in
//! use; `open` on a non-LUKS file exiting 1 like `luks dump`; a failed `init` leaving the image
//! as it was and naming it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn offdisk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offdisk")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn missing_paths_are_a_sentence_and_a_hint_not_an_errno() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let target = dir.path().join("t");
    let mut cases = vec![
        vec!["backup".to_string(), "--target".into(), s(&target).into(), s(&missing).into()],
        vec!["luks".into(), "dump".into(), s(&missing).into()],
    ];
    if is_root() {
        cases.push(vec!["open".into(), s(&missing).into()]);
    }
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = offdisk(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("(os error"), "{args:?} shows a raw errno:\n{err}");
        assert!(err.lines().any(|l| l.trim_start().starts_with("hint:")), "{args:?} gives no hint:\n{err}");
    }
}

#[test]
fn summaries_go_to_stdout_and_counts_agree_with_their_nouns() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("only"), b"one file").unwrap();
    let target = dir.path().join("t");
    // A target must exist (issue 13: a mistyped one is never created).
    std::fs::create_dir(&target).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_offdisk"))
        .args(["backup", "--no-progress", "--target", s(&target), s(&src)])
        .env("OFFDISK_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let backup = text(&out.stdout);
    assert!(backup.contains(": 1 file,") && !backup.contains("1 files"), "{backup}");

    let out = offdisk(&["verify", "--target", s(&target)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verify = text(&out.stdout);
    assert!(verify.starts_with("verify: 1 generation, 1 file,") && verify.trim_end().ends_with("all good"), "{verify}");
    assert!(text(&out.stderr).is_empty(), "verify's summary belongs on stdout: {}", text(&out.stderr));

    // One damaged file: "1 problem".
    let gen = std::fs::read_dir(target.join("generations")).unwrap().next().unwrap().unwrap().path();
    let stored = gen.join("tree").join(src.strip_prefix("/").unwrap()).join("only");
    std::fs::remove_file(&stored).unwrap();
    let out = offdisk(&["verify", "--target", s(&target)]);
    assert_eq!(out.status.code(), Some(1));
    let verify = text(&out.stdout);
    assert!(verify.trim_end().ends_with(": 1 problem"), "{verify}");
}

#[test]
fn count_agrees_with_its_noun() {
    use offdisk::cli::count;
    assert_eq!(count(0, "warning", "warnings"), "0 warnings");
    assert_eq!(count(1, "warning", "warnings"), "1 warning");
    assert_eq!(count(2, "generation", "generations"), "2 generations");
}

#[test]
fn status_with_nothing_registered_says_how_to_register() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("config.toml");
    std::fs::write(&empty, "").unwrap();
    for config in [empty, dir.path().join("not-yet-written.toml")] {
        let out = offdisk(&["status", "--config", s(&config)]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(stdout.contains("No backup disks registered"), "{stdout}");
        assert!(stdout.contains("offdisk init") && stdout.contains("offdisk register"), "{stdout}");
    }
}

#[test]
fn list_shows_the_disk_holding_root_as_in_use() {
    // The block device `/` is on (a whole disk or one of its partitions), if it is one.
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        eprintln!("skipped: / is not on a block device here ({major}:{minor})");
        return;
    }
    let out = offdisk(&["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let in_use: Vec<String> = reports
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["in_use"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    assert!(in_use.iter().any(|u| u.ends_with(" mounted on /")), "no disk shown as holding /: {in_use:?}");
    let plain = text(&offdisk(&["list"]).stdout);
    assert!(plain.lines().any(|l| l.contains("in use:") && l.ends_with("mounted on /")), "{plain}");
}

#[test]
fn open_on_a_file_without_luks_exits_1_as_luks_dump_does() {
    if !is_root() {
        eprintln!("skipped: open needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("plain.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let dump = offdisk(&["luks", "dump", s(&img)]);
    let open = offdisk(&["open", s(&img)]);
    assert_eq!(dump.status.code(), Some(1), "{}", text(&dump.stderr));
    assert_eq!(open.status.code(), Some(1), "{}", text(&open.stderr));
    assert!(text(&open.stderr).contains("no LUKS header"), "{}", text(&open.stderr));
}

#[test]
fn a_failed_init_leaves_the_image_as_it_was_and_names_it() {
    if !is_root() {
        eprintln!("skipped: init needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("my-disk.img");
    // Not blank, so a partial GPT or LUKS header written over it would show.
    let before: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(&img, &before).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse").unwrap();
    let out = offdisk(&["init", "--batch", "--force", "--key-file", s(&pw), "--pbkdf-memory", "32768", "--label", "T", "--no-register", s(&img)]);
    if out.status.success() {
        eprintln!("skipped: init succeeded here (this kernel has device-mapper); tests/vm/t-03-init.sh checks the rollback");
        return;
    }
    let err = text(&out.stderr);
    assert!(err.contains(s(&img)), "the error does not name the image:\n{err}");
    assert!(std::fs::read(&img).unwrap() == before, "the failed init changed the image:\n{err}");
}

#[test]
fn status_says_when_a_registered_disks_ledger_is_unreadable() {
    // A ledger the host cannot use must not read as "never refreshed": that hides a disk that
    // may hold weeks of backups behind a wrong all-clear.
    let dir = tempfile::tempdir().unwrap();
    let uuid = "4f0393c8-8ca6-46fe-82f2-10045bc8c3c0";
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[[disk]]\nluks_uuid = \"{uuid}\"\nlabel = \"LISTME\"\nsources = [\"/etc\"]\n")).unwrap();
    let ledger = dir.path().join("ledger");
    std::fs::create_dir(&ledger).unwrap();
    std::fs::write(ledger.join(format!("{uuid}.json")), format!(r#"{{"format":1,"luks_uuid":"{uuid}","last_refreshed":1,"last_generation":"G1"}}"#)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_offdisk"))
        .args(["status", "--config", s(&config)])
        .env("OFFDISK_LEDGER_DIR", &ledger)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let line = stdout.lines().find(|l| l.contains(uuid)).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("ledger unreadable") && line.contains("not a generation name"), "{line}");
    assert!(!line.contains("never refreshed"), "{line}");
}
