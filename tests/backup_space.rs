//! Out of space: prune within policy and retry; if still short, a clear error and every
//! complete generation intact. Needs a small filesystem: mounts a tmpfs (root only).

mod backup_support;
use backup_support::*;
use std::fs;
use std::path::Path;
use std::process::Command;

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn small_fs(dir: &Path, size: &str) -> Option<Mount> {
    fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "offdisk-test"]).arg(dir).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return None;
    }
    Some(Mount(dir.to_path_buf()))
}

fn write_random(p: &Path, len: usize, seed: u8) {
    // Incompressible enough for any filesystem; tmpfs does not compress anyway.
    let data: Vec<u8> = (0..len).map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ seed).collect();
    fs::write(p, data).unwrap();
}

#[test]
fn full_disk_prunes_by_policy_then_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_m) = small_fs(&dir.path().join("disk"), "8m") else { return };
    let target = dir.path().join("disk");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let (t, s) = (target.to_str().unwrap(), src.to_str().unwrap());
    // Each generation is ~3 MiB of new data: two fit, a third needs a prune.
    for (i, at) in [1_767_268_800i64, 1_767_355_200].iter().enumerate() {
        write_random(&src.join("big"), 3 << 20, i as u8);
        offdisk_ok(&["backup", "--at", &at.to_string(), "--target", t, s]);
    }
    assert_eq!(generation_dirs(&target).len(), 2);

    // With keep-last 1 the oldest may go: the run prunes it and succeeds.
    write_random(&src.join("big"), 3 << 20, 7);
    let out = offdisk_ok(&["backup", "--json", "--keep-last", "1", "--at", "1767441600", "--target", t, s]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pruned"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(generation_dirs(&target).len(), 1);

    // Far too big for the disk and nothing the policy may prune: a clear error.
    let before = snapshot(&target.join("generations"));
    write_random(&src.join("big"), 12 << 20, 9);
    let out = run(&["backup", "--keep-last", "5", "--target", t, s]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no space left") && err.contains("every complete generation was left intact"), "{err}");
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_same_tree(&before, &snapshot(&target.join("generations")), "generations after a failed run");
    let out = run(&["verify", "--target", t]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
