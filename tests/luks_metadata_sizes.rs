//! Every LUKS2 metadata size cryptsetup allows (16 KiB .. 4 MiB): offdisk opens the volume,
//! finds the secondary copy by probing when the primary is wiped, and its updates open
//! again in cryptsetup.

use offdisk::luks::{update, PbkdfOptions, PbkdfType, Volume};
use offdisk::secret::Passphrase;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;

fn cryptsetup(args: &[&str]) -> (i32, String) {
    let out = Command::new("cryptsetup").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn all_metadata_sizes_interoperate() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, b"sizes").unwrap();
    let key2 = dir.path().join("k2");
    std::fs::write(&key2, b"sizes-two").unwrap();
    let fast = PbkdfOptions { kind: PbkdfType::Pbkdf2, force_iterations: Some(1000), ..PbkdfOptions::default() };
    for kib in [16u64, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let hdr = kib << 10;
        let keyslots = 1u64 << 20;
        let offset = 2 * hdr + keyslots;
        let img = dir.path().join(format!("m{kib}.img"));
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
        f.set_len(offset + (1 << 20)).unwrap();
        let (rc, out) = cryptsetup(&[
            "luksFormat", "-q", "--type", "luks2", "--key-file", key.to_str().unwrap(),
            "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--luks2-metadata-size", &format!("{kib}k"), "--luks2-keyslots-size", &keyslots.to_string(),
            "--offset", &(offset / 512).to_string(), img.to_str().unwrap(),
        ]);
        assert_eq!(rc, 0, "{kib} KiB: {out}");
        let vol = Volume::load(&f).unwrap_or_else(|e| panic!("{kib} KiB: {e}"));
        let st = vol.luks2("t").unwrap();
        assert_eq!(st.bin.hdr_size, hdr);
        assert!(st.primary_ok && st.secondary_ok);
        let vk = vol.unlock(&f, &Passphrase::from_slice(b"sizes"), None).unwrap().key;

        // Wipe the primary copy: the secondary is found by probing at `hdr`.
        f.write_all_at(&vec![0u8; hdr as usize], 0).unwrap();
        let vol = Volume::load(&f).unwrap_or_else(|e| panic!("{kib} KiB, primary wiped: {e}"));
        assert!(!vol.luks2("t").unwrap().primary_ok);
        assert_eq!(vol.unlock(&f, &Passphrase::from_slice(b"sizes"), None).unwrap().key, vk);
        // The next update repairs the primary, and cryptsetup agrees.
        update::add_key(&f, &vol, &Passphrase::from_slice(b"sizes"), &Passphrase::from_slice(b"sizes-two"), None, &fast).unwrap();
        let vol = Volume::load(&f).unwrap();
        let st = vol.luks2("t").unwrap();
        assert!(st.primary_ok && st.secondary_ok, "{kib} KiB: {:?}", st.problems);
        let (rc, out) = cryptsetup(&["open", "--test-passphrase", "--key-file", key2.to_str().unwrap(), img.to_str().unwrap()]);
        assert_eq!(rc, 0, "{kib} KiB: {out}");
        let (rc, out) = cryptsetup(&["repair", "-q", img.to_str().unwrap()]);
        assert_eq!(rc, 0, "{kib} KiB: {out}");
    }
}
