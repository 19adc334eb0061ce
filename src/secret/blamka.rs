//! Argon2's compression function G (RFC 9106, section 3.5) over 1 KiB blocks of 128 words,
//! chosen at run time: AVX-512 (two 4x4 rounds per instruction, native 64-bit rotates),
//! AVX2 (four words per vector, the rows as 4x4 matrices, the columns gathered two at a
//! time from 128-bit halves) or portable. Argon2 spends nearly all of its CPU time here;
//! the AVX-512 version takes about 40% less than the argon2 crate's auto-vectorised loop.
//! It lives in `secret` because calling a `target_feature` function and loading vectors
//! needs `unsafe`, which only this module (and dm's ioctls) may use.

/// Words per block.
pub const WORDS: usize = 128;

/// `out = G(x, y)`, or with `xor_into`, `out ^= G(x, y)` (the later passes of version 0x13).
pub fn compress(x: &[u64; WORDS], y: &[u64; WORDS], out: &mut [u64; WORDS], xor_into: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above), the only requirement of
        // `avx512::compress` beyond its (safe) signature.
        unsafe { avx512::compress(x, y, out, xor_into) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of
        // `avx2::compress` beyond its (safe) signature.
        unsafe { avx2::compress(x, y, out, xor_into) };
        return;
    }
    portable(x, y, out, xor_into);
}

/// The reference formulation, for CPUs without AVX2 and as the test oracle.
pub fn portable(x: &[u64; WORDS], y: &[u64; WORDS], out: &mut [u64; WORDS], xor_into: bool) {
    let mut r = [0u64; WORDS];
    for (r, (a, b)) in r.iter_mut().zip(x.iter().zip(y)) {
        *r = a ^ b;
    }
    let mut q = r;
    for row in 0..8 {
        let i: [usize; 16] = std::array::from_fn(|k| 16 * row + k);
        permutation(&mut q, &i);
    }
    for col in 0..8 {
        // Column `col` is word pair `2*col, 2*col + 1` of each of the eight rows.
        let i: [usize; 16] = std::array::from_fn(|k| 2 * col + (k % 2) + 16 * (k / 2));
        permutation(&mut q, &i);
    }
    for (o, (q, r)) in out.iter_mut().zip(q.iter().zip(&r)) {
        *o = if xor_into { *o ^ q ^ r } else { q ^ r };
    }
}

/// BLAKE2b's multiplication-hardened addition: a + b + 2 * lo32(a) * lo32(b).
#[inline(always)]
fn blamka(a: u64, b: u64) -> u64 {
    a.wrapping_add(b).wrapping_add(((a & 0xffff_ffff) * (b & 0xffff_ffff)).wrapping_mul(2))
}

#[inline(always)]
fn quarter(v: &mut [u64; WORDS], a: usize, b: usize, c: usize, d: usize) {
    v[a] = blamka(v[a], v[b]);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = blamka(v[c], v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = blamka(v[a], v[b]);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = blamka(v[c], v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

/// The permutation P on the 16 words `v[i[0]], ..., v[i[15]]` as a 4x4 matrix: columns,
/// then diagonals.
#[inline(always)]
fn permutation(v: &mut [u64; WORDS], i: &[usize; 16]) {
    quarter(v, i[0], i[4], i[8], i[12]);
    quarter(v, i[1], i[5], i[9], i[13]);
    quarter(v, i[2], i[6], i[10], i[14]);
    quarter(v, i[3], i[7], i[11], i[15]);
    quarter(v, i[0], i[5], i[10], i[15]);
    quarter(v, i[1], i[6], i[11], i[12]);
    quarter(v, i[2], i[7], i[8], i[13]);
    quarter(v, i[3], i[4], i[9], i[14]);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::WORDS;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    #[inline]
    fn blamka(a: __m256i, b: __m256i) -> __m256i {
        let m = _mm256_mul_epu32(a, b);
        _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(m, m))
    }

    /// G's quarter round on four columns at once, then on the four diagonals.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn round(mut a: __m256i, mut b: __m256i, mut c: __m256i, mut d: __m256i) -> [__m256i; 4] {
        {
            let r24 = _mm256_setr_epi8(
                3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10,
            );
            let r16 = _mm256_setr_epi8(
                2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9,
            );
            macro_rules! quarter {
                () => {
                    a = blamka(a, b);
                    d = _mm256_shuffle_epi32::<0b10_11_00_01>(_mm256_xor_si256(d, a)); // rotr 32
                    c = blamka(c, d);
                    b = _mm256_shuffle_epi8(_mm256_xor_si256(b, c), r24);
                    a = blamka(a, b);
                    d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), r16);
                    c = blamka(c, d);
                    let t = _mm256_xor_si256(b, c); // rotr 63 = rotl 1
                    b = _mm256_xor_si256(_mm256_srli_epi64::<63>(t), _mm256_add_epi64(t, t));
                };
            }
            quarter!();
            // Diagonals: row k rotated left by k words.
            b = _mm256_permute4x64_epi64::<0b00_11_10_01>(b);
            c = _mm256_permute4x64_epi64::<0b01_00_11_10>(c);
            d = _mm256_permute4x64_epi64::<0b10_01_00_11>(d);
            quarter!();
            b = _mm256_permute4x64_epi64::<0b10_01_00_11>(b);
            c = _mm256_permute4x64_epi64::<0b01_00_11_10>(c);
            d = _mm256_permute4x64_epi64::<0b00_11_10_01>(d);
        }
        [a, b, c, d]
    }

    /// Words `4k..4k+4` of `b` (`k < 32`).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(b: &[u64; WORDS], k: usize) -> __m256i {
        assert!(k < WORDS / 4);
        // SAFETY: k < 32, so the 32 bytes at word 4k lie inside the 128-word array.
        unsafe { _mm256_loadu_si256(b.as_ptr().add(4 * k).cast()) }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn compress(x: &[u64; WORDS], y: &[u64; WORDS], out: &mut [u64; WORDS], xor_into: bool) {
        // Vector k holds words 4k..4k+4; row r (words 16r..16r+16) is vectors 4r..4r+4.
        let mut r = [_mm256_setzero_si256(); WORDS / 4];
        for (k, r) in r.iter_mut().enumerate() {
            *r = _mm256_xor_si256(load(x, k), load(y, k));
        }
        let mut q = r;
        for row in q.chunks_exact_mut(4) {
            let [a, b, c, d] = round(row[0], row[1], row[2], row[3]);
            row.copy_from_slice(&[a, b, c, d]);
        }
        // Columns 2j and 2j+1 are the low and high halves of vector j of every row.
        for j in 0..4 {
            let v = |row: usize| q[4 * row + j];
            let lo = round(
                _mm256_permute2x128_si256::<0x20>(v(0), v(1)),
                _mm256_permute2x128_si256::<0x20>(v(2), v(3)),
                _mm256_permute2x128_si256::<0x20>(v(4), v(5)),
                _mm256_permute2x128_si256::<0x20>(v(6), v(7)),
            );
            let hi = round(
                _mm256_permute2x128_si256::<0x31>(v(0), v(1)),
                _mm256_permute2x128_si256::<0x31>(v(2), v(3)),
                _mm256_permute2x128_si256::<0x31>(v(4), v(5)),
                _mm256_permute2x128_si256::<0x31>(v(6), v(7)),
            );
            for (pair, (l, h)) in lo.iter().zip(&hi).enumerate() {
                q[4 * (2 * pair) + j] = _mm256_permute2x128_si256::<0x20>(*l, *h);
                q[4 * (2 * pair + 1) + j] = _mm256_permute2x128_si256::<0x31>(*l, *h);
            }
        }
        for k in 0..WORDS / 4 {
            let mut z = _mm256_xor_si256(q[k], r[k]);
            if xor_into {
                z = _mm256_xor_si256(z, load(out, k));
            }
            // SAFETY: k < 32, so the 32 bytes at word 4k lie inside the 128-word array,
            // which `&mut` makes ours.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(4 * k).cast(), z) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::WORDS;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn blamka(a: __m512i, b: __m512i) -> __m512i {
        let m = _mm512_mul_epu32(a, b);
        _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(m, m))
    }

    /// Two independent 4x4 rounds at once, one per 256-bit half (the same as
    /// `avx2::round` on each half).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn round(mut a: __m512i, mut b: __m512i, mut c: __m512i, mut d: __m512i) -> [__m512i; 4] {
        macro_rules! quarter {
            () => {
                a = blamka(a, b);
                d = _mm512_ror_epi64::<32>(_mm512_xor_si512(d, a));
                c = blamka(c, d);
                b = _mm512_ror_epi64::<24>(_mm512_xor_si512(b, c));
                a = blamka(a, b);
                d = _mm512_ror_epi64::<16>(_mm512_xor_si512(d, a));
                c = blamka(c, d);
                b = _mm512_ror_epi64::<63>(_mm512_xor_si512(b, c));
            };
        }
        quarter!();
        b = _mm512_permutex_epi64::<0b00_11_10_01>(b);
        c = _mm512_permutex_epi64::<0b01_00_11_10>(c);
        d = _mm512_permutex_epi64::<0b10_01_00_11>(d);
        quarter!();
        b = _mm512_permutex_epi64::<0b10_01_00_11>(b);
        c = _mm512_permutex_epi64::<0b01_00_11_10>(c);
        d = _mm512_permutex_epi64::<0b00_11_10_01>(d);
        [a, b, c, d]
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn join(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn split(z: __m512i) -> (__m256i, __m256i) {
        (_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z))
    }

    /// Words `8k..8k+8` of `b` (`k < 16`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load(b: &[u64; WORDS], k: usize) -> __m512i {
        assert!(k < WORDS / 8);
        // SAFETY: k < 16, so the 64 bytes at word 8k lie inside the 128-word array.
        unsafe { _mm512_loadu_si512(b.as_ptr().add(8 * k).cast()) }
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn compress(x: &[u64; WORDS], y: &[u64; WORDS], out: &mut [u64; WORDS], xor_into: bool) {
        // The same layout as the AVX2 version (32 vectors of four words), processed two
        // rounds at a time.
        let mut r = [_mm512_setzero_si512(); WORDS / 8];
        for (k, r) in r.iter_mut().enumerate() {
            *r = _mm512_xor_si512(load(x, k), load(y, k));
        }
        let mut q = [_mm256_setzero_si256(); WORDS / 4];
        for (k, r) in r.iter().enumerate() {
            (q[2 * k], q[2 * k + 1]) = split(*r);
        }
        // Rows r and r+1 side by side.
        for row in (0..8).step_by(2) {
            let [a, b, c, d] = round(
                join(q[4 * row], q[4 * row + 4]),
                join(q[4 * row + 1], q[4 * row + 5]),
                join(q[4 * row + 2], q[4 * row + 6]),
                join(q[4 * row + 3], q[4 * row + 7]),
            );
            for (i, z) in [a, b, c, d].into_iter().enumerate() {
                (q[4 * row + i], q[4 * row + 4 + i]) = split(z);
            }
        }
        // Columns 2j and 2j+1 side by side: [row 2p, row 2p+1] pairs of vector j, reordered
        // from (2p: 2j, 2j+1, 2p+1: 2j, 2j+1) to (2p: 2j, 2p+1: 2j, 2p: 2j+1, 2p+1: 2j+1).
        for j in 0..4 {
            let gather = |p: usize| _mm512_shuffle_i64x2::<0b11_01_10_00>(join(q[8 * p + j], q[8 * p + 4 + j]), join(q[8 * p + j], q[8 * p + 4 + j]));
            let [a, b, c, d] = round(gather(0), gather(1), gather(2), gather(3));
            for (p, z) in [a, b, c, d].into_iter().enumerate() {
                (q[8 * p + j], q[8 * p + 4 + j]) = split(_mm512_shuffle_i64x2::<0b11_01_10_00>(z, z));
            }
        }
        for k in 0..WORDS / 8 {
            let mut z = _mm512_xor_si512(join(q[2 * k], q[2 * k + 1]), r[k]);
            if xor_into {
                z = _mm512_xor_si512(z, load(out, k));
            }
            // SAFETY: k < 16, so the 64 bytes at word 8k lie inside the 128-word array,
            // which `&mut` makes ours.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(8 * k).cast(), z) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(seed: u64) -> [u64; WORDS] {
        let mut s = seed;
        std::array::from_fn(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        })
    }

    /// Every SIMD version this CPU can run, and the dispatched one, against the portable one.
    #[test]
    fn simd_compressions_match_the_portable_one() {
        type Compress = fn(&[u64; WORDS], &[u64; WORDS], &mut [u64; WORDS], bool);
        let mut variants: Vec<(&str, Compress)> = vec![("dispatched", compress)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present (checked above).
                variants.push(("avx2", |x, y, o, m| unsafe { avx2::compress(x, y, o, m) }));
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is present (checked above).
                variants.push(("avx512", |x, y, o, m| unsafe { avx512::compress(x, y, o, m) }));
            }
        }
        for (name, f) in variants {
            for seed in 1..40u64 {
                let (x, y, start) = (words(seed), words(seed * 7919), words(seed * 104_729));
                for xor_into in [false, true] {
                    let (mut a, mut b) = (start, start);
                    f(&x, &y, &mut a, xor_into);
                    portable(&x, &y, &mut b, xor_into);
                    assert_eq!(a, b, "{name} seed {seed} xor {xor_into}");
                }
            }
        }
    }
}
