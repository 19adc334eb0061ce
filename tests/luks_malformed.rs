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

/// cryptsetup's own verdict on an image: does `cryptsetup luksDump` accept it?
fn cryptsetup_accepts(img: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    std::fs::write(&path, img).unwrap();
    let out = std::process::Command::new("cryptsetup").arg("luksDump").arg(&path).output().expect("cryptsetup (cryptsetup-bin) installed");
    out.status.success()
}

fn refused(name: &str, img: Vec<u8>, want: &str) {
    assert!(!cryptsetup_accepts(&img), "{name}: cryptsetup accepts it, so offdisk must too");
    match load(img) {
        Ok(_) => panic!("{name}: accepted"),
        Err(e) => assert!(e.to_string().contains(want), "{name}: message {:?} does not mention {want:?}", e.to_string()),
    }
}

/// A header cryptsetup accepts: offdisk loads it too, and `check` sees the loaded volume.
fn accepted(name: &str, img: Vec<u8>, check: impl Fn(&Volume)) {
    assert!(cryptsetup_accepts(&img), "{name}: cryptsetup refuses it");
    let vol = load(img).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
    check(&vol);
}

fn slot_unusable(want: &'static str) -> impl Fn(&Volume) {
    move |vol| {
        let why = vol.slot_problem(0).unwrap_or_else(|| panic!("keyslot 0 usable, expected {want:?}"));
        assert!(why.contains(want), "{why:?} does not mention {want:?}");
        let dump = offdisk::luks::dump::text(vol);
        assert!(dump.contains(&format!("Unusable:   {why}")), "dump does not list the reason:\n{dump}");
    }
}

fn not_activatable(want: &'static str) -> impl Fn(&Volume) {
    move |vol| {
        let e = vol.check_activatable().and_then(|_| vol.crypt_segment().map(|_| ())).map(|_| "activatable".to_string());
        let e = match e {
            Ok(s) => s,
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{e:?} does not mention {want:?}");
    }
}

#[test]
fn the_unedited_fixture_loads() {
    load(edit_json(|_| {})).unwrap();
    load(edit_raw(|_| {})).unwrap();
}

type Edit = Box<dyn Fn(&mut Value)>;
type Check = Box<dyn Fn(&Volume)>;

#[test]
fn json_cryptsetup_refuses_is_refused_with_its_reason() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("overlapping keyslots", Box::new(|v| {
            let ks = v["keyslots"]["0"].clone();
            v["keyslots"]["1"] = ks;
            v["digests"]["0"]["keyslots"] = json!(["0", "1"]);
        }), "overlap"),
        ("keyslot area inside the header", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("16384")), "inside the header"),
        ("keyslot area past the keyslots area", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("1040384")), "past the keyslots area"),
        ("area offset overflow", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("99999999999999999999")), "overflows"),
        ("area offset + size overflow", Box::new(|v| v["keyslots"]["0"]["area"]["offset"] = json!("18446744073709551000")), "overflows"),
        ("negative area size", Box::new(|v| v["keyslots"]["0"]["area"]["size"] = json!("-258048")), "negative"),
        ("negative sector size", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(-512)), "out of range"),
        ("fractional key size", Box::new(|v| v["keyslots"]["0"]["key_size"] = json!(64.5)), "not a whole number"),
        ("huge key size", Box::new(|v| v["keyslots"]["0"]["key_size"] = json!(1u64 << 40)), "out of range"),
        ("offset as a number", Box::new(|v| v["segments"]["0"]["offset"] = json!(1048576)), "must be a string"),
        ("sector size not a multiple of 512", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(1000)), "multiple of 512"),
        ("segment size not whole sectors", Box::new(|v| v["segments"]["0"]["size"] = json!("1000")), "multiple of 512"),
        ("segment inside keyslots area", Box::new(|v| v["segments"]["0"]["offset"] = json!("524288")), "keyslots_size"),
        ("dangling digest keyslot", Box::new(|v| v["digests"]["0"]["keyslots"] = json!(["0", "5"])), "keyslot 5, which does not exist"),
        ("dangling digest segment", Box::new(|v| v["digests"]["0"]["segments"] = json!(["3"])), "segment 3, which does not exist"),
        ("dangling token keyslot", Box::new(|v| v["tokens"]["0"] = json!({"type": "x", "keyslots": ["9"]})), "keyslot 9, which does not exist"),
        ("keyslot in two digests", Box::new(|v| {
            let d = v["digests"]["0"].clone();
            v["digests"]["1"] = d;
        }), "belongs to 2 digests"),
        ("wrong json_size", Box::new(|v| v["config"]["json_size"] = json!("28672")), "is too large"),
        ("json_size not a metadata size", Box::new(|v| v["config"]["json_size"] = json!("12000")), "json_size"),
        ("keyslots_size unaligned", Box::new(|v| v["config"]["keyslots_size"] = json!("1015000")), "multiple of 4096"),
        ("keyslots_size beyond 128 MiB", Box::new(|v| v["config"]["keyslots_size"] = json!("268435456")), "exceeds 128 MiB"),
        ("missing tokens", Box::new(|v| { v.as_object_mut().unwrap().remove("tokens"); }), "\"tokens\" is missing"),
        ("keyslots not an object", Box::new(|v| v["keyslots"] = json!([])), "keyslots must be an object"),
        ("non-numeric id", Box::new(|v| {
            let ks = v["keyslots"].as_object_mut().unwrap().remove("0").unwrap();
            v["keyslots"]["a"] = ks;
            v["digests"]["0"]["keyslots"] = json!(["a"]);
        }), "not a decimal id"),
        ("empty area", Box::new(|v| v["keyslots"]["0"]["area"]["size"] = json!("0")), "size is zero"),
        ("pbkdf2 without iterations", Box::new(|v| { v["keyslots"]["0"]["kdf"].as_object_mut().unwrap().remove("iterations"); }), "iterations is missing"),
        ("pbkdf2 iterations as text", Box::new(|v| v["keyslots"]["0"]["kdf"]["iterations"] = json!("1000")), "iterations must be a number"),
        ("af type other than luks1", Box::new(|v| v["keyslots"]["0"]["af"]["type"] = json!("luks2")), "is not luks1"),
        ("area type other than raw", Box::new(|v| v["keyslots"]["0"]["area"]["type"] = json!("cooked")), "is not raw"),
        ("empty encryption", Box::new(|v| v["segments"]["0"]["encryption"] = json!("")), "is empty"),
    ];
    for (name, edit, want) in cases {
        refused(name, edit_json(edit), want);
    }
}

#[test]
fn json_cryptsetup_accepts_loads_with_unusable_parts_named() {
    let cases: Vec<(&str, Edit, Check)> = vec![
        ("unknown KDF", Box::new(|v| v["keyslots"]["0"]["kdf"] = json!({"type": "argon2", "time": 4, "memory": 1024, "cpus": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})), Box::new(slot_unusable("KDF \"argon2\" not supported"))),
        ("unknown area cipher", Box::new(|v| v["keyslots"]["0"]["area"]["encryption"] = json!("des-cbc-plain")), Box::new(slot_unusable("des-cbc-plain"))),
        ("unknown AF hash", Box::new(|v| v["keyslots"]["0"]["af"]["hash"] = json!("md5")), Box::new(slot_unusable("AF hash \"md5\" not supported"))),
        ("unknown PBKDF2 hash", Box::new(|v| v["keyslots"]["0"]["kdf"]["hash"] = json!("md5")), Box::new(slot_unusable("PBKDF2 hash \"md5\" not supported"))),
        ("unknown digest hash", Box::new(|v| v["digests"]["0"]["hash"] = json!("md5")), Box::new(slot_unusable("digest hash \"md5\" not supported"))),
        ("zero iterations", Box::new(|v| v["keyslots"]["0"]["kdf"]["iterations"] = json!(0)), Box::new(slot_unusable("out of range"))),
        ("bad salt", Box::new(|v| v["keyslots"]["0"]["kdf"]["salt"] = json!("not base64!")), Box::new(slot_unusable("not valid base64"))),
        ("short salt", Box::new(|v| v["keyslots"]["0"]["kdf"]["salt"] = json!("AAAAAAAAAAAAAAAAAAAAAA==")), Box::new(slot_unusable("16 bytes, not 32"))),
        ("argon2 memory beyond 4 GiB", Box::new(|v| v["keyslots"]["0"]["kdf"] = json!({"type": "argon2id", "time": 4, "memory": 8388608, "cpus": 4, "salt": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})), Box::new(slot_unusable("out of range"))),
        ("material larger than area", Box::new(|v| v["keyslots"]["0"]["area"]["size"] = json!("4096")), Box::new(slot_unusable("does not fit its area"))),
        ("1-byte digest", Box::new(|v| v["digests"]["0"]["digest"] = json!("AA==")), Box::new(slot_unusable("1 bytes long"))),
        ("16-byte digest", Box::new(|v| v["digests"]["0"]["digest"] = json!("AAAAAAAAAAAAAAAAAAAAAA==")), Box::new(slot_unusable("16 bytes long"))),
        ("stripes other than 4000 (cryptsetup uses 4000 anyway)", Box::new(|v| v["keyslots"]["0"]["af"]["stripes"] = json!(3999)), Box::new(|vol: &Volume| assert!(vol.slot_problem(0).is_none()))),
        ("offset with leading zero", Box::new(|v| v["segments"]["0"]["offset"] = json!("01048576")), Box::new(|vol: &Volume| assert_eq!(vol.crypt_segment().unwrap().offset, 1 << 20))),
        ("sector size not a power of two", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(1536)), Box::new(not_activatable("sector size 1536"))),
        ("sector size too large", Box::new(|v| v["segments"]["0"]["sector_size"] = json!(8192)), Box::new(not_activatable("sector size 8192"))),
        ("unknown segment type", Box::new(|v| v["segments"]["0"]["type"] = json!("some_type")), Box::new(not_activatable("no crypt segment"))),
        ("keyslot id beyond 31", Box::new(|v| {
            let ks = v["keyslots"].as_object_mut().unwrap().remove("0").unwrap();
            v["keyslots"]["32"] = ks;
            v["digests"]["0"]["keyslots"] = json!(["32"]);
        }), Box::new(|vol: &Volume| assert!(vol.slot_problem(32).unwrap().contains("beyond 31")))),
        ("leftover argon2 parameters in a pbkdf2 object", Box::new(|v| {
            v["keyslots"]["0"]["kdf"]["time"] = json!(4);
            v["keyslots"]["0"]["kdf"]["memory"] = json!("any value");
        }), Box::new(|vol: &Volume| {
            assert!(vol.slot_problem(0).is_none());
            let st = vol.luks2("t").unwrap();
            assert!(st.meta.doc["keyslots"]["0"]["kdf"].get("time").is_none(), "dropped in memory, as cryptsetup's repair");
            assert!(st.meta.repaired[0].contains("leftover KDF parameters"), "{:?}", st.meta.repaired);
        })),
    ];
    for (name, edit, check) in cases {
        accepted(name, edit_json(edit), check);
    }
}

#[test]
fn unusable_keyslots_are_skipped_and_named_only_when_nothing_opens() {
    let pass = Passphrase::from_slice(b"correct horse battery staple");
    // Keyslot 0 opens; a second keyslot with an unknown KDF is skipped silently.
    let img = edit_json(|v| {
        let mut ks = v["keyslots"]["0"].clone();
        ks["kdf"]["type"] = json!("argon2");
        ks["kdf"].as_object_mut().unwrap().remove("hash");
        ks["area"]["offset"] = json!("294912");
        v["keyslots"]["1"] = ks;
        v["digests"]["0"]["keyslots"] = json!(["1", "0"]);
    });
    let dev = MemDevice::new(img);
    let vol = Volume::load_io(&dev).unwrap();
    assert!(vol.slot_problem(1).unwrap().contains("KDF \"argon2\" not supported"));
    assert_eq!(vol.unlock_io(&dev, &pass, None).unwrap().keyslot, 0);
    // A wrong passphrase: the usable keyslot refuses, the unusable one is named.
    let err = vol.unlock_io(&dev, &Passphrase::from_slice(b"wrong"), None).unwrap_err();
    assert!(matches!(&err, LuksError::NoUsableKey { tried: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("keyslot 1: KDF \"argon2\" not supported"), "{err}");
    assert_eq!(offdisk::error::Diagnose::exit_code(&err), 2);
    // Naming the unusable keyslot gives its reason.
    let err = vol.unlock_io(&dev, &pass, Some(1)).unwrap_err();
    assert!(err.to_string().contains("KDF \"argon2\" not supported"), "{err}");
    // Only unusable keyslots: nothing was tried, the reason is the error (not "wrong passphrase").
    let img = edit_json(|v| v["keyslots"]["0"]["kdf"]["type"] = json!("scrypt"));
    let dev = MemDevice::new(img);
    let vol = Volume::load_io(&dev).unwrap();
    let err = vol.unlock_io(&dev, &pass, None).unwrap_err();
    assert!(matches!(&err, LuksError::NoUsableKey { tried: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("KDF \"scrypt\" not supported"), "{err}");
    assert_eq!(offdisk::error::Diagnose::exit_code(&err), 1);
}

#[test]
fn a_short_digest_never_lets_a_wrong_key_through() {
    // With a 1-byte digest, about 1 in 256 wrong passphrases would match it: refused instead.
    for digest in ["AA==", "AAAAAAAAAAAAAAAAAAAAAA=="] {
        let img = edit_json(|v| v["digests"]["0"]["digest"] = json!(digest));
        let dev = MemDevice::new(img);
        let vol = Volume::load_io(&dev).unwrap();
        for p in 0..20u32 {
            let err = vol.unlock_io(&dev, &Passphrase::from_slice(&p.to_le_bytes()), None).unwrap_err();
            assert!(err.to_string().contains("bytes long"), "{err}");
        }
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
        ("JSON not NUL-terminated", Box::new(|c| c[4097..].fill(b' ')), "not NUL-terminated"),
        ("trailing text after the JSON object", Box::new(|c| {
            let end = 4096 + c[4096..].iter().position(|&b| b == 0).unwrap();
            c[end..end + 3].copy_from_slice(b"{}x");
        }), "not valid JSON"),
        ("text after the JSON object", Box::new(|c| {
            let end = 4096 + c[4096..].iter().position(|&b| b == 0).unwrap();
            c[end..end + 2].copy_from_slice(b" x");
        }), "not valid JSON"),
        ("not starting with a brace", Box::new(|c| c[4096] = b' '), "does not start with"),
        ("hdr_size not allowed", Box::new(|c| c[8..16].copy_from_slice(&20000u64.to_be_bytes())), "allowed sizes"),
        ("uuid garbage", Box::new(|c| c[168..172].copy_from_slice(b"zzzz")), "is not a UUID"),
        ("version 3", Box::new(|c| c[6..8].copy_from_slice(&3u16.to_be_bytes())), "version 3"),
    ];
    for (name, edit, want) in cases {
        let img = edit_raw(edit);
        if name != "uuid garbage" {
            // offdisk insists on a UUID (it names mappings after it); cryptsetup takes any text.
            assert!(!cryptsetup_accepts(&img), "{name}: cryptsetup accepts it");
        }
        match load(img) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
        }
    }
    // White space may follow the object (json-c's parser takes it).
    let img = edit_raw(|c| {
        let end = 4096 + c[4096..].iter().position(|&b| b == 0).unwrap();
        c[end..end + 3].copy_from_slice(b" \n\t");
    });
    accepted("white space after the JSON object", img, |_| {});
    // Text fields are read as cryptsetup reads them: cut at their last byte.
    let img = edit_raw(|c| c[24..72].fill(b'a'));
    accepted("label not terminated", img, |vol| assert_eq!(vol.label(), Some("a".repeat(47).as_str())));
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
    // A LUKS1 keyslot with a state word that is neither enabled nor disabled: cryptsetup
    // loads the header and treats the slot as disabled; so does offdisk.
    let mut l1 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/luks/luks1-xts-sha256.img")).unwrap();
    l1[208 + 48] = 0x12;
    assert!(cryptsetup_accepts(&l1));
    let vol = load(l1).unwrap();
    assert!(!vol.active_slots().contains(&1));
    assert!(offdisk::luks::dump::text(&vol).contains("Key Slot 1: DISABLED (invalid state"));
    // A LUKS1 keyslot area (even a disabled one's) running into the data: refused, as cryptsetup.
    let mut l1 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/luks/luks1-xts-sha256.img")).unwrap();
    l1[208 + 7 * 48 + 40..208 + 7 * 48 + 44].copy_from_slice(&4000u32.to_be_bytes());
    assert!(!cryptsetup_accepts(&l1));
    assert!(load(l1).unwrap_err().to_string().contains("runs into the data area"));
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
