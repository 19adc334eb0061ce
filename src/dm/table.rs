//! Pure construction of dm-crypt tables, exactly as cryptsetup 2.6 writes them for the same
//! LUKS header, so that `dmsetup table` cannot tell who activated a volume.
//!
//! Facts checked against cryptsetup 2.6.1 on Linux 6.1 (`dmsetup table --showkeys`):
//! - LUKS2: `aes-xts-plain64 :64:logon:cryptsetup:<uuid>-d<digest> <iv> <maj:min> <off>` and,
//!   for 4096-byte sectors, ` 1 sector_size:4096`; the key sits in the kernel keyring.
//! - LUKS1: the volume key is written into the table in hex (cryptsetup does not use the keyring
//!   for LUKS1), e.g. `aes-cbc-essiv:sha256 <64 hex> 0 7:1 4096`.
//! - Read-only is a flag of the table load, not a word in the table.

use crate::luks::{CryptSegment, Version};
use crate::secret::{SecretBytes, VolumeKey};
use std::fmt::Write as _;

/// How dm-crypt gets the volume key.
pub enum KeyReference<'a> {
    /// A `logon` key in the kernel keyring with this description (`cryptsetup:<uuid>-d<id>`).
    Keyring { description: String, key_size: usize },
    /// The key itself, hex-encoded into the table (LUKS1, or no keyring available).
    Inline(&'a VolumeKey),
}

/// Optional dm-crypt features (the subset offdisk exposes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CryptFlags {
    pub allow_discards: bool,
}

/// A whole single-target crypt table: `0 <length> crypt <params>`.
pub struct CryptTable {
    /// Length of the mapping in 512-byte sectors.
    pub length: u64,
    /// The target parameters; secret when they carry an inline key.
    pub params: SecretBytes,
}

impl CryptTable {
    /// The parameters as text. Only call where the key cannot leak (keyring tables, tests).
    pub fn params_str(&self) -> &str {
        std::str::from_utf8(self.params.expose()).unwrap_or("")
    }
}

impl std::fmt::Debug for CryptTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CryptTable {{ length: {}, params: <redacted> }}", self.length)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the encrypted data starts at byte {offset}, beyond the end of the {device_size}-byte device")]
    DeviceTooSmall { offset: u64, device_size: u64 },
    #[error("the data segment ({0} bytes) is not a multiple of its {1}-byte encryption sector")]
    Misaligned(u64, u32),
    #[error("unsupported encryption sector size {0}")]
    BadSectorSize(u32),
    #[error("the data offset {0} is not a multiple of 512 bytes")]
    OffsetNotSectorAligned(u64),
}

/// The keyring description cryptsetup uses for a LUKS2 volume key bound to digest `digest_id`.
pub fn keyring_description(luks_uuid: &str, digest_id: u32) -> String {
    format!("cryptsetup:{luks_uuid}-d{digest_id}")
}

/// DM UUID in cryptsetup's form, which udisks and `cryptsetup status` recognise:
/// `CRYPT-LUKS2-<uuid without dashes>-<name>` (LUKS1: `CRYPT-LUKS1-...`).
pub fn dm_uuid(version: Version, luks_uuid: &str, name: &str) -> String {
    let v = match version {
        Version::Luks1 => "LUKS1",
        Version::Luks2 => "LUKS2",
    };
    let compact: String = luks_uuid.chars().filter(|c| *c != '-').collect();
    format!("CRYPT-{v}-{compact}-{name}")
}

/// The LUKS UUID (with dashes restored) and version encoded in a cryptsetup-style DM UUID.
pub fn parse_dm_uuid(dm_uuid: &str) -> Option<(Version, String)> {
    let rest = dm_uuid.strip_prefix("CRYPT-")?;
    let (v, rest) = rest.split_once('-')?;
    let version = match v {
        "LUKS1" => Version::Luks1,
        "LUKS2" => Version::Luks2,
        _ => return None,
    };
    let (compact, _name) = rest.split_once('-')?;
    if compact.len() != 32 || !compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let u = format!("{}-{}-{}-{}-{}", &compact[0..8], &compact[8..12], &compact[12..16], &compact[16..20], &compact[20..32]);
    Some((version, u))
}

/// Length of the mapping in 512-byte sectors for a segment on a device of `device_size` bytes.
pub fn mapping_sectors(seg: &CryptSegment, device_size: u64) -> Result<u64, TableError> {
    if !(512..=4096).contains(&seg.sector_size) || !seg.sector_size.is_power_of_two() {
        return Err(TableError::BadSectorSize(seg.sector_size));
    }
    if seg.offset % 512 != 0 {
        return Err(TableError::OffsetNotSectorAligned(seg.offset));
    }
    let bytes = match seg.size {
        Some(size) => size,
        None => {
            if device_size <= seg.offset {
                return Err(TableError::DeviceTooSmall { offset: seg.offset, device_size });
            }
            // A dynamic segment runs to the end of the device, in whole 512-byte sectors.
            (device_size - seg.offset) / 512 * 512
        }
    };
    if seg.size.is_some() && seg.offset.saturating_add(bytes) > device_size {
        return Err(TableError::DeviceTooSmall { offset: seg.offset + bytes, device_size });
    }
    if bytes == 0 {
        return Err(TableError::DeviceTooSmall { offset: seg.offset, device_size });
    }
    if bytes % seg.sector_size as u64 != 0 {
        return Err(TableError::Misaligned(bytes, seg.sector_size));
    }
    Ok(bytes / 512)
}

/// Builds the crypt table for `seg` on the block device `major:minor` of `device_size` bytes.
pub fn crypt_table(
    seg: &CryptSegment,
    key: &KeyReference<'_>,
    device: (u32, u32),
    device_size: u64,
    flags: CryptFlags,
) -> Result<CryptTable, TableError> {
    let length = mapping_sectors(seg, device_size)?;
    let mut options: Vec<String> = Vec::new();
    // cryptsetup's order: feature flags first, then sector_size.
    if flags.allow_discards {
        options.push("allow_discards".into());
    }
    if seg.sector_size != 512 {
        options.push(format!("sector_size:{}", seg.sector_size));
    }
    let mut tail = format!(" {} {}:{} {}", seg.iv_tweak, device.0, device.1, seg.offset / 512);
    if !options.is_empty() {
        let _ = write!(tail, " {} {}", options.len(), options.join(" "));
    }

    let mut params = Vec::with_capacity(seg.cipher.len() + tail.len() + 2 * seg.key_size + 64);
    params.extend_from_slice(seg.cipher.as_bytes());
    params.push(b' ');
    match key {
        KeyReference::Keyring { description, key_size } => {
            params.extend_from_slice(format!(":{key_size}:logon:{description}").as_bytes());
        }
        KeyReference::Inline(k) => {
            let hex = k.to_hex();
            params.extend_from_slice(hex.expose());
        }
    }
    params.extend_from_slice(tail.as_bytes());
    Ok(CryptTable { length, params: SecretBytes::from_vec(params) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(cipher: &str, key_size: usize, offset: u64, sector: u32, digest: Option<u32>) -> CryptSegment {
        CryptSegment { cipher: cipher.into(), key_size, offset, size: None, iv_tweak: 0, sector_size: sector, digest_id: digest }
    }

    // Tables below were printed by `dmsetup table --showkeys` after `cryptsetup open` (2.6.1).
    #[test]
    fn luks2_default_matches_cryptsetup() {
        let s = seg("aes-xts-plain64", 64, 16 << 20, 512, Some(0));
        let uuid = "a12d9317-39b6-49a6-82f7-1e9f1b75dc8c";
        let key = KeyReference::Keyring { description: keyring_description(uuid, 0), key_size: 64 };
        let t = crypt_table(&s, &key, (7, 0), 64 << 20, CryptFlags::default()).unwrap();
        assert_eq!(t.length, 98304);
        assert_eq!(
            t.params_str(),
            "aes-xts-plain64 :64:logon:cryptsetup:a12d9317-39b6-49a6-82f7-1e9f1b75dc8c-d0 0 7:0 32768"
        );
    }

    #[test]
    fn luks2_4k_sectors_add_the_option() {
        let s = seg("aes-xts-plain64", 64, 16 << 20, 4096, Some(0));
        let uuid = "aa48c029-7487-4025-af16-40008c58dadd";
        let key = KeyReference::Keyring { description: keyring_description(uuid, 0), key_size: 64 };
        let t = crypt_table(&s, &key, (7, 2), 64 << 20, CryptFlags::default()).unwrap();
        assert_eq!(
            t.params_str(),
            "aes-xts-plain64 :64:logon:cryptsetup:aa48c029-7487-4025-af16-40008c58dadd-d0 0 7:2 32768 1 sector_size:4096"
        );
    }

    #[test]
    fn luks1_inline_hex_key() {
        let s = seg("aes-cbc-essiv:sha256", 32, 4096 * 512, 512, None);
        let k = VolumeKey::from_slice(&[0xab; 32]);
        let t = crypt_table(&s, &KeyReference::Inline(&k), (7, 1), 64 << 20, CryptFlags::default()).unwrap();
        assert_eq!(t.length, 126976);
        assert_eq!(t.params_str(), format!("aes-cbc-essiv:sha256 {} 0 7:1 4096", "ab".repeat(32)));
        assert!(!format!("{t:?}").contains("abab"));
    }

    #[test]
    fn options_count_and_order() {
        let mut s = seg("aes-xts-plain64", 64, 16 << 20, 4096, Some(1));
        s.iv_tweak = 8;
        let key = KeyReference::Keyring { description: keyring_description("u", 1), key_size: 64 };
        let t = crypt_table(&s, &key, (8, 17), 64 << 20, CryptFlags { allow_discards: true }).unwrap();
        assert_eq!(t.params_str(), "aes-xts-plain64 :64:logon:cryptsetup:u-d1 8 8:17 32768 2 allow_discards sector_size:4096");
    }

    #[test]
    fn sizes_are_checked() {
        let s = seg("aes-xts-plain64", 64, 16 << 20, 512, Some(0));
        assert!(matches!(mapping_sectors(&s, 16 << 20), Err(TableError::DeviceTooSmall { .. })));
        let s4 = seg("aes-xts-plain64", 64, 16 << 20, 4096, Some(0));
        assert!(matches!(mapping_sectors(&s4, (16 << 20) + 4096 + 512), Err(TableError::Misaligned(..))));
        let mut fixed = s.clone();
        fixed.size = Some(1 << 20);
        assert_eq!(mapping_sectors(&fixed, 64 << 20), Ok(2048));
        fixed.size = Some(64 << 20);
        assert!(mapping_sectors(&fixed, 64 << 20).is_err());
    }

    #[test]
    fn dm_uuid_roundtrip() {
        let u = "a12d9317-39b6-49a6-82f7-1e9f1b75dc8c";
        let d = dm_uuid(Version::Luks2, u, "luks-x");
        assert_eq!(d, "CRYPT-LUKS2-a12d931739b649a682f71e9f1b75dc8c-luks-x");
        assert_eq!(parse_dm_uuid(&d), Some((Version::Luks2, u.to_string())));
        assert_eq!(parse_dm_uuid("LVM-abc"), None);
        assert_eq!(dm_uuid(Version::Luks1, u, "b1"), "CRYPT-LUKS1-a12d931739b649a682f71e9f1b75dc8c-b1");
    }
}
