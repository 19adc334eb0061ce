//! Bench-only helper (benches/anywhere-bench.sh): writes a plaintext filesystem image
//! encrypted into the data segment of a LUKS container that `cryptsetup luksFormat` made on
//! a plain file, with offdisk's own sector cipher, so a large backup-disk image is built on
//! the host at native speed instead of through dm-crypt in an emulated VM.
//!
//! luks_fill CONTAINER FS_IMAGE KEY_FILE

use offdisk::luks::cipher::SectorCipher;
use offdisk::luks::Volume;
use offdisk::secret::Passphrase;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;

/// Plaintext encrypted per write: large enough for all cores, small enough for any machine.
const CHUNK: usize = 16 << 20;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 3 {
        eprintln!("usage: luks_fill CONTAINER FS_IMAGE KEY_FILE");
        std::process::exit(2);
    }
    if let Err(e) = run(&a[0], &a[1], &a[2]) {
        eprintln!("luks_fill: {e}");
        std::process::exit(1);
    }
}

fn run(container: &str, fs_image: &str, key_file: &str) -> Result<(), Box<dyn std::error::Error>> {
    let dev = OpenOptions::new().read(true).write(true).open(container)?;
    let vol = Volume::load(&dev)?;
    let seg = vol.crypt_segment()?;
    let pass = Passphrase::from_slice(&std::fs::read(key_file)?);
    let key = vol.unlock(&dev, &pass, None)?.key;
    let cipher = SectorCipher::new(&seg.cipher, key.expose())?;
    let ss = seg.sector_size as usize;
    let room = dev.metadata()?.len().saturating_sub(seg.offset);
    let mut src = File::open(fs_image)?;
    if src.metadata()?.len() > room {
        return Err(format!("{fs_image} is larger than the container's data area ({room} bytes)").into());
    }
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let mut n = 0;
        while n < CHUNK {
            match src.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        let len = n.div_ceil(ss) * ss;
        buf[n..len].fill(0);
        // IVs count 512-byte units from the segment's start, as in SectorCipher.
        cipher.encrypt_parallel(&mut buf[..len], ss, seg.iv_tweak + done / 512)?;
        dev.write_all_at(&buf[..len], seg.offset + done)?;
        done += len as u64;
        if n < CHUNK {
            break;
        }
    }
    dev.sync_all()?;
    Ok(())
}
