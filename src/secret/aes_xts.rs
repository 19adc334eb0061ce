//! AES-XTS kernels for x86-64 CPUs without AVX-512: VAES on 256-bit vectors (sixteen
//! blocks in flight) or AES-NI (eight), for AES-128 and AES-256 (XTS keys of 256 and 512
//! bits) over whole sectors of a multiple of 256 bytes.
//!
//! Why they exist beside the `aes` crate: there, the parallel blocks of the AES-NI and
//! AVX2 VAES backends (8 and 30 blocks) need more vector registers than SSE/AVX2 have; the
//! round keys spill and LLVM's schedule leaves the AES units half idle (measured on one
//! machine: 0.53x and 0.72x of OpenSSL's XTS). Here each round key is loaded once per
//! round for all the blocks in flight, and the tweak is folded into the first and last
//! round keys: x ^ (t ^ k0) going in, aesenclast(x, k_last ^ t) coming out. With AVX-512
//! the crate's VAES backend (64 blocks in 32 registers) is faster still and is used.
//!
//! Round keys are the volume key in another form: they live in a zeroize-on-drop type.
//! It lives in `secret` because calling a `target_feature` function and loading vectors
//! needs `unsafe`, which only this module (and dm's ioctls) may use.

use core::arch::x86_64::*;

/// Expanded encryption and decryption round keys of one AES key (AES-128 or AES-256).
struct RoundKeys {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    /// 10 or 14.
    rounds: usize,
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.enc.zeroize();
        self.dec.zeroize();
    }
}

/// Which kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// VAES on 256-bit vectors (two blocks per instruction), sixteen blocks in flight.
    Vaes256,
    /// AES-NI on 128-bit vectors (VEX-encoded), eight blocks in flight.
    AesNi,
}

impl Kernel {
    /// The best kernel this CPU can run, if any.
    pub fn detect() -> Option<Kernel> {
        let aes_avx = std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("avx");
        if aes_avx && std::is_x86_feature_detected!("vaes") && std::is_x86_feature_detected!("avx2") {
            Some(Kernel::Vaes256)
        } else if aes_avx {
            Some(Kernel::AesNi)
        } else {
            None
        }
    }

    /// Can this CPU run this kernel?
    pub fn runs_here(self) -> bool {
        // A CPU with VAES runs both; one with AES-NI and AVX only the second.
        matches!((Kernel::detect(), self), (Some(Kernel::Vaes256), _) | (Some(Kernel::AesNi), Kernel::AesNi))
    }
}

/// XTS keys: data and tweak.
pub struct XtsKeys {
    data: RoundKeys,
    tweak: RoundKeys,
    kernel: Kernel,
}

impl XtsKeys {
    /// Both XTS halves (32 or 64 bytes) when this CPU has AES-NI; `None` otherwise or for
    /// other key lengths (AES-192 is left to the `aes` crate).
    pub fn new(key: &[u8]) -> Option<XtsKeys> {
        XtsKeys::with_kernel(key, Kernel::detect()?)
    }

    /// As `new`, with a given kernel (`None` where this CPU cannot run it): for tests and
    /// benchmarks of each kernel on one machine.
    pub fn with_kernel(key: &[u8], kernel: Kernel) -> Option<XtsKeys> {
        if !kernel.runs_here() || !matches!(key.len(), 32 | 64) {
            return None;
        }
        let (k1, k2) = key.split_at(key.len() / 2);
        // SAFETY: every kernel this CPU runs needs AES-NI and AVX, the features of `expand`.
        Some(unsafe { XtsKeys { data: expand(k1), tweak: expand(k2), kernel } })
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// En- or decrypts whole sectors of `sector_size` bytes (a multiple of 128) in place;
    /// `iv(i)` is the tweak input (the IV generator's output) of sector `i` of `data`.
    pub fn process(&self, data: &mut [u8], sector_size: usize, encrypt: bool, iv: impl Fn(u64, &mut [u8; 16])) {
        assert!(sector_size % 256 == 0 && data.len() % sector_size == 0, "whole sectors of whole 16-block groups");
        for (i, sector) in data.chunks_exact_mut(sector_size).enumerate() {
            let mut t = [0u8; 16];
            iv(i as u64, &mut t);
            // SAFETY: `XtsKeys` holds a kernel only where `runs_here` said the CPU has its
            // features (checked in `with_kernel`).
            unsafe {
                match (self.kernel, encrypt) {
                    (Kernel::AesNi, true) => sector_enc(&self.data, &self.tweak, sector, &t),
                    (Kernel::AesNi, false) => sector_dec(&self.data, &self.tweak, sector, &t),
                    (Kernel::Vaes256, true) => sector_enc256(&self.data, &self.tweak, sector, &t),
                    (Kernel::Vaes256, false) => sector_dec256(&self.data, &self.tweak, sector, &t),
                }
            }
        }
    }
}

#[inline(always)]
fn ld(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline(always)]
fn st(b: &mut [u8; 16], v: __m128i) {
    // SAFETY: `b` is 16 writable bytes; storeu has no alignment requirement.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

/// One step of the AES key schedule: `prev` with its words folded left, XORed with the
/// assist word `t` (already broadcast).
#[inline]
#[target_feature(enable = "aes,avx")]
fn fold(prev: __m128i, t: __m128i) -> __m128i {
    let mut k = prev;
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, t)
}

/// FIPS-197 key expansion with AESKEYGENASSIST, and the decryption keys (AESIMC of the
/// middle ones, in reverse order) for the equivalent inverse cipher.
#[target_feature(enable = "aes,avx")]
fn expand(key: &[u8]) -> RoundKeys {
    let mut rk = [_mm_setzero_si128(); 15];
    let rounds;
    macro_rules! assist {
        ($k:expr, $rcon:literal, $sh:literal) => {
            _mm_shuffle_epi32::<$sh>(_mm_aeskeygenassist_si128::<$rcon>($k))
        };
    }
    if key.len() == 16 {
        rounds = 10;
        rk[0] = ld(key.try_into().expect("16 bytes"));
        macro_rules! step {
            ($i:literal, $rcon:literal) => {
                rk[$i] = fold(rk[$i - 1], assist!(rk[$i - 1], $rcon, 0xff));
            };
        }
        step!(1, 0x01);
        step!(2, 0x02);
        step!(3, 0x04);
        step!(4, 0x08);
        step!(5, 0x10);
        step!(6, 0x20);
        step!(7, 0x40);
        step!(8, 0x80);
        step!(9, 0x1b);
        step!(10, 0x36);
    } else {
        rounds = 14;
        rk[0] = ld(key[..16].try_into().expect("16 bytes"));
        rk[1] = ld(key[16..32].try_into().expect("16 bytes"));
        // Even keys take RotWord+SubWord+Rcon of the previous key's last word, odd keys
        // SubWord alone.
        macro_rules! pair {
            ($i:literal, $rcon:literal) => {
                rk[$i] = fold(rk[$i - 2], assist!(rk[$i - 1], $rcon, 0xff));
                rk[$i + 1] = fold(rk[$i - 1], assist!(rk[$i], 0x00, 0xaa));
            };
        }
        pair!(2, 0x01);
        pair!(4, 0x02);
        pair!(6, 0x04);
        pair!(8, 0x08);
        pair!(10, 0x10);
        pair!(12, 0x20);
        rk[14] = fold(rk[12], assist!(rk[13], 0x40, 0xff));
    }
    let mut out = RoundKeys { enc: [[0; 16]; 15], dec: [[0; 16]; 15], rounds };
    for i in 0..=rounds {
        st(&mut out.enc[i], rk[i]);
        let d = if i == 0 || i == rounds { rk[rounds - i] } else { _mm_aesimc_si128(rk[rounds - i]) };
        st(&mut out.dec[i], d);
    }
    for k in rk.iter_mut() {
        *k = _mm_setzero_si128();
    }
    out
}

/// Multiplies a tweak by α in GF(2^128): each 64-bit half doubles, the bit leaving the low
/// half enters the high one, and the bit leaving the top comes back as 0x87.
#[inline]
#[target_feature(enable = "avx")]
fn mul_alpha(t: __m128i) -> __m128i {
    // Words 1 and 3 hold bits 63 and 127; their signs, moved to words 2 and 0.
    let carries = _mm_shuffle_epi32::<0x13>(_mm_srai_epi32::<31>(t));
    _mm_xor_si128(_mm_add_epi64(t, t), _mm_and_si128(carries, _mm_set_epi32(0, 1, 0, 0x87)))
}

/// Encrypts the first tweak of a sector with the tweak key.
#[inline]
#[target_feature(enable = "aes,avx")]
fn first_tweak(tk: &RoundKeys, iv: &[u8; 16]) -> __m128i {
    let mut t = _mm_xor_si128(ld(iv), ld(&tk.enc[0]));
    for k in &tk.enc[1..tk.rounds] {
        t = _mm_aesenc_si128(t, ld(k));
    }
    _mm_aesenclast_si128(t, ld(&tk.enc[tk.rounds]))
}

macro_rules! sector_kernel {
    ($name:ident, $keys:ident, $round:ident, $last:ident) => {
        /// One sector, eight blocks at a time.
        #[target_feature(enable = "aes,avx")]
        fn $name(dk: &RoundKeys, tk: &RoundKeys, sector: &mut [u8], iv: &[u8; 16]) {
            let keys = &dk.$keys;
            let rounds = dk.rounds;
            let k0 = ld(&keys[0]);
            let klast = ld(&keys[rounds]);
            // One chain of doublings: with eight blocks a group, the AES rounds hide it.
            let mut t = first_tweak(tk, iv);
            for group in sector.chunks_exact_mut(128) {
                let group: &mut [[u8; 16]] = group.as_chunks_mut::<16>().0;
                let mut tw = [_mm_setzero_si128(); 8];
                let mut b = [_mm_setzero_si128(); 8];
                for i in 0..8 {
                    tw[i] = t;
                    t = mul_alpha(t);
                    b[i] = _mm_xor_si128(ld(&group[i]), _mm_xor_si128(tw[i], k0));
                }
                for k in &keys[1..rounds] {
                    let k = ld(k);
                    for x in b.iter_mut() {
                        *x = $round(*x, k);
                    }
                }
                for i in 0..8 {
                    st(&mut group[i], $last(b[i], _mm_xor_si128(klast, tw[i])));
                }
            }
        }
    };
}

sector_kernel!(sector_enc, enc, _mm_aesenc_si128, _mm_aesenclast_si128);
sector_kernel!(sector_dec, dec, _mm_aesdec_si128, _mm_aesdeclast_si128);

#[inline(always)]
fn ld2(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: `b` has 32 readable bytes (asserted); loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline(always)]
fn st2(b: &mut [u8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: `b` has 32 writable bytes (asserted); storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// Multiplies both 128-bit lanes by α^16: shifted left 16 bits, the 16 bits c leaving the
/// top come back as c ⊗ 0x87 = c ^ c<<1 ^ c<<2 ^ c<<7. Each group's tweaks come from the
/// previous group's in one step, so no long chain of doublings holds the AES units up.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_alpha16_x2(t: __m256i) -> __m256i {
    let low_half = _mm256_set_epi64x(0, -1, 0, -1);
    let shifted = _mm256_slli_epi64::<16>(t);
    // The 16 top bits of each half, swapped: [hi >> 48, lo >> 48].
    let tops = _mm256_shuffle_epi32::<0x4e>(_mm256_srli_epi64::<48>(t));
    let c = _mm256_and_si256(tops, low_half);
    let into_hi = _mm256_andnot_si256(low_half, tops);
    let red = _mm256_xor_si256(
        _mm256_xor_si256(c, _mm256_slli_epi64::<1>(c)),
        _mm256_xor_si256(_mm256_slli_epi64::<2>(c), _mm256_slli_epi64::<7>(c)),
    );
    _mm256_xor_si256(_mm256_xor_si256(shifted, into_hi), red)
}

macro_rules! sector_kernel256 {
    ($name:ident, $keys:ident, $round:ident, $last:ident) => {
        /// One sector, sixteen blocks (eight vectors of two) at a time.
        #[target_feature(enable = "aes,avx2,vaes")]
        fn $name(dk: &RoundKeys, tk: &RoundKeys, sector: &mut [u8], iv: &[u8; 16]) {
            let keys = &dk.$keys;
            let rounds = dk.rounds;
            let k0 = _mm256_broadcastsi128_si256(ld(&keys[0]));
            let klast = _mm256_broadcastsi128_si256(ld(&keys[rounds]));
            // The first group's tweaks: t, tα, ..., tα^15, two to a vector.
            let mut tw = [_mm256_setzero_si256(); 8];
            let mut t = first_tweak(tk, iv);
            for v in tw.iter_mut() {
                let next = mul_alpha(t);
                *v = _mm256_set_m128i(next, t);
                t = mul_alpha(next);
            }
            for group in sector.chunks_exact_mut(256) {
                let mut b = [_mm256_setzero_si256(); 8];
                for i in 0..8 {
                    b[i] = _mm256_xor_si256(ld2(&group[32 * i..]), _mm256_xor_si256(tw[i], k0));
                }
                for k in &keys[1..rounds] {
                    let k = _mm256_broadcastsi128_si256(ld(k));
                    for x in b.iter_mut() {
                        *x = $round(*x, k);
                    }
                }
                for i in 0..8 {
                    st2(&mut group[32 * i..], $last(b[i], _mm256_xor_si256(klast, tw[i])));
                    tw[i] = mul_alpha16_x2(tw[i]);
                }
            }
        }
    };
}

sector_kernel256!(sector_enc256, enc, _mm256_aesenc_epi128, _mm256_aesenclast_epi128);
sector_kernel256!(sector_dec256, dec, _mm256_aesdec_epi128, _mm256_aesdeclast_epi128);
