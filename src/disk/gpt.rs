//! A GPT with exactly one partition of the Linux LUKS type, written by us: protective MBR,
//! primary header and entries at the start, backup entries and header at the end, the
//! partition 1 MiB aligned (as fdisk/sfdisk align). Planning and rendering are pure; `write`
//! puts the bytes on the disk, backup first so that a half-written table is never "valid
//! with the wrong size". [`read`] parses any disk's GPT (untrusted: both CRCs checked, every
//! partition inside the disk), to find the LUKS partition of a disk or image read offline.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Partition type "Linux LUKS" (CA7D7CCB-63ED-4C53-861C-1742536059CC).
pub const LINUX_LUKS_TYPE: uuid::Uuid = uuid::uuid!("ca7d7ccb-63ed-4c53-861c-1742536059cc");
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ALIGN: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPlan {
    pub sector_size: u64,
    /// Disk size in logical sectors.
    pub sectors: u64,
    pub disk_guid: uuid::Uuid,
    pub part_guid: uuid::Uuid,
    pub part_name: String,
    /// First and last LBA of the one partition (inclusive).
    pub first_lba: u64,
    pub last_lba: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("the disk is too small for a partition table and a LUKS volume ({0} bytes)")]
    TooSmall(u64),
    #[error("unsupported logical sector size {0}")]
    SectorSize(u64),
}

impl GptPlan {
    /// Plans one 1 MiB-aligned partition filling the disk of `disk_bytes`.
    pub fn new(disk_bytes: u64, sector_size: u64, name: &str, disk_guid: uuid::Uuid, part_guid: uuid::Uuid) -> Result<GptPlan, GptError> {
        if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(GptError::SectorSize(sector_size));
        }
        let sectors = disk_bytes / sector_size;
        let entry_sectors = ENTRIES * ENTRY_SIZE / sector_size;
        let per_mib = ALIGN / sector_size;
        let first_lba = per_mib;
        // Last usable LBA leaves room for the backup entries and header.
        let last_usable = sectors.checked_sub(2 + entry_sectors).ok_or(GptError::TooSmall(disk_bytes))?;
        // End the partition on a MiB boundary (the last whole MiB that fits).
        let end_exclusive = (last_usable + 1) / per_mib * per_mib;
        // A LUKS2 header with its default 16 MiB data offset needs room; demand 32 MiB.
        if end_exclusive < first_lba + 32 * per_mib {
            return Err(GptError::TooSmall(disk_bytes));
        }
        let part_name: String = name.chars().take(36).collect();
        Ok(GptPlan { sector_size, sectors, disk_guid, part_guid, part_name, first_lba, last_lba: end_exclusive - 1 })
    }

    pub fn entry_sectors(&self) -> u64 {
        ENTRIES * ENTRY_SIZE / self.sector_size
    }
    /// Byte offset and length of the partition.
    pub fn partition_bytes(&self) -> (u64, u64) {
        (self.first_lba * self.sector_size, (self.last_lba - self.first_lba + 1) * self.sector_size)
    }

    /// The 128-entry partition array (16 KiB).
    pub fn entries(&self) -> Vec<u8> {
        let mut e = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        e[0..16].copy_from_slice(&LINUX_LUKS_TYPE.to_bytes_le());
        e[16..32].copy_from_slice(&self.part_guid.to_bytes_le());
        e[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        for (i, unit) in self.part_name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        e
    }

    /// A GPT header sector for the copy at `my_lba` (primary: 1, backup: last LBA).
    pub fn header(&self, primary: bool, entries_crc: u32) -> Vec<u8> {
        let last = self.sectors - 1;
        let (my_lba, alt_lba, entries_lba) =
            if primary { (1, last, 2) } else { (last, 1, last - self.entry_sectors()) };
        let mut h = vec![0u8; self.sector_size as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + self.entry_sectors()).to_le_bytes());
        h[48..56].copy_from_slice(&(last - self.entry_sectors() - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[0..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR sector: one 0xEE partition covering the disk.
    pub fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; self.sector_size as usize];
        let p = &mut m[446..462];
        p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        p[4] = 0xee;
        p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (self.sectors - 1).min(u32::MAX as u64) as u32;
        p[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xaa;
        m
    }

    /// Every (byte offset, bytes) write that makes the table, backup copy first.
    pub fn writes(&self) -> Vec<(u64, Vec<u8>)> {
        let entries = self.entries();
        let crc = crc32(&entries);
        let ss = self.sector_size;
        let last = self.sectors - 1;
        vec![
            ((last - self.entry_sectors()) * ss, entries.clone()),
            (last * ss, self.header(false, crc)),
            (2 * ss, entries),
            (ss, self.header(true, crc)),
            (0, self.protective_mbr()),
        ]
    }
}

/// Writes the planned table, after zeroing the first and last MiB of the disk so no older
/// partition table or signature survives there. Flushes to the device before returning.
pub fn write(disk: &File, plan: &GptPlan) -> io::Result<()> {
    let zeros = vec![0u8; ALIGN as usize];
    let size = plan.sectors * plan.sector_size;
    disk.write_all_at(&zeros, 0)?;
    disk.write_all_at(&zeros, size.saturating_sub(ALIGN))?;
    // Also clear where the partition's own old signatures would be found.
    let (start, _) = plan.partition_bytes();
    disk.write_all_at(&zeros, start)?;
    disk.sync_all()?;
    for (off, bytes) in plan.writes() {
        disk.write_all_at(&bytes, off)?;
        disk.sync_data()?;
    }
    Ok(())
}

/// One partition of a GPT read from a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as `/dev/sdX1` counts.
    pub number: u32,
    pub type_guid: uuid::Uuid,
    pub name: String,
    /// Byte offset and length.
    pub offset: u64,
    pub len: u64,
}

/// A GPT as read from a disk: its logical sector size and its used entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub sector_size: u64,
    pub partitions: Vec<Partition>,
}

/// Reads the GPT of a disk of `size` bytes: the primary header at LBA 1 (512- and then
/// 4096-byte sectors tried, since an image file does not say), else the backup header at the
/// last LBA. `Ok(None)` when there is no GPT signature at all; an error when there is one but
/// no copy checks out.
pub fn read(dev: &dyn crate::luks::io::BlockIo, size: u64) -> Result<Option<Table>, String> {
    let mut problems = Vec::new();
    for ss in [512u64, 4096] {
        if size < ss * 3 {
            continue;
        }
        for lba in [1, size / ss - 1] {
            let mut h = vec![0u8; ss as usize];
            if dev.read_at(&mut h, lba * ss).is_err() || &h[..8] != b"EFI PART" {
                continue;
            }
            match parse_copy(dev, size, ss, lba, &h) {
                Ok(t) => return Ok(Some(t)),
                Err(e) => problems.push(format!("{}-byte sectors, header at LBA {lba}: {e}", ss)),
            }
        }
    }
    if problems.is_empty() {
        Ok(None)
    } else {
        Err(format!("damaged GPT partition table ({})", problems.join("; ")))
    }
}

fn parse_copy(dev: &dyn crate::luks::io::BlockIo, size: u64, ss: u64, lba: u64, h: &[u8]) -> Result<Table, String> {
    use crate::luks::codec::Le;
    let f = Le::new(h, "GPT header");
    let e = |t: crate::luks::codec::Truncated| t.to_string();
    let hsize = f.u32(12).map_err(e)? as usize;
    if !(92..=h.len()).contains(&hsize) {
        return Err(format!("header size {hsize}"));
    }
    let mut z = h[..hsize].to_vec();
    z[16..20].fill(0);
    if crc32(&z) != f.u32(16).map_err(e)? {
        return Err("header CRC mismatch".into());
    }
    if f.u64(24).map_err(e)? != lba {
        return Err("header is not where it says it is".into());
    }
    let (first_usable, last_usable) = (f.u64(40).map_err(e)?, f.u64(48).map_err(e)?);
    let entries_lba = f.u64(72).map_err(e)?;
    let (count, esize) = (f.u32(80).map_err(e)? as u64, f.u32(84).map_err(e)? as u64);
    if !(128..=4096).contains(&esize) || esize % 8 != 0 || count == 0 || count > 4096 {
        return Err(format!("{count} entries of {esize} bytes"));
    }
    let total = count * esize;
    let end = entries_lba.checked_mul(ss).and_then(|o| o.checked_add(total));
    if end.is_none_or(|end| end > size) {
        return Err("partition entries lie outside the disk".into());
    }
    let mut entries = vec![0u8; total as usize];
    dev.read_at(&mut entries, entries_lba * ss).map_err(|e| format!("reading the entries: {e}"))?;
    if crc32(&entries) != f.u32(88).map_err(e)? {
        return Err("partition entries CRC mismatch".into());
    }
    let mut partitions = Vec::new();
    for (i, ent) in entries.chunks_exact(esize as usize).enumerate() {
        let f = Le::new(ent, "GPT entry");
        let type_guid = uuid::Uuid::from_bytes_le(f.array(0).map_err(e)?);
        if type_guid.is_nil() {
            continue;
        }
        let (first, last) = (f.u64(32).map_err(e)?, f.u64(40).map_err(e)?);
        if first < first_usable || last > last_usable || last < first || (last + 1).saturating_mul(ss) > size {
            return Err(format!("partition {} ({first}..{last}) lies outside the usable area", i + 1));
        }
        let units: Vec<u16> = f.bytes(56, 72).map_err(e)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        partitions.push(Partition {
            number: i as u32 + 1,
            type_guid,
            name: String::from_utf16_lossy(&units),
            offset: first * ss,
            len: (last - first + 1) * ss,
        });
    }
    Ok(Table { sector_size: ss, partitions })
}

/// CRC-32 (IEEE 802.3, reflected, as GPT uses).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for b in data {
        c = TABLE[((c ^ *b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(bytes: u64, ss: u64) -> GptPlan {
        GptPlan::new(bytes, ss, "BACKUP", uuid::Uuid::nil(), uuid::Uuid::nil()).unwrap()
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn layout_512() {
        let p = plan(64 << 20, 512);
        assert_eq!(p.first_lba, 2048);
        // 131072 sectors; last usable 131038; partition ends at the last whole MiB.
        assert_eq!(p.last_lba, 129023);
        assert_eq!(p.partition_bytes(), (1 << 20, 62 << 20));
    }

    #[test]
    fn layout_4k() {
        let p = plan(64 << 20, 4096);
        assert_eq!(p.first_lba, 256);
        assert_eq!(p.entry_sectors(), 4);
        assert_eq!(p.partition_bytes(), (1 << 20, 62 << 20));
    }

    #[test]
    fn headers_checksum_and_point_at_each_other() {
        let p = plan(64 << 20, 512);
        let w = p.writes();
        let primary = &w[3].1;
        let stored = u32::from_le_bytes(primary[16..20].try_into().unwrap());
        let mut z = primary[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(crc32(&z), stored);
        assert_eq!(u64::from_le_bytes(primary[32..40].try_into().unwrap()), p.sectors - 1);
        let backup = &w[1].1;
        assert_eq!(u64::from_le_bytes(backup[24..32].try_into().unwrap()), p.sectors - 1);
        assert_eq!(u64::from_le_bytes(backup[72..80].try_into().unwrap()), p.sectors - 1 - 32);
        // Entry 0 carries the LUKS type GUID in GPT's mixed-endian form.
        assert_eq!(&w[2].1[0..4], &[0xcb, 0x7c, 0x7d, 0xca]);
        assert_eq!(w[4].1[450], 0xee);
    }

    #[test]
    fn read_finds_what_write_made_and_survives_a_lost_primary() {
        for ss in [512u64, 4096] {
            let p = GptPlan::new(64 << 20, ss, "BACKUP", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()).unwrap();
            let mut disk = vec![0u8; 64 << 20];
            for (off, bytes) in p.writes() {
                disk[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
            }
            let want = Table {
                sector_size: ss,
                partitions: vec![Partition { number: 1, type_guid: LINUX_LUKS_TYPE, name: "BACKUP".into(), offset: p.partition_bytes().0, len: p.partition_bytes().1 }],
            };
            let dev = crate::luks::io::MemDevice::new(disk.clone());
            assert_eq!(read(&dev, disk.len() as u64).unwrap(), Some(want.clone()));
            // Primary header damaged: the backup copy serves.
            disk[ss as usize + 30] ^= 1;
            let dev = crate::luks::io::MemDevice::new(disk.clone());
            assert_eq!(read(&dev, disk.len() as u64).unwrap(), Some(want));
            // Both damaged: an error, not a guess.
            let last = disk.len() - ss as usize;
            disk[last + 30] ^= 1;
            let dev = crate::luks::io::MemDevice::new(disk.clone());
            assert!(read(&dev, disk.len() as u64).unwrap_err().contains("CRC"));
        }
        let dev = crate::luks::io::MemDevice::new(vec![0u8; 1 << 20]);
        assert_eq!(read(&dev, 1 << 20).unwrap(), None);
    }

    #[test]
    fn too_small_is_refused() {
        assert!(GptPlan::new(8 << 20, 512, "x", uuid::Uuid::nil(), uuid::Uuid::nil()).is_err());
        assert!(GptPlan::new(64 << 20, 1024 + 1, "x", uuid::Uuid::nil(), uuid::Uuid::nil()).is_err());
    }
}
