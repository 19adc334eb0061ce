//! Volumes made by stock cryptsetup for every keyslot cipher and LUKS hash
//! (fixtures/luks-ciphers) and cryptsetup's own compatibility images
//! (fixtures/luks-compat, from its tests/ directory): offdisk derives the volume key
//! cryptsetup reports (or its test suite publishes) for each, refuses what cryptsetup
//! refuses, and decrypts the data to what cryptsetup's tests expect to find there.

use offdisk::luks::cipher::SectorCipher;
use offdisk::luks::io::MemDevice;
use offdisk::luks::{backup, update, LuksError, PbkdfOptions, PbkdfType, Version, Volume};
use offdisk::secret::Passphrase;
use std::path::{Path, PathBuf};

fn dir(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(set)
}

/// The xz-compressed image `name` of `set`, as a memory device.
fn image(set: &str, name: &str) -> MemDevice {
    let packed = std::fs::read(dir(set).join(format!("{name}.xz"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut &packed[..], &mut out).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    MemDevice::new(out)
}

/// manifest.tsv rows, split on tabs.
fn manifest(set: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir(set).join("manifest.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn pass(set: &str, file: &str) -> Passphrase {
    Passphrase::from_slice(&std::fs::read(dir(set).join(file)).unwrap())
}

fn hex(key: &offdisk::secret::VolumeKey) -> String {
    String::from_utf8(key.to_hex().expose().to_vec()).unwrap()
}

fn load(dev: &MemDevice, name: &str) -> Volume {
    Volume::load_io(dev).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_keyslot_cipher_and_hash_unlocks_to_cryptsetups_volume_key() {
    let rows = manifest("luks-ciphers");
    assert_eq!(rows.len(), 36, "3 ciphers x 4 modes + 6 hashes, LUKS1 and LUKS2");
    let p = pass("luks-ciphers", "pass.key");
    for r in rows {
        let (name, version, cipher, bits, hash, vk) = (&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]);
        let dev = image("luks-ciphers", name);
        let vol = load(&dev, name);
        assert_eq!(vol.version(), if version == "1" { Version::Luks1 } else { Version::Luks2 }, "{name}");
        let seg = vol.crypt_segment().unwrap();
        assert_eq!((&seg.cipher, seg.key_size * 8), (cipher, bits.parse().unwrap()), "{name}");
        let text = offdisk::luks::dump::text(&vol);
        assert!(text.contains(hash.as_str()), "{name}: dump does not name the hash {hash}:\n{text}");
        assert!(vol.slot_problem(0).is_none(), "{name}: {:?}", vol.slot_problem(0));
        let u = vol.unlock_io(&dev, &p, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((u.keyslot, hex(&u.key)), (0, vk.clone()), "{name}");
        assert!(vol.volume_key_matches(u.key.expose()).unwrap(), "{name}");
        // A wrong passphrase is told apart from an unusable keyslot.
        let e = vol.unlock_io(&dev, &Passphrase::from_slice(b"wrong"), None).unwrap_err();
        assert!(matches!(e, LuksError::NoKey), "{name}: {e}");
    }
}

/// cryptsetup's luks1-compat-test: each image of luks1-images.tar.xz holds a filesystem
/// whose UUID is DEAD-BABE (a FAT volume serial, stored little-endian in its boot sector).
fn decrypts_to_dead_babe(vol: &Volume, dev: &MemDevice, key: &[u8]) -> bool {
    use offdisk::luks::io::BlockIo;
    let seg = vol.crypt_segment().unwrap();
    let mut first = vec![0u8; 4096];
    dev.read_at(&mut first, seg.offset).unwrap();
    SectorCipher::new(&seg.cipher, key).unwrap().decrypt(&mut first, 512, seg.iv_tweak).unwrap();
    first[..512].windows(4).any(|w| w == [0xbe, 0xba, 0xad, 0xde])
}

#[test]
fn cryptsetup_compat_images_give_their_volume_keys() {
    let rows = manifest("luks-compat");
    assert_eq!(rows.len(), 32, "manifest rows");
    let set = "luks-compat";
    let mut luks1_images = 0;
    for r in &rows {
        let (name, key_file, slot, vk) = (&r[0], &r[1], &r[2], &r[3]);
        let dev = image(set, name);
        match vk.as_str() {
            "ambiguous" => {
                // An LVM2 PV label over the primary, a valid secondary: cryptsetup's isLuks
                // says no until `repair`; offdisk says why.
                let e = Volume::load_io(&dev).unwrap_err();
                assert!(matches!(e, LuksError::Ambiguous(ref m) if m.contains("LVM2")), "{name}: {e}");
                continue;
            }
            "unbound" => {
                // The unbound key's passphrase is right but opens no volume.
                let vol = load(&dev, name);
                let slot: usize = slot.parse().unwrap();
                let e = vol.unlock_io(&dev, &pass(set, key_file), Some(slot)).unwrap_err();
                assert!(e.to_string().contains("unbound"), "{name}: {e}");
                let e = vol.unlock_io(&dev, &pass(set, key_file), None).unwrap_err();
                assert!(matches!(e, LuksError::NoKey), "{name}: {e}");
                continue;
            }
            _ => {}
        }
        let vol = load(&dev, name);
        if key_file == "-" {
            // No keyslot to open; the published key is checked against the digest.
            let key: Vec<u8> = (0..vk.len()).step_by(2).map(|i| u8::from_str_radix(&vk[i..i + 2], 16).unwrap()).collect();
            assert!(vol.volume_key_matches(&key).unwrap(), "{name}: the published key does not match");
            let mut other = key.clone();
            other[0] ^= 1;
            assert!(!vol.volume_key_matches(&other).unwrap(), "{name}");
            continue;
        }
        let slot: usize = slot.parse().unwrap();
        let u = vol.unlock_io(&dev, &pass(set, key_file), Some(slot)).unwrap_or_else(|e| panic!("{name} slot {slot}: {e}"));
        assert_eq!(u.keyslot, slot, "{name}");
        if vk != "-" {
            assert_eq!(&hex(&u.key), vk, "{name} slot {slot}");
        }
        if name.starts_with("luks1_") {
            luks1_images += 1;
            assert!(decrypts_to_dead_babe(&vol, &dev, u.key.expose()), "{name}: data does not decrypt to the DEAD-BABE filesystem");
        }
    }
    assert_eq!(luks1_images, 12, "every image of cryptsetup's luks1-compat-test");
}

#[test]
fn mixed_kdf_image_opens_with_either_keyslot() {
    let dev = image("luks-compat", "compatimage2.img");
    let vol = load(&dev, "compatimage2");
    let text = offdisk::luks::dump::text(&vol);
    assert!(text.contains("pbkdf2") && text.contains("argon2id"), "{text}");
    let a = vol.unlock_io(&dev, &pass("luks-compat", "compatkey.pass"), None).unwrap();
    let b = vol.unlock_io(&dev, &pass("luks-compat", "0123456789abcdef.pass"), None).unwrap();
    assert_eq!((a.keyslot, b.keyslot), (0, 1));
    assert_eq!(hex(&a.key), hex(&b.key));
}

#[test]
fn unknown_requirements_unlock_but_refuse_activation_and_writes() {
    // cryptsetup's api-test-2 (Luks2Requirements): a volume key may be obtained and the
    // header backed up, but activation, new or changed keyslots and restoring a backup
    // that carries the requirement fail with "Unmet requirements detected".
    let set = "luks-compat";
    let dev = image(set, "luks2_header_requirements.img");
    let vol = load(&dev, "luks2_header_requirements");
    let p = pass(set, "blablabl.pass");
    let u = vol.unlock_io(&dev, &p, None).unwrap();
    assert_eq!(hex(&u.key), "07459b841ad76fcbc2b27e6d20195359dbfa6ba3aaf3abb25477c03a6fc936bd");
    assert!(matches!(vol.check_activatable(), Err(LuksError::Requirement(_))));
    assert!(offdisk::luks::dump::text(&vol).contains("Requirement:"));
    let fast = PbkdfOptions { kind: PbkdfType::Pbkdf2, force_iterations: Some(1000), ..PbkdfOptions::default() };
    let new = Passphrase::from_slice(b"another");
    assert!(matches!(update::add_key(&dev, &vol, &p, &new, None, &fast), Err(LuksError::Requirement(_))));
    assert!(matches!(update::change_key(&dev, &vol, &p, &new, None, &fast), Err(LuksError::Requirement(_))));
    assert!(matches!(update::kill_slot(&dev, &vol, 0), Err(LuksError::Requirement(_))));
    assert!(matches!(update::remove_key(&dev, &vol, &p), Err(LuksError::Requirement(_))));
    assert_eq!(dev.writes.get(), 0, "a refused change wrote to the device");
    // Header backup works; restoring it (a header with the requirement) is refused.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("hdr");
    backup::header_backup(&dev, &vol, &file).unwrap();
    let target = image(set, "luks2_header_requirements_free.img");
    assert!(matches!(backup::plan_restore(&target, &file), Err(LuksError::Requirement(_))));
    // The same header without the requirement activates.
    let free = load(&target, "luks2_header_requirements_free");
    free.check_activatable().unwrap();
}

#[test]
fn kernel_driver_cipher_name_unlocks_but_does_not_activate() {
    // luks2_invalid_cipher.img names the segment cipher as a kernel driver ("aes-xts-plain64"
    // written as a crypto API string): cryptsetup derives the key but refuses to activate.
    let set = "luks-compat";
    let dev = image(set, "luks2_invalid_cipher.img");
    let vol = load(&dev, "luks2_invalid_cipher");
    let u = vol.unlock_io(&dev, &pass(set, "93R4P4pIqAH8.pass"), None).unwrap();
    assert_eq!(u.keyslot, 0);
    assert!(vol.check_activatable().is_err());
}
