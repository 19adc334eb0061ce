//! Proof, after unlocking, that the disk is the one this host registered.
//!
//! A LUKS UUID is just bytes in a header anyone can copy. At registration the host writes
//! `.offdisk/identity/<host-id>.json` inside the encrypted filesystem: a random disk id, the
//! LUKS UUID, and an HMAC-SHA256 over both keyed by a host secret that never leaves
//! `/etc/offdisk/host.key` (root only). `offdisk dock` checks the record before writing
//! anything: a disk with a cloned header but other contents, or a record made by another
//! host or for another UUID, fails the check. One disk may carry records of several hosts.

use crate::secret::SecretBytes;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use crate::fsaccess::{state, Dir};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const HOST_KEY_PATH: &str = "/etc/offdisk/host.key";
/// Inside the backup filesystem.
pub const RECORD_DIR: &str = ".offdisk/identity";
const KEY_LEN: usize = 32;
const DOMAIN: &[u8] = b"offdisk identity v1\0";

/// The host's secret for identity records.
pub struct HostKey(SecretBytes);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey({})", self.host_id())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl HostKey {
    pub fn from_bytes(b: &[u8]) -> HostKey {
        HostKey(SecretBytes::from_slice(b))
    }

    /// Reads the key, creating it (0600, in a 0700 directory) the first time.
    pub fn load_or_create(path: &Path) -> std::io::Result<HostKey> {
        match Self::load(path) {
            Ok(k) => return Ok(k),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (dir, name) = split(path)?;
        std::fs::create_dir_all(dir)?;
        let d = Dir::open_path(dir)?;
        let key = SecretBytes::random(KEY_LEN)?;
        // A fresh temporary (O_EXCL|O_NOFOLLOW): nothing planted at its name is opened.
        let mut tmp = name.to_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let _ = d.unlink(&tmp);
        let mut f = d.create_file(&tmp, 0o600)?;
        crate::fsaccess::set_mode(&f, 0o600)?;
        f.write_all(key.expose())?;
        f.sync_all()?;
        // The link fails if someone else created the key meanwhile: then use theirs.
        let linked = d.hard_link(&tmp, &d, name);
        let _ = d.unlink(&tmp);
        match linked {
            Ok(()) => {
                d.sync()?;
                Ok(HostKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(e),
        }
    }

    pub fn load(path: &Path) -> std::io::Result<HostKey> {
        let (dir, name) = split(path)?;
        let v = state::read(&Dir::open_path(dir)?, name, 4096)?;
        let k = SecretBytes::from_vec(v);
        if k.len() != KEY_LEN {
            return Err(std::io::Error::other(format!("{}: host key must be {KEY_LEN} bytes", path.display())));
        }
        Ok(HostKey(k))
    }

    /// A public name for the key (not the key): first 8 bytes of SHA-256 over it.
    pub fn host_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"offdisk host id\0");
        h.update(self.0.expose());
        hex(&h.finalize()[..8])
    }

    fn mac(&self, luks_uuid: &str, disk_id: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose()).expect("HMAC takes any key length");
        m.update(DOMAIN);
        m.update(luks_uuid.to_ascii_lowercase().as_bytes());
        m.update(b"\0");
        m.update(disk_id.as_bytes());
        m
    }
}

/// What `.offdisk/identity/<host-id>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityRecord {
    pub version: u32,
    pub disk_id: String,
    pub luks_uuid: String,
    pub host_id: String,
    pub mac: String,
}

/// A fresh random disk id for a new registration.
pub fn new_disk_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn record_path(mount: &Path, key: &HostKey) -> PathBuf {
    mount.join(RECORD_DIR).join(format!("{}.json", key.host_id()))
}

fn split(path: &Path) -> std::io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => Ok((if d.as_os_str().is_empty() { Path::new(".") } else { d }, n)),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display()))),
    }
}

/// `.offdisk/identity` on the mounted disk, each level a real directory (made if `create`).
fn record_dir(mount: &Path, create: bool) -> std::io::Result<Dir> {
    let mut d = Dir::open_path(mount)?;
    for part in Path::new(RECORD_DIR).iter() {
        d = if create { d.create_or_open_dir(part, 0o700)?.0 } else { d.open_dir(part)? };
    }
    Ok(d)
}

fn record_name(key: &HostKey) -> String {
    format!("{}.json", key.host_id())
}

/// Writes (or replaces) this host's record on the mounted disk, crash-safely, through
/// directory handles: nothing on the disk (a symlink at `.offdisk`, at the record or at its
/// temporary) can make root write anywhere else.
pub fn write_record(mount: &Path, key: &HostKey, luks_uuid: &str, disk_id: &str) -> std::io::Result<PathBuf> {
    let rec = IdentityRecord {
        version: 1,
        disk_id: disk_id.to_string(),
        luks_uuid: luks_uuid.to_ascii_lowercase(),
        host_id: key.host_id(),
        mac: hex(&key.mac(luks_uuid, disk_id).finalize().into_bytes()),
    };
    let path = record_path(mount, key);
    let dir = record_dir(mount, true).map_err(|e| crate::fsaccess::at(&mount.join(RECORD_DIR), e))?;
    let json = serde_json::to_string_pretty(&rec).map_err(std::io::Error::other)?;
    state::write_atomic(&dir, OsStr::new(&record_name(key)), json.as_bytes(), 0o600).map_err(|e| crate::fsaccess::at(&path, e))?;
    Ok(path)
}

/// Checks this host's record on the mounted disk. The error says why, for the log and
/// the notification; it never carries secrets.
pub fn check(mount: &Path, key: &HostKey, luks_uuid: &str, disk_id: &str) -> Result<(), String> {
    let none = || "no identity record for this host on the disk".to_string();
    let dir = match record_dir(mount, false) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
        Err(e) => return Err(format!("cannot read the identity record: {}: {e}", RECORD_DIR)),
    };
    let text = match state::read(&dir, OsStr::new(&record_name(key)), 64 * 1024) {
        Ok(b) => String::from_utf8(b).map_err(|_| "malformed identity record: not UTF-8".to_string())?,
        Err(state::StateError::Missing) => return Err(none()),
        Err(e) => return Err(format!("cannot read the identity record: {e}")),
    };
    let rec: IdentityRecord = serde_json::from_str(&text).map_err(|e| format!("malformed identity record: {e}"))?;
    if rec.version != 1 {
        return Err(format!("identity record version {} is not supported", rec.version));
    }
    let tag = unhex(&rec.mac).ok_or("malformed identity record: mac is not hex")?;
    // Verify the MAC over the *registered* values, so a record for another UUID or disk id fails.
    key.mac(luks_uuid, disk_id).verify_slice(&tag).map_err(|_| "identity record does not match this host's registration".to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b4f8a1e-8f0d-4c59-9a43-3f1c1d3b2a10";

    #[test]
    fn record_round_trip_and_tampering() {
        let mnt = tempfile::tempdir().unwrap();
        let key = HostKey::from_bytes(&[7u8; 32]);
        let id = new_disk_id();
        write_record(mnt.path(), &key, UUID, &id).unwrap();
        assert_eq!(check(mnt.path(), &key, UUID, &id), Ok(()));
        assert_eq!(check(mnt.path(), &key, &UUID.to_uppercase(), &id), Ok(()), "UUID case does not matter");
        // Another disk id, another UUID, another host key: all refused.
        assert!(check(mnt.path(), &key, UUID, &new_disk_id()).is_err());
        assert!(check(mnt.path(), &key, "11111111-8f0d-4c59-9a43-3f1c1d3b2a10", &id).is_err());
        let other = HostKey::from_bytes(&[8u8; 32]);
        assert!(check(mnt.path(), &other, UUID, &id).unwrap_err().contains("no identity record"));
        // A forged record: right fields, wrong MAC.
        let path = record_path(mnt.path(), &key);
        let mut rec: IdentityRecord = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        rec.mac = "00".repeat(32);
        std::fs::write(&path, serde_json::to_string(&rec).unwrap()).unwrap();
        assert!(check(mnt.path(), &key, UUID, &id).unwrap_err().contains("does not match"));
        std::fs::write(&path, "{not json").unwrap();
        assert!(check(mnt.path(), &key, UUID, &id).unwrap_err().contains("malformed"));
    }

    #[test]
    fn empty_disk_has_no_identity() {
        let mnt = tempfile::tempdir().unwrap();
        let key = HostKey::from_bytes(&[1u8; 32]);
        assert!(check(mnt.path(), &key, UUID, &new_disk_id()).is_err());
    }

    #[test]
    fn host_key_is_created_once_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etc/host.key");
        let a = HostKey::load_or_create(&p).unwrap();
        let b = HostKey::load_or_create(&p).unwrap();
        assert_eq!(a.host_id(), b.host_id());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&p, b"short").unwrap();
        assert!(HostKey::load(&p).is_err());
    }
}
