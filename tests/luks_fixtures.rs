//! Volumes made by stock cryptsetup (fixtures/luks, see make-fixtures.sh): offdisk must
//! derive exactly the volume key cryptsetup reports for each passphrase and keyslot.

use offdisk::luks::{Version, Volume};
use offdisk::secret::Passphrase;
use std::fs::File;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/luks")
}

struct Entry {
    name: String,
    key_file: String,
    slot: usize,
    key_hex: String,
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(dir().join("manifest.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Entry { name: f[0].into(), key_file: f[1].into(), slot: f[2].parse().unwrap(), key_hex: f[3].into() }
        })
        .collect()
}

fn pass(file: &str) -> Passphrase {
    Passphrase::from_slice(&std::fs::read(dir().join(file)).unwrap())
}

/// Opens a fixture. `luks2-default-layout` is stored cut after its one keyslot; like
/// cryptsetup, offdisk refuses a device smaller than its keyslots area, so a sparse copy
/// extended to the data offset is used.
fn open(name: &str) -> File {
    let path = dir().join(format!("{name}.img"));
    if name != "luks2-default-layout" {
        return File::open(path).unwrap();
    }
    let f = tempfile::tempfile().unwrap();
    std::io::copy(&mut File::open(path).unwrap(), &mut &f).unwrap();
    f.set_len(16 << 20).unwrap();
    f
}

#[test]
fn every_fixture_unlocks_to_cryptsetups_volume_key() {
    let entries = manifest();
    assert!(entries.len() >= 16, "manifest too short");
    for e in entries {
        let f = open(&e.name);
        let vol = Volume::load(&f).unwrap_or_else(|err| panic!("{}: {err}", e.name));
        // With the slot named ...
        let u = vol.unlock(&f, &pass(&e.key_file), Some(e.slot)).unwrap_or_else(|err| panic!("{}: {err}", e.name));
        assert_eq!(u.keyslot, e.slot);
        assert_eq!(std::str::from_utf8(u.key.to_hex().expose()).unwrap(), e.key_hex, "{}", e.name);
        // ... and found by trying every slot.
        let u = vol.unlock(&f, &pass(&e.key_file), None).unwrap();
        assert_eq!(u.keyslot, e.slot, "{}", e.name);
    }
}

#[test]
fn wrong_passphrase_is_no_key() {
    for name in ["luks2-argon2id-xts512", "luks1-cbc-essiv-sha1", "luks2-converted"] {
        let f = open(name);
        let vol = Volume::load(&f).unwrap();
        let err = vol.unlock(&f, &Passphrase::from_slice(b"wrong"), None).unwrap_err();
        assert!(matches!(err, offdisk::luks::LuksError::NoKey), "{name}: {err}");
        assert_eq!(offdisk::error::Diagnose::exit_code(&err), 2);
    }
}

#[test]
fn header_fields_and_segments() {
    let f = open("luks2-argon2id-xts512");
    let vol = Volume::load(&f).unwrap();
    assert_eq!(vol.version(), Version::Luks2);
    assert_eq!(vol.label(), Some("backup-a"));
    assert_eq!(vol.subsystem(), Some("offdisk"));
    assert_eq!(vol.uuid().len(), 36);
    vol.check_activatable().unwrap();
    let seg = vol.crypt_segment().unwrap();
    assert_eq!(seg.cipher, "aes-xts-plain64");
    assert_eq!(seg.key_size, 64);
    assert_eq!(seg.offset, 1 << 20);
    assert_eq!(seg.size, None);
    assert_eq!(seg.sector_size, 4096);
    assert_eq!(seg.digest_id, Some(0));

    let vol = Volume::load(&open("luks1-cbc-plain-sha512")).unwrap();
    assert_eq!(vol.version(), Version::Luks1);
    assert_eq!(vol.label(), None);
    let seg = vol.crypt_segment().unwrap();
    assert_eq!((seg.cipher.as_str(), seg.key_size, seg.offset, seg.sector_size), ("aes-cbc-plain", 16, 2048 * 512, 512));

    let seg = Volume::load(&open("luks1-2010-style")).unwrap().crypt_segment().unwrap();
    assert_eq!((seg.cipher.as_str(), seg.key_size, seg.offset), ("aes-cbc-essiv:sha256", 16, 1032 * 512));

    let vol = Volume::load(&open("luks2-cbc-essiv")).unwrap();
    assert_eq!(vol.crypt_segment().unwrap().cipher, "aes-cbc-essiv:sha256");
    let vol = Volume::load(&open("luks2-default-layout")).unwrap();
    assert_eq!(vol.crypt_segment().unwrap().offset, 16 << 20);
}

#[test]
fn converted_header_keeps_its_20_byte_digest() {
    let vol = Volume::load(&open("luks2-converted")).unwrap();
    let st = vol.luks2("test").unwrap();
    assert_eq!(st.meta.digests[&0].digest.len(), 20);
}
