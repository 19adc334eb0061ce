//! LUKS anti-forensic splitter: the volume key is stored spread over `stripes` blocks so
//! that wiping any part of the area destroys it.

use super::hash::HashAlg;
use crate::secret::SecretBytes;

/// cryptsetup's fixed stripe count.
pub const STRIPES: usize = 4000;

/// Bytes of split material for a key of `key_len` bytes.
pub fn split_len(key_len: usize, stripes: usize) -> usize {
    key_len * stripes
}

/// Split material of a `key_len`-byte key rounded up to whole 512-byte sectors: what a
/// keyslot stores and what is read back to unlock it.
pub fn material_len(key_len: usize) -> usize {
    split_len(key_len, STRIPES).div_ceil(512) * 512
}

/// d := H-diffuse(d): chunk j becomes H(be32(j) ‖ chunk j); the last chunk is truncated.
fn diffuse(hash: HashAlg, d: &mut [u8]) {
    let hlen = hash.output_len();
    let mut tmp = [0u8; 64];
    for (j, chunk) in d.chunks_mut(hlen).enumerate() {
        let n = chunk.len();
        hash.hash_into(&[&(j as u32).to_be_bytes(), chunk], &mut tmp[..n]);
        chunk.copy_from_slice(&tmp[..n]);
    }
    zeroize::Zeroize::zeroize(&mut tmp);
}

/// Recovers the key from `material` (`stripes` blocks of `key_len` bytes).
pub fn merge(material: &[u8], key_len: usize, stripes: usize, hash: HashAlg) -> SecretBytes {
    debug_assert!(material.len() >= key_len * stripes && stripes >= 1);
    let mut d = SecretBytes::zeroed(key_len);
    for block in material.chunks_exact(key_len).take(stripes - 1) {
        for (a, b) in d.expose_mut().iter_mut().zip(block) {
            *a ^= b;
        }
        diffuse(hash, d.expose_mut());
    }
    let last = &material[(stripes - 1) * key_len..stripes * key_len];
    for (a, b) in d.expose_mut().iter_mut().zip(last) {
        *a ^= b;
    }
    d
}

/// Splits `key` into `stripes` blocks: all but the last random, the last chosen so that
/// `merge` gives the key back.
pub fn split(key: &[u8], stripes: usize, hash: HashAlg) -> std::io::Result<SecretBytes> {
    let n = key.len();
    let mut out = SecretBytes::random(n * stripes)?;
    let mut d = SecretBytes::zeroed(n);
    for i in 0..stripes - 1 {
        for (a, b) in d.expose_mut().iter_mut().zip(&out.expose()[i * n..(i + 1) * n]) {
            *a ^= b;
        }
        diffuse(hash, d.expose_mut());
    }
    let last = &mut out.expose_mut()[(stripes - 1) * n..];
    for ((o, a), k) in last.iter_mut().zip(d.expose()).zip(key) {
        *o = a ^ k;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge_gives_key_back() {
        for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512] {
            for len in [16usize, 32, 33, 64] {
                let key: Vec<u8> = (0..len as u8).collect();
                let m = split(&key, 50, hash).unwrap();
                assert_eq!(merge(m.expose(), len, 50, hash).expose(), &key[..]);
                let mut bad = m.expose().to_vec();
                bad[3] ^= 1;
                assert_ne!(merge(&bad, len, 50, hash).expose(), &key[..]);
            }
        }
    }
}
