//! Restore from a disk anyone may have changed, into a DEST that may already hold anything.
//! Each test asserts the refusal and, with inotify and a snapshot, that nothing outside
//! DEST was read, created, changed or deleted.

mod backup_support;
use backup_support::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

struct Case {
    dir: tempfile::TempDir,
    src: PathBuf,
    target: PathBuf,
    dest: PathBuf,
    outside: Outside,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::write(src.join("d/f"), b"data").unwrap();
    fs::write(src.join("d/sub/g"), b"more").unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    offdisk_ok(&["backup", "--no-progress", "--target", s(&target), s(&src)]);
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let outside = Outside::new(&dir.path().join("host"));
    Case { dir, src, target, dest, outside }
}

fn gen_tree(c: &Case) -> PathBuf {
    tree_of(&generation_dirs(&c.target).pop().unwrap(), &c.src)
}

/// DEST's copy of the source path `rel` below it.
fn in_dest(c: &Case, rel: &str) -> PathBuf {
    c.dest.join(c.src.strip_prefix("/").unwrap()).join(rel)
}

fn restore(c: &Case, path: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", "--target", s(&c.target)];
    args.extend_from_slice(extra);
    args.extend([s(path), "--to", s(&c.dest)]);
    run(&args)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_symlink_already_in_dest_is_not_followed() {
    let mut c = case();
    // DEST/…/src/d is a symlink to a host directory.
    let d = in_dest(&c, "d");
    fs::create_dir_all(d.parent().unwrap()).unwrap();
    symlink(c.outside.dir.join("sub"), &d).unwrap();
    c.outside.arm();
    let out = restore(&c, &c.src, &[]);
    assert!(!out.status.success(), "a restore through DEST's symlink succeeded");
    assert!(stderr(&out).contains("symbolic link") && stderr(&out).contains("/d"), "{}", stderr(&out));
    c.outside.assert_untouched("DEST symlink");
}

#[test]
fn a_symlink_restored_earlier_is_never_written_through() {
    let mut c = case();
    // First restore: a generation whose d is a symlink pointing out of DEST.
    let t2 = c.dir.path().join("t2");
    fs::create_dir(&t2).unwrap();
    let src2 = c.dir.path().join("src2");
    fs::create_dir(&src2).unwrap();
    let depth = in_dest(&c, "d").components().count();
    let up = "../".repeat(depth);
    symlink(format!("{up}{}", c.outside.dir.join("sub").strip_prefix("/").unwrap().display()), src2.join("d")).unwrap();
    // Stored under the same path as the first source's d.
    let staged = c.src.with_file_name("staged");
    fs::rename(&c.src, &staged).unwrap();
    fs::rename(&src2, &c.src).unwrap();
    offdisk_ok(&["backup", "--no-progress", "--target", s(&t2), s(&c.src)]);
    fs::rename(&c.src, &src2).unwrap();
    fs::rename(&staged, &c.src).unwrap();
    offdisk_ok(&["restore", "--target", s(&t2), s(&c.src), "--to", s(&c.dest)]);
    assert!(fs::symlink_metadata(in_dest(&c, "d")).unwrap().file_type().is_symlink());
    c.outside.arm();
    // Second restore: the generation where d is a directory with files.
    let out = restore(&c, &c.src, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    c.outside.assert_untouched("restored symlink");
}

#[test]
fn a_restore_path_through_a_stored_symlink_is_refused() {
    let mut c = case();
    // The disk was changed: the generation's d is now a symlink to a host directory.
    let tree = gen_tree(&c);
    fs::rename(tree.join("d"), tree.join("d-away")).unwrap();
    symlink(&c.outside.dir, tree.join("d")).unwrap();
    c.outside.arm();
    let out = restore(&c, &c.src.join("d/secret"), &[]);
    assert!(!out.status.success(), "restored a host file through a stored symlink");
    assert!(stderr(&out).contains("symbolic link") || stderr(&out).contains("not a directory"), "{}", stderr(&out));
    assert!(!tree_contains(&c.dest, SECRET));
    c.outside.assert_untouched("stored symlink");
}

#[test]
fn setid_bits_and_device_nodes_need_explicit_options() {
    if !is_root() {
        return;
    }
    let mut c = case();
    // The disk holds a setuid root file and a device node.
    let tree = gen_tree(&c);
    fs::write(tree.join("d/suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(tree.join("d/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, tree.join("d/null"), rustix::fs::FileType::CharacterDevice, rustix::fs::Mode::from_raw_mode(0o666), rustix::fs::makedev(1, 3)).unwrap();
    c.outside.arm();
    let out = restore(&c, &c.src, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keep-setid"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--devices"), "{}", stderr(&out));
    let m = fs::metadata(in_dest(&c, "d/suid")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o755, "setuid restored without --keep-setid");
    assert!(fs::symlink_metadata(in_dest(&c, "d/null")).is_err(), "device node restored without --devices");
    c.outside.assert_untouched("setid/devices default");
    // With the options, both come back as stored.
    let dest2 = c.dir.path().join("dest2");
    offdisk_ok(&["restore", "--target", s(&c.target), "--keep-setid", "--devices", s(&c.src), "--to", s(&dest2)]);
    let back = dest2.join(c.src.strip_prefix("/").unwrap());
    assert_eq!(fs::metadata(back.join("d/suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(back.join("d/null")).unwrap().file_type().is_char_device());
}

#[test]
fn verify_never_follows_a_tree_symlinked_elsewhere() {
    let mut c = case();
    let g = generation_dirs(&c.target).pop().unwrap();
    fs::rename(g.join("tree"), g.join("tree-away")).unwrap();
    symlink(&c.outside.dir, g.join("tree")).unwrap();
    c.outside.arm();
    let out = run(&["verify", "--target", s(&c.target)]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tree") && text.contains("symbolic link"), "{text}");
    assert!(!text.contains("secret") && !text.contains("victim"), "listed names from the host: {text}");
    c.outside.assert_untouched("tree symlink");
}
