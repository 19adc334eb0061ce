//! Registering does not start a backup. A disk registered while it is attached (`offdisk
//! register`, or `offdisk init`, which registers) still gets udev events of that same
//! attachment: the partition rescan udev runs when a writer closes the whole disk (init's
//! partition table), `change` events, or a dock the plug-in started that reads the config only
//! after the registration landed. Each can make systemd start `offdisk-dock@.service`, which
//! would ask for a passphrase and back up while the user is still setting the disk up.
//!
//! So register notes, in the run directory (`/run/offdisk`, gone at the next boot), the
//! kernel's sequence number of the disk's attachment ([`crate::disk::sysfs::disk_seq`]: new
//! at each plug-in or loop attach, unchanged by rescans). A dock started for a plug-in event
//! (the unit's `--plugged`) of a disk with that same attachment leaves it alone and says how to
//! back up now; the next plug-in (a new number) or boot docks as usual, and `offdisk dock
//! NAME` by hand always does. Without a sequence number (kernels before 5.15) nothing is noted.

use crate::fsaccess::{state, Dir};
use std::ffi::OsString;
use std::path::Path;

fn note_name(luks_uuid: &str) -> OsString {
    let safe: String = luks_uuid.chars().filter(|c| c.is_ascii_hexdigit() || *c == '-').collect();
    OsString::from(format!("registered-attached-{}", safe.to_ascii_lowercase()))
}

/// Notes that the disk with `luks_uuid` was registered during attachment `seq`. Best effort:
/// `Err` is for a warning (then a dock may start for this attachment).
pub fn note(run_dir: &Path, luks_uuid: &str, seq: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let d = Dir::open_path(run_dir)?;
    state::write_atomic(&d, &note_name(luks_uuid), format!("{seq}\n").as_bytes(), 0o600)
}

/// The attachment the disk was registered during, if noted (this boot).
pub fn noted(run_dir: &Path, luks_uuid: &str) -> Option<u64> {
    let d = Dir::open_path(run_dir).ok()?;
    let bytes = state::read_optional(&d, &note_name(luks_uuid), 64).ok()??;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// Whether a dock of the disk, now attached as `seq`, is of the attachment it was registered
/// during: then a plug-in event's dock leaves it alone.
pub fn registered_during(run_dir: &Path, luks_uuid: &str, seq: Option<u64>) -> bool {
    matches!((seq, noted(run_dir, luks_uuid)), (Some(now), Some(then)) if now == then)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0B4F8A1E-8f0d-4c59-9a43-3f1c1d3b2a10";

    #[test]
    fn the_same_attachment_only() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert!(!registered_during(&run, U, Some(7)), "nothing noted");
        note(&run, U, 7).unwrap();
        assert_eq!(noted(&run, &U.to_ascii_lowercase()), Some(7), "by UUID, any case");
        assert!(registered_during(&run, U, Some(7)));
        assert!(!registered_during(&run, U, Some(8)), "plugged in again: a new attachment");
        assert!(!registered_during(&run, U, None), "no sequence number known now");
        assert!(!registered_during(&run, "5d2f3c4a-1b2c-4d5e-8f90-a1b2c3d4e5f6", Some(7)), "another disk");
        note(&run, U, 9).unwrap();
        assert!(registered_during(&run, U, Some(9)) && !registered_during(&run, U, Some(7)), "registered again");
    }

    #[test]
    fn a_hostile_uuid_stays_in_the_run_directory() {
        assert_eq!(note_name("../../etc/passwd"), OsString::from("registered-attached-ecad"));
    }
}
