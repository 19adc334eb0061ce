//! LUKS2 keyslots: open one with a passphrase (KDF → decrypt area → AF merge → digest),
//! and build the material for a new one.

use super::af;
use super::cipher::SectorCipher;
use super::io::BlockIo;
use super::kdf::Kdf;
use super::metadata::{DigestEntry, Keyslot, Metadata};
use super::hash::HashAlg;
use super::LuksError;
use crate::secret::SecretBytes;
use subtle::ConstantTimeEq;

pub use super::af::material_len;

/// Area size cryptsetup reserves for a key of `key_size` bytes (4096-aligned).
pub fn area_len(key_size: usize) -> u64 {
    ((key_size * af::STRIPES).div_ceil(4096) * 4096) as u64
}

/// True when `key` matches the digest (constant time, at the digest's stored length).
/// An unusable digest matches nothing.
pub fn digest_matches(d: &DigestEntry, key: &[u8]) -> bool {
    let Some(hash) = d.hash.filter(|_| d.unusable.is_none()) else { return false };
    let mut out = SecretBytes::zeroed(d.digest.len());
    hash.pbkdf2(key, &d.salt, d.iterations, out.expose_mut());
    bool::from(out.expose().ct_eq(&d.digest))
}

/// Tries keyslot `id`; `Ok(None)` means the passphrase does not open it. A keyslot that
/// cannot be used (unknown KDF, cipher or hash) is an `Unsupported` error naming why.
pub fn try_slot(io: &dyn BlockIo, meta: &Metadata, id: u32, pass: &[u8]) -> Result<Option<SecretBytes>, LuksError> {
    let ks = meta.keyslots.get(&id).ok_or(LuksError::SlotInactive(id as usize))?;
    let (Some(kdf), Some(af_hash), None) = (&ks.kdf, ks.af_hash, &ks.unusable) else {
        let why = ks.unusable.clone().unwrap_or_else(|| "not usable".into());
        return Err(LuksError::Unsupported(format!("keyslot {id}: {why}")));
    };
    let digest_id = meta.digest_of(id).ok_or_else(|| LuksError::Unsupported(format!("keyslot {id} is not bound to a digest")))?;
    let digest = &meta.digests[&digest_id];
    let area_key = kdf.derive(pass, ks.area.key_size)?;
    let key = open_area(io, ks, area_key.expose(), id, af_hash)?;
    Ok(digest_matches(digest, key.expose()).then_some(key))
}

fn open_area(io: &dyn BlockIo, ks: &Keyslot, area_key: &[u8], id: u32, af_hash: HashAlg) -> Result<SecretBytes, LuksError> {
    let len = material_len(ks.key_size);
    let mut material = SecretBytes::zeroed(len);
    io.read_at(material.expose_mut(), ks.area.offset)
        .map_err(|e| LuksError::io(format!("reading keyslot {id} area"), e))?;
    SectorCipher::new(&ks.area.encryption, area_key)?.decrypt(material.expose_mut(), 512, 0)?;
    Ok(af::merge(material.expose(), ks.key_size, af::STRIPES, af_hash))
}

/// Material for a new keyslot: the volume key split and encrypted under the key `kdf`
/// derives from `pass`. Returns the bytes to write at the area's offset (area-sized).
pub fn seal_material(
    volume_key: &[u8],
    pass: &[u8],
    kdf: &Kdf,
    area_cipher: &str,
    af_hash: super::hash::HashAlg,
) -> Result<SecretBytes, LuksError> {
    let area_key = kdf.derive(pass, volume_key.len())?;
    let split = af::split(volume_key, af::STRIPES, af_hash).map_err(|e| LuksError::io("random bytes".into(), e))?;
    let mut out = SecretBytes::zeroed(area_len(volume_key.len()) as usize);
    out.expose_mut()[..split.len()].copy_from_slice(split.expose());
    let enc_len = material_len(volume_key.len());
    SectorCipher::new(area_cipher, area_key.expose())?.encrypt(&mut out.expose_mut()[..enc_len], 512, 0)?;
    Ok(out)
}
