//! Handing the volume key to dm-crypt through the kernel keyring, as cryptsetup does for LUKS2:
//! a `logon` key (readable by the kernel, never by user space) in the thread keyring, loaded
//! just before the table and revoked right after dm-crypt has taken its copy.

use super::ioctl;
use crate::secret::VolumeKey;
use std::ffi::CString;
use std::io;

/// A logon key placed in this thread's keyring; revoked and unlinked when dropped.
pub struct LogonKey {
    serial: i32,
}

impl LogonKey {
    /// Adds `key` under `description` (e.g. `cryptsetup:<uuid>-d0`).
    pub fn add(description: &str, key: &VolumeKey) -> io::Result<LogonKey> {
        let ty = CString::new("logon").expect("no NUL");
        let desc = CString::new(description).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in key description"))?;
        let serial = ioctl::add_key(&ty, &desc, key.expose(), ioctl::KEY_SPEC_THREAD_KEYRING)?;
        Ok(LogonKey { serial })
    }

    pub fn serial(&self) -> i32 {
        self.serial
    }
}

impl Drop for LogonKey {
    fn drop(&mut self) {
        let _ = ioctl::revoke_and_unlink_key(self.serial, ioctl::KEY_SPEC_THREAD_KEYRING);
    }
}
