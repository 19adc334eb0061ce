//! `/etc/offdisk/config.toml`: registered disks, their sources, excludes and retention;
//! and the per-disk ledger that says which generations each disk holds and how stale it is.
//!
//! # API for other modules
//! - [`Config::load`]`(path)` reads and validates a config file; [`Config::load_default`]`(option)`
//!   takes `--config`, else `$OFFDISK_CONFIG`, else [`DEFAULT_CONFIG_PATH`]; a missing default
//!   file is an empty config. [`Config::disk`]`(key)` finds a disk by LUKS UUID or label.
//! - [`DiskConfig`]: `luks_uuid`, `label`, `mount_point` (default `/run/offdisk/<uuid>`, see
//!   [`DiskConfig::mount_point`]), `sources`, `excludes`, `exclude_file`, `retention`,
//!   `unlock` (`"passphrase"` | `"key-file"`), `key_file`, `user` (whose desktop agent hears
//!   about docks, besides the active session's user), and `identity` (kept as raw TOML for
//!   the hot-plug work to define). Unknown keys are kept in `extra` and reported by
//!   [`Config::warnings`] rather than rejected, so newer files still load.
//! - [`Ledger`]: one JSON file per disk on the host (`<ledger_dir>/<uuid>.json`, default dir
//!   [`DEFAULT_LEDGER_DIR`], `ledger_dir` in the config or `$OFFDISK_LEDGER_DIR` overrides) and
//!   the same record on the disk itself (`<backup root>/offdisk-ledger.json`).
//!   [`Ledger::load_host`], [`Ledger::load_disk`], [`Ledger::save_host`], [`Ledger::save_disk`]
//!   (atomic: temp file created O_EXCL|O_NOFOLLOW, fsync, rename, fsync dir, through
//!   [`crate::fsaccess::state`]), [`Ledger::record_backup`] after a run,
//!   [`Ledger::newer`] to pick the fresher of host and disk copies. The disk's copy is
//!   untrusted: read no-follow with a size bound and checked ([`Ledger::check`]); the host's
//!   copy is named by, and carries, the *registered* UUID (`save_host(dir, registered_uuid)`).
//! - [`staleness`]`(last_refreshed, now)` (pure) and [`Ledger::staleness`]: how long since the
//!   disk last got a complete generation; [`most_current`] picks which of several disks is
//!   current. `offdisk status` shows these per disk.

use crate::backup::retention::Retention;
use crate::error::{exit, Diagnose};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use crate::fsaccess::{state, Dir};
use std::io;

/// Largest ledger accepted (a ledger lists generations: thousands fit in far less).
pub const MAX_LEDGER_BYTES: u64 = 4 << 20;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/offdisk/config.toml";
pub const CONFIG_ENV: &str = "OFFDISK_CONFIG";
pub const DEFAULT_LEDGER_DIR: &str = "/var/lib/offdisk/ledger";
pub const LEDGER_ENV: &str = "OFFDISK_LEDGER_DIR";
/// The ledger record kept on the disk, in the backup root.
pub const DISK_LEDGER_FILE: &str = "offdisk-ledger.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    NotFound(PathBuf),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Diagnose for ConfigError {
    fn exit_code(&self) -> i32 {
        exit::USAGE
    }
    fn hint(&self) -> Option<String> {
        match self {
            ConfigError::NotFound(_) => Some(format!("create it (see offdisk.conf(5)), or pass --config / set {CONFIG_ENV}")),
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => Some("see offdisk.conf(5) for the format".into()),
            ConfigError::Io { .. } => None,
        }
    }
}

/// How a disk is unlocked when docked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unlock {
    #[default]
    Passphrase,
    KeyFile,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub exclude_file: Option<PathBuf>,
    #[serde(default)]
    pub retention: Retention,
    /// Stay on the filesystem of each source (default true).
    #[serde(default)]
    pub one_file_system: Option<bool>,
    /// Skip directories holding a CACHEDIR.TAG (default true).
    #[serde(default)]
    pub exclude_caches: Option<bool>,
    /// Shrink guard: the largest loss of a source's files or bytes (percent) a run accepts
    /// (default 50).
    #[serde(default)]
    pub shrink_limit: Option<u32>,
    /// Accept any shrink (as `--allow-shrink` does).
    #[serde(default)]
    pub allow_shrink: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskConfig {
    pub luks_uuid: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub mount_point: Option<PathBuf>,
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub exclude_file: Option<PathBuf>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub unlock: Unlock,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The user (name or UID) whose desktop agent hears about docks of this disk besides
    /// the active session's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Reserved for the hot-plug work (how the disk is recognised); kept as raw TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<toml::Value>,
    #[serde(default)]
    pub one_file_system: Option<bool>,
    #[serde(default)]
    pub exclude_caches: Option<bool>,
    #[serde(default)]
    pub shrink_limit: Option<u32>,
    #[serde(default)]
    pub allow_shrink: Option<bool>,
    /// Keys this version does not know (reported, not rejected).
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

impl DiskConfig {
    /// Where the disk's filesystem is mounted when open.
    pub fn mount_point(&self) -> PathBuf {
        self.mount_point.clone().unwrap_or_else(|| PathBuf::from(format!("/run/offdisk/{}", self.luks_uuid)))
    }

    /// A short name for messages: the label, else the UUID.
    pub fn name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.luks_uuid)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub ledger_dir: Option<PathBuf>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default, rename = "disk")]
    pub disks: Vec<DiskConfig>,
    /// Where this config was read from (not part of the file).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ConfigError::NotFound(path.to_path_buf())),
            Err(error) => return Err(ConfigError::Io { path: path.to_path_buf(), error }),
        };
        let mut c = Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
        c.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    /// `--config` if given, else `$OFFDISK_CONFIG`, else the default path (absent = empty).
    pub fn load_default(option: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(p) = option {
            return Config::load(p);
        }
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Config::load(Path::new(&p));
        }
        match Config::load(Path::new(DEFAULT_CONFIG_PATH)) {
            Err(ConfigError::NotFound(_)) => Ok(Config::default()),
            r => r,
        }
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn validate(&self) -> Result<(), String> {
        let mut uuids = std::collections::HashSet::new();
        let mut labels = std::collections::HashSet::new();
        for d in &self.disks {
            let u = uuid::Uuid::parse_str(&d.luks_uuid).map_err(|_| format!("disk {:?}: luks_uuid is not a UUID", d.luks_uuid))?;
            if !uuids.insert(u) {
                return Err(format!("disk {}: listed twice", d.luks_uuid));
            }
            if let Some(l) = &d.label {
                if l.is_empty() || !labels.insert(l.clone()) {
                    return Err(format!("disk {}: label {l:?} is empty or used twice", d.luks_uuid));
                }
            }
            for s in &d.sources {
                if !s.is_absolute() {
                    return Err(format!("disk {}: source {} must be an absolute path", d.name(), s.display()));
                }
            }
            if d.shrink_limit.is_some_and(|p| p > 100) {
                return Err(format!("disk {}: shrink_limit is a percentage (0-100)", d.name()));
            }
            if let Some(u) = &d.user {
                let name_like = u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if u.is_empty() || u.len() > 256 || !name_like || u.starts_with('-') {
                    return Err(format!("disk {}: user {u:?} is not a user name or UID", d.name()));
                }
            }
            match (d.unlock, &d.key_file) {
                (Unlock::KeyFile, None) => return Err(format!("disk {}: unlock = \"key-file\" needs key_file", d.name())),
                (Unlock::Passphrase, Some(_)) => {
                    return Err(format!("disk {}: key_file is set but unlock is \"passphrase\"", d.name()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Keys in the file this version does not know.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self.extra.keys().map(|k| format!("unknown key {k:?}")).collect();
        for d in &self.disks {
            w.extend(d.extra.keys().map(|k| format!("disk {}: unknown key {k:?}", d.name())));
        }
        w
    }

    /// A disk by LUKS UUID (any case) or label.
    pub fn disk(&self, key: &str) -> Option<&DiskConfig> {
        self.disks
            .iter()
            .find(|d| d.luks_uuid.eq_ignore_ascii_case(key))
            .or_else(|| self.disks.iter().find(|d| d.label.as_deref() == Some(key)))
    }

    /// `$OFFDISK_LEDGER_DIR`, else `ledger_dir`, else the default.
    pub fn ledger_dir(&self) -> PathBuf {
        std::env::var_os(LEDGER_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.ledger_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER_DIR))
    }

    /// The disk's retention over the defaults.
    pub fn retention_for(&self, d: &DiskConfig) -> Retention {
        self.defaults.retention.overridden_by(d.retention)
    }

    /// The shrink guard for a disk (its keys over the defaults; `None`: no disk configured).
    pub fn shrink_guard_for(&self, d: Option<&DiskConfig>) -> crate::backup::ShrinkGuard {
        let limit = d.and_then(|d| d.shrink_limit).or(self.defaults.shrink_limit).unwrap_or(crate::backup::DEFAULT_SHRINK_PERCENT);
        let allow = d.and_then(|d| d.allow_shrink).or(self.defaults.allow_shrink).unwrap_or(false);
        crate::backup::ShrinkGuard { max_loss_percent: limit, allow }
    }

    /// Defaults' excludes followed by the disk's.
    pub fn excludes_for(&self, d: &DiskConfig) -> Vec<String> {
        self.defaults.excludes.iter().chain(d.excludes.iter()).cloned().collect()
    }
}

/// One generation as the ledger remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerGeneration {
    pub name: String,
    pub time: i64,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes: u64,
}

/// What one disk holds and when it was last refreshed (format 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub format: u32,
    pub luks_uuid: String,
    #[serde(default)]
    pub label: Option<String>,
    /// Complete generations on the disk after the last run, oldest first.
    #[serde(default)]
    pub generations: Vec<LedgerGeneration>,
    /// Unix seconds when a complete generation was last written to the disk.
    #[serde(default)]
    pub last_refreshed: Option<i64>,
    #[serde(default)]
    pub last_generation: Option<String>,
    /// Host that wrote the last generation.
    #[serde(default)]
    pub host: Option<String>,
}

/// How long a disk has gone without a new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Staleness {
    /// `None`: never refreshed.
    pub age_seconds: Option<i64>,
    /// Whole days since the last refresh.
    pub days: Option<i64>,
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.age_seconds, self.days) {
            (None, _) => write!(f, "never refreshed"),
            (Some(s), _) if s < 0 => write!(f, "refreshed in the future (clock skew)"),
            (Some(s), Some(0)) if s < 3600 => write!(f, "refreshed {} min ago", s / 60),
            (Some(s), Some(0)) => write!(f, "refreshed {} h ago", s / 3600),
            (_, Some(1)) => write!(f, "not refreshed for 1 day"),
            (_, Some(d)) => write!(f, "not refreshed for {d} days"),
            _ => write!(f, "unknown"),
        }
    }
}

/// Pure: staleness of a disk last refreshed at `last_refreshed` (Unix s), seen at `now`.
pub fn staleness(last_refreshed: Option<i64>, now: i64) -> Staleness {
    match last_refreshed {
        None => Staleness { age_seconds: None, days: None },
        Some(t) => {
            let age = now - t;
            Staleness { age_seconds: Some(age), days: Some(age.max(0) / 86400) }
        }
    }
}

/// The disk refreshed most recently among `ledgers` (ties: the first given).
pub fn most_current(ledgers: &[Ledger]) -> Option<&Ledger> {
    ledgers.iter().filter(|l| l.last_refreshed.is_some()).fold(None, |best: Option<&Ledger>, l| match best {
        Some(b) if b.last_refreshed >= l.last_refreshed => Some(b),
        _ => Some(l),
    })
}

impl Ledger {
    pub fn new(luks_uuid: &str, label: Option<&str>) -> Ledger {
        Ledger {
            format: 1,
            luks_uuid: luks_uuid.to_string(),
            label: label.map(str::to_string),
            generations: Vec::new(),
            last_refreshed: None,
            last_generation: None,
            host: None,
        }
    }

    /// The host ledger's file name for a registered disk: the UUID in canonical form, so no
    /// value can put the file anywhere but `<dir>/<uuid>.json`. `None` for a non-UUID.
    pub fn host_file_name(luks_uuid: &str) -> Option<String> {
        uuid::Uuid::parse_str(luks_uuid).ok().map(|u| format!("{}.json", u.hyphenated()))
    }

    pub fn host_path(dir: &Path, luks_uuid: &str) -> Option<PathBuf> {
        Self::host_file_name(luks_uuid).map(|n| dir.join(n))
    }

    pub fn disk_path(backup_root: &Path) -> PathBuf {
        backup_root.join(DISK_LEDGER_FILE)
    }

    /// Reads and checks a ledger in the open directory `dir` (shown as `shown`): a regular
    /// file of bounded size, every value sane (see [`Ledger::check`]).
    fn load_in(dir: &Dir, name: &str, shown: &Path) -> Result<Option<Ledger>, ConfigError> {
        let bytes = match state::read_optional(dir, std::ffi::OsStr::new(name), MAX_LEDGER_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(state::StateError::Io(error)) => return Err(ConfigError::Io { path: shown.to_path_buf(), error }),
            Err(e) => return Err(ConfigError::Invalid { path: shown.to_path_buf(), message: e.to_string() }),
        };
        let l: Ledger = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Parse { path: shown.to_path_buf(), message: e.to_string() })?;
        l.check().map_err(|message| ConfigError::Invalid { path: shown.to_path_buf(), message })?;
        Ok(Some(l))
    }

    /// Values a ledger read off a disk may hold: anything else is refused before it is used
    /// (the disk may have been changed by anyone while it was away).
    pub fn check(&self) -> Result<(), String> {
        if self.format != 1 {
            return Err(format!("ledger format {} is not supported", self.format));
        }
        if !self.luks_uuid.is_empty() && uuid::Uuid::parse_str(&self.luks_uuid).is_err() {
            return Err(format!("luks_uuid {:?} is not a UUID", self.luks_uuid.chars().take(64).collect::<String>()));
        }
        let printable = |s: &str| s.len() <= 255 && !s.chars().any(|c| c.is_control());
        if let Some(l) = &self.label {
            if !printable(l) {
                return Err("label is too long or holds control characters".into());
            }
        }
        if let Some(h) = &self.host {
            if !printable(h) {
                return Err("host is too long or holds control characters".into());
            }
        }
        for g in self.generations.iter().map(|g| g.name.as_str()).chain(self.last_generation.as_deref()) {
            if crate::backup::generation::parse_name(g).is_none() {
                return Err(format!("{:?} is not a generation name", g.chars().take(64).collect::<String>()));
            }
        }
        Ok(())
    }

    /// The host's record of a registered disk (`None` if it never had one).
    pub fn load_host(dir: &Path, luks_uuid: &str) -> Result<Option<Ledger>, ConfigError> {
        let name = Self::host_file_name(luks_uuid)
            .ok_or_else(|| ConfigError::Invalid { path: dir.to_path_buf(), message: format!("{luks_uuid:?} is not a UUID") })?;
        let d = match Dir::open_path(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ConfigError::Io { path: dir.to_path_buf(), error }),
        };
        Self::load_in(&d, &name, &dir.join(&name))
    }

    /// The record on the disk (in its backup root): untrusted, checked before use.
    pub fn load_disk(backup_root: &Path) -> Result<Option<Ledger>, ConfigError> {
        let d = Dir::open_path(backup_root).map_err(|error| ConfigError::Io { path: backup_root.to_path_buf(), error })?;
        Self::load_in(&d, DISK_LEDGER_FILE, &Self::disk_path(backup_root))
    }

    /// Writes the host's record of the disk registered as `registered_uuid`: the file is
    /// named by, and the record carries, that UUID, never a value read from the disk.
    pub fn save_host(&self, dir: &Path, registered_uuid: &str) -> Result<(), ConfigError> {
        let name = Self::host_file_name(registered_uuid).ok_or_else(|| ConfigError::Invalid {
            path: dir.to_path_buf(),
            message: format!("{registered_uuid:?} is not a UUID"),
        })?;
        let mut l = self.clone();
        l.luks_uuid = uuid::Uuid::parse_str(registered_uuid).map(|u| u.hyphenated().to_string()).unwrap_or_default();
        fs::create_dir_all(dir).map_err(|error| ConfigError::Io { path: dir.to_path_buf(), error })?;
        let d = Dir::open_path(dir).map_err(|error| ConfigError::Io { path: dir.to_path_buf(), error })?;
        state::write_atomic(&d, std::ffi::OsStr::new(&name), &l.to_json(), 0o644)
            .map_err(|error| ConfigError::Io { path: dir.join(&name), error })
    }

    /// Writes the record on the disk (temporary O_EXCL|O_NOFOLLOW in the root, renamed over).
    pub fn save_disk(&self, backup_root: &Path) -> Result<(), ConfigError> {
        let d = Dir::open_path(backup_root).map_err(|error| ConfigError::Io { path: backup_root.to_path_buf(), error })?;
        state::write_atomic(&d, std::ffi::OsStr::new(DISK_LEDGER_FILE), &self.to_json(), 0o644)
            .map_err(|error| ConfigError::Io { path: Self::disk_path(backup_root), error })
    }

    fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Records the generations now on the disk after a run that completed `newest` at `time`.
    pub fn record_backup(&mut self, generations: Vec<LedgerGeneration>, newest: &str, time: i64, host: Option<String>) {
        self.generations = generations;
        self.last_generation = Some(newest.to_string());
        self.last_refreshed = Some(time);
        self.host = host;
    }

    pub fn staleness(&self, now: i64) -> Staleness {
        staleness(self.last_refreshed, now)
    }

    /// The fresher of two records of the same disk (host's and disk's copy).
    pub fn newer(a: Option<Ledger>, b: Option<Ledger>) -> Option<Ledger> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.last_refreshed > a.last_refreshed { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
ledger_dir = "/tmp/ledger"
[defaults]
excludes = ["*.tmp"]
retention = { keep_daily = 7 }

[[disk]]
luks_uuid = "0b9e9c8e-6a0e-4c49-9a57-6f8c3f1b2d10"
label = "office"
sources = ["/home", "/etc"]
excludes = ["/home/*/.cache"]
unlock = "key-file"
key_file = "/etc/offdisk/keys/office.key"
future_key = 1
[disk.retention]
keep_last = 3
keep_monthly = 12

[[disk]]
luks_uuid = "5f1d3e7a-0000-4000-8000-000000000001"
label = "home"
sources = ["/home"]
"#;

    #[test]
    fn parses_disks_and_merges_policy() {
        let c = Config::parse(SAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.disks.len(), 2);
        let office = c.disk("office").unwrap();
        assert_eq!(office.unlock, Unlock::KeyFile);
        assert_eq!(c.disk("0B9E9C8E-6A0E-4C49-9A57-6F8C3F1B2D10").unwrap().label.as_deref(), Some("office"));
        let r = c.retention_for(office);
        assert_eq!((r.keep_last, r.keep_daily, r.keep_monthly), (Some(3), Some(7), Some(12)));
        assert_eq!(c.excludes_for(office), ["*.tmp", "/home/*/.cache"]);
        assert_eq!(c.warnings(), ["disk office: unknown key \"future_key\""]);
        assert_eq!(c.disk("home").unwrap().mount_point(), PathBuf::from("/run/offdisk/5f1d3e7a-0000-4000-8000-000000000001"));
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            "[[disk]]\nluks_uuid = \"nope\"",
            "[[disk]]\nluks_uuid = \"5f1d3e7a-0000-4000-8000-000000000001\"\nunlock = \"key-file\"",
            "[[disk]]\nluks_uuid = \"5f1d3e7a-0000-4000-8000-000000000001\"\nsources = [\"relative\"]",
            "[[disk]]\nluks_uuid = \"5f1d3e7a-0000-4000-8000-000000000001\"\n[[disk]]\nluks_uuid = \"5f1d3e7a-0000-4000-8000-000000000001\"",
            "[[disk]]\nluks_uuid = \"5f1d3e7a-0000-4000-8000-000000000001\"\n[disk.retention]\nkeep_dayly = 3",
        ] {
            assert!(Config::parse(bad).and_then(|c| c.validate()).is_err(), "{bad}");
        }
    }

    #[test]
    fn staleness_and_currency() {
        let day = 86400;
        assert_eq!(staleness(None, 100).to_string(), "never refreshed");
        assert_eq!(staleness(Some(0), 3 * day + 5).days, Some(3));
        assert_eq!(staleness(Some(0), 3 * day).to_string(), "not refreshed for 3 days");
        assert_eq!(staleness(Some(0), 7200).to_string(), "refreshed 2 h ago");
        let mut a = Ledger::new("a", Some("home"));
        let mut b = Ledger::new("b", Some("office"));
        a.last_refreshed = Some(10 * day);
        b.last_refreshed = Some(12 * day);
        assert_eq!(most_current(&[a.clone(), b.clone()]).unwrap().luks_uuid, "b");
        assert_eq!(most_current(&[Ledger::new("c", None)]), None);
        assert_eq!(Ledger::newer(Some(a.clone()), Some(b.clone())).unwrap().luks_uuid, "b");
    }

    #[test]
    fn ledger_roundtrips_host_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::new("5F1D3E7A-0000-4000-8000-000000000001", None);
        let g = "2026-01-01T000000Z";
        l.record_backup(vec![LedgerGeneration { name: g.into(), time: 5, files: 1, bytes: 2 }], g, 5, Some("h".into()));
        l.save_host(&dir.path().join("ledger"), &l.luks_uuid).unwrap();
        l.save_disk(dir.path()).unwrap();
        let mut host = l.clone();
        host.luks_uuid = host.luks_uuid.to_ascii_lowercase();
        assert_eq!(Ledger::load_host(&dir.path().join("ledger"), &l.luks_uuid).unwrap(), Some(host));
        assert_eq!(Ledger::load_disk(dir.path()).unwrap(), Some(l.clone()));
        assert_eq!(Ledger::load_disk(dir.path()).unwrap().unwrap().luks_uuid, l.luks_uuid);
        assert!(Ledger::load_disk(&dir.path().join("nope")).is_err(), "a missing backup root is an error");
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        assert_eq!(Ledger::load_disk(&dir.path().join("empty")).unwrap(), None);
    }
}
