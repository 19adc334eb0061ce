//! Building backup-disk images without the kernel: a backup root made by `offdisk backup`,
//! an ext4 image of it from `mkfs.ext4 -d`, a LUKS container from `cryptsetup luksFormat`
//! on a plain file, the filesystem encrypted into its data area with offdisk's own sector
//! cipher (keyed by unlocking the header cryptsetup wrote), optionally inside a GPT.
#![allow(dead_code)]

use offdisk::luks::cipher::SectorCipher;
use offdisk::luks::Volume;
use offdisk::secret::Passphrase;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

#[derive(Debug, Clone)]
pub struct Spec {
    pub luks: &'static str,
    pub cipher: &'static str,
    pub key_bits: u32,
    pub sector: u32,
    /// Whole disk with a GPT around the LUKS partition.
    pub gpt: bool,
    pub mkfs: &'static [&'static str],
}

pub struct Image {
    pub path: PathBuf,
    pub key_file: PathBuf,
    /// Byte offset of the filesystem's first byte (in plaintext terms) in `path`.
    pub data_offset: u64,
    pub block_size: u64,
    /// The plaintext filesystem image.
    pub fs_image: PathBuf,
}

fn check(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn du(dir: &Path) -> u64 {
    let out = Command::new("du").args(["-sb", "--apparent-size"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

/// Makes the image of a backup disk holding `root` (a directory with `generations/`).
pub fn build(spec: &Spec, root: &Path, work: &Path) -> Image {
    let fs_image = work.join("fs.img");
    let fs_size = ((du(root) * 3 / 2 + (24 << 20)) >> 20) << 20;
    File::create(&fs_image).unwrap().set_len(fs_size).unwrap();
    let block = if spec.sector == 4096 { "4096" } else { "1024" };
    let block = if spec.mkfs.contains(&"-b") { None } else { Some(block) };
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "backups01"]);
    if let Some(b) = block {
        mkfs.args(["-b", b]);
    }
    check(mkfs.args(spec.mkfs).arg("-d").arg(root).arg(&fs_image));
    let key_file = work.join("key");
    fs::write(&key_file, PASSPHRASE).unwrap();

    let container = work.join("luks.img");
    File::create(&container).unwrap().set_len(fs_size + (16 << 20)).unwrap();
    let mut fmt = Command::new("cryptsetup");
    fmt.args(["luksFormat", "--batch-mode", "--type", spec.luks, "--cipher", spec.cipher, "--key-size", &spec.key_bits.to_string()]);
    fmt.args(["--pbkdf-force-iterations", "1000", "--key-file"]).arg(&key_file);
    if spec.luks == "luks2" {
        fmt.args(["--pbkdf", "pbkdf2", "--sector-size", &spec.sector.to_string()]);
    }
    check(fmt.arg(&container));
    encrypt_into(&container, &fs_image);

    let data = Volume::load(&File::open(&container).unwrap()).unwrap().crypt_segment().unwrap().offset;
    let mut img = Image { path: container.clone(), key_file, data_offset: data, block_size: 0, fs_image };
    img.block_size = offdisk::ext4::Fs::open(File::open(&img.fs_image).unwrap()).unwrap().superblock().block_size;
    if spec.gpt {
        let disk = work.join("disk.img");
        let clen = fs::metadata(&container).unwrap().len();
        let total = clen + (3 << 20);
        let plan = offdisk::disk::gpt::GptPlan::new(total, 512, "offdisk", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()).unwrap();
        let f = File::create(&disk).unwrap();
        f.set_len(total).unwrap();
        for (off, bytes) in plan.writes() {
            f.write_all_at(&bytes, off).unwrap();
        }
        let (start, _) = plan.partition_bytes();
        let data = fs::read(&container).unwrap();
        f.write_all_at(&data, start).unwrap();
        fs::remove_file(&container).unwrap();
        img.path = disk;
        img.data_offset += start;
    }
    img
}

/// Writes `fs_image` encrypted into the data segment of the LUKS volume `container`.
pub fn encrypt_into(container: &Path, fs_image: &Path) {
    let dev = fs::OpenOptions::new().read(true).write(true).open(container).unwrap();
    let vol = Volume::load(&dev).unwrap();
    let seg = vol.crypt_segment().unwrap();
    let key = vol.unlock(&dev, &Passphrase::from_slice(PASSPHRASE), None).unwrap().key;
    let cipher = SectorCipher::new(&seg.cipher, key.expose()).unwrap();
    let mut data = fs::read(fs_image).unwrap();
    let ss = seg.sector_size as usize;
    data.resize(data.len().div_ceil(ss) * ss, 0);
    cipher.encrypt(&mut data, ss, seg.iv_tweak).unwrap();
    dev.write_all_at(&data, seg.offset).unwrap();
}

/// Byte offset in the image of the first data block of `path` inside the filesystem.
pub fn data_block_of(img: &Image, path: &[u8]) -> u64 {
    let fs = offdisk::ext4::Fs::open(File::open(&img.fs_image).unwrap()).unwrap();
    let inode = fs.lookup(path).unwrap();
    let run = fs.map(&inode, 0, 1).unwrap()[0];
    img.data_offset + run.physical.expect("a data block") * img.block_size
}

/// The command as an unprivileged user (nobody) when the tests run as root.
pub fn unprivileged(bin: &str) -> Command {
    if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin]);
        c
    } else {
        Command::new(bin)
    }
}
