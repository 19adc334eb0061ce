//! Retention through the CLI and the config, leftovers of interrupted runs, the ledger.

mod backup_support;
use backup_support::*;
use std::fs;
use std::path::Path;

const DAY: i64 = 86400;
// 2026-01-01T12:00:00Z
const T0: i64 = 1_767_268_800;

/// A temporary directory with a one-file source `src/` and a backup target path `t`.
fn one_file_source() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(&t).unwrap();
    (dir, src, t)
}

fn names(target: &Path) -> Vec<String> {
    generation_dirs(target).iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect()
}

#[test]
fn keep_daily_and_last_prune_after_completion() {
    let (_dir, src, t) = one_file_source();
    let (ts, ss) = (t.to_str().unwrap(), src.to_str().unwrap());
    // Two runs a day for five days.
    for day in 0..5 {
        for hour in [0, 6] {
            let at = (T0 + day * DAY + hour * 3600).to_string();
            offdisk_ok(&["backup", "--no-progress", "--at", &at, "--keep-daily", "3", "--target", ts, ss]);
        }
    }
    assert_eq!(names(&t), ["2026-01-03T180000Z", "2026-01-04T180000Z", "2026-01-05T180000Z"]);
    // keep-last 1 keeps only the new one; the JSON names what was pruned.
    let at = (T0 + 6 * DAY).to_string();
    let out = offdisk_ok(&["backup", "--json", "--at", &at, "--keep-last", "1", "--target", ts, ss]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pruned"].as_array().unwrap().len(), 3);
    assert_eq!(names(&t), ["2026-01-07T120000Z"]);
    // Pruned trees are really gone, not just renamed.
    assert_eq!(fs::read_dir(t.join("generations")).unwrap().count(), 1);
    let out = run(&["verify", "--target", ts]);
    assert!(out.status.success());
}

#[test]
fn same_second_and_clock_going_back_still_sort() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(&t).unwrap();
    let (ts, ss) = (t.to_str().unwrap(), src.to_str().unwrap());
    for at in [T0, T0, T0 - 100] {
        offdisk_ok(&["backup", "--at", &at.to_string(), "--target", ts, ss]);
    }
    assert_eq!(names(&t), ["2026-01-01T120000Z", "2026-01-01T120000Z-2", "2026-01-01T120000Z-3"]);
    let out = offdisk_ok(&["generations", "--target", ts]);
    let order: Vec<_> = out.lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    assert_eq!(order, names(&t));
}

#[test]
fn leftovers_of_interrupted_runs_are_ignored_then_cleaned() {
    let (_dir, src, t) = one_file_source();
    let (ts, ss) = (t.to_str().unwrap(), src.to_str().unwrap());
    offdisk_ok(&["backup", "--at", &T0.to_string(), "--target", ts, ss]);
    let g = t.join("generations");
    fs::create_dir_all(g.join(".partial-2026-01-02T000000Z/tree/x")).unwrap();
    fs::create_dir_all(g.join(".deleting-2025-12-01T000000Z/tree")).unwrap();
    fs::create_dir_all(g.join("not-a-generation")).unwrap();
    let list: serde_json::Value = serde_json::from_str(&offdisk_ok(&["generations", "--json", "--target", ts])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    offdisk_ok(&["backup", "--at", &(T0 + DAY).to_string(), "--target", ts, ss]);
    assert!(!g.join(".partial-2026-01-02T000000Z").exists());
    assert!(!g.join(".deleting-2025-12-01T000000Z").exists());
    assert!(g.join("not-a-generation").exists(), "only offdisk's own leftovers are removed");
    assert_eq!(names(&t).len(), 3); // two generations + the foreign dir
}

#[test]
fn config_disk_sources_retention_and_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep.txt"), "k").unwrap();
    fs::write(src.join("skip.tmp"), "s").unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(&t).unwrap();
    let ledger_dir = dir.path().join("ledger");
    let cfg = dir.path().join("config.toml");
    let uuid = "0b9e9c8e-6a0e-4c49-9a57-6f8c3f1b2d10";
    fs::write(
        &cfg,
        format!(
            "ledger_dir = {ledger:?}\n[[disk]]\nluks_uuid = \"{uuid}\"\nlabel = \"office\"\nmount_point = {t:?}\nsources = [{src:?}]\nexcludes = [\"*.tmp\"]\n[disk.retention]\nkeep_last = 2\n",
            ledger = ledger_dir.to_str().unwrap(),
            t = t.to_str().unwrap(),
            src = src.to_str().unwrap()
        ),
    )
    .unwrap();
    for i in 0..3 {
        let at = (T0 + i * DAY).to_string();
        offdisk_ok(&["backup", "--config", cfg.to_str().unwrap(), "--disk", "office", "--target", t.to_str().unwrap(), "--at", &at]);
    }
    let gens = generation_dirs(&t);
    assert_eq!(gens.len(), 2, "keep_last from the config");
    let tree = tree_of(gens.last().unwrap(), &src);
    assert!(tree.join("keep.txt").exists() && !tree.join("skip.tmp").exists());
    let host: serde_json::Value = serde_json::from_slice(&fs::read(ledger_dir.join(format!("{uuid}.json"))).unwrap()).unwrap();
    let disk: serde_json::Value = serde_json::from_slice(&fs::read(t.join("offdisk-ledger.json")).unwrap()).unwrap();
    assert_eq!(host, disk);
    assert_eq!(host["label"], "office");
    assert_eq!(host["last_refreshed"], T0 + 2 * DAY);
    assert_eq!(host["last_generation"], "2026-01-03T120000Z");
    assert_eq!(host["generations"].as_array().unwrap().len(), 2);
    let ledger = offdisk::config::Ledger::load_host(&ledger_dir, uuid).unwrap().unwrap();
    assert_eq!(ledger.staleness(T0 + 12 * DAY).to_string(), "not refreshed for 10 days");
    // A disk the config does not know is an error with a hint.
    let out = run(&["backup", "--config", cfg.to_str().unwrap(), "--disk", "home"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no disk \"home\""));
}

#[test]
fn a_second_run_on_the_same_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let t = dir.path().join("t");
    fs::create_dir_all(&t).unwrap();
    let lock = offdisk::backup::lock_root(&offdisk::backup::generation::Root::open(&t).unwrap()).unwrap();
    let out = run(&["backup", "--target", t.to_str().unwrap(), src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another offdisk run"));
    assert!(generation_dirs(&t).is_empty());
    drop(lock);
    offdisk_ok(&["backup", "--target", t.to_str().unwrap(), src.to_str().unwrap()]);
    assert_eq!(generation_dirs(&t).len(), 1);
}
