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
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key = SecretBytes::random(KEY_LEN)?;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(key.expose())?;
        f.sync_all()?;
        // hard_link fails if someone else created the key meanwhile: then use theirs.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(HostKey(key)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(e),
        }
    }

    pub fn load(path: &Path) -> std::io::Result<HostKey> {
        let v = std::fs::read(path)?;
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

/// Writes (or replaces) this host's record on the mounted disk, crash-safely.
pub fn write_record(mount: &Path, key: &HostKey, luks_uuid: &str, disk_id: &str) -> std::io::Result<PathBuf> {
    let rec = IdentityRecord {
        version: 1,
        disk_id: disk_id.to_string(),
        luks_uuid: luks_uuid.to_ascii_lowercase(),
        host_id: key.host_id(),
        mac: hex(&key.mac(luks_uuid, disk_id).finalize().into_bytes()),
    };
    let path = record_path(mount, key);
    let dir = path.parent().expect("record path has a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(&rec).map_err(std::io::Error::other)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Checks this host's record on the mounted disk. The error says why, for the log and
/// the notification; it never carries secrets.
pub fn check(mount: &Path, key: &HostKey, luks_uuid: &str, disk_id: &str) -> Result<(), String> {
    let path = record_path(mount, key);
    let text = {
        use std::io::Read;
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path);
        let mut s = String::new();
        match f.and_then(|f| f.take(64 * 1024).read_to_string(&mut s)) {
            Ok(_) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("no identity record for this host on the disk".into())
            }
            Err(e) => return Err(format!("cannot read the identity record: {e}")),
        }
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
