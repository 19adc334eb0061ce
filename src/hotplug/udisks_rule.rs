//! The udev rule that keeps desktops from prompting for a registered disk: offdisk asks for
//! its passphrase at dock, so udisks must not also offer to unlock or automount it.
//!
//! `register` (and `init`, which registers) writes `90-offdisk-<uuid>.rules` into the
//! admin-local rules directory (`/etc/udev/rules.d`, which survives removal of the package).
//! It sets udisks2's documented `UDISKS_AUTO=0` (the `HintAuto` property: "do not automount,
//! do not ask") on the LUKS device with that UUID and on its cleartext mapping (found by
//! cryptsetup's DM UUID form, which offdisk's mappings use too). It deliberately does not set
//! `UDISKS_IGNORE`: the partition and the unlocked disk must still show in file managers.
//! An unregistered LUKS disk matches no such rule and keeps the desktop's normal behaviour.
//!
//! The rule's text is built from the UUID only, after parsing it as a UUID, so no value from
//! the disk or the config can put anything else into a udev rule. The file is written through
//! [`crate::fsaccess`]: an `O_EXCL | O_NOFOLLOW` temporary renamed over it; a symlink or
//! anything but a regular file at the rule's name is refused, not followed or replaced.

use super::HotplugError;
use crate::fsaccess::{state, Dir};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Admin-local udev rules: kept when the package is removed, read before /lib/udev/rules.d's
/// files of the same name.
pub const RULES_DIR: &str = "/etc/udev/rules.d";
/// Overrides [`RULES_DIR`] (tests, image builds).
pub const RULES_DIR_ENV: &str = "OFFDISK_UDEV_RULES_DIR";

/// Where register writes the rule, and whether it tells udev afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDir {
    pub dir: PathBuf,
    /// Run `udevadm control --reload` and a `change` event for the disk (off in tests).
    pub reload: bool,
}

impl RuleDir {
    /// `$OFFDISK_UDEV_RULES_DIR`, else [`RULES_DIR`]; udev is told.
    pub fn system() -> RuleDir {
        let dir = std::env::var_os(RULES_DIR_ENV).filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(RULES_DIR));
        RuleDir { dir, reload: true }
    }
}

/// What [`install`] or [`remove`] did, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    Written(PathBuf),
    Replaced(PathBuf),
    Removed(PathBuf),
    /// Nothing to remove.
    Absent(PathBuf),
    /// The rules directory does not exist (no udev here): nothing written.
    NoRulesDir(PathBuf),
}

impl RuleChange {
    pub fn describe(&self) -> String {
        match self {
            RuleChange::Written(p) => format!("wrote udev rule {} (desktops leave this disk to offdisk)", p.display()),
            RuleChange::Replaced(p) => format!("replaced udev rule {}", p.display()),
            RuleChange::Removed(p) => format!("removed udev rule {}", p.display()),
            RuleChange::Absent(p) => format!("no udev rule {} to remove", p.display()),
            RuleChange::NoRulesDir(d) => format!("{} does not exist: no udev rule written, so a desktop may also offer to unlock this disk", d.display()),
        }
    }
}

/// The UUID in canonical form (lower-case, hyphenated), or `None` if it is not a UUID.
fn canonical(luks_uuid: &str) -> Option<String> {
    // Only the hyphenated 36-character form: the braced, URN and simple forms the parser
    // also takes are not what LUKS headers hold.
    if luks_uuid.len() != 36 {
        return None;
    }
    uuid::Uuid::parse_str(luks_uuid).ok().map(|u| u.hyphenated().to_string())
}

/// `90-offdisk-<uuid>.rules`: after 60-persistent-storage (ID_FS_*) and the dm rules
/// (DM_UUID), before nothing that resets UDISKS_AUTO.
pub fn file_name(luks_uuid: &str) -> Option<String> {
    canonical(luks_uuid).map(|u| format!("90-offdisk-{u}.rules"))
}

/// The rule for a LUKS UUID, or `None` if it is not a UUID.
pub fn rule_text(luks_uuid: &str) -> Option<String> {
    let lower = canonical(luks_uuid)?;
    let upper = lower.to_ascii_uppercase();
    let (cl, cu) = (lower.replace('-', ""), upper.replace('-', ""));
    // udev compares case-sensitively and the header keeps the case it was written with.
    Some(format!(
        "# Written by `offdisk register` for backup disk {lower}: offdisk asks for its passphrase when it\n\
         # is docked, so udisks neither automounts nor prompts for it (HintAuto false); it still shows.\n\
         # Removed by `offdisk unregister`.\n\
         SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"crypto_LUKS\", ENV{{ID_FS_UUID}}==\"{lower}|{upper}\", ENV{{UDISKS_AUTO}}=\"0\"\n\
         SUBSYSTEM==\"block\", ENV{{DM_UUID}}==\"CRYPT-LUKS[12]-{cl}-*|CRYPT-LUKS[12]-{cu}-*\", ENV{{UDISKS_AUTO}}=\"0\"\n"
    ))
}

fn rule_err(path: PathBuf, why: impl Into<String>) -> HotplugError {
    HotplugError::UdevRule { path, why: why.into() }
}

fn not_a_uuid(dir: &Path, luks_uuid: &str) -> HotplugError {
    rule_err(dir.to_path_buf(), format!("{luks_uuid:?} is not a UUID; no rule is written for it"))
}

/// Opens the rules directory; `Ok(None)` when it does not exist.
fn open_dir(dir: &Path) -> Result<Option<Dir>, HotplugError> {
    match Dir::open_path(dir) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(rule_err(dir.to_path_buf(), e.to_string())),
    }
}

/// What is at the rule's name: `Ok(false)` nothing, `Ok(true)` a regular file, else refused.
fn existing(d: &Dir, name: &OsStr, path: &Path) -> Result<bool, HotplugError> {
    match d.stat(name) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => Err(rule_err(path.to_path_buf(), format!("is {}, not a regular file; refusing to replace it", m.kind().describe()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(rule_err(path.to_path_buf(), e.to_string())),
    }
}

/// Writes (or rewrites) the rule for `luks_uuid` in `dir`, crash-safely.
pub fn install(dir: &Path, luks_uuid: &str) -> Result<RuleChange, HotplugError> {
    let (Some(name), Some(text)) = (file_name(luks_uuid), rule_text(luks_uuid)) else {
        return Err(not_a_uuid(dir, luks_uuid));
    };
    let Some(d) = open_dir(dir)? else {
        return Ok(RuleChange::NoRulesDir(dir.to_path_buf()));
    };
    let path = dir.join(&name);
    let had = existing(&d, OsStr::new(&name), &path)?;
    state::write_atomic(&d, OsStr::new(&name), text.as_bytes(), 0o644).map_err(|e| rule_err(path.clone(), e.to_string()))?;
    Ok(if had { RuleChange::Replaced(path) } else { RuleChange::Written(path) })
}

/// Removes the rule for `luks_uuid` from `dir` (a symlink there is refused, not removed).
pub fn remove(dir: &Path, luks_uuid: &str) -> Result<RuleChange, HotplugError> {
    let Some(name) = file_name(luks_uuid) else {
        return Err(not_a_uuid(dir, luks_uuid));
    };
    let path = dir.join(&name);
    let Some(d) = open_dir(dir)? else {
        return Ok(RuleChange::Absent(path));
    };
    if !existing(&d, OsStr::new(&name), &path)? {
        return Ok(RuleChange::Absent(path));
    }
    d.unlink(OsStr::new(&name)).map_err(|e| rule_err(path.clone(), e.to_string()))?;
    d.sync().map_err(|e| rule_err(path.clone(), e.to_string()))?;
    Ok(RuleChange::Removed(path))
}

/// Has udev read its rules again and re-run them for the disk with `luks_uuid` if it is
/// attached, so udisks sees the new hint now rather than at the next plug-in. Best effort:
/// `Err` says what failed, for a warning (the rule still applies from the next plug-in or
/// boot).
pub fn tell_udev(luks_uuid: &str) -> Result<(), String> {
    let Some(uuid) = canonical(luks_uuid) else {
        return Err(format!("{luks_uuid:?} is not a UUID"));
    };
    let run = |args: &[&str]| -> Result<(), String> {
        let what = format!("udevadm {}", args.join(" "));
        match std::process::Command::new("udevadm").args(args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("`{what}` failed ({s})")),
            Err(e) => Err(format!("`{what}` could not run: {e}")),
        }
    };
    run(&["control", "--reload"])?;
    // Only block devices carrying this LUKS UUID get the change event.
    let prop = format!("--property-match=ID_FS_UUID={uuid}");
    let upper = format!("--property-match=ID_FS_UUID={}", uuid.to_ascii_uppercase());
    run(&["trigger", "--action=change", "--subsystem-match=block", &prop, &upper, "--settle"])
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10";

    #[test]
    fn only_a_uuid_makes_a_rule() {
        assert_eq!(file_name(&U.to_ascii_uppercase()).as_deref(), Some("90-offdisk-0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10.rules"));
        let t = rule_text(U).unwrap();
        assert!(t.contains("ENV{ID_FS_UUID}==\"0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10|0B4F8A1E-8F0D-4C59-9A43-3F1C1D3B2A10\""), "{t}");
        assert!(t.contains("CRYPT-LUKS[12]-0b4f8a1e8f0d4c599a433f1c1d3b2a10-*"), "{t}");
        assert!(t.contains("ENV{UDISKS_AUTO}=\"0\"") && !t.contains("UDISKS_IGNORE"), "{t}");
        for bad in ["", "../../etc/passwd", "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a1\"", "{0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10}", "0b4f8a1e8f0d4c599a433f1c1d3b2a10", "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a1\n"] {
            assert_eq!(rule_text(bad), None, "{bad:?}");
            assert_eq!(file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_rules_dir_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("none");
        assert_eq!(install(&gone, U).unwrap(), RuleChange::NoRulesDir(gone.clone()));
        assert!(!gone.exists());
        assert!(matches!(remove(&gone, U).unwrap(), RuleChange::Absent(_)));
    }
}
