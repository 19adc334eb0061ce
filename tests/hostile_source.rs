//! Source trees that a local user keeps changing while root backs them up. Races are
//! driven deterministically: the library's test hook swaps things at exactly the moment
//! between two steps of the run. Each test asserts the outcome and that nothing outside
//! (a host directory with a secret and a victim file) was read, created or changed.

mod backup_support;
use backup_support::*;
use offdisk::backup::{self, BackupOptions};
use offdisk::fsaccess::hook::{self, Point};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

/// The hook is process-wide: one hooked run at a time.
static HOOKED: Mutex<()> = Mutex::new(());

struct Case {
    dir: tempfile::TempDir,
    src: PathBuf,
    target: PathBuf,
    outside: Outside,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::write(src.join("d/f"), b"user data").unwrap();
    fs::write(src.join("d/sub/g"), b"more").unwrap();
    fs::write(src.join("z"), b"last").unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    let outside = Outside::new(&dir.path().join("host"));
    Case { dir, src, target, outside }
}

fn run_lib(c: &Case) -> backup::BackupSummary {
    backup::backup(&BackupOptions::new(&c.target, std::slice::from_ref(&c.src))).expect("backup")
}

#[test]
fn directory_swapped_for_a_symlink_before_it_is_entered_is_backed_up_as_the_symlink() {
    let _g = HOOKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = case();
    c.outside.arm();
    let (d, moved, aim) = (c.src.join("d"), c.dir.path().join("d-moved"), c.outside.dir.clone());
    let rel_d = c.src.strip_prefix("/").unwrap().join("d");
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = swapped.clone();
    let _h = hook::set(move |p, rel| {
        if p == Point::WalkStatted && rel == rel_d && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            fs::rename(&d, &moved).unwrap();
            symlink(&aim, &d).unwrap();
        }
    });
    let s = run_lib(&c);
    drop(_h);
    assert!(swapped.load(std::sync::atomic::Ordering::SeqCst), "the swap did not happen during the run");
    let tree = tree_of(&s.path, &c.src);
    let m = fs::symlink_metadata(tree.join("d")).unwrap();
    assert!(m.file_type().is_symlink(), "d should be stored as the symlink it became");
    assert!(!tree_contains(&s.path, SECRET), "the secret reached the generation");
    c.outside.assert_untouched("dir swapped before entering");
}

#[test]
fn directory_swapped_while_being_walked_keeps_reading_the_real_directory() {
    let _g = HOOKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = case();
    // A second file the walk meets after the swap.
    fs::write(c.outside.dir.join("f2"), b"host file").unwrap();
    fs::write(c.src.join("d/f2"), b"user file 2").unwrap();
    c.outside.arm();
    let (d, moved, aim) = (c.src.join("d"), c.dir.path().join("d-moved"), c.outside.dir.clone());
    let rel_f = c.src.strip_prefix("/").unwrap().join("d/f");
    let _h = hook::set(move |p, rel| {
        if p == Point::WalkStatted && rel == rel_f && !moved.exists() {
            fs::rename(&d, &moved).unwrap();
            symlink(&aim, &d).unwrap();
        }
    });
    let s = run_lib(&c);
    drop(_h);
    assert!(c.dir.path().join("d-moved").exists(), "the swap did not happen during the run");
    let tree = tree_of(&s.path, &c.src);
    assert_eq!(fs::read(tree.join("d/f2")).unwrap(), b"user file 2", "read through the symlink instead of the held directory");
    assert!(!tree_contains(&s.path, SECRET));
    c.outside.assert_untouched("dir swapped mid-walk");
}

#[test]
fn file_swapped_for_a_symlink_to_a_secret_is_reported_changed_not_read() {
    let _g = HOOKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = case();
    c.outside.arm();
    let (f, secret) = (c.src.join("d/f"), c.outside.dir.join("secret"));
    let rel_f = c.src.strip_prefix("/").unwrap().join("d/f");
    let _h = hook::set(move |p, rel| {
        if p == Point::WalkStatted && rel == rel_f && fs::symlink_metadata(&f).unwrap().is_file() {
            fs::remove_file(&f).unwrap();
            symlink(&secret, &f).unwrap();
        }
    });
    let s = run_lib(&c);
    drop(_h);
    assert!(fs::symlink_metadata(c.src.join("d/f")).unwrap().file_type().is_symlink(), "no swap happened");
    assert!(!tree_contains(&s.path, SECRET), "the secret reached the generation");
    let inc = s.info.incomplete.as_ref().expect("the run reports what changed");
    assert_eq!(inc.vanished, 1, "{inc:?}");
    assert!(inc.paths.iter().any(|p| p.ends_with("d/f")), "{inc:?}");
    c.outside.assert_untouched("file swapped for a symlink");
}

#[test]
fn subdirectory_swapped_in_the_generation_before_its_chmod_changes_nothing_outside() {
    let _g = HOOKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = case();
    // The mode a user would want on a root file: set-id and world-writable.
    fs::set_permissions(c.src.join("d/sub"), fs::Permissions::from_mode(0o6777)).unwrap();
    let victim = c.outside.dir.join("victim");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    c.outside.arm();
    let gens = c.target.join("generations");
    let rel_sub = c.src.strip_prefix("/").unwrap().join("d/sub");
    let aim = victim.clone();
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = swapped.clone();
    let _h = hook::set(move |p, rel| {
        if p == Point::DirComplete && rel == rel_sub && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // The partial generation's copy of the directory, swapped for a symlink.
            let partial = fs::read_dir(&gens).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains(".partial-")).unwrap();
            let sub = partial.join("tree").join(&rel_sub);
            fs::rename(&sub, sub.with_file_name("sub-moved")).unwrap();
            symlink(&aim, &sub).unwrap();
        }
    });
    let _ = backup::backup(&BackupOptions::new(&c.target, std::slice::from_ref(&c.src)));
    drop(_h);
    assert!(swapped.load(std::sync::atomic::Ordering::SeqCst), "the swap did not happen during the run");
    assert_eq!(fs::symlink_metadata(&victim).unwrap().permissions().mode() & 0o7777, 0o600, "the victim's mode was changed");
    c.outside.assert_untouched("chmod race");
}

#[test]
fn paths_longer_than_path_max_are_backed_up_verified_and_restored() {
    let c = case();
    // 24 levels of 200-byte names: about 4,800 bytes below the source, beyond PATH_MAX.
    let name = "n".repeat(200);
    let mut d = offdisk::fsaccess::Dir::open_path(&c.src).unwrap();
    for _ in 0..24 {
        d = d.create_or_open_dir(std::ffi::OsStr::new(&name), 0o755).unwrap().0;
    }
    use std::io::Write;
    d.create_file(std::ffi::OsStr::new("deep.txt"), 0o644).unwrap().write_all(b"at the bottom").unwrap();
    let t = c.target.to_str().unwrap();
    let out = run(&["backup", "--no-progress", "--json", "--target", t, c.src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["info"]["files"], 4, "{v}");
    assert!(v["info"]["incomplete"].is_null(), "{v}");
    let out = run(&["verify", "--target", t]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let dest = c.dir.path().join("dest");
    let out = run(&["restore", "--target", t, c.src.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rel = PathBuf::from(c.src.strip_prefix("/").unwrap());
    for _ in 0..24 {
        rel.push(&name);
    }
    let back = offdisk::fsaccess::Dir::open_path(&dest).unwrap().open_beneath(&rel).unwrap();
    let (mut f, _) = back.open_file(std::ffi::OsStr::new("deep.txt"), None).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    assert_eq!(s, "at the bottom");
}
