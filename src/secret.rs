//! Secrets get a type the moment they exist: passphrases, volume keys and derived
//! keyslot keys live in heap buffers that are locked in RAM where the system allows it,
//! excluded from core dumps, wiped on drop, and never shown by `Debug`.

use std::fmt;
use zeroize::Zeroize;

/// A heap buffer of secret bytes, wiped when dropped.
pub struct SecretBytes {
    buf: Box<[u8]>,
    locked: bool,
}

impl SecretBytes {
    /// A zero-filled secret buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        let buf = vec![0u8; len].into_boxed_slice();
        let locked = lock(&buf);
        SecretBytes { buf, locked }
    }

    /// Takes ownership of `v`, wiping the original allocation.
    pub fn from_vec(mut v: Vec<u8>) -> Self {
        let s = Self::from_slice(&v);
        v.zeroize();
        s
    }

    /// Copies `bytes` into a new secret buffer.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut s = Self::zeroed(bytes.len());
        s.buf.copy_from_slice(bytes);
        s
    }

    /// Fresh random bytes from the operating system.
    pub fn random(len: usize) -> std::io::Result<Self> {
        let mut s = Self::zeroed(len);
        getrandom::fill(&mut s.buf).map_err(std::io::Error::other)?;
        Ok(s)
    }

    pub fn expose(&self) -> &[u8] {
        &self.buf
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self::from_slice(&self.buf)
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.buf.zeroize();
        if self.locked {
            unlock(&self.buf);
        }
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.buf.len())
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.buf.len() == other.buf.len() && bool::from(self.buf.ct_eq(&other.buf))
    }
}
impl Eq for SecretBytes {}

/// Pins a secret buffer in RAM (no swap) and keeps it out of core dumps. Best effort:
/// unprivileged users have a small RLIMIT_MEMLOCK, and failing to lock is not an error.
fn lock(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return false;
    }
    // SAFETY: the pointer and length describe a live allocation owned by the caller;
    // mlock/madvise only change page attributes and never read or write the bytes.
    unsafe {
        let ptr = buf.as_ptr() as *mut libc::c_void;
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
        let start = (ptr as usize) & !(page - 1);
        let end = (ptr as usize + buf.len()).div_ceil(page) * page;
        // MADV_DONTDUMP needs page alignment; it may also cover neighbouring heap data,
        // which is harmless (it only shrinks core dumps).
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTDUMP);
        libc::mlock(ptr, buf.len()) == 0
    }
}

fn unlock(buf: &[u8]) {
    // SAFETY: same allocation as was locked in `lock`, still alive here.
    unsafe {
        libc::munlock(buf.as_ptr() as *const libc::c_void, buf.len());
    }
}

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(SecretBytes);

        impl $name {
            pub fn new(bytes: SecretBytes) -> Self {
                $name(bytes)
            }
            pub fn from_slice(bytes: &[u8]) -> Self {
                $name(SecretBytes::from_slice(bytes))
            }
            pub fn expose(&self) -> &[u8] {
                self.0.expose()
            }
            pub fn len(&self) -> usize {
                self.0.len()
            }
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "([REDACTED; {}])"), self.0.len())
            }
        }
    };
}

secret_newtype!(
    /// A passphrase or key-file contents, as typed or read.
    Passphrase
);
secret_newtype!(
    /// The volume (master) key that dm-crypt uses for the data segment.
    VolumeKey
);

impl VolumeKey {
    /// A fresh random volume key of `len` bytes.
    pub fn random(len: usize) -> std::io::Result<Self> {
        Ok(VolumeKey(SecretBytes::random(len)?))
    }
    /// Lower-case hex, for `--dump-volume-key` only.
    pub fn to_hex(&self) -> SecretBytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = SecretBytes::zeroed(self.len() * 2);
        for (i, b) in self.expose().iter().enumerate() {
            out.expose_mut()[2 * i] = HEX[(b >> 4) as usize];
            out.expose_mut()[2 * i + 1] = HEX[(b & 15) as usize];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let p = Passphrase::from_slice(b"hunter2");
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("REDACTED"));
        let k = VolumeKey::from_slice(&[0xab; 4]);
        assert!(!format!("{k:?}").contains("ab"));
    }

    #[test]
    fn hex_is_lower_case() {
        let k = VolumeKey::from_slice(&[0x00, 0xff, 0x1a]);
        assert_eq!(k.to_hex().expose(), b"00ff1a");
    }

    #[test]
    fn random_keys_differ() {
        let a = VolumeKey::random(32).unwrap();
        let b = VolumeKey::random(32).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
