//! Data path check against the kernel's dm-crypt, in a throwaway VM (needs virtme-ng, from
//! `scripts/virtme-venv.sh`, and a kernel; run with `cargo test --test luks_vm_data -- --ignored`).
//!
//! For volumes offdisk formats (xts with 4096-byte sectors, cbc-essiv with 512) and a
//! cryptsetup LUKS1 volume, dm-crypt in the VM writes a known pattern through
//! /dev/mapper and reads back a region offdisk encrypted on the host. The host then
//! decrypts the first with `SectorCipher` using `Volume::crypt_segment()` — so the segment
//! offset, sector size and 512-byte IV units that offdisk hands to dm are the ones the
//! kernel uses — and compares the second.

use offdisk::luks::cipher::SectorCipher;
use offdisk::luks::{self, FormatOptions, PbkdfOptions, PbkdfType, Volume};
use offdisk::secret::Passphrase;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

const REGION: usize = 2 << 20;

/// The kernel the VM boots: `OFFDISK_VM_KERNEL`, else the newest installed `/boot/vmlinuz-*`
/// (as `tests/vm/run.sh` picks it), never a pinned version that a package update removes.
fn newest_kernel() -> std::path::PathBuf {
    if let Some(k) = std::env::var_os("OFFDISK_VM_KERNEL") {
        return k.into();
    }
    let mut kernels: Vec<String> = std::fs::read_dir("/boot")
        .expect("/boot readable")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    kernels.sort_by_key(|k| version_key(k));
    let newest = kernels.pop().expect("a kernel in /boot (Debian package linux-image-amd64)");
    Path::new("/boot").join(newest)
}

/// The virtme-ng to run, found as `scripts/vng.sh` finds it: `OFFDISK_VNG`, else the venv
/// `scripts/virtme-venv.sh` makes (`OFFDISK_VENV`, default /opt/offdisk-tests/venv), else `vng`
/// on the PATH; with the PATH to run it with (vng starts its helpers, virtme-run, by name: the
/// venv's must come first).
fn vng() -> (std::path::PathBuf, std::ffi::OsString) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let venv = std::env::var_os("OFFDISK_VENV").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let venv_bin = venv.unwrap_or_else(|| "/opt/offdisk-tests/venv".into()).join("bin");
    let with_venv = || {
        let mut dirs = vec![venv_bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        std::env::join_paths(dirs).unwrap_or_else(|_| path.clone())
    };
    if let Some(v) = std::env::var_os("OFFDISK_VNG").filter(|v| !v.is_empty()) {
        return (v.into(), path.clone());
    }
    if venv_bin.join("vng").exists() {
        return (venv_bin.join("vng"), with_venv());
    }
    ("vng".into(), path.clone())
}

/// `sort -V` in miniature: digit runs compare as numbers, everything else as text.
fn version_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut chars = name.chars().peekable();
    while chars.peek().is_some() {
        let mut text = String::new();
        while let Some(c) = chars.peek().filter(|c| !c.is_ascii_digit()) {
            text.push(*c);
            chars.next();
        }
        let mut num = String::new();
        while let Some(c) = chars.peek().filter(|c| c.is_ascii_digit()) {
            num.push(*c);
            chars.next();
        }
        key.push((text, num.parse().unwrap_or(0)));
    }
    key
}

fn pattern(seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..REGION)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn encrypt_region(img: &Path, pass: &[u8], at: u64, data: &[u8]) {
    let f = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let vol = Volume::load(&f).unwrap();
    let key = vol.unlock(&f, &Passphrase::from_slice(pass), None).unwrap().key;
    let seg = vol.crypt_segment().unwrap();
    let mut buf = data.to_vec();
    let first_iv = seg.iv_tweak + at / 512;
    SectorCipher::new(&seg.cipher, key.expose()).unwrap().encrypt(&mut buf, seg.sector_size as usize, first_iv).unwrap();
    f.write_all_at(&buf, seg.offset + at).unwrap();
}

fn decrypt_region(img: &Path, pass: &[u8], at: u64) -> Vec<u8> {
    let f = OpenOptions::new().read(true).open(img).unwrap();
    let vol = Volume::load(&f).unwrap();
    let key = vol.unlock(&f, &Passphrase::from_slice(pass), None).unwrap().key;
    let seg = vol.crypt_segment().unwrap();
    let mut buf = vec![0u8; REGION];
    f.read_exact_at(&mut buf, seg.offset + at).unwrap();
    SectorCipher::new(&seg.cipher, key.expose()).unwrap().decrypt(&mut buf, seg.sector_size as usize, seg.iv_tweak + at / 512).unwrap();
    buf
}

#[test]
#[ignore = "boots a VM with vng (slow); run with --ignored"]
fn dm_crypt_and_offdisk_agree_on_data_sectors() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm-luks-data");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let pass = b"vm data test";
    std::fs::write(base.join("key"), pass).unwrap();
    std::fs::write(base.join("p1.bin"), pattern(1)).unwrap();
    let fast = PbkdfOptions { kind: PbkdfType::Pbkdf2, force_iterations: Some(1000), ..PbkdfOptions::default() };
    let volumes = [("xts4k", "aes-xts-plain64", 512u32, 4096u32), ("essiv512", "aes-cbc-essiv:sha256", 256, 512)];
    for (name, cipher, bits, sector) in volumes {
        let img = base.join(format!("{name}.img"));
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
        f.set_len(24 << 20).unwrap();
        let opts = FormatOptions { pbkdf: fast.clone(), cipher: cipher.into(), key_size_bits: bits, sector_size: Some(sector), ..FormatOptions::default() };
        luks::format(&f, &opts, &Passphrase::from_slice(pass)).unwrap();
    }
    let l1 = base.join("luks1.img");
    std::fs::File::create(&l1).unwrap().set_len(24 << 20).unwrap();
    let st = Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks1", "--cipher", "aes-cbc-plain", "--key-size", "128", "--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(base.join("key"))
        .arg(&l1)
        .status()
        .unwrap();
    assert!(st.success());
    let names = ["xts4k", "essiv512", "luks1"];
    for (i, n) in names.iter().enumerate() {
        encrypt_region(&base.join(format!("{n}.img")), pass, REGION as u64, &pattern(100 + i as u32));
    }
    let script = format!(
        r#"set -ex
modprobe -a loop dm-crypt
cd {d}
# The shared directory does not take O_DIRECT reads: work on copies in the VM's /tmp.
for n in {names}; do
  cp $n.img /tmp/$n.img
  cryptsetup open --key-file key /tmp/$n.img t-$n
  dd if=p1.bin of=/dev/mapper/t-$n bs=1M oflag=direct conv=fsync status=none
  dd if=/dev/mapper/t-$n of=out-$n.bin bs=1M skip=2 count=2 iflag=direct status=none
  cryptsetup close t-$n
  cp /tmp/$n.img $n.img
done
echo VM-DONE
"#,
        d = base.display(),
        names = names.join(" ")
    );
    std::fs::write(base.join("run.sh"), script).unwrap();
    let (vng, path) = vng();
    let out = Command::new(vng)
        .env("PATH", path)
        .args(["--disable-kvm", "--run"])
        .arg(newest_kernel())
        .args(["--memory", "2G", "--rwdir"])
        .arg(&base)
        .arg("--exec")
        .arg(format!("bash {}/run.sh", base.display()))
        .output()
        .expect("vng runs (install it with scripts/virtme-venv.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("VM-DONE"), "{text}");
    for (i, n) in names.iter().enumerate() {
        let img = base.join(format!("{n}.img"));
        assert!(decrypt_region(&img, pass, 0) == pattern(1), "{n}: offdisk cannot read what dm-crypt wrote");
        let back = std::fs::read(base.join(format!("out-{n}.bin"))).unwrap();
        assert!(back == pattern(100 + i as u32), "{n}: dm-crypt cannot read what offdisk wrote");
    }
}
