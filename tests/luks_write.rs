//! Volumes offdisk writes, checked by stock cryptsetup (and the other way round).

use offdisk::luks::{self, update, FormatOptions, PbkdfOptions, PbkdfType, Volume};
use offdisk::secret::Passphrase;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cryptsetup(args: &[&str]) -> (i32, String) {
    let out = Command::new("cryptsetup").args(args).output().expect("cryptsetup is installed (Debian: cryptsetup-bin)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn image(dir: &Path, name: &str, size: u64) -> (PathBuf, File) {
    let p = dir.join(name);
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    f.set_len(size).unwrap();
    (p, f)
}

fn key_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn fast(kind: PbkdfType) -> PbkdfOptions {
    PbkdfOptions {
        kind,
        force_iterations: Some(if kind == PbkdfType::Pbkdf2 { 1000 } else { 4 }),
        memory_kib: Some(32 * 1024),
        parallel: Some(2),
        ..PbkdfOptions::default()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// cryptsetup's view of the volume key for a key file, as lower-case hex.
fn cryptsetup_volume_key(img: &Path, key: &Path) -> String {
    let (rc, out) = cryptsetup(&["luksDump", "--dump-volume-key", "-q", "--key-file", s(key), s(img)]);
    assert_eq!(rc, 0, "{out}");
    let start = out.find("MK dump:").expect("MK dump in output") + "MK dump:".len();
    out[start..].chars().filter(|c| c.is_ascii_hexdigit()).collect()
}

#[test]
fn cryptsetup_opens_what_offdisk_formats() {
    let dir = tempfile::tempdir().unwrap();
    let variants: Vec<(PbkdfType, &str, u32, u32, &str)> = vec![
        (PbkdfType::Argon2id, "aes-xts-plain64", 512, 4096, "sha256"),
        (PbkdfType::Argon2i, "aes-xts-plain64", 256, 512, "sha256"),
        (PbkdfType::Pbkdf2, "aes-xts-plain64", 512, 1024, "sha512"),
        (PbkdfType::Pbkdf2, "aes-cbc-essiv:sha256", 256, 512, "sha1"),
    ];
    for (i, (kind, cipher, bits, sector, hash)) in variants.into_iter().enumerate() {
        let (img, f) = image(dir.path(), &format!("v{i}.img"), 17 << 20);
        let key = key_file(dir.path(), &format!("k{i}"), b"format me\n");
        let opts = FormatOptions {
            pbkdf: PbkdfOptions { hash: hash.into(), ..fast(kind) },
            cipher: cipher.into(),
            key_size_bits: bits,
            sector_size: Some(sector),
            label: Some("offsite-1".into()),
            subsystem: Some("offdisk".into()),
            uuid: Some("9b6ad6b4-2f41-4b38-a4a5-8e6c09f3d0a1".into()),
            volume_key: None,
        };
        let vol = luks::format(&f, &opts, &Passphrase::from_slice(b"format me\n")).unwrap();
        let ours = vol.unlock(&f, &Passphrase::from_slice(b"format me\n"), None).unwrap();
        drop(f);

        let (rc, dump) = cryptsetup(&["luksDump", s(&img)]);
        assert_eq!(rc, 0, "{dump}");
        assert!(dump.contains("9b6ad6b4-2f41-4b38-a4a5-8e6c09f3d0a1"), "{dump}");
        assert!(dump.contains("offsite-1") && dump.contains("offdisk"), "{dump}");
        assert!(dump.contains(&format!("sector: {sector} [bytes]")), "{dump}");
        assert!(dump.contains(cipher), "{dump}");
        let (rc, out) = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&key), s(&img)]);
        assert_eq!(rc, 0, "{cipher} {sector}: {out}");
        let (rc, _) = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&key_file(dir.path(), "bad", b"nope")), s(&img)]);
        assert_eq!(rc, 2);
        assert_eq!(cryptsetup_volume_key(&img, &key), std::str::from_utf8(ours.key.to_hex().expose()).unwrap());

        // `cryptsetup repair` finds nothing to fix: the header bytes stay the same.
        let before = std::fs::read(&img).unwrap();
        let (rc, out) = cryptsetup(&["repair", "-q", s(&img)]);
        assert_eq!(rc, 0, "{out}");
        assert!(std::fs::read(&img).unwrap()[..1 << 20] == before[..1 << 20], "cryptsetup repair changed the header: {out}");
    }
}

#[test]
fn the_two_tools_take_turns_on_one_header() {
    let dir = tempfile::tempdir().unwrap();
    let (img, f) = image(dir.path(), "turns.img", 17 << 20);
    let ka = key_file(dir.path(), "a", b"alpha");
    let kb = key_file(dir.path(), "b", b"bravo");
    let kc = key_file(dir.path(), "c", b"charlie");
    let kd = key_file(dir.path(), "d", b"delta");
    let opts = FormatOptions { pbkdf: fast(PbkdfType::Argon2id), ..FormatOptions::default() };
    let vol = luks::format(&f, &opts, &Passphrase::from_slice(b"alpha")).unwrap();
    let vk = vol.unlock(&f, &Passphrase::from_slice(b"alpha"), None).unwrap().key;

    // offdisk adds b; cryptsetup adds c with b; offdisk removes a; cryptsetup adds d in slot 7
    // with c and kills slot 1 (b); offdisk changes d; each step checked by the other tool.
    let slot = update::add_key(&f, &vol, &Passphrase::from_slice(b"alpha"), &Passphrase::from_slice(b"bravo"), None, &fast(PbkdfType::Pbkdf2)).unwrap();
    assert_eq!(slot, 1);
    let (rc, out) = cryptsetup(&["luksAddKey", "-q", "--key-file", s(&kb), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", s(&img), s(&kc)]);
    assert_eq!(rc, 0, "{out}");
    let vol = Volume::load(&f).unwrap();
    assert_eq!(vol.unlock(&f, &Passphrase::from_slice(b"charlie"), None).unwrap().key, vk);
    assert_eq!(update::remove_key(&f, &vol, &Passphrase::from_slice(b"alpha")).unwrap(), 0);
    let (rc, _) = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&ka), s(&img)]);
    assert_eq!(rc, 2, "removed key still opens");
    let (rc, out) = cryptsetup(&["luksAddKey", "-q", "--key-file", s(&kc), "--key-slot", "7", "--pbkdf", "argon2id", "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", s(&img), s(&kd)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = cryptsetup(&["luksKillSlot", "-q", "--key-file", s(&kc), s(&img), "1"]);
    assert_eq!(rc, 0, "{out}");
    let vol = Volume::load(&f).unwrap();
    assert_eq!(vol.active_slots(), vec![2, 7]);
    assert!(matches!(vol.unlock(&f, &Passphrase::from_slice(b"bravo"), None), Err(luks::LuksError::NoKey)));
    let u = vol.unlock(&f, &Passphrase::from_slice(b"delta"), None).unwrap();
    assert_eq!((u.keyslot, &u.key), (7, &vk));
    let changed = update::change_key(&f, &vol, &Passphrase::from_slice(b"delta"), &Passphrase::from_slice(b"echo"), None, &fast(PbkdfType::Argon2i)).unwrap();
    assert_eq!(changed, 7);
    let ke = key_file(dir.path(), "e", b"echo");
    let (rc, out) = cryptsetup(&["open", "--test-passphrase", "--key-slot", "7", "--key-file", s(&ke), s(&img)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, _) = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&kd), s(&img)]);
    assert_eq!(rc, 2);
    assert_eq!(cryptsetup_volume_key(&img, &ke), std::str::from_utf8(vk.to_hex().expose()).unwrap());
    let (rc, out) = cryptsetup(&["repair", "-q", s(&img)]);
    assert_eq!(rc, 0, "{out}");
}

#[test]
fn keyslot_priorities_are_honoured_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (img, f) = image(dir.path(), "prio.img", 17 << 20);
    let kb = key_file(dir.path(), "b", b"bravo");
    let opts = FormatOptions { pbkdf: fast(PbkdfType::Pbkdf2), ..FormatOptions::default() };
    let vol = luks::format(&f, &opts, &Passphrase::from_slice(b"alpha")).unwrap();
    update::add_key(&f, &vol, &Passphrase::from_slice(b"alpha"), &Passphrase::from_slice(b"bravo"), None, &fast(PbkdfType::Pbkdf2)).unwrap();
    let (rc, out) = cryptsetup(&["config", "--priority", "prefer", "--key-slot", "0", s(&img)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = cryptsetup(&["config", "--priority", "ignore", "--key-slot", "1", s(&img)]);
    assert_eq!(rc, 0, "{out}");
    let vol = Volume::load(&f).unwrap();
    // An "ignore" keyslot opens only when named, as in cryptsetup.
    assert!(matches!(vol.unlock(&f, &Passphrase::from_slice(b"bravo"), None), Err(luks::LuksError::NoKey)));
    assert_eq!(cryptsetup(&["open", "--test-passphrase", "--key-file", s(&kb), s(&img)]).0, 2);
    assert_eq!(vol.unlock(&f, &Passphrase::from_slice(b"bravo"), Some(1)).unwrap().keyslot, 1);
    update::change_key(&f, &vol, &Passphrase::from_slice(b"alpha"), &Passphrase::from_slice(b"charlie"), None, &fast(PbkdfType::Pbkdf2)).unwrap();
    let (rc, dump) = cryptsetup(&["luksDump", s(&img)]);
    assert_eq!(rc, 0);
    let slot0 = &dump[dump.find("  0: luks2").unwrap()..dump.find("  1: luks2").unwrap()];
    assert!(slot0.contains("Priority:   preferred"), "{slot0}");
}
