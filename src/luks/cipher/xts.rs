//! XTS (IEEE 1619) over any 128-bit block cipher, fast: the tweaks of a whole run of
//! sectors are computed first (one parallel-block pass of the tweak key over the sector
//! IVs), then the data walks through the data cipher's own backend in chunks of 64
//! blocks, handed over in the backend's parallel-block width (8 blocks with AES-NI, 64
//! with VAES/AVX-512), tweaks folded in before and after.
//!
//! The walk runs inside the backend's closure, so it is compiled with the backend's target
//! features; its arithmetic is laid out for the vectoriser: tweaks in groups of four
//! blocks as eight 64-bit lanes (the data's own layout, so folding them in is one wide XOR
//! per group), and each group derived from the previous by multiplying by α^4 with shifts
//! only. No ciphertext stealing: sectors are whole blocks.

use super::block::{Block, BlockCipher};
use aes::cipher::consts::U16;
use aes::cipher::typenum::Unsigned;
use aes::cipher::{
    BlockCipherDecBackend, BlockCipherDecClosure, BlockCipherEncBackend, BlockCipherEncClosure, BlockSizeUser,
};

/// Sectors whose tweaks are computed in one pass (bounded stack use; 64 × 16 bytes).
const TWEAK_BATCH: usize = 64;
/// Blocks per chunk of the walk (a multiple of every parallel width used: 1, 8, 16, 32, 64).
const CHUNK: usize = 64;
/// Four blocks' tweaks as eight little-endian 64-bit lanes: lo0, hi0, lo1, hi1, ...
type Group = [u64; 8];

/// Multiplies a tweak by α in GF(2^128) (XTS's little-endian convention).
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((((t as i128) >> 127) as u128) & 0x87)
}

/// Multiplies the four tweaks of a group by α^4: each shifts left by 4 bits, and the 4
/// bits c leaving the top come back as c ⊗ 0x87 (0x87 = x^7 + x^2 + x + 1).
#[inline(always)]
fn mul_alpha4(g: &Group) -> Group {
    let mut n = [0u64; 8];
    for i in 0..4 {
        let (lo, hi) = (g[2 * i], g[2 * i + 1]);
        let c = hi >> 60;
        n[2 * i] = (lo << 4) ^ c ^ (c << 1) ^ (c << 2) ^ (c << 7);
        n[2 * i + 1] = (hi << 4) | (lo >> 60);
    }
    n
}

/// The first group of a sector: t, tα, tα², tα³.
#[inline(always)]
fn first_group(mut t: u128) -> Group {
    let mut g = [0u64; 8];
    for i in 0..4 {
        g[2 * i] = t as u64;
        g[2 * i + 1] = (t >> 64) as u64;
        t = mul_alpha(t);
    }
    g
}

/// XORs the tweaks into four blocks (64 bytes).
#[inline(always)]
fn xor_group(blocks: &mut [Block], g: &Group) {
    for (b, lanes) in blocks.iter_mut().zip(g.chunks_exact(2)) {
        let (lo, hi) = b.0.split_at_mut(8);
        let l = u64::from_le_bytes(lo.try_into().expect("8 bytes")) ^ lanes[0];
        let h = u64::from_le_bytes(hi.try_into().expect("8 bytes")) ^ lanes[1];
        lo.copy_from_slice(&l.to_le_bytes());
        hi.copy_from_slice(&h.to_le_bytes());
    }
}

/// The data walk shared by encryption and decryption: `par` handles exactly `P` blocks
/// (the backend's parallel width), `one` a single block. `blocks` is whole sectors of
/// `blocks_per_sector` (a multiple of 4) blocks each, `tweaks` their first tweaks.
#[inline(always)]
fn walk<const P: usize>(
    blocks: &mut [Block],
    tweaks: &[u128],
    blocks_per_sector: usize,
    mut par: impl FnMut(&mut [Block]),
    mut one: impl FnMut(&mut Block),
) {
    let groups_per_sector = blocks_per_sector / 4;
    let mut tw = [[0u64; 8]; CHUNK / 4];
    let mut g: Group = [0; 8];
    let mut group_no = 0usize; // of the whole walk
    for run in blocks.chunks_mut(CHUNK) {
        let n = run.len() / 4;
        for slot in tw[..n].iter_mut() {
            g = if group_no % groups_per_sector == 0 { first_group(tweaks[group_no / groups_per_sector]) } else { mul_alpha4(&g) };
            *slot = g;
            group_no += 1;
        }
        for (quad, t) in run.chunks_exact_mut(4).zip(&tw[..n]) {
            xor_group(quad, t);
        }
        let mut sub = run.chunks_exact_mut(P);
        for s in &mut sub {
            par(s);
        }
        sub.into_remainder().iter_mut().for_each(&mut one);
        for (quad, t) in run.chunks_exact_mut(4).zip(&tw[..n]) {
            xor_group(quad, t);
        }
    }
}

struct Pass<'a> {
    blocks: &'a mut [Block],
    tweaks: &'a [u128],
    blocks_per_sector: usize,
}

impl BlockSizeUser for Pass<'_> {
    type BlockSize = U16;
}

fn par_view<N: aes::cipher::array::ArraySize>(run: &mut [Block]) -> &mut aes::cipher::array::Array<Block, N> {
    run.try_into().expect("run has the backend's parallel width")
}

/// Dispatches `walk` on the backend's parallel width (a compile-time constant per backend).
macro_rules! walk_with {
    ($self:ident, $backend:ident, $B:ty, $par:ident, $one:ident) => {
        match <$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize::USIZE {
            64 => walk::<64>($self.blocks, $self.tweaks, $self.blocks_per_sector, |r| $backend.$par(par_view::<<$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize>(r)), |b| $backend.$one(b)),
            32 => walk::<32>($self.blocks, $self.tweaks, $self.blocks_per_sector, |r| $backend.$par(par_view::<<$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize>(r)), |b| $backend.$one(b)),
            16 => walk::<16>($self.blocks, $self.tweaks, $self.blocks_per_sector, |r| $backend.$par(par_view::<<$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize>(r)), |b| $backend.$one(b)),
            8 => walk::<8>($self.blocks, $self.tweaks, $self.blocks_per_sector, |r| $backend.$par(par_view::<<$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize>(r)), |b| $backend.$one(b)),
            _ => walk::<1>($self.blocks, $self.tweaks, $self.blocks_per_sector, |r| r.iter_mut().for_each(|b| $backend.$one(b)), |b| $backend.$one(b)),
        }
    };
}

impl BlockCipherEncClosure for Pass<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        walk_with!(self, backend, B, encrypt_par_blocks_inplace, encrypt_block_inplace)
    }
}

impl BlockCipherDecClosure for Pass<'_> {
    #[inline(always)]
    fn call<B: BlockCipherDecBackend<BlockSize = U16>>(self, backend: &B) {
        walk_with!(self, backend, B, decrypt_par_blocks_inplace, decrypt_block_inplace)
    }
}

/// XTS with its two keys.
pub struct Xts {
    pub(super) data: BlockCipher,
    pub(super) tweak: BlockCipher,
}

impl Xts {
    /// En- or decrypts whole sectors of `sector_size` bytes (a multiple of 64); `iv(i, out)`
    /// writes the tweak input (the IV generator's output) of sector `i` of `data`.
    pub fn process(&self, data: &mut [u8], sector_size: usize, encrypt: bool, iv: impl Fn(u64, &mut Block)) {
        debug_assert!(sector_size % 64 == 0 && data.len() % sector_size == 0);
        let blocks_per_sector = sector_size / 16;
        let mut ivs = [Block::default(); TWEAK_BATCH];
        let mut tweaks = [0u128; TWEAK_BATCH];
        let mut first = 0u64;
        for batch in data.chunks_mut(sector_size * TWEAK_BATCH) {
            let n = batch.len() / sector_size;
            for (i, b) in ivs[..n].iter_mut().enumerate() {
                iv(first + i as u64, b);
            }
            self.tweak.encrypt_blocks(&mut ivs[..n]);
            for (t, b) in tweaks.iter_mut().zip(&ivs[..n]) {
                *t = u128::from_le_bytes(b.0);
            }
            let pass = Pass { blocks: super::block::as_blocks(batch), tweaks: &tweaks[..n], blocks_per_sector };
            if encrypt {
                self.data.encrypt_with(pass);
            } else {
                self.data.decrypt_with(pass);
            }
            first += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_group(g: &Group, i: usize) -> u128 {
        u128::from(g[2 * i]) | (u128::from(g[2 * i + 1]) << 64)
    }

    #[test]
    fn alpha4_is_four_doublings() {
        for t in [1u128, 1 << 127, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0xf << 124] {
            let g = first_group(t);
            let n = mul_alpha4(&g);
            for i in 0..4 {
                let mut want = from_group(&g, i);
                for _ in 0..4 {
                    want = mul_alpha(want);
                }
                assert_eq!(from_group(&n, i), want, "{t:#x} lane {i}");
            }
        }
    }

    #[test]
    fn alpha_doubles_with_the_xts_reduction() {
        assert_eq!(mul_alpha(1), 2);
        assert_eq!(mul_alpha(1u128 << 127), 0x87);
        assert_eq!(mul_alpha((1u128 << 127) | 1), 0x85);
    }
}
