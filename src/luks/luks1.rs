//! LUKS1: read and unlock (one 592-byte header, PBKDF2 keyslots, no checksum or copy).

use super::af;
use super::cipher::{check_spec, SectorCipher};
use super::codec::Reader;
use super::hash::HashAlg;
use super::io::BlockIo;
use super::LuksError;
use crate::secret::SecretBytes;
use subtle::ConstantTimeEq;

pub const HEADER_LEN: usize = 592;
pub const SLOTS: usize = 8;
pub const ACTIVE: u32 = 0x00AC_71F3;
pub const INACTIVE: u32 = 0x0000_DEAD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub active: bool,
    /// The state word as stored (0x00AC71F3 enabled, 0x0000DEAD disabled, anything else
    /// an invalid slot that is treated as disabled, as cryptsetup does).
    pub state: u32,
    pub iterations: u32,
    pub salt: [u8; 32],
    /// In 512-byte sectors.
    pub key_material_offset: u32,
    pub stripes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks1Header {
    pub cipher_name: String,
    pub cipher_mode: String,
    pub hash_spec: String,
    /// In 512-byte sectors.
    pub payload_offset: u32,
    pub key_bytes: u32,
    pub mk_digest: [u8; 20],
    pub mk_digest_salt: [u8; 32],
    pub mk_digest_iterations: u32,
    pub uuid: String,
    pub slots: Vec<Slot>,
}

impl Luks1Header {
    /// Parses and validates the 592-byte header by cryptsetup's rules (text fields cut at
    /// their last byte; every keyslot, enabled or not, inside the header area and apart).
    pub fn parse(raw: &[u8]) -> Result<Luks1Header, LuksError> {
        let mut r = Reader::new(raw, "LUKS1 header");
        let magic: [u8; 6] = r.array()?;
        if magic != super::header::MAGIC_PRIMARY {
            return Err(LuksError::Header("bad LUKS1 magic".into()));
        }
        let version = r.u16()?;
        if version != 1 {
            return Err(LuksError::Header(format!("version {version} where 1 was expected")));
        }
        let cipher_name = r.c_string_lossy(32)?;
        let cipher_mode = r.c_string_lossy(32)?;
        let hash_spec = r.c_string_lossy(32)?;
        let payload_offset = r.u32()?;
        let key_bytes = r.u32()?;
        let mk_digest = r.array()?;
        let mk_digest_salt = r.array()?;
        let mk_digest_iterations = r.u32()?;
        let uuid = r.c_string_lossy(40)?;
        let mut slots = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            let state = r.u32()?;
            slots.push(Slot {
                active: state == ACTIVE,
                state,
                iterations: r.u32()?,
                salt: r.array()?,
                key_material_offset: r.u32()?,
                stripes: r.u32()?,
            });
        }
        r.finish()?;
        let h = Luks1Header {
            cipher_name,
            cipher_mode,
            hash_spec,
            payload_offset,
            key_bytes,
            mk_digest,
            mk_digest_salt,
            mk_digest_iterations,
            uuid,
            slots,
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<(), LuksError> {
        let h = |m: String| LuksError::Header(m);
        if HashAlg::parse(&self.hash_spec).is_err() {
            return Err(h(format!("hash {:?} is not supported", self.hash_spec)));
        }
        if self.key_bytes == 0 {
            return Err(h("key size is zero".into()));
        }
        let sectors = self.material_sectors();
        let mut spans = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if s.stripes != af::STRIPES as u32 {
                return Err(h(format!("keyslot {i} has {} stripes; only 4000 is valid", s.stripes)));
            }
            let start = u64::from(s.key_material_offset);
            if start * 512 < HEADER_LEN as u64 {
                return Err(h(format!("keyslot {i} material overlaps the header")));
            }
            if self.payload_offset != 0 && start + sectors > u64::from(self.payload_offset) {
                return Err(h(format!("keyslot {i} material runs into the data area")));
            }
            spans.push((start, i));
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].0 + sectors {
                return Err(h(format!("keyslot areas {} and {} overlap", w[0].1, w[1].1)));
            }
        }
        Ok(())
    }

    /// Sectors of split material per keyslot.
    fn material_sectors(&self) -> u64 {
        (u64::from(self.key_bytes) * af::STRIPES as u64).div_ceil(512)
    }

    /// Bytes from the start of the device to the end of the last keyslot's material (the
    /// device must be at least this large).
    pub fn header_and_areas_len(&self) -> u64 {
        let last = self.slots.iter().map(|s| u64::from(s.key_material_offset)).max().unwrap_or(0);
        (last + self.material_sectors()) * 512
    }

    /// Why no keyslot of this header can be used (unsupported cipher, absurd sizes);
    /// `None`: the header's keyslots are usable.
    pub fn problem(&self) -> Option<String> {
        let kb = self.key_bytes as usize;
        if kb > super::metadata::MAX_KEY_BYTES {
            return Some(format!("key size {kb} bytes is out of range"));
        }
        if let Err(e) = check_spec(&self.cipher_spec(), kb) {
            return Some(match e {
                LuksError::Unsupported(m) => format!("{m} not supported"),
                e => e.to_string(),
            });
        }
        if self.mk_digest_iterations == 0 {
            return Some("the key digest has zero iterations".into());
        }
        None
    }

    /// Split material length rounded up to whole 512-byte sectors.
    fn material_len(&self) -> usize {
        (self.key_bytes as usize * af::STRIPES).div_ceil(512) * 512
    }

    pub fn cipher_spec(&self) -> String {
        format!("{}-{}", self.cipher_name, self.cipher_mode)
    }

    pub fn hash(&self) -> Result<HashAlg, LuksError> {
        HashAlg::parse(&self.hash_spec)
    }

    /// Tries keyslot `i`; `Ok(None)` means the passphrase does not open it.
    pub fn try_slot(&self, io: &dyn BlockIo, i: usize, pass: &[u8]) -> Result<Option<SecretBytes>, LuksError> {
        let slot = self.slots.get(i).ok_or(LuksError::SlotRange(i))?;
        if !slot.active {
            return Err(LuksError::SlotInactive(i));
        }
        if let Some(why) = self.problem() {
            return Err(LuksError::Unsupported(why));
        }
        if slot.iterations == 0 {
            return Err(LuksError::Unsupported(format!("keyslot {i} has zero iterations")));
        }
        let hash = self.hash()?;
        let kb = self.key_bytes as usize;
        let spec = self.cipher_spec();
        let slot_key = hash_pbkdf2(hash, pass, &slot.salt, slot.iterations, kb);
        let mut material = SecretBytes::zeroed(self.material_len());
        io.read_at(material.expose_mut(), u64::from(slot.key_material_offset) * 512)
            .map_err(|e| LuksError::io(format!("reading keyslot {i}"), e))?;
        SectorCipher::new(&spec, slot_key.expose())?.decrypt(material.expose_mut(), 512, 0)?;
        let mk = af::merge(material.expose(), kb, af::STRIPES, hash);
        Ok(self.key_matches(mk.expose())?.then_some(mk))
    }

    /// True when `key` is this volume's key (checked against mkDigest, constant time).
    pub fn key_matches(&self, key: &[u8]) -> Result<bool, LuksError> {
        if key.len() != self.key_bytes as usize {
            return Ok(false);
        }
        let check = hash_pbkdf2(self.hash()?, key, &self.mk_digest_salt, self.mk_digest_iterations, 20);
        Ok(bool::from(check.expose().ct_eq(&self.mk_digest)))
    }
}

fn hash_pbkdf2(hash: HashAlg, pass: &[u8], salt: &[u8], iterations: u32, len: usize) -> SecretBytes {
    let mut out = SecretBytes::zeroed(len);
    hash.pbkdf2(pass, salt, iterations, out.expose_mut());
    out
}
