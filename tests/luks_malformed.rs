//! A corpus of malformed and hostile headers, built from a cryptsetup-made volume by
//! editing its JSON or binary header (checksums recomputed, so the validator — not the
//! checksum — has to catch each one). Each must be refused with a message naming the fault.

use offdisk::luks::io::MemDevice;
use offdisk::luks::{update, LuksError, PbkdfOptions, PbkdfType, Volume};
use offdisk::secret::Passphrase;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const HDR: usize = 16 << 10;

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/luks/luks2-pbkdf2-sha256.img")).unwrap()
}

fn fix_csum(img: &mut [u8], off: usize, hdr_size: usize) {
    let mut bin = img[off..off + 4096].to_vec();
    bin[448..512].fill(0);
    let mut h = Sha256::new();
    h.update(&bin);
    h.update(&img[off + 4096..off + hdr_size]);
    let d = h.finalize();
    img[off + 448..off + 512].fill(0);
    img[off + 448..off + 480].copy_from_slice(&d);
}

/// Applies `edit` to the JSON of both copies and reseals them.
fn edit_json(edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut img = fixture();
    for off in [0, HDR] {
        let area = &mut img[off + 4096..off + HDR];
        let end = area.iter().position(|&b| b == 0).unwrap();
        let mut v: Value = serde_json::from_slice(&area[..end]).unwrap();
        edit(&mut v);
        let text = serde_json::to_vec(&v).unwrap();
        area.fill(0);
        area[..text.len()].copy_from_slice(&text);
        fix_csum(&mut img, off, HDR);
    }
    img
}

/// Applies `edit` to the raw bytes of each copy (binary header + JSON area) and reseals.
fn edit_raw(edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut img = fixture();
    for off in [0, HDR] {
        edit(&mut img[off..off + HDR]);
        fix_csum(&mut img, off, HDR);
    }
    img
}

fn load(img: Vec<u8>) -> Result<Volume, LuksError> {
    Volume::load_io(&MemDevice::new(img))
}

fn refused(name: &str, img: Vec<u8>, want: &str) {
    match load(img) {
        Ok(_) => panic!("{name}: accepted"),
        Err(e) => assert!(e.to_string().contains(want), "{name}: message {:?} does not mention {want:?}", e.to_string()),
    }
}

#[test]
fn the_unedited_fixture_loads() {
    load(edit_json(|_| {})).unwrap();
    load(edit_raw(|_| {})).unwrap();
}

#[test]
fn malformed_json_is_refused_with_its_reason() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("overlapping keyslots", Box::new(|v| {
            let ks = v["keyslots"]["0"].clone();
            v["keyslots"]["1"] = ks;
        }), "overlap"),
        ("keyslot area before the keyslots area", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("16384")), "outside the keyslots area"),
        ("keyslot area past the keyslots area", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("1040384")), "outside the keyslots area"),
        ("area offset overflow", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("99999999999999999999")), "overflows"),
        ("area offset + size overflow", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("9223372036854775000")), "outside the keyslots area"),
        ("negative area size", Box::new(|v| v["keyslots"]["0"]["area"]["size"] = json!("-258048")), "negative"),
        ("negative sector size", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(-512)), "negative"),
        ("fractional key size", Box::new(|v| v["keyslots"]["0"]["key_size"] = json!(64.5)), "not a whole number"),
        ("huge key size", Box::new(|v| v["keyslots"]["0"]["key_size"] = json!(1u64 << 40)), "out of range"),
        ("offset as a number", Box::new(|v| v["segments"]["0"]["offset"] = json!(1048576)), "must be a string"),
        ("offset with leading zero", Box::new(|v| v["segments"]["0"]["offset"] = json!("01048576")), "not a decimal number"),
        ("sector size not a power of two", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(1536)), "power of two"),
        ("sector size too large", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(8192)), "out of range"),
        ("segment size not whole sectors", Box::new(|v| v["segments"]["0"]["size"] = json!("1000")), "multiple of the sector size"),
        ("segment inside keyslots area", Box::new(|v| v["segments"]["0"]["offset"] = json!("524288")), "inside the header"),
        ("dangling digest keyslot", Box::new(|v| v["digests"]["0"]["keyslots"] = json!(["0", "5"])), "keyslot 5, which does not exist"),
        ("dangling digest segment", Box::new(|v| v["digests"]["0"]["segments"] = json!(["3"])), "segment 3, which does not exist"),
        ("dangling token keyslot", Box::new(|v| v["tokens"]["0"] = json!({"type": "x", "keyslots": ["9"]})), "keyslot 9, which does not exist"),
        ("keyslot in two digests", Box::new(|v| {
            let d = v["digests"]["0"].clone();
            v["digests"]["1"] = d;
        }), "belongs to both digest"),
        ("wrong json_size", Box::new(|v| v["config"]["json_size"] = json!("28672")), "json_size"),
        ("keyslots_size unaligned", Box::new(|v| v["config"]["keyslots_size"] = json!("1015000")), "multiple of 4096"),
        ("keyslots_size beyond 128 MiB", Box::new(|v| v["config"]["keyslots_size"] = json!("268435456")), "exceeds 128 MiB"),
        ("missing tokens", Box::new(|v| { v.as_object_mut().unwrap().remove("tokens"); }), "\"tokens\" is missing"),
        ("keyslots not an object", Box::new(|v| v["keyslots"] = json!([])), "keyslots must be an object"),
        ("id with leading zero", Box::new(|v| {
            let ks = v["keyslots"].as_object_mut().unwrap().remove("0").unwrap();
            v["keyslots"]["00"] = ks;
        }), "not a decimal id"),
        ("id out of range", Box::new(|v| {
            let ks = v["keyslots"].as_object_mut().unwrap().remove("0").unwrap();
            v["keyslots"]["32"] = ks;
            v["digests"]["0"]["keyslots"] = json!(["32"]);
        }), "out of range 0..=31"),
        ("stripes other than 4000", Box::new(|v| v["keyslots"]["0"]["af"]["stripes"] = json!(3999)), "only 4000"),
        ("material larger than area", Box::new(|v| v["keyslots"]["0"]["area"]["size"] = json!("4096")), "does not fit its area"),
        ("empty area", Box::new(|v| v["keyslots"]["0"]["area"]["size"] = json!("0")), "size is zero"),
        ("bad salt", Box::new(|v| v["keyslots"]["0"]["kdf"]["salt"] = json!("not base64!")), "not valid base64"),
        ("zero iterations", Box::new(|v| v["keyslots"]["0"]["kdf"]["iterations"] = json!(0)), "out of range"),
        ("unknown hash", Box::new(|v| v["digests"]["0"]["hash"] = json!("md5")), "unsupported hash"),
        ("argon2 memory beyond 4 GiB", Box::new(|v| v["keyslots"]["0"]["kdf"] = json!({"type": "argon2id", "time": 4, "memory": 8388608, "cpus": 4, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="})), "out of range"),
    ];
    for (name, edit, want) in cases {
        refused(name, edit_json(edit), want);
    }
}

#[test]
fn malformed_bytes_are_refused_with_their_reason() {
    type Edit = Box<dyn Fn(&mut [u8])>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("junk after the JSON", Box::new(|c| {
            let end = 4096 + c[4096..].iter().position(|&b| b == 0).unwrap();
            c[end + 10] = b'x';
        }), "junk after the JSON"),
        ("JSON not NUL-terminated", Box::new(|c| c[4096..].fill(b' ')), "not NUL-terminated"),
        ("trailing text after the JSON object", Box::new(|c| {
            let end = 4096 + c[4096..].iter().position(|&b| b == 0).unwrap();
            c[end..end + 3].copy_from_slice(b"{}x");
        }), "not valid JSON"),
        ("not starting with a brace", Box::new(|c| c[4096] = b' '), "does not start with"),
        ("hdr_size not allowed", Box::new(|c| c[8..16].copy_from_slice(&20000u64.to_be_bytes())), "allowed sizes"),
        ("seqid overflow", Box::new(|c| c[16..24].copy_from_slice(&u64::MAX.to_be_bytes())), "seqid"),
        ("label not terminated", Box::new(|c| c[24..72].fill(b'a')), "label is not NUL-terminated"),
        ("uuid garbage", Box::new(|c| c[168..172].copy_from_slice(b"zzzz")), "is not a UUID"),
        ("version 3", Box::new(|c| c[6..8].copy_from_slice(&3u16.to_be_bytes())), "version 3"),
    ];
    for (name, edit, want) in cases {
        refused(name, edit_raw(edit), want);
    }
    // Copies that disagree with where they sit.
    let mut img = fixture();
    img[HDR + 256..HDR + 264].copy_from_slice(&0u64.to_be_bytes());
    fix_csum(&mut img, HDR, HDR);
    img[4096 + 5] ^= 1; // and the primary's checksum broken
    refused("both copies bad", img, "checksum mismatch");
}

#[test]
fn neither_garbage_nor_tiny_files_are_luks() {
    assert!(matches!(load(vec![0u8; 100]), Err(LuksError::NotLuks)));
    assert!(matches!(load(vec![0u8; 1 << 20]), Err(LuksError::NotLuks)));
    let noise: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    assert!(matches!(load(noise), Err(LuksError::NotLuks)));
    // A LUKS1 header with a bad keyslot state word.
    let mut l1 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/luks/luks1-xts-sha256.img")).unwrap();
    l1[208 + 48] = 0x12;
    assert!(load(l1).unwrap_err().to_string().contains("invalid state"));
}

#[test]
fn another_signature_over_the_primary_is_ambiguous_but_a_wiped_primary_recovers() {
    let mut img = fixture();
    img[..4096].fill(0);
    let vol = load(img.clone()).expect("wiped primary: recovered from the secondary");
    assert!(!vol.luks2("t").unwrap().primary_ok);
    img[0x438..0x43a].copy_from_slice(&[0x53, 0xef]); // ext4 magic
    let err = load(img).unwrap_err();
    assert!(matches!(err, LuksError::Ambiguous(_)), "{err}");
    assert!(err.to_string().contains("ext2/3/4"), "{err}");
    // mkfs.ext4 keeps the first KiB, so the LUKS magic survives next to the ext4 superblock.
    let mut img = fixture();
    img[0x438..0x43a].copy_from_slice(&[0x53, 0xef]);
    let err = load(img).unwrap_err();
    assert!(matches!(err, LuksError::Ambiguous(_)), "{err}");
    // Other damage to the primary header is recovered from the secondary.
    let mut img = fixture();
    img[0x300] = 0x77;
    assert!(!load(img).unwrap().luks2("t").unwrap().primary_ok);
}

#[test]
fn the_newer_copy_wins() {
    let mut img = fixture();
    img[HDR + 16..HDR + 24].copy_from_slice(&99u64.to_be_bytes());
    fix_csum(&mut img, HDR, HDR);
    let st = load(img).unwrap();
    let st = st.luks2("t").unwrap();
    assert_eq!(st.bin.seqid, 99);
    assert!(st.secondary_ok && !st.primary_ok);
}

fn fast() -> PbkdfOptions {
    PbkdfOptions { kind: PbkdfType::Pbkdf2, force_iterations: Some(1000), ..PbkdfOptions::default() }
}

#[test]
fn unknown_requirements_are_readable_but_never_activated_or_written() {
    let img = edit_json(|v| v["config"]["requirements"] = json!({"mandatory": ["future-feature"]}));
    let dev = MemDevice::new(img);
    let vol = Volume::load_io(&dev).unwrap();
    let pass = Passphrase::from_slice(b"correct horse battery staple");
    vol.unlock_io(&dev, &pass, None).expect("inspection and key checks still work");
    assert!(matches!(vol.check_activatable(), Err(LuksError::Requirement(r)) if r == "future-feature"));
    let before = dev.data.borrow().clone();
    let err = update::add_key(&dev, &vol, &pass, &Passphrase::from_slice(b"x"), None, &fast()).unwrap_err();
    assert!(matches!(err, LuksError::Requirement(_)));
    assert!(update::kill_slot(&dev, &vol, 0).is_err());
    assert!(*dev.data.borrow() == before, "refused update wrote to the device");
}

#[test]
fn unknown_tokens_config_and_fields_survive_rewrites() {
    let img = edit_json(|v| {
        v["tokens"]["3"] = json!({"type": "x-offdisk-test", "keyslots": ["0"], "payload": {"a": [1, 2, 3]}});
        v["config"]["x-vendor"] = json!("kept");
        v["keyslots"]["0"]["x-extra"] = json!(42);
    });
    let dev = MemDevice::new(img);
    let vol = Volume::load_io(&dev).unwrap();
    let pass = Passphrase::from_slice(b"correct horse battery staple");
    update::add_key(&dev, &vol, &pass, &Passphrase::from_slice(b"new"), None, &fast()).unwrap();
    let vol = Volume::load_io(&dev).unwrap();
    let doc = &vol.luks2("t").unwrap().meta.doc;
    assert_eq!(doc["tokens"]["3"]["payload"]["a"], json!([1, 2, 3]));
    assert_eq!(doc["config"]["x-vendor"], json!("kept"));
    assert_eq!(doc["keyslots"]["0"]["x-extra"], json!(42));
    assert!(doc["keyslots"]["1"].is_object());
    // Removing keyslot 0 drops it from the token, but keeps the token.
    update::kill_slot(&dev, &vol, 0).unwrap();
    let vol = Volume::load_io(&dev).unwrap();
    let doc = &vol.luks2("t").unwrap().meta.doc;
    assert_eq!(doc["tokens"]["3"]["keyslots"], json!([]));
    assert_eq!(doc["tokens"]["3"]["type"], json!("x-offdisk-test"));
}
