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
    // The same words as a restore --from of the disk gives.
    assert!(stderr(&out).contains("runs through a symlink stored in the generation"), "{}", stderr(&out));
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

// --- The same rules for `restore --from` (the disk read in userspace) ---------------------
//
// One backup, restored into two copies of the same hostile DEST: once from the generation
// through directory handles (`--target`), once from an image of the disk (`--from`). Both
// must leave DEST's own entries alone, follow nothing, and treat set-id bits, device nodes,
// FIFOs and sockets alike — down to the warnings and the exit status.

mod anywhere_support;

struct FromCase {
    c: Case,
    img: anywhere_support::Image,
}

fn from_case() -> FromCase {
    let c = case();
    let d = c.src.join("d");
    fs::write(d.join("keep"), b"from the backup").unwrap();
    fs::write(d.join("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(d.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(d.join("shared")).unwrap();
    fs::set_permissions(d.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(d.join("h1"), b"one file, two names").unwrap();
    fs::hard_link(d.join("h1"), d.join("h2")).unwrap();
    let fifo = rustix::fs::FileType::Fifo;
    rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), fifo, rustix::fs::Mode::from_raw_mode(0o640), 0).unwrap();
    drop(std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap());
    if is_root() {
        let chr = rustix::fs::FileType::CharacterDevice;
        rustix::fs::mknodat(rustix::fs::CWD, d.join("null"), chr, rustix::fs::Mode::from_raw_mode(0o666), rustix::fs::makedev(1, 3)).unwrap();
    }
    // A fresh backup of the richer tree, the only generation on the disk.
    fs::remove_dir_all(&c.target).unwrap();
    fs::create_dir(&c.target).unwrap();
    offdisk_ok(&["backup", "--no-progress", "--target", s(&c.target), s(&c.src)]);
    let work = c.dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let spec = anywhere_support::Spec { luks: "luks2", cipher: "aes-xts-plain64", key_bits: 512, sector: 4096, gpt: true, mkfs: &[] };
    let img = anywhere_support::build(&spec, &c.target, &work);
    FromCase { c, img }
}

/// DEST as someone left it: a file of their own where a restored file goes, a symlink out
/// of DEST where a file goes and one where a directory goes.
fn hostile_dest(c: &FromCase, dest: &Path) {
    let d = dest.join(c.c.src.strip_prefix("/").unwrap()).join("d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("keep"), b"mine").unwrap();
    symlink(c.c.outside.dir.join("victim"), d.join("f")).unwrap();
    symlink(c.c.outside.dir.join("sub"), d.join("sub")).unwrap();
}

/// Restores the source tree into `dest` by `route` ("host" or "from"); exit code and the
/// warnings with `dest` written as DEST, sorted.
fn restore_by(c: &FromCase, route: &str, dest: &Path, extra: &[&str]) -> (Option<i32>, Vec<String>) {
    let mut args: Vec<String> = vec!["restore".into()];
    if route == "host" {
        args.extend(["--target".into(), s(&c.c.target).into()]);
    } else {
        args.extend(["--from".into(), s(&c.img.path).into(), "--key-file".into(), s(&c.img.key_file).into()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend([s(&c.c.src).into(), "--to".into(), s(dest).into()]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut warnings: Vec<String> = stderr(&out).lines().filter(|l| l.contains("warning:")).map(|l| l.replace(s(dest), "DEST")).collect();
    warnings.sort();
    (out.status.code(), warnings)
}

/// What two restores wrote, comparable: mkfs.ext4 -d keeps whole seconds only.
fn restored(dest: &Path) -> std::collections::BTreeMap<Vec<u8>, Snap> {
    let mut t = snapshot(dest);
    for v in t.values_mut() {
        v.mtime.1 = 0;
    }
    t
}

#[test]
fn restore_from_an_image_follows_the_host_restores_rules() {
    let mut c = from_case();
    let (host, from) = (c.c.dir.path().join("dest-host"), c.c.dir.path().join("dest-from"));
    hostile_dest(&c, &host);
    hostile_dest(&c, &from);
    c.c.outside.arm();
    let (code_h, warn_h) = restore_by(&c, "host", &host, &[]);
    let (code_f, warn_f) = restore_by(&c, "from", &from, &[]);
    c.c.outside.assert_untouched("restore --from into a hostile DEST");
    for (route, dest, code, warn) in [("host", &host, code_h, &warn_h), ("from", &from, code_f, &warn_f)] {
        let d = dest.join(c.c.src.strip_prefix("/").unwrap()).join("d");
        let all = warn.join("\n");
        assert_eq!(code, Some(1), "{route}: what was left out shows in the exit status\n{all}");
        assert_eq!(fs::read(d.join("keep")).unwrap(), b"mine", "{route}: a file already in DEST was overwritten");
        assert!(all.contains("d/keep: exists, not overwritten"), "{route}: {all}");
        assert!(fs::symlink_metadata(d.join("f")).unwrap().file_type().is_symlink(), "{route}: DEST's symlink was replaced");
        assert!(all.contains("d/f: exists, not overwritten"), "{route}: {all}");
        assert!(all.contains("d/sub: is a symbolic link, not a directory; not followed"), "{route}: {all}");
        assert!(all.contains("--keep-setid keeps them"), "{route}: {all}");
        assert_eq!(fs::metadata(d.join("suid")).unwrap().permissions().mode() & 0o7777, 0o755, "{route}");
        assert_eq!(fs::metadata(d.join("shared")).unwrap().permissions().mode() & 0o7777, 0o2775, "{route}: a setgid directory is not a set-id program");
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(d.join("fifo")).unwrap().file_type().is_fifo(), "{route}");
        assert!(fs::symlink_metadata(d.join("sock")).unwrap().file_type().is_socket(), "{route}: sockets are recreated as by the host restore");
        if is_root() {
            assert!(fs::symlink_metadata(d.join("null")).is_err(), "{route}: device node restored without --devices");
            assert!(all.contains("d/null: device node not restored (use --devices to recreate device nodes)"), "{route}: {all}");
        }
    }
    assert_eq!(warn_h, warn_f, "the two routes report differently");
    assert_same_tree(&restored(&host), &restored(&from), "host restore vs restore --from");
}

#[test]
fn restore_from_an_image_keeps_setid_and_devices_only_when_asked() {
    let c = from_case();
    let (host, from) = (c.c.dir.path().join("dest-host"), c.c.dir.path().join("dest-from"));
    let args = ["--keep-setid", "--devices"];
    let (code_h, warn_h) = restore_by(&c, "host", &host, &args);
    let (code_f, warn_f) = restore_by(&c, "from", &from, &args);
    assert_eq!((code_h, code_f), (Some(0), Some(0)), "{warn_h:?} {warn_f:?}");
    for dest in [&host, &from] {
        let d = dest.join(c.c.src.strip_prefix("/").unwrap()).join("d");
        assert_eq!(fs::metadata(d.join("suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
        if is_root() {
            use std::os::unix::fs::FileTypeExt;
            assert!(fs::symlink_metadata(d.join("null")).unwrap().file_type().is_char_device());
        }
        // Hard links stay one file.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(d.join("h1")).unwrap().ino(), fs::metadata(d.join("h2")).unwrap().ino());
    }
    assert_same_tree(&restored(&host), &restored(&from), "host restore vs restore --from, everything kept");
}
