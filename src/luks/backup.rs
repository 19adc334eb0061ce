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

/// Writes the header area of the device to a new file `path` (never overwrites), readable
/// by its owner only (0400 whatever the umask, as cryptsetup makes it): with the keyslots in
/// it, anyone who can read it can guess passphrases offline.
pub fn header_backup(io: &dyn BlockIo, vol: &Volume, path: &Path) -> Result<u64, LuksError> {
    use std::os::unix::fs::OpenOptionsExt;
    let len = header_area_len(vol)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
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
    /// Byte ranges [start, end) of the keyslot areas the header on the device uses now.
    pub live_areas: Vec<(u64, u64)>,
}

/// Byte ranges [start, end) of the keyslot material a header refers to.
fn keyslot_areas(vol: &Volume) -> Vec<(u64, u64)> {
    match &vol.header {
        Header::Luks1(h) => h
            .slots
            .iter()
            .filter(|s| s.active)
            .map(|s| {
                let start = u64::from(s.key_material_offset) * 512;
                (start, start + (h.key_bytes as u64 * u64::from(s.stripes)).div_ceil(512) * 512)
            })
            .collect(),
        Header::Luks2(s) => s.meta.keyslots.values().map(|k| (k.area.offset, k.area.offset.saturating_add(k.area.size))).collect(),
    }
}

/// The parts of `ranges` that overlap none of `taken`.
fn minus(ranges: &[(u64, u64)], taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let mut pieces = vec![(start, end)];
        for &(ts, te) in taken {
            pieces = pieces
                .into_iter()
                .flat_map(|(s, e)| {
                    if te <= s || e <= ts {
                        vec![(s, e)]
                    } else {
                        [(s, ts.min(e)), (te.max(s), e)].into_iter().filter(|(a, b)| a < b).collect()
                    }
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

/// Checks `path` is a valid header backup for this device: it loads as LUKS, it is whole,
/// the device is large enough for its data offset, and any header on the device now has
/// the same UUID and data offset. Nothing is written.
pub fn plan_restore(io: &dyn BlockIo, path: &Path) -> Result<RestorePlan, LuksError> {
    let f = File::open(path).map_err(|e| LuksError::io(format!("opening {}", path.display()), e))?;
    let backup = Volume::load_io(&f).map_err(|e| match e {
        LuksError::TooSmall(m) => LuksError::BackupMismatch(format!("the backup is truncated: {m}")),
        e => LuksError::BackupMismatch(format!("not a valid LUKS header backup: {e}")),
    })?;
    if let Header::Luks2(s) = &backup.header {
        // As cryptsetup: a header with requirements offdisk does not know is never written.
        if let Some(r) = s.meta.requirements.first() {
            return Err(LuksError::Requirement(r.clone()));
        }
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
    let mut live_areas = Vec::new();
    let replaces_header = match Volume::load_io(io) {
        Ok(current) => {
            live_areas = keyslot_areas(&current);
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
    Ok(RestorePlan { backup, bytes, replaces_header, live_areas })
}

/// Writes a checked restore plan so that at every instant the device opens with the
/// passphrases it had or with the backup's: first the backup's keyslot material that lies
/// outside every keyslot area the live header uses, then the secondary header copy, then
/// the primary (the higher seqid of two valid copies wins, so the switch is one write),
/// and only then the rest of the keyslot areas, over the live ones. Syncs after each.
/// (When a backup keyslot shares its area with a live one no order keeps both; that slot
/// opens again once the last write is done.)
pub fn apply_restore(io: &dyn BlockIo, plan: &RestorePlan) -> Result<Volume, LuksError> {
    let write = |off: u64, end: u64, what: &str| -> Result<(), LuksError> {
        if off < end {
            io.write_at(&plan.bytes[off as usize..end as usize], off).map_err(|e| LuksError::io(format!("writing {what}"), e))?;
        }
        Ok(())
    };
    let sync = |what: &str| io.sync().map_err(|e| LuksError::io(format!("syncing {what}"), e));
    let len = plan.bytes.len() as u64;
    let (headers, areas_start): (Vec<(u64, u64, &str)>, u64) = match &plan.backup.header {
        Header::Luks2(s) => {
            let h = s.bin.hdr_size;
            (vec![(h, 2 * h, "secondary header"), (0, h, "primary header")], 2 * h)
        }
        Header::Luks1(_) => (vec![(0, 4096.min(len), "header")], 4096.min(len)),
    };
    let clip = |(a, b): (u64, u64)| (a.max(areas_start), b.min(len));
    let backup_areas: Vec<(u64, u64)> = keyslot_areas(&plan.backup).into_iter().map(clip).filter(|(a, b)| a < b).collect();
    let early = minus(&backup_areas, &plan.live_areas);
    for &(a, b) in &early {
        write(a, b, "keyslot areas")?;
    }
    if !early.is_empty() {
        sync("keyslot areas")?;
    }
    for (a, b, what) in headers {
        write(a, b, what)?;
        sync(what)?;
    }
    write(areas_start, len, "keyslot areas")?;
    sync("keyslot areas")?;
    Volume::load_io(io)
}

#[cfg(test)]
mod tests {
    use super::minus;

    #[test]
    fn range_subtraction() {
        assert_eq!(minus(&[(0, 10)], &[]), vec![(0, 10)]);
        assert_eq!(minus(&[(0, 10)], &[(3, 5)]), vec![(0, 3), (5, 10)]);
        assert_eq!(minus(&[(0, 10)], &[(0, 10)]), vec![]);
        assert_eq!(minus(&[(0, 10), (20, 30)], &[(5, 25)]), vec![(0, 5), (25, 30)]);
        assert_eq!(minus(&[(10, 20)], &[(0, 5), (25, 30)]), vec![(10, 20)]);
    }
}
