use super::*;
use aes::cipher::KeyInit;

fn pseudo(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const SPECS: [(&str, usize); 14] = [
    ("aes-xts-plain64", 64),
    ("aes-xts-plain64", 32),
    ("aes-xts-plain64", 48),
    ("serpent-xts-plain64", 64),
    ("twofish-xts-plain64", 32),
    ("aes-cbc-essiv:sha256", 32),
    ("serpent-cbc-essiv:sha256", 16),
    ("twofish-cbc-plain", 24),
    ("aes-cbc-plain", 16),
    ("aes-cbc-plain64", 24),
    ("aes-xts-essiv:wp256", 64),
    ("aes-lrw-plain64", 32),
    ("aes-lrw-benbi", 48),
    ("aes-ecb", 16),
];

#[test]
fn round_trip_every_mode_and_sector_size() {
    for (spec, klen) in SPECS {
        let key = pseudo(klen, 1);
        let c = SectorCipher::new(spec, &key).unwrap();
        assert_eq!(c.spec().name(), spec);
        for ss in [512usize, 1024, 2048, 4096] {
            let plain = pseudo(3 * 8192, 2);
            let mut data = plain.clone();
            c.encrypt(&mut data, ss, 5).unwrap();
            assert_ne!(data, plain);
            c.decrypt(&mut data, ss, 5).unwrap();
            assert_eq!(data, plain, "{spec} {ss}");
        }
    }
}

#[test]
fn xts_matches_ieee_1619_vector_4() {
    // XTS-AES-128, data unit 0, 512 bytes of 00 01 .. ff 00 .. ff.
    let key = hex("2718281828459045235360287471352631415926535897932384626433832795");
    for kernel in kernels_here() {
        let c = SectorCipher::with_xts_kernel("aes-xts-plain64", &key, kernel).unwrap();
        let mut data: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        c.encrypt(&mut data, 512, 0).unwrap();
        assert_eq!(data[..32], hex("27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c")[..], "{kernel:?}");
        c.decrypt(&mut data, 512, 0).unwrap();
        assert!(data.iter().enumerate().all(|(i, &b)| b == i as u8), "{kernel:?}");
    }
}

#[test]
fn xts_matches_ieee_1619_vector_10() {
    // XTS-AES-256, data unit 0xff, 512 bytes of 00 01 .. ff 00 .. ff.
    let key = hex(concat!(
        "2718281828459045235360287471352662497757247093699959574966967627",
        "3141592653589793238462643383279502884197169399375105820974944592"
    ));
    for kernel in kernels_here() {
        let c = SectorCipher::with_xts_kernel("aes-xts-plain64", &key, kernel).unwrap();
        let mut data: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        c.encrypt(&mut data, 512, 0xff).unwrap();
        assert_eq!(data[..32], hex("1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b")[..], "{kernel:?}");
    }
}

/// The AES-XTS kernels this CPU runs (the crate's walk always; ours on x86-64 with AES-NI).
fn kernels_here() -> Vec<XtsKernel> {
    XtsKernel::ALL.into_iter().filter(|k| k.runs_here()).collect()
}

#[test]
fn each_kernel_runs_what_it_can_and_reports_it() {
    for kernel in kernels_here() {
        for (spec, klen, want) in [
            ("aes-xts-plain64", 64, kernel),
            ("aes-xts-plain64", 32, kernel),
            ("aes-xts-plain64", 48, XtsKernel::Crate), // AES-192: the crate's
            ("serpent-xts-plain64", 64, XtsKernel::Crate),
        ] {
            let c = SectorCipher::with_xts_kernel(spec, &pseudo(klen, 1), kernel).unwrap();
            assert_eq!(c.xts_kernel(), Some(want), "{spec} {klen} on {kernel:?}");
        }
    }
    assert_eq!(SectorCipher::new("aes-cbc-plain64", &[1; 32]).unwrap().xts_kernel(), None);
    assert!(XtsKernel::for_aes().runs_here());
    for kernel in kernels_here() {
        assert!(kernel.passes_self_test(), "{kernel:?}");
    }
}

#[test]
fn xts_matches_a_block_at_a_time_reference() {
    // The xts-mode crate (one block at a time) as the reference, for every AES key size,
    // sector size and kernel this CPU runs, encrypting and decrypting, over runs longer
    // than a tweak batch, with IVs that wrap past 2^64.
    fn check<C: aes::cipher::BlockCipherEncrypt + aes::cipher::BlockCipherDecrypt + KeyInit + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>>(key: &[u8]) {
        let h = key.len() / 2;
        let reference = xts_mode::Xts128::new(C::new_from_slice(&key[..h]).unwrap(), C::new_from_slice(&key[h..]).unwrap());
        for kernel in kernels_here() {
            let ours = SectorCipher::with_xts_kernel("aes-xts-plain64", key, kernel).unwrap();
            for (ss, first) in [(512usize, 1000u64), (1024, u64::MAX - 40), (2048, 7), (4096, 1000)] {
                let plain = pseudo(ss * 70, ss as u32);
                let mut a = plain.clone();
                for (i, s) in a.chunks_mut(ss).enumerate() {
                    let mut t = [0u8; 16];
                    t[..8].copy_from_slice(&first.wrapping_add(i as u64 * (ss as u64 / 512)).to_le_bytes());
                    reference.encrypt_sector(s, t.into());
                }
                let mut b = plain.clone();
                ours.encrypt(&mut b, ss, first).unwrap();
                assert!(a == b, "encrypt, {}-byte key, {ss}, {kernel:?}", key.len());
                ours.decrypt(&mut b, ss, first).unwrap();
                assert!(b == plain, "decrypt, {}-byte key, {ss}, {kernel:?}", key.len());
            }
        }
    }
    check::<aes::Aes128>(&pseudo(32, 3));
    check::<aes::Aes192>(&pseudo(48, 4));
    check::<aes::Aes256>(&pseudo(64, 5));
}

#[test]
fn cbc_matches_the_textbook_chain() {
    let key = pseudo(32, 6);
    let c = SectorCipher::new("aes-cbc-plain64", &key).unwrap();
    let aes = aes::Aes256::new_from_slice(&key).unwrap();
    let plain = pseudo(40 * 512, 7);
    let mut want = plain.clone();
    for (i, s) in want.chunks_mut(512).enumerate() {
        let mut prev = [0u8; 16];
        prev[..8].copy_from_slice(&(9 + i as u64).to_le_bytes());
        for b in s.chunks_mut(16) {
            for (x, p) in b.iter_mut().zip(prev) {
                *x ^= p;
            }
            let blk: &mut aes::Block = b.try_into().unwrap();
            aes::cipher::BlockCipherEncrypt::encrypt_block(&aes, blk);
            prev.copy_from_slice(b);
        }
    }
    let mut got = plain.clone();
    c.encrypt(&mut got, 512, 9).unwrap();
    assert_eq!(got, want);
    c.decrypt(&mut got, 512, 9).unwrap();
    assert_eq!(got, plain);
}

#[test]
fn parallel_equals_serial() {
    for (spec, klen) in SPECS {
        let c = SectorCipher::new(spec, &pseudo(klen, 8)).unwrap();
        let plain = pseudo(3 << 20, 9);
        let mut serial = plain.clone();
        c.encrypt(&mut serial, 4096, 77).unwrap();
        let mut par = plain.clone();
        c.encrypt_parallel(&mut par, 4096, 77).unwrap();
        assert!(serial == par, "{spec}");
        c.decrypt_parallel(&mut par, 4096, 77).unwrap();
        assert!(par == plain, "{spec}");
    }
}

#[test]
fn large_sectors_use_512_byte_iv_units() {
    // Sector 1 of a 4096-byte-sector run has IV 8: the same bytes as a 512-byte sector
    // with IV 8, since XTS is per-sector with a fresh tweak.
    let key = [7u8; 64];
    let c = SectorCipher::new("aes-xts-plain64", &key).unwrap();
    let mut big = vec![0u8; 8192];
    c.encrypt(&mut big, 4096, 0).unwrap();
    let mut small = vec![0u8; 512];
    c.encrypt(&mut small, 512, 8).unwrap();
    assert_eq!(&big[4096..4096 + 512], &small[..]);
}

#[test]
fn specs_parse_strictly() {
    for bad in ["aes", "aes-xts", "aes-xts-plain65", "des-cbc-plain", "aes-cbc-essiv:md5", "aes-ecb-plain", "capi:xts(aes)-plain64", ""] {
        assert!(CipherSpec::parse(bad).is_err(), "{bad}");
    }
    assert!(check_spec("aes-xts-plain64", 64).is_ok());
    assert!(check_spec("aes-xts-plain64", 33).is_err());
    assert!(check_spec("aes-cbc-essiv:sha512", 32).is_err(), "a 64-byte salt is no AES key");
    assert!(check_spec("serpent-cbc-essiv:sha256", 32).is_ok());
    assert!(check_spec("aes-lrw-benbi", 32).is_ok());
    assert!(check_spec("aes-lrw-benbi", 16).is_err());
    let e = SectorCipher::new("aes-xts-plain64", &[0; 64]).unwrap().decrypt(&mut [0u8; 100], 512, 0);
    assert!(e.unwrap_err().to_string().contains("whole number"));
}
