//! Excludes, exclude files, CACHEDIR.TAG, one filesystem, several sources.

mod backup_support;
use backup_support::*;
use std::fs;
use std::process::Command;

#[test]
fn excludes_and_cache_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["keep", "build/out", "cache", "notcache", "a/node_modules/x"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in ["keep/a.txt", "keep/b.o", "build/out/bin", "cache/blob", "notcache/blob", "a/node_modules/x/y", "a/z.log"] {
        fs::write(src.join(f), f).unwrap();
    }
    fs::write(src.join("cache/CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n").unwrap();
    fs::write(src.join("notcache/CACHEDIR.TAG"), "not the signature").unwrap();
    let exfile = dir.path().join("excludes");
    fs::write(&exfile, "# comment\n\n*.log\nnode_modules/\n").unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(&t).unwrap();
    let anchored = format!("{}/build", src.to_str().unwrap());
    offdisk_ok(&["backup", "--target", t.to_str().unwrap(), "--exclude", "*.o", "--exclude", &anchored, "--exclude-from", exfile.to_str().unwrap(), src.to_str().unwrap()]);
    let tree = tree_of(&generation_dirs(&t)[0], &src);
    let mut got: Vec<String> = snapshot(&tree).keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    got.sort();
    assert_eq!(got, ["a", "keep", "keep/a.txt", "notcache", "notcache/CACHEDIR.TAG", "notcache/blob"]);

    // --include-caches keeps tagged directories.
    let t2 = dir.path().join("t2");
    fs::create_dir_all(&t2).unwrap();
    offdisk_ok(&["backup", "--include-caches", "--target", t2.to_str().unwrap(), src.to_str().unwrap()]);
    assert!(tree_of(&generation_dirs(&t2)[0], &src).join("cache/blob").exists());
}

#[test]
fn several_sources_and_the_target_inside_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(a.join("x")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("x/1"), "1").unwrap();
    fs::write(b.join("2"), "2").unwrap();
    // The backup root lies inside a source: it must not back itself up.
    let t = dir.path().join("a/backups");
    fs::create_dir_all(&t).unwrap();
    offdisk_ok(&["backup", "--target", t.to_str().unwrap(), b.to_str().unwrap(), a.to_str().unwrap(), a.join("x").to_str().unwrap()]);
    let g = &generation_dirs(&t)[0];
    assert_eq!(fs::read_to_string(tree_of(g, &a).join("x/1")).unwrap(), "1");
    assert_eq!(fs::read_to_string(tree_of(g, &b).join("2")).unwrap(), "2");
    assert!(!tree_of(g, &a).join("backups").exists());
    let out = run(&["backup", "--target", t.to_str().unwrap(), dir.path().join("missing").to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn stays_on_one_filesystem_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("here"), "h").unwrap();
    if !Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "offdisk-test"]).arg(&mnt).status().map(|s| s.success()).unwrap_or(false) {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    }
    fs::write(mnt.join("other-fs"), "o").unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(&t).unwrap();
    let r1 = run(&["backup", "--target", t.to_str().unwrap(), src.to_str().unwrap()]);
    let t2 = dir.path().join("t2");
    fs::create_dir_all(&t2).unwrap();
    let r2 = run(&["backup", "--cross-filesystems", "--target", t2.to_str().unwrap(), src.to_str().unwrap()]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(r1.status.success() && r2.status.success());
    let g1 = tree_of(&generation_dirs(&t)[0], &src);
    assert!(g1.join("here").exists());
    assert!(g1.join("mnt").is_dir(), "the mount point itself is kept");
    assert!(!g1.join("mnt/other-fs").exists(), "crossed into another filesystem");
    assert!(tree_of(&generation_dirs(&t2)[0], &src).join("mnt/other-fs").exists());
}
