//! XTS (IEEE 1619) over any 128-bit block cipher, fast: the tweaks of a whole run of
//! sectors are computed first (one parallel-block pass of the tweak key over the sector
//! IVs), then the data walks through the data cipher's own backend in chunks of up to 64
//! blocks, handed over in the backend's parallel-block width (8 blocks with AES-NI, 30
//! with VAES on AVX2, 64 with VAES on AVX-512), tweaks folded in before and after.
//!
//! For AES on x86-64 CPUs without AVX-512, `secret::aes_xts` is faster than this walk
//! over the crate's AES-NI and AVX2 backends, and `XtsKernel::for_aes` picks it.
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
/// Most blocks per chunk of the walk (their tweaks are kept on the stack).
const MAX_CHUNK: usize = 64;
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

/// The data walk shared by encryption and decryption: `par` handles exactly `p` blocks
/// (the backend's parallel width: 8 with AES-NI, 30 with VAES on AVX2, 64 with VAES on
/// AVX-512; a constant where this is inlined), `one` a single block. `blocks` is whole
/// sectors of `blocks_per_sector` (a multiple of 4) blocks each, `tweaks` their first
/// tweaks. Chunks are whole groups of 4 and whole parallel runs: lcm(p, 4) blocks, repeated
/// up to 64.
#[inline(always)]
fn walk(
    blocks: &mut [Block],
    tweaks: &[u128],
    blocks_per_sector: usize,
    p: usize,
    mut par: impl FnMut(&mut [Block]),
    mut one: impl FnMut(&mut Block),
) {
    let unit = lcm4(p);
    let chunk = if unit > MAX_CHUNK { 4 } else { unit * (MAX_CHUNK / unit) };
    let p = if unit > MAX_CHUNK { 1 } else { p };
    let groups_per_sector = blocks_per_sector / 4;
    let mut tw = [[0u64; 8]; MAX_CHUNK / 4];
    let mut g: Group = [0; 8];
    let mut group_no = 0usize; // of the whole walk
    for run in blocks.chunks_mut(chunk) {
        let n = run.len() / 4;
        for slot in tw[..n].iter_mut() {
            g = if group_no % groups_per_sector == 0 { first_group(tweaks[group_no / groups_per_sector]) } else { mul_alpha4(&g) };
            *slot = g;
            group_no += 1;
        }
        for (quad, t) in run.chunks_exact_mut(4).zip(&tw[..n]) {
            xor_group(quad, t);
        }
        if p == 1 {
            run.iter_mut().for_each(&mut one);
        } else {
            let mut sub = run.chunks_exact_mut(p);
            for s in &mut sub {
                par(s);
            }
            sub.into_remainder().iter_mut().for_each(&mut one);
        }
        for (quad, t) in run.chunks_exact_mut(4).zip(&tw[..n]) {
            xor_group(quad, t);
        }
    }
}

/// The least common multiple of `p` and 4.
#[inline(always)]
const fn lcm4(p: usize) -> usize {
    match p % 4 {
        0 => p,
        2 => p * 2,
        _ => p * 4,
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

/// Runs `walk` with the backend's parallel width.
macro_rules! walk_with {
    ($self:ident, $backend:ident, $B:ty, $par:ident, $one:ident) => {
        walk(
            $self.blocks,
            $self.tweaks,
            $self.blocks_per_sector,
            <$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize::USIZE,
            |r| $backend.$par(par_view::<<$B as aes::cipher::ParBlocksSizeUser>::ParBlocksSize>(r)),
            |b| $backend.$one(b),
        )
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

/// Which code runs AES-XTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtsKernel {
    /// The walk above over the `aes` crate's backend (VAES on AVX-512 where the CPU has it).
    Crate,
    /// `secret::aes_xts` on VAES with 256-bit vectors (AVX2 CPUs with VAES).
    Vaes256,
    /// `secret::aes_xts` on AES-NI (CPUs with AES-NI and AVX, without VAES).
    AesNi,
}

impl XtsKernel {
    pub const ALL: [XtsKernel; 3] = [XtsKernel::Crate, XtsKernel::Vaes256, XtsKernel::AesNi];

    pub fn name(self) -> &'static str {
        match self {
            XtsKernel::Crate => "crate",
            XtsKernel::Vaes256 => "vaes256",
            XtsKernel::AesNi => "aes-ni",
        }
    }

    /// The fastest one for AES on this CPU (measured, see benches/xts-bench.sh): the crate's
    /// 64-block VAES backend where AVX-512 gives it 32 registers, else our own kernels,
    /// else the crate (its portable backend on CPUs without AES instructions).
    /// `OFFDISK_XTS_KERNEL=crate|vaes256|aes-ni` picks another that this CPU runs, to
    /// compare them on one machine, as OpenSSL's `OPENSSL_ia32cap` does; all of them give
    /// the same bytes.
    ///
    /// Each candidate must first give the bytes of a one-block-at-a-time XTS on a test
    /// sector (a known-answer self-test, as the kernel's crypto API runs): an emulator that
    /// mis-executes an instruction (QEMU 7.2's TCG gets VAES on 256-bit vectors wrong in
    /// the high half) or a faulty CPU then falls back to the next kernel instead of
    /// writing wrong ciphertext. Decided once per process.
    pub fn for_aes() -> XtsKernel {
        static CHOSEN: std::sync::OnceLock<XtsKernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let wanted = std::env::var("OFFDISK_XTS_KERNEL").ok().and_then(|v| XtsKernel::ALL.into_iter().find(|k| k.name() == v));
            let mut order = Vec::new();
            order.extend(wanted);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("vaes") {
                order.push(XtsKernel::Crate);
            }
            order.extend([XtsKernel::Vaes256, XtsKernel::AesNi, XtsKernel::Crate]);
            order.into_iter().find(|k| k.runs_here() && k.passes_self_test()).unwrap_or(XtsKernel::Crate)
        })
    }

    /// Does this kernel give the bytes of XTS one block at a time (the crate's single-block
    /// AES and doublings in a u128) for two 512-byte sectors (two 16-block groups each, and a
    /// second sector's tweak) with AES-128 and AES-256, both ways? Small, since every process
    /// runs it once, also under emulation.
    pub fn passes_self_test(self) -> bool {
        for key_len in [32usize, 64] {
            let key: Vec<u8> = (0..key_len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)).collect();
            let Ok(x) = Xts::new(super::Algorithm::Aes, &key, self) else { return false };
            if x.kernel() != self {
                return false;
            }
            let plain: Vec<u8> = (0..1024usize).map(|i| (i as u8) ^ ((i >> 8) as u8)).collect();
            let iv = |i: u64, b: &mut Block| {
                b.0 = [0; 16];
                b.0[..8].copy_from_slice(&(i + 3).to_le_bytes());
            };
            let mut got = plain.clone();
            x.process(&mut got, 512, true, iv);
            let mut want = plain.clone();
            for (i, sector) in want.chunks_mut(512).enumerate() {
                let mut t = Block::default();
                iv(i as u64, &mut t);
                x.tweak.encrypt_block(&mut t);
                let mut t = u128::from_le_bytes(t.0);
                for b in super::block::as_blocks(sector) {
                    let mask = t.to_le_bytes();
                    b.iter_mut().zip(mask).for_each(|(v, m)| *v ^= m);
                    x.data.encrypt_block(b);
                    b.iter_mut().zip(mask).for_each(|(v, m)| *v ^= m);
                    t = mul_alpha(t);
                }
            }
            if got != want {
                return false;
            }
            x.process(&mut got, 512, false, iv);
            if got != plain {
                return false;
            }
        }
        true
    }

    /// Can this CPU run it?
    pub fn runs_here(self) -> bool {
        match self {
            XtsKernel::Crate => true,
            #[cfg(target_arch = "x86_64")]
            XtsKernel::Vaes256 => crate::secret::aes_xts::Kernel::Vaes256.runs_here(),
            #[cfg(target_arch = "x86_64")]
            XtsKernel::AesNi => crate::secret::aes_xts::Kernel::AesNi.runs_here(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// XTS with its two keys.
pub struct Xts {
    pub(super) data: BlockCipher,
    pub(super) tweak: BlockCipher,
    /// AES-128/256 keys expanded for `secret::aes_xts` when that kernel runs here.
    #[cfg(target_arch = "x86_64")]
    pub(super) fast: Option<crate::secret::aes_xts::XtsKeys>,
}

impl Xts {
    /// Keys XTS with `key` (both halves) for `alg`, on `kernel` where it applies (AES with
    /// a 256- or 512-bit key; anything else runs on the crate).
    pub fn new(alg: super::Algorithm, key: &[u8], kernel: XtsKernel) -> Result<Xts, super::super::LuksError> {
        let (k1, k2) = key.split_at(key.len() / 2);
        #[cfg(target_arch = "x86_64")]
        let fast = {
            use crate::secret::aes_xts::{Kernel, XtsKeys};
            match (alg, kernel) {
                (super::Algorithm::Aes, XtsKernel::Vaes256) => XtsKeys::with_kernel(key, Kernel::Vaes256),
                (super::Algorithm::Aes, XtsKernel::AesNi) => XtsKeys::with_kernel(key, Kernel::AesNi),
                _ => None,
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = kernel;
        Ok(Xts {
            data: BlockCipher::new(alg, k1)?,
            tweak: BlockCipher::new(alg, k2)?,
            #[cfg(target_arch = "x86_64")]
            fast,
        })
    }

    /// The code that runs this instance.
    pub fn kernel(&self) -> XtsKernel {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = &self.fast {
            return match f.kernel() {
                crate::secret::aes_xts::Kernel::Vaes256 => XtsKernel::Vaes256,
                crate::secret::aes_xts::Kernel::AesNi => XtsKernel::AesNi,
            };
        }
        XtsKernel::Crate
    }

    /// En- or decrypts whole sectors of `sector_size` bytes (a multiple of 64); `iv(i, out)`
    /// writes the tweak input (the IV generator's output) of sector `i` of `data`.
    pub fn process(&self, data: &mut [u8], sector_size: usize, encrypt: bool, iv: impl Fn(u64, &mut Block)) {
        debug_assert!(sector_size % 64 == 0 && data.len() % sector_size == 0);
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = &self.fast {
            if sector_size % 256 == 0 {
                f.process(data, sector_size, encrypt, |i, out| {
                    let mut b = Block::default();
                    iv(i, &mut b);
                    *out = b.0;
                });
                return;
            }
        }
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
    fn the_walk_gives_the_same_bytes_for_every_parallel_width() {
        // The crate's backends hand over 1, 8, 30 (VAES on AVX2) or 64 blocks; a width that
        // is no multiple of 4 once fell back to one block at a time. AES one block at
        // a time stands in for the backend: every width must give the bytes of width 1 (which
        // `xts_matches_a_block_at_a_time_reference` checks against xts-mode), so each block
        // goes through `par` or `one` exactly once, between its own tweaks.
        fn run(p: usize, sectors: usize, bps: usize) -> (Vec<Block>, usize) {
            let mut blocks: Vec<Block> = (0..sectors * bps).map(|i| Block::from([i as u8; 16])).collect();
            let tweaks: Vec<u128> = (0..sectors as u128).map(|i| (i + 1) * 0x0123_4567_89ab_cdef_0011_2233_4455_6677).collect();
            let mut par_calls = 0;
            let aes = BlockCipher::new(super::super::Algorithm::Aes, &[9; 16]).unwrap();
            let mark = |b: &mut Block| aes.encrypt_block(b);
            walk(&mut blocks, &tweaks, bps, p, |r| {
                assert_eq!(r.len(), p);
                par_calls += 1;
                r.iter_mut().for_each(mark)
            }, mark);
            (blocks, par_calls)
        }
        for (sectors, bps) in [(1, 32), (3, 32), (5, 256), (2, 64)] {
            let (want, _) = run(1, sectors, bps);
            for p in [8, 16, 30, 32, 64] {
                let (got, calls) = run(p, sectors, bps);
                assert!(got == want, "width {p}, {sectors} sectors of {bps} blocks");
                assert!(calls >= sectors * bps / lcm4(p) * (lcm4(p).min(MAX_CHUNK) / p), "width {p}: {calls} parallel calls");
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
