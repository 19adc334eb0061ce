//! `offdisk verify` names each missing, damaged or unexpected file by generation and path.

mod backup_support;
use backup_support::*;
use std::fs;
use std::os::unix::fs::FileExt;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let target = dir.path().join("t");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("d/f{i:02}")), vec![i as u8; 1000 + i]).unwrap();
    }
    offdisk_ok(&["backup", "--target", target.to_str().unwrap(), src.to_str().unwrap()]);
    fs::write(src.join("d/f19"), b"changed").unwrap();
    offdisk_ok(&["backup", "--target", target.to_str().unwrap(), src.to_str().unwrap()]);
    (dir, src, target)
}

#[test]
fn clean_generations_verify() {
    let (_d, _src, target) = setup();
    let out = run(&["verify", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The summary is the only line on standard output, as backup's is.
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("verify: 2 generations, 40 files") && text.trim_end().ends_with("all good"), "{text}");
}

#[test]
fn damage_is_reported_by_generation_and_path() {
    let (_d, src, target) = setup();
    let gens = generation_dirs(&target);
    let (g1, g2) = (&gens[0], &gens[1]);
    let n1 = g1.file_name().unwrap().to_str().unwrap();
    let n2 = g2.file_name().unwrap().to_str().unwrap();
    let t1 = tree_of(g1, &src);
    let t2 = tree_of(g2, &src);
    // Bit rot in a file only the first generation holds (same size, same mtime).
    let f = fs::OpenOptions::new().write(true).open(t1.join("d/f19")).unwrap();
    let mtime = fs::metadata(t1.join("d/f19")).unwrap().modified().unwrap();
    f.write_all_at(b"X", 10).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    fs::remove_file(t2.join("d/f03")).unwrap();
    fs::write(t2.join("d/intruder"), b"?").unwrap();

    let out = run(&["verify", "--target", target.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let srel = src.strip_prefix("/").unwrap().display().to_string();
    let expected = [
        format!("damaged: {n1}/tree/{srel}/d/f19 (content does not match its checksum)"),
        format!("missing: {n2}/tree/{srel}/d/f03"),
        format!("unexpected: {n2}/tree/{srel}/d/intruder"),
    ];
    let (summary, lines) = text.lines().collect::<Vec<_>>().split_last().map(|(s, l)| (s.to_string(), l.to_vec())).unwrap();
    assert_eq!(lines, expected, "{text}");
    assert!(summary.starts_with("verify: 2 generations") && summary.ends_with(": 3 problems"), "{summary}");

    // Quick mode cannot see same-size bit rot, but sees the rest.
    let out = run(&["verify", "--quick", "--target", target.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[..lines.len() - 1], expected[1..], "{text}");

    // One generation at a time; JSON for scripts.
    let out = run(&["verify", "--json", "--generation", n1, "--target", target.to_str().unwrap()]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 1);
    assert_eq!(v["problems"][0]["kind"], "damaged");
    assert_eq!(v["problems"][0]["generation"], n1);
}

#[test]
fn size_change_and_damaged_metadata_are_reported() {
    let (_d, src, target) = setup();
    let gens = generation_dirs(&target);
    let t2 = tree_of(&gens[1], &src);
    // A shared file (linked into both generations) truncated: both generations report it.
    fs::OpenOptions::new().write(true).open(t2.join("d/f00")).unwrap().set_len(10).unwrap();
    let out = run(&["verify", "--quick", "--target", target.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("damaged:") && l.contains("d/f00 (size 10, expected 1000)")).count(), 2, "{text}");
    fs::write(gens[0].join("metadata.tsv"), "#offdisk-metadata\tversion=99\n").unwrap();
    let out = run(&["verify", "--quick", "--target", target.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("damaged:") && l.contains("/metadata.tsv (unsupported metadata version")), "{text}");
}

#[test]
fn names_b3sum_cannot_print_are_still_verified_and_restore_reports_rot() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(src.join(odd), b"latin-1 name").unwrap();
    let target = dir.path().join("t");
    fs::create_dir_all(&target).unwrap();
    offdisk_ok(&["backup", "--target", target.to_str().unwrap(), src.to_str().unwrap()]);
    let g = &generation_dirs(&target)[0];
    let stored = tree_of(g, &src).join(odd);
    assert!(!fs::read_to_string(g.join("manifest.b3")).unwrap().contains("caf"), "b3sum cannot name it");
    let f = fs::OpenOptions::new().write(true).open(&stored).unwrap();
    f.write_all_at(b"L", 0).unwrap();
    drop(f);
    let out = run(&["verify", "--target", target.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("damaged:") && text.contains("caf\\xe9.txt (content does not match its checksum)"), "{text}");
    // Restoring still copies it, but says the backup copy is damaged.
    let dest = dir.path().join("r");
    let out = run(&["restore", "--target", target.to_str().unwrap(), src.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged on the backup disk"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shared_files_are_read_once_and_their_damage_named_in_every_generation() {
    use std::os::unix::fs::MetadataExt;
    let (_d, src, target) = setup();
    // A third generation, identical to the second: d/f19 ("changed") is shared by the last two.
    offdisk_ok(&["backup", "--target", target.to_str().unwrap(), src.to_str().unwrap()]);
    let gens = generation_dirs(&target);
    assert_eq!(gens.len(), 3);
    let names: Vec<&str> = gens.iter().map(|g| g.file_name().unwrap().to_str().unwrap()).collect();
    let trees: Vec<_> = gens.iter().map(|g| tree_of(g, &src)).collect();
    let ino = |t: &std::path::PathBuf, f: &str| fs::metadata(t.join(f)).unwrap().ino();
    assert!(ino(&trees[0], "d/f05") == ino(&trees[1], "d/f05") && ino(&trees[1], "d/f05") == ino(&trees[2], "d/f05"));
    let target = target.to_str().unwrap();
    let bytes_read = |out: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["files"].as_u64().unwrap(), v["bytes_read"].as_u64().unwrap())
    };

    // Clean: each inode is read once (the sizes are all distinct, so the sum says which):
    // f00..f18 shared by all three, f19 of the first, f19 shared by the last two.
    let shared: u64 = (1000..=1018).sum();
    let out = run(&["verify", "--json", "--target", target]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(bytes_read(&out), (60, shared + 1019 + 7));

    // Bit rot in an inode all three share (same size and mtime): named in each generation.
    let f = fs::OpenOptions::new().write(true).open(trees[0].join("d/f05")).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.write_all_at(b"X", 10).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    // The middle generation's f07 replaced by another inode with the same size and wrong
    // content: its record expects the same hash as its neighbours', whose inode is good; the
    // record alone must not let it pass unread.
    fs::remove_file(trees[1].join("d/f07")).unwrap();
    fs::write(trees[1].join("d/f07"), vec![0xeeu8; 1007]).unwrap();

    let out = run(&["verify", "--json", "--target", target]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["generation"].as_str().unwrap().to_string(), p["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string()))
        .collect();
    let want: Vec<(String, String)> = vec![
        (names[0].into(), "f05".into()),
        (names[1].into(), "f05".into()),
        (names[1].into(), "f07".into()),
        (names[2].into(), "f05".into()),
    ];
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(v["problems"].as_array().unwrap().iter().all(|p| p["detail"] == "content does not match its checksum" && p["kind"] == "damaged"));
    // (Bytes of damaged files are not counted as read.)
    assert_eq!(bytes_read(&out), (60, shared - 1005 + 1019 + 7));

    // One generation at a time reads (and names) its own.
    let out = run(&["verify", "--json", "--generation", names[2], "--target", target]);
    assert!(!out.status.success());
    assert_eq!(bytes_read(&out), (20, shared - 1005 + 7));
}
