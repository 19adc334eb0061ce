//! CBC and LRW sector modes (dm-crypt's `cbc-*` and `lrw-*`), per sector with the IV
//! generator's output. CBC decryption runs the blocks of a run of sectors through the
//! backend in parallel and chains afterwards; CBC encryption is serial by nature. LRW
//! exists here only to open LUKS1 volumes of the cryptsetup 1.0 era (keyslots are read
//! once per unlock), so it favours plainness over speed.

use super::block::{as_blocks, Block, BlockCipher};

/// Bytes of ciphertext kept aside per decryption run (the chaining needs the originals).
const RUN: usize = 16 << 10;

pub fn cbc_encrypt(c: &BlockCipher, data: &mut [u8], sector_size: usize, iv: impl Fn(u64, &mut Block)) {
    let mut prev = Block::default();
    for (i, sector) in data.chunks_exact_mut(sector_size).enumerate() {
        iv(i as u64, &mut prev);
        for b in as_blocks(sector) {
            xor(b, &prev);
            c.encrypt_block(b);
            prev = *b;
        }
    }
}

pub fn cbc_decrypt(c: &BlockCipher, data: &mut [u8], sector_size: usize, iv: impl Fn(u64, &mut Block)) {
    let mut saved = vec![0u8; RUN.max(sector_size)];
    let per_run = saved.len() / sector_size;
    let mut first = 0u64;
    for run in data.chunks_mut(per_run * sector_size) {
        let kept = &mut saved[..run.len()];
        kept.copy_from_slice(run);
        c.decrypt_blocks(as_blocks(run));
        for (s, (sector, orig)) in run.chunks_exact_mut(sector_size).zip(kept.chunks_exact(sector_size)).enumerate() {
            let mut prev = Block::default();
            iv(first + s as u64, &mut prev);
            let orig = Block::slice_as_chunks(orig).0;
            for (j, b) in as_blocks(sector).iter_mut().enumerate() {
                xor(b, if j == 0 { &prev } else { &orig[j - 1] });
            }
        }
        first += (run.len() / sector_size) as u64;
    }
}

/// ECB: every block on its own (dm-crypt `*-ecb`, no IV).
pub fn ecb(c: &BlockCipher, data: &mut [u8], encrypt: bool) {
    if encrypt {
        c.encrypt_blocks(as_blocks(data));
    } else {
        c.decrypt_blocks(as_blocks(data));
    }
}

fn xor(b: &mut Block, o: &Block) {
    for (x, y) in b.iter_mut().zip(o.iter()) {
        *x ^= y;
    }
}

/// LRW: C = E(P ⊕ T) ⊕ T with T = K2 ⊗ I in GF(2^128), I the IV as a big-endian
/// 128-bit block index counting up through the sector (the kernel's `lrw` template).
pub struct Lrw {
    pub(super) cipher: BlockCipher,
    /// The tweak key, as a big-endian polynomial (bit i = coefficient of x^i).
    pub(super) k2: u128,
}

/// Multiplication in GF(2^128) mod x^128 + x^7 + x^2 + x + 1, natural bit order.
fn gf_mul(a: u128, b: u128) -> u128 {
    let mut r = 0u128;
    for i in (0..128).rev() {
        r = (r << 1) ^ ((((r as i128) >> 127) as u128) & 0x87);
        if (b >> i) & 1 == 1 {
            r ^= a;
        }
    }
    r
}

impl Lrw {
    pub fn process(&self, data: &mut [u8], sector_size: usize, encrypt: bool, iv: impl Fn(u64, &mut Block)) {
        let mut ivb = Block::default();
        for (i, sector) in data.chunks_exact_mut(sector_size).enumerate() {
            iv(i as u64, &mut ivb);
            let index = u128::from_be_bytes(ivb.0);
            for (j, b) in as_blocks(sector).iter_mut().enumerate() {
                let t = Block::from(gf_mul(self.k2, index.wrapping_add(j as u128)).to_be_bytes());
                xor(b, &t);
                if encrypt {
                    self.cipher.encrypt_block(b);
                } else {
                    self.cipher.decrypt_block(b);
                }
                xor(b, &t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gf_mul_is_a_field_multiplication() {
        assert_eq!(gf_mul(1, 0xabc), 0xabc);
        assert_eq!(gf_mul(2, 1u128 << 127), 0x87);
        let (a, b, c) = (0x1234_5678_9abc_def0_u128 << 60 | 77, 0xfeed_beef_u128 << 90 | 5, 0x55aa_u128 << 100);
        assert_eq!(gf_mul(a, b), gf_mul(b, a));
        assert_eq!(gf_mul(a, b ^ c), gf_mul(a, b) ^ gf_mul(a, c));
        assert_eq!(gf_mul(gf_mul(a, b), c), gf_mul(a, gf_mul(b, c)));
    }
}
