//! A backup is a plain tree equal to its source in every observable way; `b3sum --check`
//! accepts its manifest; restore brings it all back; incremental runs link what is unchanged.

mod backup_support;
use backup_support::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

#[test]
fn backup_is_a_faithful_plain_tree_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let target = dir.path().join("target");
    fs::create_dir_all(&target).unwrap();
    make_rich_tree(&src);
    let before = snapshot(&src);

    let out = offdisk_ok(&["backup", "--target", target.to_str().unwrap(), src.to_str().unwrap()]);
    assert!(out.starts_with("backup "), "{out}");
    let gens = generation_dirs(&target);
    assert_eq!(gens.len(), 1);
    let copy = tree_of(&gens[0], &src);
    assert_same_tree(&before, &snapshot(&copy), "generation vs source");
    assert!(snapshot(&copy)[b"sparse".as_slice()].sparse, "sparse file was filled in");

    // Stock b3sum checks every file it can name (the non-UTF-8 one is only in metadata.tsv).
    let check = Command::new("b3sum").arg("--check").arg("manifest.b3").current_dir(&gens[0]).output().expect("b3sum is needed for this test");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "b3sum --check failed: {text}{}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(text.lines().filter(|l| l.ends_with(": OK")).count(), 9, "{text}");
    assert!(text.contains("back\\\\slash: OK") && text.contains("new\\nline: OK"), "{text}");
    let meta = fs::read_to_string(gens[0].join("metadata.tsv")).unwrap();
    assert!(meta.starts_with("#offdisk-metadata\tversion=2\n"));
    assert!(meta.contains("bad\\xffname"), "{meta}");

    // `cp -a` reads the generation without offdisk.
    let cp = dir.path().join("cp");
    assert!(Command::new("cp").arg("-a").arg(&copy).arg(&cp).status().unwrap().success());
    assert_eq!(fs::read(cp.join("dir/sub/deep.bin")).unwrap(), fs::read(src.join("dir/sub/deep.bin")).unwrap());

    // Restore recreates the path below DEST with everything intact.
    let dest = dir.path().join("restored");
    offdisk_ok(&["restore", "--keep-setid", "--devices", "--target", target.to_str().unwrap(), src.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    assert_same_tree(&before, &snapshot(&tree_of(&dest, &src).strip_prefix(dest.join("tree")).map(|r| dest.join(r)).unwrap()), "restore vs source");
}

#[test]
fn incremental_links_unchanged_and_copies_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let target = dir.path().join("target");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("d/f{i:02}")), format!("file {i}")).unwrap();
    }
    let t = target.to_str().unwrap();
    let s = src.to_str().unwrap();
    offdisk_ok(&["backup", "--target", t, s]);
    // Change content (same size, new mtime), mode only, and add one.
    fs::write(src.join("d/f07"), "FILE 7").unwrap();
    set_mtime(&src.join("d/f07"), 1_700_000_000, 1);
    fs::set_permissions(src.join("d/f08"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::write(src.join("d/new"), "new").unwrap();
    fs::remove_file(src.join("d/f09")).unwrap();
    let out = offdisk_ok(&["backup", "--json", "--target", t, s]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["info"]["linked_files"], 47, "{out}");
    assert_eq!(v["info"]["copied_files"], 3, "{out}");
    assert_eq!(v["info"]["new_bytes"], 6 + 6 + 3, "{out}");

    let gens = generation_dirs(&target);
    assert_eq!(gens.len(), 2);
    let (a, b) = (tree_of(&gens[0], &src), tree_of(&gens[1], &src));
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&a.join("d/f00")), ino(&b.join("d/f00")), "unchanged file not linked");
    assert_ne!(ino(&a.join("d/f07")), ino(&b.join("d/f07")), "changed file linked");
    assert_ne!(ino(&a.join("d/f08")), ino(&b.join("d/f08")), "mode change not noticed");
    assert_eq!(fs::read_to_string(b.join("d/f07")).unwrap(), "FILE 7");
    assert!(!b.join("d/f09").exists() && a.join("d/f09").exists());
    assert_same_tree(&snapshot(&src), &snapshot(&b), "second generation vs source");
    // Linked files keep their hash in the new manifest without being re-read.
    let m1 = fs::read_to_string(gens[0].join("manifest.b3")).unwrap();
    let m2 = fs::read_to_string(gens[1].join("manifest.b3")).unwrap();
    let line = |m: &str, name: &str| m.lines().find(|l| l.ends_with(name)).map(|l| l[..64].to_string());
    assert_eq!(line(&m1, "d/f00"), line(&m2, "d/f00"));
    assert_ne!(line(&m1, "d/f07"), line(&m2, "d/f07"));
    let check = Command::new("b3sum").arg("--check").arg("--quiet").arg("manifest.b3").current_dir(&gens[1]).status().unwrap();
    assert!(check.success());

    let list: serde_json::Value = serde_json::from_str(&offdisk_ok(&["generations", "--json", "--target", t])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0]["name"].as_str().unwrap() <= list[1]["name"].as_str().unwrap());
    assert_eq!(list[1]["files"], 50);
    assert_eq!(list[1]["new_bytes"], 15);
    assert_eq!(list[1]["path"], gens[1].to_str().unwrap());
}

#[test]
fn restore_single_file_from_older_generation_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let target = dir.path().join("t");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "one").unwrap();
    let (t, s) = (target.to_str().unwrap(), src.to_str().unwrap());
    offdisk_ok(&["backup", "--target", t, s]);
    fs::write(src.join("a"), "two!").unwrap();
    offdisk_ok(&["backup", "--target", t, s]);
    let first = generation_dirs(&target)[0].file_name().unwrap().to_str().unwrap().to_string();
    let dest = dir.path().join("r");
    let file = src.join("a");
    offdisk_ok(&["restore", "--target", t, "--generation", &first, file.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    let restored = dest.join(file.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(&restored).unwrap(), "one");
    // A second restore onto the same place does not overwrite and says so.
    fs::write(&restored, "local edit").unwrap();
    let out = run(&["restore", "--target", t, file.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not overwritten"));
    assert_eq!(fs::read_to_string(&restored).unwrap(), "local edit");
    let out = run(&["restore", "--target", t, "/no/such/path", "--to", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in generation"));
}
