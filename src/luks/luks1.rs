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
const ACTIVE: u32 = 0x00AC_71F3;
const INACTIVE: u32 = 0x0000_DEAD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub active: bool,
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
        let cipher_name = r.c_string(32, "cipherName")?;
        let cipher_mode = r.c_string(32, "cipherMode")?;
        let hash_spec = r.c_string(32, "hashSpec")?;
        let payload_offset = r.u32()?;
        let key_bytes = r.u32()?;
        let mk_digest = r.array()?;
        let mk_digest_salt = r.array()?;
        let mk_digest_iterations = r.u32()?;
        let uuid = r.c_string(40, "uuid")?;
        let mut slots = Vec::with_capacity(SLOTS);
        for i in 0..SLOTS {
            let state = r.u32()?;
            let active = match state {
                ACTIVE => true,
                INACTIVE => false,
                other => return Err(LuksError::Header(format!("keyslot {i} has invalid state {other:#010x}"))),
            };
            slots.push(Slot { active, iterations: r.u32()?, salt: r.array()?, key_material_offset: r.u32()?, stripes: r.u32()? });
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
        if !(16..=64).contains(&self.key_bytes) {
            return Err(h(format!("key size {} bytes is out of range", self.key_bytes)));
        }
        if self.mk_digest_iterations == 0 {
            return Err(h("digest iteration count is zero".into()));
        }
        let mut spans = Vec::new();
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| s.active) {
            if s.stripes != af::STRIPES as u32 {
                return Err(h(format!("keyslot {i} has {} stripes; only 4000 is valid", s.stripes)));
            }
            if s.iterations == 0 {
                return Err(h(format!("keyslot {i} has zero iterations")));
            }
            let start = u64::from(s.key_material_offset) * 512;
            let end = start + self.material_len() as u64;
            if start < HEADER_LEN as u64 {
                return Err(h(format!("keyslot {i} material overlaps the header")));
            }
            if self.payload_offset != 0 && end > u64::from(self.payload_offset) * 512 {
                return Err(h(format!("keyslot {i} material runs into the data area")));
            }
            spans.push((start, end, i));
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(h(format!("keyslot areas {} and {} overlap", w[0].2, w[1].2)));
            }
        }
        Ok(())
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
        let hash = self.hash()?;
        let kb = self.key_bytes as usize;
        let spec = self.cipher_spec();
        check_spec(&spec, kb)?;
        let slot_key = hash_pbkdf2(hash, pass, &slot.salt, slot.iterations, kb);
        let mut material = SecretBytes::zeroed(self.material_len());
        io.read_at(material.expose_mut(), u64::from(slot.key_material_offset) * 512)
            .map_err(|e| LuksError::io(format!("reading keyslot {i}"), e))?;
        SectorCipher::new(&spec, slot_key.expose())?.decrypt(material.expose_mut(), 512, 0)?;
        let mk = af::merge(material.expose(), kb, af::STRIPES, hash);
        let check = hash_pbkdf2(hash, mk.expose(), &self.mk_digest_salt, self.mk_digest_iterations, 20);
        if bool::from(check.expose().ct_eq(&self.mk_digest)) {
            Ok(Some(mk))
        } else {
            Ok(None)
        }
    }
}

fn hash_pbkdf2(hash: HashAlg, pass: &[u8], salt: &[u8], iterations: u32, len: usize) -> SecretBytes {
    let mut out = SecretBytes::zeroed(len);
    hash.pbkdf2(pass, salt, iterations, out.expose_mut());
    out
}
