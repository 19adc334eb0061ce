//! The reader against images `mkfs.ext4 -d` populated from a known tree, feature by feature.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A tree with every kind of thing the reader must get right.
fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).unwrap();
    std::fs::create_dir_all(root.join("d/sub")).unwrap();
    std::fs::create_dir_all(root.join("big")).unwrap();
    w("empty", b"");
    w("one", b"x");
    w("d/59", &[b'a'; 59]);
    w("d/60", &[b'b'; 60]);
    w("d/61", &[b'c'; 61]);
    w("d/sub/4096", &(0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    w("d/sub/300k", &(0..300_000u32).map(|i| (i * 13 % 256) as u8).collect::<Vec<_>>());
    // Sparse: a hole, then data.
    let f = std::fs::File::create(root.join("sparse")).unwrap();
    f.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tail", (3 << 20) - 4).unwrap();
    for i in 0..1500 {
        w(&format!("big/entry-with-a-longish-name-{i:05}"), format!("{i}").as_bytes());
    }
    std::os::unix::fs::symlink("one", root.join("short-link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(59), root.join("link59")).unwrap();
    std::os::unix::fs::symlink("y/".repeat(150), root.join("long-link")).unwrap();
    std::fs::hard_link(root.join("d/61"), root.join("hard")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    std::fs::set_permissions(root.join("one"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    // xattrs: small (in the inode) and large (external block).
    let _ = rustix::fs::setxattr(root.join("one").as_path(), "user.small", b"v", rustix::fs::XattrFlags::empty());
    let _ = rustix::fs::setxattr(root.join("d/60").as_path(), "user.big", &[7u8; 500], rustix::fs::XattrFlags::empty());
    let ts = nix::sys::time::TimeSpec::new(1_700_000_000, 123_456_789);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &root.join("d/59"), &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

fn mkfs(dir: &Path, img: &Path, opts: &[&str]) -> bool {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(64 << 20).unwrap();
    let out = Command::new("mkfs.ext4").args(["-q", "-F", "-E", "root_owner=0:0"]).args(opts).arg("-d").arg(dir).arg(img).output().expect("mkfs.ext4 (e2fsprogs) is needed");
    if !out.status.success() {
        eprintln!("mkfs.ext4 {opts:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[derive(Debug, PartialEq)]
struct Seen {
    kind: char,
    perm: u32,
    size: u64,
    mtime: (i64, u32),
    content: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    ino_group: usize,
}

fn host_view(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut inos = BTreeMap::new();
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<Vec<u8>, Seen>, inos: &mut BTreeMap<u64, usize>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() { 'd' } else if ft.is_symlink() { 'l' } else if ft.is_file() { 'f' } else { 'p' };
            let content = match kind {
                'f' => std::fs::read(&p).unwrap(),
                'l' => std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
                _ => Vec::new(),
            };
            let mut xattrs = BTreeMap::new();
            if kind != 'l' {
                for name in xattr_names(&p) {
                    let mut v = vec![0u8; 65536];
                    let n = rustix::fs::lgetxattr(p.as_path(), name.as_slice(), &mut v).unwrap();
                    v.truncate(n);
                    xattrs.insert(name, v);
                }
            }
            let next = inos.len();
            let ino_group = if kind == 'f' { *inos.entry(m.ino()).or_insert(next) } else { usize::MAX };
            let size = if kind == 'd' { 0 } else { m.len() };
            out.insert(r.as_os_str().as_bytes().to_vec(), Seen { kind, perm: m.mode() & 0o7777, size, mtime: (m.mtime(), 0), content, xattrs, ino_group });
            if kind == 'd' {
                walk(root, &r, out, inos);
            }
        }
    }
    walk(root, Path::new(""), &mut out, &mut inos);
    out
}

fn xattr_names(p: &Path) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf).unwrap_or(0);
    buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| n.to_vec()).collect()
}

fn image_view<D: ReadAt>(fs: &Fs<D>) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut inos = BTreeMap::new();
    fn walk<D: ReadAt>(fs: &Fs<D>, dir: &Inode, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, Seen>, inos: &mut BTreeMap<u32, usize>) {
        for e in fs.read_dir(dir).unwrap() {
            if rel.is_empty() && e.name == b"lost+found" {
                continue;
            }
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(&e.name);
            let ino = fs.inode(e.ino).unwrap();
            let kind = match ino.kind() {
                FileKind::Dir => 'd',
                FileKind::Symlink => 'l',
                FileKind::File => 'f',
                _ => 'p',
            };
            let content = match kind {
                'f' => fs.read_all(&ino, 1 << 30).unwrap(),
                'l' => fs.read_link(&ino).unwrap(),
                _ => Vec::new(),
            };
            let xattrs = if kind == 'l' { BTreeMap::new() } else { fs.xattrs(&ino).unwrap().into_iter().map(|x| (x.name, x.value)).collect() };
            let next = inos.len();
            let ino_group = if kind == 'f' { *inos.entry(e.ino).or_insert(next) } else { usize::MAX };
            let size = if kind == 'd' { 0 } else { ino.size };
            out.insert(r.clone(), Seen { kind, perm: ino.perm(), size, mtime: (ino.mtime.sec, 0), content, xattrs, ino_group });
            if kind == 'd' {
                walk(fs, &ino, r, out, inos);
            }
        }
    }
    let root = fs.root().unwrap();
    walk(fs, &root, Vec::new(), &mut out, &mut inos);
    out
}

/// Hard-link groups are compared as partitions: renumber both in name order.
fn normalise(mut m: BTreeMap<Vec<u8>, Seen>) -> BTreeMap<Vec<u8>, Seen> {
    let mut map = BTreeMap::new();
    for s in m.values_mut() {
        if s.ino_group != usize::MAX {
            let n = map.len();
            s.ino_group = *map.entry(s.ino_group).or_insert(n);
        }
    }
    m
}

fn check_features(opts: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    let img = t.path().join("fs.img");
    assert!(mkfs(&src, &img, opts), "mkfs.ext4 {opts:?}");
    let fs = Fs::open(std::fs::File::open(&img).unwrap()).unwrap();
    let want = normalise(host_view(&src));
    let got = normalise(image_view(&fs));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{opts:?}: names");
    for (k, w) in &want {
        let g = &got[k];
        // (mkfs.ext4 1.47.0 -d keeps whole seconds only: nanoseconds are checked below.)
        assert_eq!(g, w, "{opts:?}: {}", String::from_utf8_lossy(k));
    }
    // Lookup by path, no symlink followed.
    assert_eq!(fs.lookup(b"d/sub/4096").unwrap().size, 4096);
    assert!(matches!(fs.lookup(b"d/nope"), Err(Ext4Error::NotFound(_))));
    assert!(matches!(fs.lookup(b"one/x"), Err(Ext4Error::NotDir(_))));
}

#[test]
fn default_features() {
    check_features(&[]);
}

#[test]
fn without_checksums_or_64bit() {
    check_features(&["-O", "^metadata_csum,^64bit"]);
}

#[test]
fn inline_data_and_1k_blocks() {
    check_features(&["-b", "1024", "-O", "inline_data"]);
}

#[test]
fn ext3_style_block_maps() {
    check_features(&["-O", "^extents,^64bit,^flex_bg,^huge_file,^metadata_csum,^dir_nlink,^extra_isize", "-I", "256"]);
}

#[test]
fn meta_bg_and_checksum_seed() {
    check_features(&["-O", "meta_bg,^resize_inode,metadata_csum_seed,ea_inode"]);
}

#[test]
fn nanoseconds_and_post_2038_times() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let img = t.path().join("fs.img");
    assert!(mkfs(&src, &img, &[]));
    // nsec 123456789, epoch bits 1: 2^32 seconds later than the 32-bit field says.
    let extra = (123_456_789u32 << 2) | 1;
    let out = Command::new("debugfs").args(["-w", "-R", &format!("sif f mtime_extra {extra:#x}")]).arg(&img).output().unwrap();
    assert!(out.status.success());
    let fs = Fs::open(std::fs::File::open(&img).unwrap()).unwrap();
    let f = fs.lookup(b"f").unwrap();
    let base = std::fs::metadata(src.join("f")).unwrap().mtime();
    assert_eq!(f.mtime, Timestamp { sec: base + (1 << 32), nsec: 123_456_789 });
}

#[test]
fn damage_is_an_error_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    let img = t.path().join("fs.img");
    assert!(mkfs(&src, &img, &[]));
    let good = std::fs::read(&img).unwrap();
    // The superblock checksum catches a flipped byte.
    let mut bad = good.clone();
    bad[1024 + 0x20] ^= 1;
    assert!(matches!(Fs::open(bad), Err(Ext4Error::Corrupt(m)) if m.contains("superblock")));
    // Not ext4 at all.
    assert!(matches!(Fs::open(vec![0u8; 8192]), Err(Ext4Error::NotExt4)));
    assert!(Fs::open(vec![0u8; 100]).is_err());
    // A flipped byte in the inode table: the inode checksum names the inode.
    let fs = Fs::open(good.clone()).unwrap();
    let ino = fs.lookup(b"d/sub/300k").unwrap().ino;
    let g = &fs.groups[((ino - 1) / fs.sb.inodes_per_group) as usize];
    let off = g.inode_table * fs.sb.block_size + u64::from((ino - 1) % fs.sb.inodes_per_group) * fs.sb.inode_size as u64;
    let mut bad = good.clone();
    bad[off as usize + 0x04] ^= 0x40;
    let fs = Fs::open(bad).unwrap();
    let err = fs.lookup(b"d/sub/300k").unwrap_err().to_string();
    assert!(err.contains(&format!("inode {ino}")) && err.contains("checksum"), "{err}");
    // Single-byte corruptions all over the metadata: errors, never panics.
    let mut bad = good;
    for at in (0..1 << 20).step_by(1543) {
        bad[at] ^= 0xa5;
        if let Ok(fs) = Fs::open(bad.as_slice()) {
            if let Ok(root) = fs.root() {
                let _ = fs.read_dir(&root).map(|es| {
                    for e in es {
                        let _ = fs.inode(e.ino).map(|i| (fs.read_all(&i, 1 << 22), fs.xattrs(&i)));
                    }
                });
            }
        }
        // The fuzzer's entry point, with checksums compared and without (so the damage
        // reaches the structures behind them).
        exercise_reader(&bad, true);
        exercise_reader(&bad, false);
        bad[at] ^= 0xa5;
    }
}

#[test]
fn crc_helpers_match_known_values() {
    // crc32c("123456789") = 0xe3069283 in its standard (inverted) form.
    assert_eq!(!crc32c_raw(!0, b"123456789"), 0xe306_9283);
    // CRC-16/ARC("123456789") = 0xbb3d with a zero start.
    assert_eq!(crc16(0, b"123456789"), 0xbb3d);
}
