use super::state::{self, StateError};
use super::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn tmp() -> (tempfile::TempDir, Dir) {
    let t = tempfile::tempdir().unwrap();
    let d = Dir::open_path(t.path()).unwrap();
    (t, d)
}

#[test]
fn names_must_be_single_components() {
    for bad in ["", ".", "..", "a/b", "/abs"] {
        assert!(check_name(os(bad)).is_err(), "{bad:?}");
    }
    assert!(check_name(os("ok name")).is_ok());
    assert!(plain_components(Path::new("a/../b")).is_err());
    assert!(plain_components(Path::new("/a")).is_err());
    assert_eq!(plain_components(Path::new("a/./b")).unwrap(), [os("a"), os("b")]);
}

#[test]
fn open_dir_never_follows_a_symlink() {
    let (t, d) = tmp();
    std::fs::create_dir(t.path().join("real")).unwrap();
    std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
    assert!(d.open_dir(os("real")).is_ok());
    let e = d.open_dir(os("link")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
    assert!(e.to_string().contains("symbolic link"), "{e}");
    std::fs::write(t.path().join("file"), b"x").unwrap();
    let e = d.open_dir(os("file")).unwrap_err();
    assert!(e.to_string().contains("a regular file, not a directory"), "{e}");
}

fn beneath_refuses_symlinks_in_the_middle() {
    let (t, d) = tmp();
    std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
    std::os::unix::fs::symlink("b", t.path().join("a/l")).unwrap();
    std::os::unix::fs::symlink("/", t.path().join("a/b/root")).unwrap();
    assert!(d.open_beneath(Path::new("a/b/c")).is_ok());
    assert!(d.open_beneath(Path::new("")).is_ok());
    assert!(d.open_beneath(Path::new("a/l/c")).is_err());
    assert!(d.open_beneath(Path::new("a/b/root/etc")).is_err());
    assert!(d.open_beneath(Path::new("a/../a/b")).is_err());
}

#[test]
fn open_beneath_with_and_without_openat2() {
    beneath_refuses_symlinks_in_the_middle();
    // The fallback path, as on kernels before 5.6 (the probe is process-wide: restore it).
    let had = openat2_available();
    disable_openat2_for_tests();
    beneath_refuses_symlinks_in_the_middle();
    if had {
        OPENAT2.store(YES, Ordering::Relaxed);
    }
}

#[test]
fn trees_deeper_than_path_max_work_through_handles() {
    let (t, d) = tmp();
    let name = "d".repeat(200);
    let mut cur = d.try_clone().unwrap();
    let mut rel = PathBuf::new();
    for _ in 0..30 {
        cur = cur.create_or_open_dir(os(&name), 0o755).unwrap().0;
        rel.push(&name);
    }
    assert!(rel.as_os_str().len() > 4096);
    cur.create_file(os("leaf"), 0o644).unwrap().write_all(b"deep").unwrap();
    // The path form is too long for the kernel; the handle walk is not.
    assert!(std::fs::metadata(t.path().join(&rel).join("leaf")).is_err());
    let again = d.open_beneath(&rel).unwrap();
    let (mut f, m) = again.open_file(os("leaf"), None).unwrap();
    assert_eq!(m.size, 4);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "deep");
}

#[test]
fn open_file_detects_a_swap_and_refuses_fifos_without_blocking() {
    let (t, d) = tmp();
    std::fs::write(t.path().join("f"), b"one").unwrap();
    let seen = d.stat(os("f")).unwrap();
    assert!(d.open_file(os("f"), Some(&seen)).is_ok());
    // Swapped for another file between stat and open (the old one kept, so its inode
    // number cannot be reused for the new one).
    std::fs::rename(t.path().join("f"), t.path().join("old")).unwrap();
    std::fs::write(t.path().join("other"), b"two").unwrap();
    std::fs::rename(t.path().join("other"), t.path().join("f")).unwrap();
    assert!(matches!(d.open_file(os("f"), Some(&seen)), Err(OpenError::Changed { .. })));
    // Swapped for a symlink: not followed.
    std::fs::remove_file(t.path().join("f")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("f")).unwrap();
    let e = d.open_file(os("f"), Some(&seen)).unwrap_err();
    assert!(matches!(&e, OpenError::Io(io) if io.raw_os_error() == Some(libc::ELOOP)), "{e}");
    rustix::fs::mknodat(&d, "fifo", rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    assert!(matches!(d.open_file(os("fifo"), None), Err(OpenError::NotRegular(FileKind::Fifo))));
}

#[test]
fn create_file_never_opens_what_exists() {
    let (t, d) = tmp();
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, t.path().join("planted")).unwrap();
    assert_eq!(d.create_file(os("planted"), 0o600).unwrap_err().raw_os_error(), Some(libc::EEXIST));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn state_reads_refuse_links_fifos_and_oversize() {
    let (t, d) = tmp();
    let secret = t.path().join("secret");
    std::fs::write(&secret, b"root only").unwrap();
    std::os::unix::fs::symlink(&secret, t.path().join("link.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", t.path().join("zero.json")).unwrap();
    rustix::fs::mknodat(&d, "fifo.json", rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    std::fs::create_dir(t.path().join("dir.json")).unwrap();
    std::fs::write(t.path().join("big.json"), vec![b' '; 5000]).unwrap();
    std::fs::write(t.path().join("ok.json"), b"{}").unwrap();
    assert!(matches!(state::read(&d, os("link.json"), 4096), Err(StateError::NotRegular(FileKind::Symlink))));
    assert!(matches!(state::read(&d, os("zero.json"), 4096), Err(StateError::NotRegular(FileKind::Symlink))));
    assert!(matches!(state::read(&d, os("fifo.json"), 4096), Err(StateError::NotRegular(FileKind::Fifo))));
    assert!(matches!(state::read(&d, os("dir.json"), 4096), Err(StateError::NotRegular(FileKind::Dir))));
    assert!(matches!(state::read(&d, os("big.json"), 4096), Err(StateError::TooBig { size: 5000, max: 4096 })));
    assert!(matches!(state::read(&d, os("none.json"), 4096), Err(StateError::Missing)));
    assert_eq!(state::read_optional(&d, os("none.json"), 4096).unwrap(), None);
    assert_eq!(state::read(&d, os("ok.json"), 4096).unwrap(), b"{}");
    let msg = state::read(&d, os("fifo.json"), 4096).unwrap_err().to_string();
    assert!(msg.contains("FIFO") && msg.contains("refusing"), "{msg}");
}

#[test]
fn atomic_writes_replace_a_planted_symlink_instead_of_following_it() {
    let (t, d) = tmp();
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, t.path().join("state.json")).unwrap();
    // Planted at every name an older version would have used for its temporary.
    std::os::unix::fs::symlink(&victim, t.path().join(".state.json.tmp")).unwrap();
    state::write_atomic(&d, os("state.json"), b"{\"new\":1}", 0o600).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let m = std::fs::symlink_metadata(t.path().join("state.json")).unwrap();
    assert!(m.is_file());
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(t.path().join("state.json")).unwrap(), b"{\"new\":1}");
    // No temporary is left behind.
    let names: Vec<_> = d.entries().unwrap().into_iter().map(|e| e.name.to_string_lossy().into_owned()).collect();
    assert_eq!(names, [".state.json.tmp", "state.json", "victim"]);
    // A directory at the name is an error, not replaced.
    std::fs::create_dir(t.path().join("d.json")).unwrap();
    assert!(state::write_atomic(&d, os("d.json"), b"x", 0o600).is_err());
}

#[test]
fn lock_files_must_be_regular() {
    let (t, d) = tmp();
    let elsewhere = t.path().join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, t.path().join("link.lock")).unwrap();
    assert!(matches!(state::open_lock(&d, os("link.lock")), Err(StateError::NotRegular(FileKind::Symlink))));
    assert!(!elsewhere.exists(), "created a file through the symlink");
    rustix::fs::mknodat(&d, "fifo.lock", rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    assert!(matches!(state::open_lock(&d, os("fifo.lock")), Err(StateError::NotRegular(FileKind::Fifo))));
    let f = state::open_lock(&d, os("ok.lock")).unwrap();
    assert!(fstat(&f).unwrap().is_file());
}

#[test]
fn entries_are_sorted_bytes_with_types() {
    let (t, d) = tmp();
    std::fs::create_dir(t.path().join("b")).unwrap();
    std::fs::write(t.path().join("a"), b"").unwrap();
    std::os::unix::fs::symlink("x", t.path().join("c")).unwrap();
    let e = d.entries().unwrap();
    let names: Vec<_> = e.iter().map(|e| (e.name.to_str().unwrap(), e.kind)).collect();
    // tmpfs and ext4 report d_type; Unknown is allowed by the API but not expected here.
    assert_eq!(names, [("a", FileKind::File), ("b", FileKind::Dir), ("c", FileKind::Symlink)]);
}

#[test]
fn metadata_changes_act_on_handles_and_on_links_themselves() {
    let (t, d) = tmp();
    let f = d.create_file(os("f"), 0o600).unwrap();
    set_mode(&f, 0o640).unwrap();
    set_times(&f, (5, 6), (1_600_000_000, 123)).unwrap();
    let m = d.stat(os("f")).unwrap();
    assert_eq!((m.perm(), m.mtime, m.atime), (0o640, (1_600_000_000, 123), (5, 6)));
    d.symlink(os("f"), os("l")).unwrap();
    d.set_times_at(os("l"), (1, 2), (3, 4)).unwrap();
    assert_eq!(d.stat(os("l")).unwrap().mtime, (3, 4));
    assert_eq!(d.stat(os("f")).unwrap().mtime, (1_600_000_000, 123), "followed the symlink");
    assert_eq!(d.read_link(os("l")).unwrap(), "f");
    let me = (m.uid, m.gid);
    d.chown_at(os("l"), me.0, me.1).unwrap();
    // xattrs through the handle and through /proc/self/fd for a name.
    let attrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    // A filesystem without user xattrs skips them: nothing more to check there.
    if let Ok(0) = xattr::write_all(xattr::Node::Fd(f.as_fd()), &attrs) {
        assert_eq!(xattr::read_all(xattr::Node::At(&d, os("f"))).unwrap(), attrs);
        d.hard_link(os("f"), &d, os("g")).unwrap();
        let g = d.open_file(os("g"), None).unwrap().0;
        assert_eq!(xattr::read_all(xattr::Node::Fd(g.as_fd())).unwrap(), attrs);
    }
    let _ = t;
}

#[test]
fn fd_limit_is_raised_to_the_hard_limit() {
    let n = raise_fd_limit();
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    assert_eq!(Some(n), l.current);
    assert!(n >= 256);
}

#[test]
fn chmod_at_changes_the_node_never_a_link_target() {
    let (t, d) = tmp();
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"x").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A node swapped for a symlink after it was made: chmod by name through fchmodat
    // would turn the target into -rwsrwxrwx.
    std::os::unix::fs::symlink(&victim, t.path().join("node")).unwrap();
    let e = d.chmod_at(os("node"), 0o4777).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777, 0o600);
    // A FIFO (the kind of node this is for) gets its mode.
    d.mknod(os("fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
    d.chmod_at(os("fifo"), 0o640).unwrap();
    assert_eq!(std::fs::symlink_metadata(t.path().join("fifo")).unwrap().permissions().mode() & 0o7777, 0o640);
}
