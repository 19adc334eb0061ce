//! Helpers shared by the backup integration tests: building trees with every kind of
//! metadata, snapshotting a tree's observable state, running the binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// The binary under test; `OFFDISK_TEST_BIN` points the same tests at another build (to
/// show a hostile-input test fails on the code before its fix).
pub fn bin() -> String {
    std::env::var("OFFDISK_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_offdisk").to_string())
}

/// Runs offdisk with a config file that does not exist being harmless: points
/// OFFDISK_CONFIG at an empty file so tests never read the host's real config.
pub fn offdisk_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "offdisk {args:?} failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout).unwrap()
}

pub fn empty_config() -> PathBuf {
    let p = std::env::temp_dir().join("offdisk-test-empty-config.toml");
    if !p.exists() {
        fs::write(&p, "").unwrap();
    }
    p
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("OFFDISK_CONFIG", empty_config()).output().expect("run offdisk")
}

/// Runs offdisk and gives up (killing it) if it has not ended after `secs`: only to tell a
/// hang (a FIFO opened for reading) from an answer, never to time anything.
pub fn run_bounded(args: &[&str], secs: u64) -> Option<Output> {
    let mut child = Command::new(bin())
        .args(args)
        .env("OFFDISK_CONFIG", empty_config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run offdisk");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A host directory an attack aims at, holding a `victim` file, a `secret` file and a
/// `sub/` directory. `arm` snapshots it and watches it with inotify (open, read, write,
/// create, delete, attribute change, move); `assert_untouched` checks that nothing of the
/// kind happened since and that the snapshot is unchanged.
pub struct Outside {
    pub dir: PathBuf,
    before: Option<BTreeMap<Vec<u8>, Snap>>,
    watch: Option<std::os::fd::OwnedFd>,
}

pub const SECRET: &[u8] = b"outside-secret-3141592653";

impl Outside {
    pub fn new(dir: &Path) -> Outside {
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("victim"), b"precious host file\n").unwrap();
        fs::write(dir.join("secret"), SECRET).unwrap();
        fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(dir.join("sub/inner"), b"inner").unwrap();
        Outside { dir: dir.to_path_buf(), before: None, watch: None }
    }

    pub fn arm(&mut self) {
        use rustix::fs::inotify;
        self.before = Some(snapshot(&self.dir));
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        for d in [self.dir.clone(), self.dir.join("sub")] {
            inotify::add_watch(&fd, &d, inotify::WatchFlags::ALL_EVENTS).unwrap();
        }
        self.watch = Some(fd);
    }

    /// Events seen since `arm` (name and mask), without consuming the snapshot.
    pub fn events(&self) -> Vec<String> {
        use rustix::fs::inotify;
        let mut out = Vec::new();
        let Some(fd) = &self.watch else { return out };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let mut r = inotify::Reader::new(fd, &mut buf);
        let mut opened = false;
        while let Ok(e) = r.next() {
            let ev = e.events();
            opened |= ev.contains(inotify::ReadFlags::OPEN);
            // A close with no open since `arm` is a descriptor opened before the watch:
            // the snapshot's own directory handle, whose last copy a parallel test's
            // fork (before its exec) can hold past `arm`. Anything offdisk opens shows
            // an OPEN first, so dropping these hides nothing.
            if !opened && ev == (inotify::ReadFlags::CLOSE_NOWRITE | inotify::ReadFlags::ISDIR) {
                continue;
            }
            let name = e.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| ".".into());
            out.push(format!("{name}: {ev:?}"));
        }
        out
    }

    pub fn assert_untouched(&self, what: &str) {
        let ev = self.events();
        assert!(ev.is_empty(), "{what}: something outside was touched: {ev:?}");
        let before = self.before.as_ref().expect("arm() first");
        assert_same_tree(before, &snapshot(&self.dir), what);
    }
}

/// Whether any regular file below `dir` holds `needle` (the outside secret, say).
pub fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: secs as i64 - 100, tv_nsec: 5 },
        last_modification: rustix::fs::Timespec { tv_sec: secs as i64, tv_nsec: nanos as _ },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// A POSIX access ACL in the kernel's xattr form: user::rw-, user:<uid>:r--, group::r--,
/// mask::r--, other::---.
pub fn acl_xattr(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [(0x01u16, 6u16, u32::MAX), (0x02, 4, uid), (0x04, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree with hostile names, odd modes, owners, ns times, links, xattrs, ACLs,
/// a sparse file, an empty directory and a fifo.
pub fn make_rich_tree(src: &Path) {
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("plain.txt"), b"hello\n").unwrap();
    fs::write(src.join(OsStr::from_bytes(b"bad\xffname")), b"not utf-8 name").unwrap();
    fs::write(src.join("back\\slash"), b"backslash").unwrap();
    fs::write(src.join("new\nline"), b"newline").unwrap();
    fs::write(src.join("tab\tand space"), b"tab").unwrap();
    fs::write(src.join("dir/sub/deep.bin"), (0..100_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>()).unwrap();
    fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4750)).unwrap();
    fs::write(src.join("dir/readonly"), b"ro").unwrap();
    fs::set_permissions(src.join("dir/readonly"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::hard_link(src.join("plain.txt"), src.join("dir/hardlink")).unwrap();
    std::os::unix::fs::symlink("../plain.txt", src.join("dir/symlink")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", src.join("dangling")).unwrap();
    let f = File::create(src.join("sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"start", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", 20 << 20).unwrap();
    drop(f);
    rustix::fs::mknodat(rustix::fs::CWD, src.join("fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o640), 0).unwrap();
    rustix::fs::lsetxattr(src.join("plain.txt"), "user.comment", b"kept", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(src.join("dir"), "user.dirattr", b"d", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(src.join("dir/sub/deep.bin"), "system.posix_acl_access", &acl_xattr(4321), rustix::fs::XattrFlags::empty()).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(src.join("dir/sub/deep.bin"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("dir/symlink"), Some(99), Some(98)).unwrap();
        std::os::unix::fs::lchown(src.join("dir/sub"), Some(1000), Some(1000)).unwrap();
    }
    for (i, p) in ["plain.txt", "dir/sub/deep.bin", "setuid", "sparse", "fifo", "dir/symlink", "dir/sub", "dir", "empty"].iter().enumerate() {
        set_mtime(&src.join(p), 1_600_000_000 + i as u64 * 1000, 123_456_789 + i as u32);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub content: Option<[u8; 32]>,
    pub target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// First path (in sorted order) sharing this inode, for multiply-linked files.
    pub link_group: Option<Vec<u8>>,
    pub sparse: bool,
}

/// Everything observable about a tree, keyed by relative path bytes. Directory mtimes
/// are included; the root directory itself is not.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Snap> {
    let mut out = BTreeMap::new();
    let mut first_by_ino: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    all.sort();
    // Only links inside this tree count (a generation's files also link to older ones).
    let mut count_by_ino: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for p in &all {
        let m = fs::symlink_metadata(p).unwrap();
        if m.is_file() {
            *count_by_ino.entry((m.dev(), m.ino())).or_default() += 1;
        }
    }
    for p in all {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() { "dir" } else if ft.is_file() { "file" } else if ft.is_symlink() { "symlink" } else if ft.is_fifo() { "fifo" } else { "other" };
        let content = ft.is_file().then(|| *blake3::hash(&fs::read(&p).unwrap()).as_bytes());
        let target = ft.is_symlink().then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec());
        let mut xattrs = BTreeMap::new();
        let mut names = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::llistxattr(&p, &mut names[..]) {
            for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                let mut v = vec![0u8; 4096];
                let l = rustix::fs::lgetxattr(&p, OsStr::from_bytes(name), &mut v[..]).unwrap();
                xattrs.insert(name.to_vec(), v[..l].to_vec());
            }
        }
        let link_group = (ft.is_file() && count_by_ino[&(m.dev(), m.ino())] > 1).then(|| first_by_ino.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone());
        out.insert(
            rel,
            Snap {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_dir() { 0 } else { m.len() },
                mtime: (m.mtime(), m.mtime_nsec()),
                content,
                target,
                xattrs,
                link_group,
                sparse: ft.is_file() && m.len() > (1 << 20) && (m.blocks() * 512) < m.len() / 2,
            },
        );
    }
    out
}

/// Asserts two snapshots are equal, naming the first difference.
pub fn assert_same_tree(a: &BTreeMap<Vec<u8>, Snap>, b: &BTreeMap<Vec<u8>, Snap>, what: &str) {
    let ka: Vec<_> = a.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    let kb: Vec<_> = b.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert_eq!(ka, kb, "{what}: different paths");
    for (k, va) in a {
        let vb = &b[k];
        assert_eq!(va, vb, "{what}: {} differs", String::from_utf8_lossy(k));
    }
}

/// The only generation directory under `root` with the given index (0 = oldest).
pub fn generation_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(root.join("generations"))
        .map(|rd| rd.map(|e| e.unwrap().path()).filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The generation's copy of host path `src`.
pub fn tree_of(gen: &Path, src: &Path) -> PathBuf {
    gen.join("tree").join(src.strip_prefix("/").unwrap())
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}
