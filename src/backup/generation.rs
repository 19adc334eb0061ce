//! Generation naming, listing and the partial → complete → deleting life cycle.
//!
//! Layout under a backup root (the `--target` directory, or the disk's mount):
//! `generations/<YYYY-MM-DDTHHMMSSZ>[-N]/` complete, `generations/.partial-<name>/` being written,
//! `generations/.deleting-<name>/` being pruned. Only complete names are ever listed; a name
//! becomes complete by one atomic rename after everything under it is synced.

use crate::fsaccess::{Dir, Entry, FileKind};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const GENERATIONS_DIR: &str = "generations";
pub const PARTIAL_PREFIX: &str = ".partial-";
pub const DELETING_PREFIX: &str = ".deleting-";
pub const LOCK_FILE: &str = ".offdisk.lock";

/// A complete generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub name: String,
    pub path: PathBuf,
    /// Creation time, seconds since the Unix epoch (UTC), from the name.
    pub time: i64,
    /// Disambiguates generations made in the same second (1 for the first).
    pub seq: u32,
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) for days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// `YYYY-MM-DDTHHMMSSZ` for a Unix time.
pub fn format_time(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// ISO-8601 with separators, for people and JSON (`2026-11-21T08:15:00Z`).
pub fn format_time_iso(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// Parses a complete generation name into (time, seq).
pub fn parse_name(name: &str) -> Option<(i64, u32)> {
    let stamp = name.get(..18)?;
    let seq = match name.get(18..)? {
        "" => 1,
        rest => {
            let digits = rest.strip_prefix('-')?;
            if digits.starts_with('0') || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: u32 = digits.parse().ok()?;
            if n < 2 {
                return None;
            }
            n
        }
    };
    let b = stamp.as_bytes();
    if b.len() != 18 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[17] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = stamp.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (num(0..4)? as i64, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(13..15)?, num(15..17)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let t = days_from_civil(y, mo, d) * 86400 + (h * 3600 + mi * 60 + s) as i64;
    // Reject dates like 02-31 that do not round-trip.
    if format_time(t) != stamp {
        return None;
    }
    Some((t, seq))
}

pub fn name_for(time: i64, seq: u32) -> String {
    if seq <= 1 {
        format_time(time)
    } else {
        format!("{}-{seq}", format_time(time))
    }
}

pub fn generations_dir(root: &Path) -> PathBuf {
    root.join(GENERATIONS_DIR)
}

/// A backup root, opened once: the `--target` directory or the disk's mount point (a path
/// the user gave, so resolved as such). Everything below it is reached through handles
/// and never followed: the disk side may have been changed by anyone.
#[derive(Debug)]
pub struct Root {
    pub path: PathBuf,
    pub dir: Dir,
}

/// Why a backup root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("target {0} does not exist")]
    Missing(PathBuf),
    #[error("target {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} holds no backups (it has no generations/ directory)")]
    NoGenerationsDir(PathBuf),
    #[error("{}: {error}", .path.display())]
    Unsafe { path: PathBuf, error: io::Error },
    #[error("{}: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },
}

impl Root {
    /// Opens an existing directory; a missing one is an error (never created: a mistyped
    /// `--target` must not silently put a backup on the wrong filesystem).
    pub fn open(path: &Path) -> Result<Root, RootError> {
        match Dir::open_path(path) {
            Ok(dir) => Ok(Root { path: path.to_path_buf(), dir }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RootError::Missing(path.to_path_buf())),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(RootError::NotADirectory(path.to_path_buf())),
            Err(error) => Err(RootError::Io { path: path.to_path_buf(), error }),
        }
    }

    pub fn generations_path(&self) -> PathBuf {
        generations_dir(&self.path)
    }

    /// `generations/`, which must be a real directory (a symlink there is refused).
    pub fn generations(&self) -> Result<Dir, RootError> {
        self.dir.open_dir(OsStr::new(GENERATIONS_DIR)).map_err(|error| self.gens_error(error))
    }

    /// `generations/`, made if missing (only by a backup).
    pub fn generations_or_create(&self) -> Result<Dir, RootError> {
        self.dir.create_or_open_dir(OsStr::new(GENERATIONS_DIR), 0o755).map(|(d, _)| d).map_err(|error| self.gens_error(error))
    }

    fn gens_error(&self, error: io::Error) -> RootError {
        let path = self.generations_path();
        match error.kind() {
            io::ErrorKind::NotFound => RootError::NoGenerationsDir(self.path.clone()),
            io::ErrorKind::NotADirectory => RootError::Unsafe { path, error },
            _ => RootError::Io { path, error },
        }
    }
}

/// Whether an entry of `generations/` is a real directory (not a symlink to one).
fn is_real_dir(dir: &Dir, e: &Entry) -> io::Result<bool> {
    Ok(match e.kind {
        FileKind::Dir => true,
        FileKind::Unknown => dir.stat(&e.name)?.is_dir(),
        _ => false,
    })
}

/// Complete generations in the open `generations/` directory (shown as `gens_path`), oldest
/// first. Entries named like generations that are not directories (a symlink to a host
/// directory, say) are not generations and are left alone.
pub fn list_in(gens: &Dir, gens_path: &Path) -> io::Result<Vec<Generation>> {
    let mut out = Vec::new();
    for e in gens.entries()? {
        let Some(name) = e.name.to_str() else { continue };
        if let Some((time, seq)) = parse_name(name) {
            if is_real_dir(gens, &e)? {
                out.push(Generation { path: gens_path.join(name), name: name.to_string(), time, seq });
            }
        }
    }
    out.sort_by_key(|g| (g.time, g.seq));
    Ok(out)
}

/// Complete generations under the backup root `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<Generation>, RootError> {
    let r = Root::open(root)?;
    let gens = r.generations()?;
    list_in(&gens, &r.generations_path()).map_err(|error| RootError::Io { path: r.generations_path(), error })
}

/// Leftovers of interrupted runs in `generations/`: `.partial-*` and `.deleting-*` names.
pub fn leftovers_in(gens: &Dir) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for e in gens.entries()? {
        let b = e.name.as_bytes();
        if b.starts_with(PARTIAL_PREFIX.as_bytes()) || b.starts_with(DELETING_PREFIX.as_bytes()) {
            out.push(e.name);
        }
    }
    Ok(out)
}

/// Chooses a fresh name for a generation made at `time`, after every existing one.
pub fn next_name(existing: &[Generation], time: i64) -> (String, i64, u32) {
    // Never go back in time relative to the newest generation (clock skew): sorting must hold.
    let (mut time, mut seq) = (time, 1);
    if let Some(last) = existing.last() {
        if (time, seq) <= (last.time, last.seq) {
            time = last.time;
            seq = last.seq + 1;
        }
    }
    (name_for(time, seq), time, seq)
}

/// Finds a complete generation by exact name, or a unique prefix (e.g. `2026-11-21`).
pub fn find<'a>(gens: &'a [Generation], want: &str) -> Option<&'a Generation> {
    if let Some(g) = gens.iter().find(|g| g.name == want) {
        return Some(g);
    }
    if want == "latest" || want == "last" {
        return gens.last();
    }
    let matches: Vec<_> = gens.iter().filter(|g| g.name.starts_with(want)).collect();
    if matches.len() == 1 {
        Some(matches[0])
    } else {
        None
    }
}

/// Makes a partial generation complete: everything under it must already be synced.
/// The rename refuses to replace anything (RENAME_NOREPLACE), then `generations/` is synced.
pub fn complete(gens: &Dir, partial: &OsStr, name: &OsStr) -> io::Result<()> {
    gens.open_dir(partial)?.sync()?;
    gens.rename(partial, gens, name, true)?;
    gens.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_roundtrip() {
        for days in [-800_000i64, -1, 0, 1, 59, 60, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_time(0), "1970-01-01T000000Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T000000Z");
    }

    #[test]
    fn names_sort_and_parse() {
        let t = 1_795_000_000;
        let n = name_for(t, 1);
        assert_eq!(parse_name(&n), Some((t, 1)));
        assert_eq!(parse_name(&name_for(t, 12)), Some((t, 12)));
        for bad in ["", "2026-02-31T000000Z", "2026-11-21T250000Z", "2026-11-21T000000Z-1", "2026-11-21T000000Z-02", ".partial-2026-11-21T000000Z", "2026-11-21T000000Zx"] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        let g = |time, seq| Generation { name: name_for(time, seq), path: PathBuf::new(), time, seq };
        assert_eq!(next_name(&[g(t, 1)], t).0, name_for(t, 2));
        assert_eq!(next_name(&[g(t, 3)], t - 100).0, name_for(t, 4));
        assert_eq!(next_name(&[g(t, 1)], t + 1).0, name_for(t + 1, 1));
    }
}
