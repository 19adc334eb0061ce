//! Header backup and restore (cryptsetup's luksHeaderBackup / luksHeaderRestore format:
//! the raw bytes from the start of the device up to the data offset).

use super::io::BlockIo;
use super::{Header, LuksError, Volume};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Bytes a backup of `vol` holds: everything before the data (headers and keyslot areas).
pub fn header_area_len(vol: &Volume) -> Result<u64, LuksError> {
    Ok(match &vol.header {
        Header::Luks1(h) => {
            let end_of_slots = h
                .slots
                .iter()
                .map(|s| u64::from(s.key_material_offset) * 512 + (h.key_bytes as u64 * 4000).div_ceil(512) * 512)
                .max()
                .unwrap_or(4096);
            if h.payload_offset == 0 { end_of_slots } else { u64::from(h.payload_offset) * 512 }
        }
        Header::Luks2(s) => {
            let area_end = 2 * s.bin.hdr_size + s.meta.keyslots_size;
            match s.meta.data_segment() {
                Some((_, seg)) if seg.offset != 0 => seg.offset,
                _ => area_end,
            }
        }
    })
}

/// Writes the header area of the device to a new file `path` (never overwrites).
pub fn header_backup(io: &dyn BlockIo, vol: &Volume, path: &Path) -> Result<u64, LuksError> {
    let len = header_area_len(vol)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| LuksError::io(format!("creating {}", path.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        io.read_at(&mut buf[..n], off).map_err(|e| LuksError::io("reading header area".into(), e))?;
        out.write_all(&buf[..n]).map_err(|e| LuksError::io(format!("writing {}", path.display()), e))?;
        off += n as u64;
    }
    out.sync_all().map_err(|e| LuksError::io(format!("syncing {}", path.display()), e))?;
    Ok(len)
}

/// What a restore would do, decided before writing anything.
pub struct RestorePlan {
    pub backup: Volume,
    pub bytes: Vec<u8>,
    /// True when the device holds a LUKS header now (it gets replaced).
    pub replaces_header: bool,
}

/// Checks `path` is a valid header backup for this device: it loads as LUKS, it is whole,
/// the device is large enough for its data offset, and any header on the device now has
/// the same UUID and data offset. Nothing is written.
pub fn plan_restore(io: &dyn BlockIo, path: &Path) -> Result<RestorePlan, LuksError> {
    let f = File::open(path).map_err(|e| LuksError::io(format!("opening {}", path.display()), e))?;
    let backup = Volume::load_io(&f).map_err(|e| LuksError::BackupMismatch(format!("not a valid LUKS header backup: {e}")))?;
    if let Header::Luks2(s) = &backup.header {
        if !(s.primary_ok && s.secondary_ok) {
            return Err(LuksError::BackupMismatch(format!("the backup is damaged: {}", s.problems.join("; "))));
        }
    }
    let len = header_area_len(&backup)?;
    let flen = f.metadata().map_err(|e| LuksError::io("reading backup size".into(), e))?.len();
    if flen < len {
        return Err(LuksError::BackupMismatch(format!("the backup is truncated ({flen} bytes, header area is {len})")));
    }
    if len > 256 << 20 {
        return Err(LuksError::BackupMismatch(format!("header area of {len} bytes is implausibly large")));
    }
    let dev_size = io.size().map_err(|e| LuksError::io("reading device size".into(), e))?;
    let seg = backup.crypt_segment()?;
    if dev_size <= seg.offset.max(len) {
        return Err(LuksError::BackupMismatch(format!(
            "the device ({dev_size} bytes) is too small for this header (data starts at {})",
            seg.offset
        )));
    }
    let replaces_header = match Volume::load_io(io) {
        Ok(current) => {
            if current.uuid() != backup.uuid() {
                return Err(LuksError::BackupMismatch(format!(
                    "the device holds LUKS volume {} but the backup is of {}",
                    current.uuid(),
                    backup.uuid()
                )));
            }
            if current.crypt_segment()?.offset != seg.offset {
                return Err(LuksError::BackupMismatch("the data offset differs from the device's header".into()));
            }
            true
        }
        Err(_) => false,
    };
    let mut bytes = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, 0)
        .map_err(|e| LuksError::io(format!("reading {}", path.display()), e))?;
    Ok(RestorePlan { backup, bytes, replaces_header })
}

/// Writes a checked restore plan: keyslot areas first, then the secondary header copy,
/// then the primary, syncing after each.
pub fn apply_restore(io: &dyn BlockIo, plan: &RestorePlan) -> Result<Volume, LuksError> {
    let w = |off: usize, end: usize, what: &str| -> Result<(), LuksError> {
        if off < end {
            io.write_at(&plan.bytes[off..end], off as u64).map_err(|e| LuksError::io(format!("writing {what}"), e))?;
            io.sync().map_err(|e| LuksError::io(format!("syncing {what}"), e))?;
        }
        Ok(())
    };
    let len = plan.bytes.len();
    match &plan.backup.header {
        Header::Luks2(s) => {
            let h = s.bin.hdr_size as usize;
            w(2 * h, len, "keyslot areas")?;
            w(h, 2 * h, "secondary header")?;
            w(0, h, "primary header")?;
        }
        Header::Luks1(_) => {
            w(4096, len, "keyslot areas")?;
            w(0, 4096.min(len), "header")?;
        }
    }
    Volume::load_io(io)
}
