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
