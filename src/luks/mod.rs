//! LUKS1 and LUKS2 in pure Rust: parse and validate headers, unlock keyslots,
//! format new volumes, manage keyslots and header backups — byte-compatible with cryptsetup.
//!
//! CONTRACT used by the rest of offdisk (dm, disk, hotplug). The LUKS work fills in the
//! bodies and may add to it, but keeps these names and meanings:
//!
//! - `Volume::load(&File) -> Result<Volume, LuksError>`: reads and validates the header(s).
//! - `Volume::version()`, `uuid()`, `label()`, `subsystem()`.
//! - `Volume::unlock(&File, &Passphrase, Option<usize>) -> Result<Unlocked, LuksError>`.
//! - `Volume::crypt_segment() -> Result<CryptSegment, LuksError>`: what dm-crypt needs.
//! - `Volume::check_activatable()`: refuses unknown mandatory requirements.
//! - `format(&File, &FormatOptions, &Passphrase) -> Result<Volume, LuksError>`.

use crate::secret::{Passphrase, VolumeKey};
use std::fs::File;

/// Errors from the LUKS layer.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("not implemented yet")]
    Unimplemented,
}

impl crate::error::Diagnose for LuksError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Luks1,
    Luks2,
}

/// The data segment as dm-crypt needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptSegment {
    /// Cipher spec as dm-crypt takes it, e.g. "aes-xts-plain64", "aes-cbc-essiv:sha256".
    pub cipher: String,
    /// Volume key length in bytes.
    pub key_size: usize,
    /// Start of the encrypted data, in bytes from the start of the device.
    pub offset: u64,
    /// Length in bytes; `None` means "to the end of the device" (LUKS2 "dynamic", LUKS1 always).
    pub size: Option<u64>,
    /// IV offset in 512-byte units (LUKS2 `iv_tweak`; 0 for LUKS1).
    pub iv_tweak: u64,
    /// Encryption sector size in bytes (512 for LUKS1).
    pub sector_size: u32,
    /// LUKS2 digest id bound to the segment (cryptsetup's keyring description uses it:
    /// `cryptsetup:<uuid>-d<id>`); `None` for LUKS1.
    pub digest_id: Option<u32>,
}

/// A successfully unlocked volume key and the keyslot that opened it.
#[derive(Debug)]
pub struct Unlocked {
    pub keyslot: usize,
    pub key: VolumeKey,
}

/// Options for `format`, mirroring `cryptsetup luksFormat`.
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {}

/// A parsed, validated LUKS header.
#[derive(Debug, Clone)]
pub struct Volume {}

impl Volume {
    pub fn load(_dev: &File) -> Result<Volume, LuksError> {
        Err(LuksError::Unimplemented)
    }
    pub fn version(&self) -> Version {
        Version::Luks2
    }
    pub fn uuid(&self) -> &str {
        ""
    }
    pub fn label(&self) -> Option<&str> {
        None
    }
    pub fn subsystem(&self) -> Option<&str> {
        None
    }
    pub fn unlock(&self, _dev: &File, _pass: &Passphrase, _slot: Option<usize>) -> Result<Unlocked, LuksError> {
        Err(LuksError::Unimplemented)
    }
    pub fn crypt_segment(&self) -> Result<CryptSegment, LuksError> {
        Err(LuksError::Unimplemented)
    }
    pub fn check_activatable(&self) -> Result<(), LuksError> {
        Err(LuksError::Unimplemented)
    }
}

pub fn format(_dev: &File, _opts: &FormatOptions, _pass: &Passphrase) -> Result<Volume, LuksError> {
    Err(LuksError::Unimplemented)
}
