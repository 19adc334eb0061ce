//! Finding and decrypting the filesystem of a backup disk in userspace: a whole disk (its
//! GPT's LUKS partition), a LUKS partition, or an image file of either; LUKS1 or LUKS2,
//! every cipher [`SectorCipher`] supports, sectors of 512 to 4096 bytes. The result is a
//! [`ReadAt`] the ext4 reader reads through, decrypting on all cores for large reads.

use super::OfflineError;
use crate::disk::gpt;
use crate::ext4::ReadAt;
use crate::luks::cipher::SectorCipher;
use crate::luks::{self, io::BlockIo, Volume};
use crate::secret::Passphrase;
use rayon::prelude::*;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the LUKS volume sits in what was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    /// Byte offset of the LUKS header (0 unless a partition of a whole disk).
    pub offset: u64,
    pub len: u64,
    /// The GPT partition, when found through one.
    pub partition: Option<gpt::Partition>,
}

/// A byte range of a file or device (a partition of a disk image).
pub struct Slice {
    file: File,
    offset: u64,
    len: u64,
}

impl BlockIo for Slice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        FileExt::read_exact_at(&self.file, buf, self.offset + offset)
    }
    fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// Opens `path` read-only (never for writing: a backup disk read elsewhere is not changed)
/// and finds the LUKS header: at the start, or in the GPT partition of the Linux LUKS type
/// (or the one partition with a LUKS header).
pub fn locate(path: &Path) -> Result<(Slice, Volume, Located), OfflineError> {
    let io_err = |e: io::Error| OfflineError::Open { path: path.to_path_buf(), error: e };
    let file = File::open(path).map_err(io_err)?;
    let size = BlockIo::size(&file).map_err(io_err)?;
    let whole = Slice { file: file.try_clone().map_err(io_err)?, offset: 0, len: size };
    match Volume::load_io(&whole) {
        Ok(v) => {
            return Ok((whole, v, Located { path: path.to_path_buf(), offset: 0, len: size, partition: None }));
        }
        Err(luks::LuksError::NotLuks) => {}
        Err(e) => return Err(OfflineError::Luks(e)),
    }
    let table = gpt::read(&file, size).map_err(OfflineError::Partition)?;
    let Some(table) = table else {
        return Err(OfflineError::NotBackupDisk(path.to_path_buf()));
    };
    let mut found = Vec::new();
    for p in &table.partitions {
        let s = Slice { file: file.try_clone().map_err(io_err)?, offset: p.offset, len: p.len };
        if let Ok(v) = Volume::load_io(&s) {
            found.push((s, v, p.clone()));
        }
    }
    // Prefer the partition typed Linux LUKS when several hold headers.
    if found.len() > 1 {
        found.retain(|(_, _, p)| p.type_guid == gpt::LINUX_LUKS_TYPE);
    }
    match found.len() {
        1 => {
            let (s, v, p) = found.pop().expect("one");
            let loc = Located { path: path.to_path_buf(), offset: p.offset, len: p.len, partition: Some(p) };
            Ok((s, v, loc))
        }
        0 => Err(OfflineError::NotBackupDisk(path.to_path_buf())),
        n => Err(OfflineError::Partition(format!("{n} partitions hold LUKS volumes; name the partition device"))),
    }
}

/// The decrypted data segment of an unlocked LUKS volume.
pub struct CryptVolume {
    file: File,
    cipher: SectorCipher,
    /// Byte offset of the first data sector in `file`.
    start: u64,
    len: u64,
    sector: u64,
    iv_tweak: u64,
}

/// Reads at least this much before spreading the decryption over threads.
const PARALLEL_MIN: usize = 256 * 1024;
/// Bytes each thread decrypts at a time.
const CHUNK: usize = 64 * 1024;

impl CryptVolume {
    /// Unlocks `vol` (found by [`locate`]) with `pass` and keys the sector cipher.
    pub fn unlock(slice: &Slice, vol: &Volume, pass: &Passphrase) -> Result<CryptVolume, OfflineError> {
        vol.check_activatable().map_err(OfflineError::Luks)?;
        let seg = vol.crypt_segment().map_err(OfflineError::Luks)?;
        let unlocked = vol.unlock_io(slice, pass, None).map_err(OfflineError::Luks)?;
        let cipher = SectorCipher::new(&seg.cipher, unlocked.key.expose()).map_err(OfflineError::Luks)?;
        let end = match seg.size {
            Some(s) => seg.offset.checked_add(s),
            None => Some(slice.len),
        };
        let len = match end {
            Some(e) if e <= slice.len && seg.offset <= e => e - seg.offset,
            _ => return Err(OfflineError::Luks(luks::LuksError::TooSmall("the data segment runs past the end of the device".into()))),
        };
        let sector = u64::from(seg.sector_size);
        Ok(CryptVolume {
            file: slice.file.try_clone().map_err(|error| OfflineError::Open { path: PathBuf::from("(device)"), error })?,
            cipher,
            start: slice.offset + seg.offset,
            len: len / sector * sector,
            sector,
            iv_tweak: seg.iv_tweak,
        })
    }

    /// Length of the decrypted volume in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decrypts whole sectors read from sector number `first`, on all cores when large.
    fn decrypt(&self, data: &mut [u8], first: u64) -> io::Result<()> {
        let ss = self.sector as usize;
        let per = self.sector / 512;
        let iv = |sector: u64| self.iv_tweak.wrapping_add(sector.wrapping_mul(per));
        let err = |e: luks::LuksError| io::Error::other(e.to_string());
        if data.len() < PARALLEL_MIN {
            return self.cipher.decrypt(data, ss, iv(first)).map_err(err);
        }
        let chunk = CHUNK.max(ss) / ss * ss;
        data.par_chunks_mut(chunk).enumerate().try_for_each(|(i, c)| {
            let s = first + (i * chunk / ss) as u64;
            self.cipher.decrypt(c, ss, iv(s)).map_err(err)
        })
    }
}

impl ReadAt for CryptVolume {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len).ok_or(io::ErrorKind::UnexpectedEof)?;
        let ss = self.sector;
        let (a, b) = (offset / ss * ss, end.div_ceil(ss) * ss);
        if a == offset && b == end {
            // Sector-aligned: decrypt in the caller's buffer.
            FileExt::read_exact_at(&self.file, buf, self.start + a)?;
            return self.decrypt(buf, a / ss);
        }
        let mut tmp = vec![0u8; (b - a) as usize];
        FileExt::read_exact_at(&self.file, &mut tmp, self.start + a)?;
        self.decrypt(&mut tmp, a / ss)?;
        let skip = (offset - a) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }
}
