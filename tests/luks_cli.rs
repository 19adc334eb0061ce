//! `offdisk luks ...` end to end: option names, exit codes, JSON dump, key files on
//! standard input, header backup/restore refusals — with cryptsetup as the referee.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn offdisk(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offdisk"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn cryptsetup(args: &[&str]) -> (i32, String) {
    let out = Command::new("cryptsetup").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let img = dir.join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(20 << 20).unwrap();
    let k1 = dir.join("k1");
    std::fs::write(&k1, b"first key").unwrap();
    let k2 = dir.join("k2");
    std::fs::write(&k2, b"second key").unwrap();
    (img, k1, k2)
}

const FAST: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

fn format(img: &Path, key: &Path, extra: &[&str]) {
    let mut args = vec!["luks", "format", s(img), "--key-file", s(key), "--batch"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let (rc, _, err) = offdisk(&args, None);
    assert_eq!(rc, 0, "{err}");
}

#[test]
fn format_dump_and_volume_key_agree_with_cryptsetup() {
    let dir = tempfile::tempdir().unwrap();
    let (img, k1, _) = setup(dir.path());
    format(&img, &k1, &["--label", "offsite", "--subsystem", "sub", "--uuid", "0b9c4b6e-54c7-4c8e-9a44-8d4e25d0d1a2", "--key-size", "256", "--sector-size", "512"]);
    let (rc, out, err) = offdisk(&["luks", "dump", s(&img), "--json", "--dump-volume-key", "--key-file", s(&k1)], None);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["label"], "offsite");
    assert_eq!(v["subsystem"], "sub");
    assert_eq!(v["uuid"], "0b9c4b6e-54c7-4c8e-9a44-8d4e25d0d1a2");
    assert_eq!(v["segments"]["0"]["sector_size"], 512);
    let ours = v["volume_key"].as_str().unwrap().to_owned();
    assert_eq!(ours.len(), 64);
    assert!(ours.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    let (rc, cs) = cryptsetup(&["luksDump", "--dump-volume-key", "-q", "--key-file", s(&k1), s(&img)]);
    assert_eq!(rc, 0, "{cs}");
    let theirs: String = cs[cs.find("MK dump:").unwrap() + 8..].chars().filter(|c| c.is_ascii_hexdigit()).collect();
    assert_eq!(ours, theirs);
    // Without --dump-volume-key there is no key in the output.
    let (_, out, _) = offdisk(&["luks", "dump", s(&img), "--json"], None);
    assert!(!out.contains(&ours) && !out.contains("volume_key"));
    let (rc, text, _) = offdisk(&["luks", "dump", s(&img)], None);
    assert_eq!(rc, 0);
    assert!(text.contains("Label:         \toffsite"));
}

#[test]
fn exit_codes_follow_cryptsetup() {
    let dir = tempfile::tempdir().unwrap();
    let (img, k1, k2) = setup(dir.path());
    format(&img, &k1, &[]);
    // 2: no key with that passphrase.
    let (rc, _, err) = offdisk(&["luks", "dump", s(&img), "--dump-volume-key", "--key-file", s(&k2)], None);
    assert_eq!(rc, 2, "{err}");
    // 1: bad arguments.
    let (rc, _, _) = offdisk(&["luks", "format", s(&img), "--batch", "--key-file", s(&k1), "--key-size", "100"], None);
    assert_eq!(rc, 1);
    let (rc, _, _) = offdisk(&["luks", "format", s(&img), "--no-such-option"], None);
    assert_eq!(rc, 1);
    let (rc, _, _) = offdisk(&["luks", "format", s(&img), "--batch", "--key-file", s(&k1), "--type", "luks1"], None);
    assert_eq!(rc, 1);
    // 4: device error.
    let (rc, _, _) = offdisk(&["luks", "dump", s(&dir.path().join("missing.img"))], None);
    assert_eq!(rc, 4);
    // 1: not LUKS.
    let (rc, _, err) = offdisk(&["luks", "dump", s(&k1)], None);
    assert_eq!(rc, 1, "{err}");
    // Kill an inactive slot.
    let (rc, _, _) = offdisk(&["luks", "kill-slot", s(&img), "5", "--batch"], None);
    assert_eq!(rc, 1);
    // Unconfirmed format (stdin is not "YES") changes nothing.
    let before = std::fs::read(&img).unwrap();
    let (rc, _, _) = offdisk(&["luks", "format", s(&img), "--key-file", s(&k2)], Some(b"no\n"));
    assert_eq!(rc, 1);
    assert!(std::fs::read(&img).unwrap() == before);
}

#[test]
fn keyslot_commands_with_key_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (img, k1, k2) = setup(dir.path());
    format(&img, &k1, &[]);
    let mut args = vec!["luks", "add-key", s(&img), "--key-file", "-", "--new-key-file", s(&k2), "--key-slot", "4"];
    args.extend_from_slice(FAST);
    let (rc, _, err) = offdisk(&args, Some(b"first key"));
    assert_eq!(rc, 0, "{err}");
    let (rc, out) = cryptsetup(&["open", "--test-passphrase", "--key-slot", "4", "--key-file", s(&k2), s(&img)]);
    assert_eq!(rc, 0, "{out}");
    let k3 = dir.path().join("k3");
    std::fs::write(&k3, b"third key").unwrap();
    let mut args = vec!["luks", "change-key", s(&img), "--key-file", s(&k2), "--new-key-file", s(&k3)];
    args.extend_from_slice(FAST);
    let (rc, _, err) = offdisk(&args, None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&k2), s(&img)]).0, 2);
    assert_eq!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&k3), s(&img)]).0, 0);
    let (rc, _, err) = offdisk(&["luks", "remove-key", s(&img), "--key-file", s(&k1)], None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&k1), s(&img)]).0, 2);
    let (rc, _, err) = offdisk(&["luks", "kill-slot", s(&img), "4", "--key-file", s(&k3), "--batch"], None);
    assert_eq!(rc, 0, "{err}");
    let (_, out, _) = offdisk(&["luks", "dump", s(&img), "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["keyslots"].as_object().unwrap().len(), 0);
}

#[test]
fn header_backup_is_readable_by_its_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (img, k1, _) = setup(dir.path());
    format(&img, &k1, &[]);
    let backup = dir.path().join("hdr.bak");
    let st = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" luks header-backup \"$1\" --header-backup-file \"$2\""])
        .args([env!("CARGO_BIN_EXE_offdisk"), s(&img), s(&backup)])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o7777, 0o400);
}

#[test]
fn header_restore_checks_the_backup_fits_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let (img, k1, k2) = setup(dir.path());
    format(&img, &k1, &[]);
    let backup = dir.path().join("hdr.bak");
    let (rc, _, err) = offdisk(&["luks", "header-backup", s(&img), "--header-backup-file", s(&backup)], None);
    assert_eq!(rc, 0, "{err}");
    // cryptsetup accepts our backup file as a header.
    assert_eq!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&k1), "--header", s(&backup), s(&img)]).0, 0);
    // Refuses to overwrite an existing backup file.
    assert_ne!(offdisk(&["luks", "header-backup", s(&img), "--header-backup-file", s(&backup)], None).0, 0);

    // Wipe the primary header; restore brings the volume back.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[..4096].fill(0);
    bytes[16384..20480].fill(0);
    std::fs::write(&img, &bytes).unwrap();
    assert_ne!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&k1), s(&img)]).0, 0);
    let (rc, _, err) = offdisk(&["luks", "header-restore", s(&img), "--header-backup-file", s(&backup), "--batch"], None);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&k1), s(&img)]).0, 0);

    // A backup of another volume, a truncated backup, or a device too small: refused, untouched.
    let (other, _, _) = {
        let d = dir.path().join("o");
        std::fs::create_dir(&d).unwrap();
        setup(&d)
    };
    format(&other, &k2, &[]);
    let before = std::fs::read(&other).unwrap();
    let (rc, _, err) = offdisk(&["luks", "header-restore", s(&other), "--header-backup-file", s(&backup), "--batch"], None);
    assert_eq!(rc, 1);
    assert!(err.contains("backup is of"), "{err}");
    let truncated = dir.path().join("short.bak");
    std::fs::write(&truncated, &std::fs::read(&backup).unwrap()[..40000]).unwrap();
    let (rc, _, err) = offdisk(&["luks", "header-restore", s(&other), "--header-backup-file", s(&truncated), "--batch"], None);
    assert_eq!(rc, 1);
    assert!(err.contains("truncated"), "{err}");
    let small = dir.path().join("small.img");
    std::fs::File::create(&small).unwrap().set_len(8 << 20).unwrap();
    let (rc, _, err) = offdisk(&["luks", "header-restore", s(&small), "--header-backup-file", s(&backup), "--batch"], None);
    assert_eq!(rc, 1);
    assert!(err.contains("too small"), "{err}");
    assert!(std::fs::read(&other).unwrap() == before);
    assert!(std::fs::read(&small).unwrap().iter().all(|&b| b == 0));
    // cryptsetup's own backups restore too.
    let cs_backup = dir.path().join("cs.bak");
    assert_eq!(cryptsetup(&["luksHeaderBackup", s(&other), "--header-backup-file", s(&cs_backup)]).0, 0);
    let (rc, _, err) = offdisk(&["luks", "header-restore", s(&other), "--header-backup-file", s(&cs_backup), "--batch"], None);
    assert_eq!(rc, 0, "{err}");
}

#[test]
fn a_device_another_command_is_updating_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let (img, k1, k2) = setup(dir.path());
    format(&img, &k1, &[]);
    let held = nix::fcntl::Flock::lock(std::fs::File::open(&img).unwrap(), nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut args = vec!["luks", "add-key", s(&img), "--key-file", s(&k1), "--new-key-file", s(&k2)];
    args.extend_from_slice(FAST);
    let (rc, _, err) = offdisk(&args, None);
    assert_eq!(rc, 5, "{err}");
    drop(held);
    let (rc, _, err) = offdisk(&args, None);
    assert_eq!(rc, 0, "{err}");
}
