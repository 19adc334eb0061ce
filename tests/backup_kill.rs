//! Crash safety: SIGKILL `offdisk backup` at random moments, many times. After every kill,
//! every listed generation must verify, and the next run must complete.

mod backup_support;
use backup_support::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn make_source(src: &Path, rng: &mut Rng) {
    for d in 0..20 {
        fs::create_dir_all(src.join(format!("d{d:02}"))).unwrap();
        for f in 0..100 {
            let len = (rng.next() % 20_000) as usize + if f % 25 == 0 { 1 << 20 } else { 0 };
            fs::write(src.join(format!("d{d:02}/f{f:03}")), vec![(d * f) as u8; len]).unwrap();
        }
    }
}

fn mutate(src: &Path, rng: &mut Rng) {
    for _ in 0..300 {
        let p = src.join(format!("d{:02}/f{:03}", rng.next() % 20, rng.next() % 100));
        fs::write(&p, rng.next().to_le_bytes().repeat((rng.next() % 4000) as usize)).unwrap();
    }
}

fn backup_cmd(target: &Path, src: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["backup", "--no-progress", "--keep-last", "3", "--target"]).arg(target).arg(src);
    c.env("OFFDISK_CONFIG", empty_config()).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn check_all_listed_verify(target: &Path, round: usize, seed: u64) -> usize {
    let list: serde_json::Value = serde_json::from_str(&offdisk_ok(&["generations", "--json", "--target", target.to_str().unwrap()])).unwrap();
    let n = list.as_array().unwrap().len();
    for g in list.as_array().unwrap() {
        let p = Path::new(g["path"].as_str().unwrap());
        assert!(p.join("metadata.tsv").is_file() && p.join("manifest.b3").is_file() && p.join("info.json").is_file(), "round {round} (seed {seed}): incomplete generation listed: {}", p.display());
    }
    if n > 0 {
        let out = run(&["verify", "--target", target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "round {round} (seed {seed}): verify failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    n
}

#[test]
fn killed_runs_leave_complete_generations_intact() {
    let seed = std::env::var("OFFDISK_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| now_secs() | 1);
    eprintln!("kill test seed {seed} (set OFFDISK_KILL_SEED to repeat)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let target = dir.path().join("t");
    fs::create_dir_all(&target).unwrap();
    make_source(&src, &mut rng);

    // One undisturbed run tells how long a run takes here.
    let started = Instant::now();
    assert!(backup_cmd(&target, &src).status().unwrap().success());
    let full = started.elapsed();
    let mut completed_kills = 0;
    let rounds = 24;
    for round in 0..rounds {
        mutate(&src, &mut rng);
        let before = check_all_listed_verify(&target, round, seed);
        assert!(before >= 1, "round {round}: the first complete generation vanished");
        let mut child = backup_cmd(&target, &src).spawn().unwrap();
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 12 / 10 + 1));
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.success() {
            completed_kills += 1; // finished before the kill landed
        }
        let after = check_all_listed_verify(&target, round, seed);
        assert!(after >= 1, "round {round} (seed {seed}): no complete generation left");
    }
    eprintln!("{rounds} kills, {completed_kills} runs finished before their kill");
    // The next run cleans up and completes.
    mutate(&src, &mut rng);
    let out = run(&["backup", "--json", "--keep-last", "3", "--target", target.to_str().unwrap(), src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let leftovers: Vec<_> = fs::read_dir(target.join("generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "leftovers after a clean run: {leftovers:?}");
    check_all_listed_verify(&target, rounds, seed);
    let newest = generation_dirs(&target).pop().unwrap();
    assert_same_tree(&snapshot(&src), &snapshot(&tree_of(&newest, &src)), "final generation vs source");
}
