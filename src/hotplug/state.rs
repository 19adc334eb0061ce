//! When each registered disk was last refreshed by a dock, kept by `offdisk dock` in
//! `/var/lib/offdisk/dock-state.json` (world-readable: labels and times only) so the
//! desktop agent, running as the user, can remind "disk X not refreshed for N days".

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub const STATE_PATH: &str = "/var/lib/offdisk/dock-state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskState {
    pub label: String,
    /// Unix seconds of the last successful dock (backup + verify).
    pub last_success: Option<u64>,
    pub last_attempt: Option<u64>,
    pub last_result: Option<String>,
}

/// LUKS UUID → state.
pub type State = BTreeMap<String, DiskState>;

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn load(path: &Path) -> State {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Records one dock's outcome (read-modify-write under the caller's dock lock; two disks
/// docking at once may race, and the loser's entry is rewritten at its next dock).
pub fn record(path: &Path, uuid: &str, label: &str, success: bool, result: &str) -> std::io::Result<()> {
    let mut st = load(path);
    let e = st.entry(uuid.to_ascii_lowercase()).or_default();
    e.label = label.to_string();
    let t = now();
    e.last_attempt = Some(t);
    if success {
        e.last_success = Some(t);
    }
    e.last_result = Some(result.to_string());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string_pretty(&st).map_err(std::io::Error::other)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Disks whose last success (or, never having succeeded, whose first sight) is older than
/// `days`: (label, whole days since).
pub fn stale(st: &State, days: u64, now: u64) -> Vec<(String, u64)> {
    st.values()
        .filter_map(|d| {
            let since = d.last_success.or(d.last_attempt)?;
            let age = now.saturating_sub(since) / 86_400;
            (age >= days).then(|| (d.label.clone(), age))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_finds_stale_disks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        record(&p, "AAAA", "offsite-A", true, "ok").unwrap();
        record(&p, "bbbb", "offsite-B", false, "wrong passphrase").unwrap();
        let st = load(&p);
        assert_eq!(st["aaaa"].label, "offsite-A");
        assert!(st["bbbb"].last_success.is_none());
        let t = now();
        assert!(stale(&st, 7, t).is_empty());
        let later = t + 10 * 86_400;
        let mut s = stale(&st, 7, later);
        s.sort();
        assert_eq!(s, vec![("offsite-A".to_string(), 10), ("offsite-B".to_string(), 10)]);
        assert!(load(&dir.path().join("missing")).is_empty());
    }
}
