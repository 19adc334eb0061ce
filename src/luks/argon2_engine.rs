//! Argon2i/Argon2id, version 0x13 (RFC 9106), with the lanes of each slice computed at
//! once on all cores and the SIMD compression of `secret::blamka`. The argon2 crate
//! computes the same values (the tests compare them, and it still checks the parameters)
//! but its compression function needs about 1.7x the CPU time; a 1 GiB unlock is the
//! slowest step of docking a disk.
//!
//! Memory safety without `unsafe`: during slice `s`, lane `l` writes only its own segment
//! `s` and reads its own finished blocks or any lane's blocks outside segment `s` (RFC 9106,
//! 3.4.1.2), so each thread gets `&mut` to its lanes' current segments and everyone shares
//! `&` to the other segments of all lanes.

use super::kdf::Argon2Kind;
use crate::secret::blamka::{self, WORDS};
use argon2::Block;
use blake2::digest::block_api::{UpdateCore, VariableOutputCore};
use blake2::digest::block_buffer::LazyBuffer;
use blake2::Blake2bVarCore;
use zeroize::Zeroize;

const SYNC_POINTS: usize = 4;
const ADDRESSES_PER_BLOCK: usize = WORDS;
const VERSION: u32 = 0x13;

/// Costs as a LUKS2 keyslot names them; `memory_kib >= 8 * lanes` (the caller checks with
/// `argon2::Params::new`).
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub time: u32,
    pub memory_kib: u32,
    pub lanes: u32,
}

impl Cost {
    /// Blocks actually used: the memory rounded down to a multiple of 4 * lanes.
    pub fn block_count(&self) -> usize {
        let unit = SYNC_POINTS * self.lanes as usize;
        self.memory_kib as usize / unit * unit
    }
}

fn type_code(kind: Argon2Kind) -> u32 {
    match kind {
        Argon2Kind::Argon2i => 1,
        Argon2Kind::Argon2id => 2,
    }
}

fn words(b: &Block) -> &[u64; WORDS] {
    b.as_ref().try_into().expect("a block is 128 words")
}

fn words_mut(b: &mut Block) -> &mut [u64; WORDS] {
    b.as_mut().try_into().expect("a block is 128 words")
}

/// BLAKE2b with an output of `out.len()` (1..=64) bytes over the concatenated `inputs`.
fn blake2b(inputs: &[&[u8]], out: &mut [u8]) {
    let mut core = Blake2bVarCore::new(out.len()).expect("1..=64 output bytes");
    let mut buf = LazyBuffer::new(&[]);
    for input in inputs {
        buf.digest_blocks(input, |blocks| core.update_blocks(blocks));
    }
    let mut full = Default::default();
    core.finalize_variable_core(&mut buf, &mut full);
    out.copy_from_slice(&full[..out.len()]);
    full.zeroize();
}

/// H' (RFC 9106, 3.3): the variable-length hash built from BLAKE2b.
fn blake2b_long(inputs: &[&[u8]], out: &mut [u8]) {
    let len = u32::try_from(out.len()).expect("output length fits 32 bits").to_le_bytes();
    if out.len() <= 64 {
        let mut all = vec![&len[..]];
        all.extend_from_slice(inputs);
        return blake2b(&all, out);
    }
    let mut v = [0u8; 64];
    let mut all = vec![&len[..]];
    all.extend_from_slice(inputs);
    blake2b(&all, &mut v);
    out[..32].copy_from_slice(&v[..32]);
    let mut pos = 32;
    while out.len() - pos > 64 {
        let prev = v;
        blake2b(&[&prev], &mut v);
        out[pos..pos + 32].copy_from_slice(&v[..32]);
        pos += 32;
    }
    let prev = v;
    blake2b(&[&prev], &mut out[pos..]);
    v.zeroize();
}

/// Derives `out.len()` bytes into `out`, using `memory` (at least `cost.block_count()`
/// blocks, contents irrelevant) as the working area. `secret` and `ad` are Argon2's
/// optional K and X inputs (empty for LUKS; the RFC's test vectors use them).
#[allow(clippy::too_many_arguments)]
pub fn hash(
    kind: Argon2Kind,
    cost: Cost,
    pwd: &[u8],
    salt: &[u8],
    secret: &[u8],
    ad: &[u8],
    memory: &mut [Block],
    out: &mut [u8],
) {
    let lanes = cost.lanes as usize;
    let total = cost.block_count();
    let lane_len = total / lanes;
    let memory = &mut memory[..total];
    let le = |n: usize| u32::try_from(n).expect("argon2 input lengths fit 32 bits").to_le_bytes();

    let mut h0 = [0u8; 64];
    blake2b(
        &[
            &cost.lanes.to_le_bytes(),
            &le(out.len()),
            &cost.memory_kib.to_le_bytes(),
            &cost.time.to_le_bytes(),
            &VERSION.to_le_bytes(),
            &type_code(kind).to_le_bytes(),
            &le(pwd.len()),
            pwd,
            &le(salt.len()),
            salt,
            &le(secret.len()),
            secret,
            &le(ad.len()),
            ad,
        ],
        &mut h0,
    );
    let mut bytes = [0u8; 1024];
    for (l, lane) in memory.chunks_exact_mut(lane_len).enumerate() {
        for (i, block) in lane[..2].iter_mut().enumerate() {
            blake2b_long(&[&h0, &le(i), &le(l)], &mut bytes);
            for (w, b) in words_mut(block).iter_mut().zip(bytes.chunks_exact(8)) {
                *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            }
        }
    }
    h0.zeroize();

    let ctx = Ctx { kind, lanes, lane_len, seg_len: lane_len / SYNC_POINTS, total, passes: cost.time as usize };
    // Small costs (fuzzing, tests) are not worth a thread start per slice.
    let threads = if total < 4096 { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()).min(lanes) };
    for pass in 0..ctx.passes {
        for slice in 0..SYNC_POINTS {
            ctx.fill_slice(memory, pass, slice, threads);
        }
    }

    let mut last = memory[lane_len - 1];
    for l in 1..lanes {
        last ^= &memory[l * lane_len + lane_len - 1];
    }
    for (b, w) in bytes.chunks_exact_mut(8).zip(words(&last)) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    blake2b_long(&[&bytes], out);
    bytes.zeroize();
    words_mut(&mut last).zeroize();
}

struct Ctx {
    kind: Argon2Kind,
    lanes: usize,
    lane_len: usize,
    seg_len: usize,
    total: usize,
    passes: usize,
}

/// What a lane may read during one slice: every lane's segments before and after it.
#[derive(Clone, Copy)]
struct Others<'a> {
    before: &'a [Block],
    after: &'a [Block],
}

impl Ctx {
    fn fill_slice(&self, memory: &mut [Block], pass: usize, slice: usize, threads: usize) {
        let start = slice * self.seg_len;
        let mut others = Vec::with_capacity(self.lanes);
        let mut current = Vec::with_capacity(self.lanes);
        for lane in memory.chunks_exact_mut(self.lane_len) {
            let (before, rest) = lane.split_at_mut(start);
            let (cur, after) = rest.split_at_mut(self.seg_len);
            others.push(Others { before, after });
            current.push(cur);
        }
        let others = &others[..];
        if threads <= 1 {
            for (lane, cur) in current.into_iter().enumerate() {
                self.fill_segment(pass, slice, lane, cur, others);
            }
            return;
        }
        // Lane l goes to thread l % threads; this thread takes share 0.
        let mut shares: Vec<Vec<(usize, &mut [Block])>> = (0..threads).map(|_| Vec::new()).collect();
        for (lane, cur) in current.into_iter().enumerate() {
            shares[lane % threads].push((lane, cur));
        }
        std::thread::scope(|s| {
            let mut shares = shares.into_iter();
            let mine = shares.next().expect("threads >= 1");
            for share in shares {
                s.spawn(move || {
                    for (lane, cur) in share {
                        self.fill_segment(pass, slice, lane, cur, others);
                    }
                });
            }
            for (lane, cur) in mine {
                self.fill_segment(pass, slice, lane, cur, others);
            }
        });
    }

    /// Computes segment `slice` of `lane` into `cur` (RFC 9106, 3.2 and 3.4).
    fn fill_segment(&self, pass: usize, slice: usize, lane: usize, cur: &mut [Block], others: &[Others<'_>]) {
        let seg_start = slice * self.seg_len;
        let seg_end = seg_start + self.seg_len;
        let independent = matches!(self.kind, Argon2Kind::Argon2i) || (pass == 0 && slice < SYNC_POINTS / 2);
        let zero = [0u64; WORDS];
        let mut input = [0u64; WORDS];
        let mut addresses = [0u64; WORDS];
        let next_addresses = |input: &mut [u64; WORDS], addresses: &mut [u64; WORDS]| {
            input[6] += 1;
            let mut tmp = [0u64; WORDS];
            blamka::compress(&zero, input, &mut tmp, false);
            blamka::compress(&zero, &tmp, addresses, false);
        };
        if independent {
            let kind = u64::from(type_code(self.kind));
            input[..6].copy_from_slice(&[pass as u64, lane as u64, slice as u64, self.total as u64, self.passes as u64, kind]);
        }
        let first = if pass == 0 && slice == 0 { 2 } else { 0 };
        if independent && first != 0 {
            next_addresses(&mut input, &mut addresses);
        }
        for i in first..self.seg_len {
            let (done, rest) = cur.split_at_mut(i);
            // Block `idx` of lane `l` as readable now: this lane's finished blocks of the
            // current segment, or anything outside the segment.
            let get = |l: usize, idx: usize| -> &Block {
                if idx < seg_start {
                    &others[l].before[idx]
                } else if idx >= seg_end {
                    &others[l].after[idx - seg_end]
                } else {
                    assert_eq!(l, lane, "argon2 never reads another lane's current segment");
                    &done[idx - seg_start]
                }
            };
            let index = seg_start + i;
            let prev = if index == 0 { self.lane_len - 1 } else { index - 1 };
            let rand = if independent {
                if i % ADDRESSES_PER_BLOCK == 0 {
                    next_addresses(&mut input, &mut addresses);
                }
                addresses[i % ADDRESSES_PER_BLOCK]
            } else {
                words(get(lane, prev))[0]
            };
            let ref_lane = if pass == 0 && slice == 0 { lane } else { (rand >> 32) as usize % self.lanes };
            let same = ref_lane == lane;
            let area = match (pass, same) {
                (0, _) if slice == 0 => i - 1,
                (0, true) => seg_start + i - 1,
                (0, false) => seg_start - usize::from(i == 0),
                (_, true) => self.lane_len - self.seg_len + i - 1,
                (_, false) => self.lane_len - self.seg_len - usize::from(i == 0),
            };
            let x = rand & 0xffff_ffff;
            let x = (x * x) >> 32;
            let relative = area - 1 - ((area as u64 * x) >> 32) as usize;
            let origin = if pass != 0 && slice != SYNC_POINTS - 1 { seg_end } else { 0 };
            let ref_index = (origin + relative) % self.lane_len;
            let (p, r) = (words(get(lane, prev)), words(get(ref_lane, ref_index)));
            blamka::compress(p, r, words_mut(&mut rest[0]), pass != 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(kind: Argon2Kind, cost: Cost, pwd: &[u8], salt: &[u8], secret: &[u8], ad: &[u8], len: usize) -> Vec<u8> {
        let mut mem = vec![Block::new(); cost.block_count()];
        let mut out = vec![0u8; len];
        hash(kind, cost, pwd, salt, secret, ad, &mut mem, &mut out);
        out
    }

    #[test]
    fn rfc9106_test_vectors() {
        // RFC 9106, 5.2 and 5.3 (Argon2i and Argon2id, version 0x13).
        let cost = Cost { time: 3, memory_kib: 32, lanes: 4 };
        let tag = |kind| ours(kind, cost, &[1; 32], &[2; 16], &[3; 8], &[4; 12], 32);
        let hex = |v: Vec<u8>| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(tag(Argon2Kind::Argon2i)), "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8");
        assert_eq!(hex(tag(Argon2Kind::Argon2id)), "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659");
    }

    #[test]
    fn matches_the_argon2_crate() {
        // Lane counts above and below the core count, memory not a multiple of 4 * lanes,
        // more than 128 blocks per segment (several address blocks), tags up to 100 bytes.
        for (kind, algo) in
            [(Argon2Kind::Argon2i, argon2::Algorithm::Argon2i), (Argon2Kind::Argon2id, argon2::Algorithm::Argon2id)]
        {
            for (lanes, memory_kib, time, len) in [(1, 8, 1, 32), (1, 2100, 2, 64), (2, 100, 3, 16), (3, 1030, 1, 100), (4, 4096, 2, 64), (5, 333, 4, 33)] {
                let cost = Cost { time, memory_kib, lanes };
                let got = ours(kind, cost, b"correct horse", &[0x5a; 32], &[], &[], len);
                let params = argon2::Params::new(memory_kib, time, lanes, Some(len)).unwrap();
                assert_eq!(params.block_count(), cost.block_count());
                let mut want = vec![0u8; len];
                argon2::Argon2::new(algo, argon2::Version::V0x13, params)
                    .hash_password_into(b"correct horse", &[0x5a; 32], &mut want)
                    .unwrap();
                assert_eq!(got, want, "{kind:?} lanes={lanes} m={memory_kib} t={time} len={len}");
            }
        }
    }
}
