//! Every generation is exactly the source (issue 13): after each change a new generation is
//! compared with the source by a full metadata snapshot (names as bytes, type, content
//! hash, mode, owner, ns mtime, xattrs, ACLs, link targets, hard-link groups, sparseness)
//! and by `rsync -aHAXS --checksum --dry-run --itemize-changes`, which must report nothing.
//! Runs that cannot be complete say so in their exit status; a source that shrank is
//! refused and retention never prunes because of it.

mod backup_support;
use backup_support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    dir: tempfile::TempDir,
    src: PathBuf,
    target: PathBuf,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    make_rich_tree(&src);
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    Case { dir, src, target }
}

fn backup(c: &Case) -> PathBuf {
    offdisk_ok(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    generation_dirs(&c.target).pop().unwrap()
}

/// The generation's copy equals the source by snapshot and by rsync.
fn assert_exact(c: &Case, gen: &Path, what: &str) {
    let copy = tree_of(gen, &c.src);
    assert_same_tree(&snapshot(&c.src), &snapshot(&copy), what);
    let out = Command::new("rsync")
        .args(["-aHAXS", "--checksum", "--dry-run", "--itemize-changes", "--no-times"])
        .arg(format!("{}/", c.src.display()))
        .arg(format!("{}/", copy.display()))
        .output()
        .expect("rsync");
    assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    // rsync -a (without --no-times) also compares the root directory's time, which a
    // generation keeps too: check times separately on the snapshot above.
    let items = String::from_utf8_lossy(&out.stdout);
    assert!(items.trim().is_empty(), "{what}: rsync itemizes differences:\n{items}");
    let out = Command::new("rsync")
        .args(["-aHAXS", "--checksum", "--dry-run", "--itemize-changes"])
        .arg(format!("{}/", c.src.display()))
        .arg(format!("{}/", copy.display()))
        .output()
        .expect("rsync");
    let items = String::from_utf8_lossy(&out.stdout);
    assert!(items.trim().is_empty(), "{what}: rsync -a itemizes differences:\n{items}");
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn rich_tree_is_exact_and_an_unchanged_incremental_links_everything() {
    let c = case();
    let g1 = backup(&c);
    assert_exact(&c, &g1, "first generation");
    let g2 = backup(&c);
    assert_exact(&c, &g2, "unchanged incremental");
    assert_eq!(ino(&tree_of(&g1, &c.src).join("plain.txt")), ino(&tree_of(&g2, &c.src).join("plain.txt")));
}

#[test]
fn an_xattr_or_acl_only_change_is_backed_up() {
    let c = case();
    let g1 = backup(&c);
    rustix::fs::lsetxattr(c.src.join("plain.txt"), "user.comment", b"changed", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(c.src.join("dir/sub/deep.bin"), "system.posix_acl_access", &acl_xattr(999), rustix::fs::XattrFlags::empty()).unwrap();
    let g2 = backup(&c);
    assert_exact(&c, &g2, "after xattr and ACL changes");
    assert_ne!(ino(&tree_of(&g1, &c.src).join("plain.txt")), ino(&tree_of(&g2, &c.src).join("plain.txt")), "the old inode was reused with old xattrs");
    // The old generation keeps the old values.
    let mut v = [0u8; 64];
    let n = rustix::fs::lgetxattr(tree_of(&g1, &c.src).join("plain.txt"), "user.comment", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"kept");
}

#[test]
fn a_content_change_that_keeps_size_and_mtime_is_backed_up() {
    let c = case();
    let g1 = backup(&c);
    let p = c.src.join("dir/sub/deep.bin");
    let before = fs::symlink_metadata(&p).unwrap();
    let mut data = fs::read(&p).unwrap();
    data[500] ^= 0xff;
    // Rewritten in place, then the old mtime put back (as `touch -r` or an mmap writer would).
    fs::write(&p, &data).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        set_mtime(&p, before.mtime() as u64, before.mtime_nsec() as u32);
    }
    let g2 = backup(&c);
    assert_eq!(fs::read(tree_of(&g2, &c.src).join("dir/sub/deep.bin")).unwrap(), data, "stale content in the new generation");
    assert_exact(&c, &g2, "after a same-size same-mtime change");
    assert_ne!(fs::read(tree_of(&g1, &c.src).join("dir/sub/deep.bin")).unwrap(), data);
    let out = run(&["verify", "--target", s(&c.target)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_metadata_touch_without_content_change_still_links() {
    let c = case();
    let g1 = backup(&c);
    // chmod there and back: ctime changes, nothing else does.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(c.src.join("plain.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(c.src.join("plain.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    let g2 = backup(&c);
    assert_exact(&c, &g2, "after a ctime-only change");
    assert_eq!(ino(&tree_of(&g1, &c.src).join("plain.txt")), ino(&tree_of(&g2, &c.src).join("plain.txt")), "re-hashed and equal: reused");
    // Re-hashed once: the inode's first name (dir/hardlink); plain.txt is linked to it.
    let info: serde_json::Value = serde_json::from_str(&fs::read_to_string(g2.join("info.json")).unwrap()).unwrap();
    assert_eq!(info["rechecked_files"], 1, "{info}");
}

#[test]
fn a_hard_link_split_in_the_source_is_split_in_the_next_generation() {
    let c = case();
    let g1 = backup(&c);
    let (a, b) = (c.src.join("plain.txt"), c.src.join("dir/hardlink"));
    assert_eq!(ino(&tree_of(&g1, &c.src).join("plain.txt")), ino(&tree_of(&g1, &c.src).join("dir/hardlink")));
    // b replaced by an independent copy with equal content and metadata.
    let meta = fs::symlink_metadata(&b).unwrap();
    let tmp = c.dir.path().join("copy");
    fs::copy(&a, &tmp).unwrap();
    fs::set_permissions(&tmp, meta.permissions()).unwrap();
    let mut v = [0u8; 64];
    let n = rustix::fs::lgetxattr(&a, "user.comment", &mut v[..]).unwrap();
    rustix::fs::lsetxattr(&tmp, "user.comment", &v[..n], rustix::fs::XattrFlags::empty()).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        set_mtime(&tmp, meta.mtime() as u64, meta.mtime_nsec() as u32);
    }
    fs::rename(&tmp, &b).unwrap();
    let g2 = backup(&c);
    assert_ne!(ino(&tree_of(&g2, &c.src).join("plain.txt")), ino(&tree_of(&g2, &c.src).join("dir/hardlink")), "split names joined again");
    assert_exact(&c, &g2, "after a hard-link split");
    // And joined again in the source: joined in the next generation.
    fs::remove_file(&b).unwrap();
    fs::hard_link(&a, &b).unwrap();
    let g3 = backup(&c);
    assert_exact(&c, &g3, "after re-joining");
}

#[test]
fn paths_beyond_path_max_work_with_a_relative_target_too() {
    let c = case();
    let name = "r".repeat(250);
    let mut d = offdisk::fsaccess::Dir::open_path(&c.src).unwrap();
    for _ in 0..20 {
        d = d.create_or_open_dir(std::ffi::OsStr::new(&name), 0o755).unwrap().0;
    }
    drop(d.create_file(std::ffi::OsStr::new("leaf"), 0o644).unwrap());
    let out = Command::new(bin())
        .current_dir(c.dir.path())
        .env("OFFDISK_CONFIG", empty_config())
        .args(["backup", "--no-progress", "--json", "--target", "t", "src"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The only warning: source and target share this test's filesystem.
    let warnings: Vec<_> = v["warnings"].as_array().unwrap().iter().filter(|w| !w.as_str().unwrap().contains("same disk")).collect();
    assert!(v["info"]["incomplete"].is_null() && warnings.is_empty(), "{v}");
    assert_eq!(v["info"]["files"], 11, "the rich tree's ten files and the deep leaf");
}

#[test]
fn an_emptied_source_is_refused_and_never_causes_pruning() {
    let c = case();
    let ss = s(&c.src);
    let t = s(&c.target);
    offdisk_ok(&["backup", "--no-progress", "--keep-last", "2", "--target", t, ss]);
    // The source becomes an empty mount point.
    fs::remove_dir_all(&c.src).unwrap();
    fs::create_dir(&c.src).unwrap();
    for _ in 0..2 {
        let out = run(&["backup", "--no-progress", "--keep-last", "2", "--target", t, ss]);
        assert!(!out.status.success(), "an empty source made a generation");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(ss) && err.contains("empty") && err.contains("--allow-shrink"), "{err}");
    }
    assert_eq!(generation_dirs(&c.target).len(), 1, "the only generation with the data must stay");
    assert!(fs::read_dir(c.target.join("generations")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".partial")));
    // Accepted when asked.
    offdisk_ok(&["backup", "--no-progress", "--allow-shrink", "--keep-last", "2", "--target", t, ss]);
    assert_eq!(generation_dirs(&c.target).len(), 2);
}

#[test]
fn losing_more_than_the_threshold_is_refused_with_the_numbers() {
    let c = case();
    let big = c.src.join("many");
    fs::create_dir(&big).unwrap();
    for i in 0..40 {
        fs::write(big.join(format!("f{i}")), b"x").unwrap();
    }
    let g1 = backup(&c);
    fs::remove_dir_all(&big).unwrap();
    let out = run(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("files") && err.contains("50%"), "{err}");
    assert_eq!(generation_dirs(&c.target), [g1]);
    // A per-disk limit in the config raises it.
    let config = c.dir.path().join("config.toml");
    fs::write(&config, "[defaults]\nshrink_limit = 95\n").unwrap();
    let out = Command::new(bin()).args(["backup", "--no-progress", "--config", s(&config), "--target", s(&c.target), s(&c.src)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn entries_that_cannot_be_read_make_a_partial_run_with_exit_23() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("readable"), b"ok").unwrap();
    fs::write(src.join("secret"), b"no").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(["backup", "--no-progress", "--target", s(&target), s(&src)])
        .env("OFFDISK_CONFIG", empty_config())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(23), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("incomplete: 1 entry not backed up") && text.contains("secret"), "{text}");
    let g = generation_dirs(&target).pop().expect("the generation is made");
    let list = fs::read_to_string(g.join("not-backed-up.tsv")).unwrap();
    assert!(list.starts_with("not-backed-up\t") && list.contains("secret"), "{list}");
    let info: serde_json::Value = serde_json::from_str(&fs::read_to_string(g.join("info.json")).unwrap()).unwrap();
    assert_eq!(info["incomplete"]["not_backed_up"], 1);
}

#[test]
fn entries_that_vanish_during_the_run_exit_24() {
    use offdisk::fsaccess::hook::{self, Point};
    let c = case();
    let gone = c.src.join("dir/readonly");
    let rel = c.src.strip_prefix("/").unwrap().join("dir/readonly");
    let _h = hook::set(move |p, r| {
        if p == Point::WalkStatted && r == rel {
            let _ = fs::remove_file(&gone);
        }
    });
    let s = offdisk::backup::backup(&offdisk::backup::BackupOptions::new(&c.target, std::slice::from_ref(&c.src))).unwrap();
    drop(_h);
    assert_eq!(s.exit_code(), 24, "{:?}", s.vanished);
    assert_eq!(s.info.incomplete.as_ref().unwrap().vanished, 1);
    assert!(s.not_backed_up.is_empty());
}
