//! The registered disks as the hot-plug side needs them, read from and added to
//! `/etc/offdisk/config.toml` (`[[disk]]` tables; the full schema belongs to [`crate::config`]).
//!
//! Adding edits the TOML document as a table, so keys this module does not know
//! (retention and whatever the backup engine adds) are kept as they are. The file is
//! replaced atomically (temp file, fsync, rename) and stays 0600: it names key files.

use super::HotplugError;
use serde::Deserialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const CONFIG_PATH: &str = "/etc/offdisk/config.toml";

/// How a disk is unlocked when docked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Registration {
    pub luks_uuid: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub unlock: UnlockMethod,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Random disk id bound into the identity record on the disk (see [`super::identity`]).
    #[serde(default)]
    pub identity: Option<String>,
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
        t
    }
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    disk: Vec<Registration>,
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

/// All registrations; a missing file means none.
pub fn load(path: &Path) -> Result<Vec<Registration>, HotplugError> {
    let doc: Doc = toml::from_str(&read_text(path)?).map_err(|e| config_err(path, e.to_string()))?;
    Ok(doc.disk)
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
        }
        _ => disks.push(toml::Value::Table(reg.to_table())),
    }
    let out = toml::to_string_pretty(&doc).map_err(|e| config_err(path, e.to_string()))?;
    write_atomic(path, out.as_bytes()).map_err(|e| config_err(path, e.to_string()))
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
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
        }
    }

    #[test]
    fn add_keeps_unknown_keys_and_finds_by_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[global]\nstate_dir = \"/var/lib/offdisk\"\n\n[[disk]]\nluks_uuid = \"AAAA\"\nretention = { daily = 7 }\nunlock = \"key-file\"\nkey_file = \"/etc/offdisk/a.key\"\n").unwrap();
        add(&p, &reg("bbbb"), false).unwrap();
        let regs = load(&p).unwrap();
        assert_eq!(regs.len(), 2);
        assert_eq!(find(&regs, "aaaa").unwrap().unlock, UnlockMethod::KeyFile);
        assert_eq!(find(&regs, "BBBB").unwrap(), &reg("bbbb"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("state_dir") && text.contains("daily = 7"), "unknown keys survive:\n{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn duplicate_needs_replace_which_keeps_retention() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[[disk]]\nluks_uuid = \"aaaa\"\nretention = { daily = 7 }\nkey_file = \"/k\"\nunlock = \"key-file\"\n").unwrap();
        assert!(matches!(add(&p, &reg("AAAA"), false), Err(HotplugError::AlreadyRegistered(_))));
        add(&p, &reg("AAAA"), true).unwrap();
        let regs = load(&p).unwrap();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].unlock, UnlockMethod::Passphrase);
        assert_eq!(regs[0].key_file, None);
        assert!(std::fs::read_to_string(&p).unwrap().contains("daily = 7"));
    }

    #[test]
    fn missing_file_is_empty_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.toml")).unwrap().is_empty());
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "disk = 3").unwrap();
        assert!(load(&p).is_err());
        assert!(add(&p, &reg("x"), false).is_err());
        std::fs::write(&p, "[[disk]]\nluks_uuid = \"u\"\nunlock = \"telepathy\"\n").unwrap();
        assert!(load(&p).is_err(), "unknown unlock method is refused");
    }
}
