//! A stable-toolchain stand-in for the cargo-fuzz target (fuzz/fuzz_targets/luks_header.rs):
//! thousands of deterministic mutations of real headers — byte flips, with the checksum
//! recomputed half of the time so the JSON validator sees them — must never panic.

use sha2::{Digest, Sha256};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fix_csum(img: &mut [u8], off: usize, hdr: usize) {
    if img.len() < off + hdr {
        return;
    }
    let mut bin = img[off..off + 4096].to_vec();
    bin[448..512].fill(0);
    let mut h = Sha256::new();
    h.update(&bin);
    h.update(&img[off + 4096..off + hdr]);
    let d = h.finalize();
    img[off + 448..off + 512].fill(0);
    img[off + 448..off + 480].copy_from_slice(&d);
}

#[test]
fn mutated_headers_never_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/luks/");
    let seeds: Vec<Vec<u8>> = ["luks2-pbkdf2-sha256.img", "luks2-argon2id-xts512.img", "luks2-converted.img", "luks1-xts-sha256.img"]
        .iter()
        .map(|f| std::fs::read(format!("{dir}{f}")).unwrap()[..64 << 10].to_vec())
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..4000 {
        let mut img = seeds[round % seeds.len()].clone();
        let json_heavy = rng.below(2) == 0;
        for _ in 0..1 + rng.below(8) {
            // Mostly the binary header and the start of the JSON text.
            let span = if json_heavy { 4096 + 2048 } else { 1024 };
            let pos = rng.below(span) + if rng.below(2) == 0 { 0 } else { 16 << 10 };
            let value = match rng.below(4) {
                0 => 0,
                1 => b"{}[]\",:0123456789-"[rng.below(18)],
                _ => rng.next() as u8,
            };
            img[pos] = value;
        }
        if rng.below(2) == 0 {
            fix_csum(&mut img, 0, 16 << 10);
            fix_csum(&mut img, 16 << 10, 16 << 10);
        }
        if rng.below(8) == 0 {
            img.truncate(rng.below(img.len()));
        }
        offdisk::luks::exercise_parser(&img);
        offdisk::luks::exercise_parser_resealed(&img);
    }
}

/// The stable stand-in for the `luks_unlock` target: every cipher/hash volume, then
/// mutations of keyslot material, salts and key sizes, are unlocked (with capped costs)
/// without a panic.
#[test]
fn mutated_keyslots_never_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/luks-ciphers/");
    let mut seeds = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "xz") {
            let mut out = Vec::new();
            lzma_rs::xz_decompress(&mut &std::fs::read(&p).unwrap()[..], &mut out).unwrap();
            offdisk::luks::exercise_unlock(&out);
            seeds.push(out);
        }
    }
    assert_eq!(seeds.len(), 36);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..60 {
        let mut img = seeds[rng.below(seeds.len())].clone();
        let luks2 = u16::from_be_bytes([img[6], img[7]]) == 2;
        for _ in 0..1 + rng.below(4) {
            // The LUKS1 binary header (key size, offsets, salts, stripes) or keyslot material.
            let pos = if rng.below(2) == 0 && !luks2 { rng.below(592) } else { rng.below(img.len()) };
            img[pos] = rng.next() as u8;
        }
        if luks2 && rng.below(2) == 0 {
            fix_csum(&mut img, 0, 16 << 10);
            fix_csum(&mut img, 16 << 10, 16 << 10);
        }
        offdisk::luks::exercise_unlock(&img);
    }
}
