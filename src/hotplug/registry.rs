//! The registered disks as the hot-plug side needs them, read from and added to
//! `/etc/offdisk/config.toml` (`[[disk]]` tables; the full schema belongs to [`crate::config`]).
//!
//! Adding edits the TOML document as a table, so keys this module does not know
//! (retention and whatever the backup engine adds) are kept as they are. The file is
//! replaced atomically (temp file, fsync, rename) and stays 0600: it names key files.

use super::HotplugError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const CONFIG_PATH: &str = "/etc/offdisk/config.toml";

/// How a disk is unlocked when docked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnlockMethod {
    /// Ask through the password agents (default).
    #[default]
    Passphrase,
    /// Read `key_file` on the host, for unattended machines.
    KeyFile,
}

impl UnlockMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            UnlockMethod::Passphrase => "passphrase",
            UnlockMethod::KeyFile => "key-file",
        }
    }
}

/// One `[[disk]]` entry, the fields docking uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub luks_uuid: String,
    pub label: Option<String>,
    pub sources: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub unlock: UnlockMethod,
    pub key_file: Option<PathBuf>,
    /// Random disk id bound into the identity record on the disk (see [`super::identity`]).
    pub identity: Option<String>,
    /// Where the disk is mounted while open (the config's `mount_point`, defaulted by
    /// [`crate::config::DiskConfig::mount_point`] when not set).
    pub mount_point: Option<PathBuf>,
    /// The disk's own retention (unset: the config's defaults).
    pub retention: crate::backup::retention::Retention,
    /// The user (name or UID) whose desktop agent hears about this disk's docks even when
    /// they are not the active session's user (see [`super::audience`]).
    pub user: Option<String>,
}

impl Registration {
    /// What people call the disk: its label, else its UUID.
    pub fn name(&self) -> &str {
        self.label.as_deref().filter(|l| !l.is_empty()).unwrap_or(&self.luks_uuid)
    }

    fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("luks_uuid".into(), self.luks_uuid.clone().into());
        if let Some(l) = &self.label {
            t.insert("label".into(), l.clone().into());
        }
        let paths = |v: &[PathBuf]| toml::Value::Array(v.iter().map(|p| p.to_string_lossy().into_owned().into()).collect());
        t.insert("sources".into(), paths(&self.sources));
        t.insert("excludes".into(), toml::Value::Array(self.excludes.iter().map(|e| e.clone().into()).collect()));
        t.insert("unlock".into(), self.unlock.as_str().into());
        if let Some(k) = &self.key_file {
            t.insert("key_file".into(), k.to_string_lossy().into_owned().into());
        }
        if let Some(i) = &self.identity {
            t.insert("identity".into(), i.clone().into());
        }
        if let Some(m) = &self.mount_point {
            t.insert("mount_point".into(), m.to_string_lossy().into_owned().into());
        }
        if let Some(u) = &self.user {
            t.insert("user".into(), u.clone().into());
        }
        if !self.retention.is_unset() {
            if let Ok(v) = toml::Value::try_from(self.retention) {
                t.insert("retention".into(), v);
            }
        }
        t
    }
}

fn config_err(path: &Path, why: impl Into<String>) -> HotplugError {
    HotplugError::Config { path: path.to_path_buf(), why: why.into() }
}

fn read_text(path: &Path) -> Result<String, HotplugError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(config_err(path, e.to_string())),
    }
}

/// All registrations, read and validated by [`crate::config::Config`] (the same rules the
/// backup engine applies); a missing file means none.
pub fn load(path: &Path) -> Result<Vec<Registration>, HotplugError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let cfg = crate::config::Config::load(path).map_err(|e| config_err(path, e.to_string()))?;
    Ok(cfg
        .disks
        .iter()
        .map(|d| Registration {
            luks_uuid: d.luks_uuid.clone(),
            label: d.label.clone(),
            sources: d.sources.clone(),
            excludes: d.excludes.clone(),
            unlock: match d.unlock {
                crate::config::Unlock::Passphrase => UnlockMethod::Passphrase,
                crate::config::Unlock::KeyFile => UnlockMethod::KeyFile,
            },
            key_file: d.key_file.clone(),
            identity: d.identity.as_ref().and_then(|v| v.as_str()).map(str::to_string),
            mount_point: Some(d.mount_point()),
            retention: d.retention,
            user: d.user.clone(),
        })
        .collect())
}

/// The registration for a LUKS UUID (compared case-insensitively, as UUIDs are).
pub fn find<'a>(regs: &'a [Registration], luks_uuid: &str) -> Option<&'a Registration> {
    regs.iter().find(|r| r.luks_uuid.eq_ignore_ascii_case(luks_uuid))
}

/// Adds `reg`; with `replace`, an existing entry for the same UUID is replaced in place
/// (keeping its other keys such as retention), otherwise that is an error.
pub fn add(path: &Path, reg: &Registration, replace: bool) -> Result<(), HotplugError> {
    let text = read_text(path)?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| config_err(path, e.to_string()))?;
    let disks = doc.entry("disk").or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(disks) = disks else {
        return Err(config_err(path, "`disk` must be an array of tables ([[disk]])"));
    };
    let same = |v: &toml::Value| {
        v.get("luks_uuid").and_then(|u| u.as_str()).is_some_and(|u| u.eq_ignore_ascii_case(&reg.luks_uuid))
    };
    match disks.iter_mut().find(|v| same(v)) {
        Some(_) if !replace => return Err(HotplugError::AlreadyRegistered(reg.name().to_string())),
        Some(toml::Value::Table(existing)) => {
            for (k, v) in reg.to_table() {
                existing.insert(k, v);
            }
            if reg.key_file.is_none() {
                existing.remove("key_file");
            }
            if reg.mount_point.is_none() {
                existing.remove("mount_point");
            }
            if reg.user.is_none() {
                existing.remove("user");
            }
        }
        _ => disks.push(toml::Value::Table(reg.to_table())),
    }
    let out = toml::to_string_pretty(&doc).map_err(|e| config_err(path, e.to_string()))?;
    write_checked(path, out.as_bytes())
}

/// Removes the entry for `luks_uuid` (compared case-insensitively); `Ok(false)` when there
/// was none. The other entries and keys are kept as they are.
pub fn remove(path: &Path, luks_uuid: &str) -> Result<bool, HotplugError> {
    let text = read_text(path)?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| config_err(path, e.to_string()))?;
    let Some(toml::Value::Array(disks)) = doc.get_mut("disk") else {
        return Ok(false);
    };
    let before = disks.len();
    disks.retain(|v| !v.get("luks_uuid").and_then(|u| u.as_str()).is_some_and(|u| u.eq_ignore_ascii_case(luks_uuid)));
    if disks.len() == before {
        return Ok(false);
    }
    let out = toml::to_string_pretty(&doc).map_err(|e| config_err(path, e.to_string()))?;
    write_checked(path, out.as_bytes())?;
    Ok(true)
}

/// Writes the new config beside the old one, lets [`crate::config::Config`] validate it
/// (so registration never leaves a file the backup engine refuses), then renames it over.
fn write_checked(path: &Path, data: &[u8]) -> Result<(), HotplugError> {
    let io = |e: std::io::Error| config_err(path, e.to_string());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    if let Err(e) = crate::config::Config::load(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(config_err(path, format!("the registration would make the file invalid: {e}")));
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uuid: &str) -> Registration {
        Registration {
            luks_uuid: uuid.into(),
            label: Some("offsite-A".into()),
            sources: vec!["/home".into(), "/etc".into()],
            excludes: vec!["*.tmp".into()],
            unlock: UnlockMethod::Passphrase,
            key_file: None,
            identity: Some("d1".into()),
            mount_point: None,
            retention: Default::default(),
            user: Some("alice".into()),
        }
    }

    #[test]
    fn add_keeps_unknown_keys_and_finds_by_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[global]\nstate_dir = \"/var/lib/offdisk\"\n\n[[disk]]\nluks_uuid = \"0B4F8A1E-8F0D-4C59-9A43-3F1C1D3B2A10\"\nretention = { keep_daily = 7 }\nunlock = \"key-file\"\nkey_file = \"/etc/offdisk/a.key\"\n").unwrap();
        add(&p, &reg("1c5f8a1e-8f0d-4c59-9a43-3f1c1d3b2a11"), false).unwrap();
        let regs = load(&p).unwrap();
        assert_eq!(regs.len(), 2);
        assert_eq!(find(&regs, "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10").unwrap().unlock, UnlockMethod::KeyFile);
        let found = find(&regs, "1C5F8A1E-8F0D-4C59-9A43-3F1C1D3B2A11").unwrap();
        assert_eq!(found.mount_point.as_deref(), Some(Path::new("/run/offdisk/1c5f8a1e-8f0d-4c59-9a43-3f1c1d3b2a11")));
        assert_eq!(Registration { mount_point: None, retention: Default::default(), ..found.clone() }, reg("1c5f8a1e-8f0d-4c59-9a43-3f1c1d3b2a11"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("state_dir") && text.contains("keep_daily = 7"), "unknown keys survive:\n{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn duplicate_needs_replace_which_keeps_retention() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[[disk]]\nluks_uuid = \"0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10\"\nretention = { keep_daily = 7 }\nkey_file = \"/k\"\nunlock = \"key-file\"\n").unwrap();
        assert!(matches!(add(&p, &reg("0B4F8A1E-8F0D-4C59-9A43-3F1C1D3B2A10"), false), Err(HotplugError::AlreadyRegistered(_))));
        add(&p, &reg("0B4F8A1E-8F0D-4C59-9A43-3F1C1D3B2A10"), true).unwrap();
        let regs = load(&p).unwrap();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].unlock, UnlockMethod::Passphrase);
        assert_eq!(regs[0].key_file, None);
        assert_eq!(regs[0].retention.keep_daily, Some(7), "retention kept when the new registration sets none");
        assert!(std::fs::read_to_string(&p).unwrap().contains("keep_daily = 7"));
        let mut with_policy = reg("0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10");
        with_policy.retention.keep_last = Some(3);
        add(&p, &with_policy, true).unwrap();
        let r = &load(&p).unwrap()[0];
        assert_eq!((r.retention.keep_last, r.retention.keep_daily), (Some(3), None), "a new policy replaces the old one");
    }

    #[test]
    fn remove_takes_out_one_entry_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[global]\nstate_dir = \"/var/lib/offdisk\"\n").unwrap();
        add(&p, &reg("0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10"), false).unwrap();
        add(&p, &Registration { label: Some("offsite-B".into()), ..reg("1c5f8a1e-8f0d-4c59-9a43-3f1c1d3b2a11") }, false).unwrap();
        assert!(remove(&p, "0B4F8A1E-8F0D-4C59-9A43-3F1C1D3B2A10").unwrap());
        let regs = load(&p).unwrap();
        assert_eq!(regs.iter().map(|r| r.luks_uuid.as_str()).collect::<Vec<_>>(), ["1c5f8a1e-8f0d-4c59-9a43-3f1c1d3b2a11"]);
        assert!(std::fs::read_to_string(&p).unwrap().contains("state_dir"));
        assert!(!remove(&p, "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10").unwrap(), "gone already");
        assert!(!remove(&dir.path().join("none.toml"), "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10").unwrap());
    }

    #[test]
    fn missing_file_is_empty_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.toml")).unwrap().is_empty());
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "disk = 3").unwrap();
        assert!(load(&p).is_err());
        assert!(add(&p, &reg("0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10"), false).is_err());
        std::fs::write(&p, "[[disk]]\nluks_uuid = \"0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10\"\nunlock = \"telepathy\"\n").unwrap();
        assert!(load(&p).is_err(), "unknown unlock method is refused");
    }
}
