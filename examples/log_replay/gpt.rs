//! Where the first partition of a rebuilt image is, as the kernel would find it: the
//! primary GPT if its checksums hold, else the backup at the disk's end. Bounded reads.

use offdisk::disk::gpt::crc32;
use std::fs::File;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// In 512-byte sectors.
    pub start: u64,
    pub sectors: u64,
    /// Found through the backup header (the primary is damaged).
    pub from_backup: bool,
}

const SECTOR: u64 = 512;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The first used entry of the GPT whose header is at `lba`, if header and entries check.
fn at(f: &File, lba: u64, disk_sectors: u64) -> Option<(u64, u64)> {
    let mut h = [0u8; SECTOR as usize];
    f.read_exact_at(&mut h, lba * SECTOR).ok()?;
    if &h[0..8] != b"EFI PART" || le64(&h, 24) != lba {
        return None;
    }
    let hsize = le32(&h, 12) as usize;
    if !(92..=SECTOR as usize).contains(&hsize) {
        return None;
    }
    let mut hc = h[..hsize].to_vec();
    hc[16..20].fill(0);
    if crc32(&hc) != le32(&h, 16) {
        return None;
    }
    let (entries_lba, count, esize) = (le64(&h, 72), le32(&h, 80) as u64, le32(&h, 84) as u64);
    if !(128..=1024).contains(&esize) || esize % 8 != 0 || count == 0 || count * esize > 1 << 20 {
        return None;
    }
    let mut e = vec![0u8; (count * esize) as usize];
    f.read_exact_at(&mut e, entries_lba.checked_mul(SECTOR)?).ok()?;
    if crc32(&e) != le32(&h, 88) {
        return None;
    }
    let (first_usable, last_usable) = (le64(&h, 40), le64(&h, 48));
    e.chunks(esize as usize).find(|c| c[0..16].iter().any(|&b| b != 0)).and_then(|c| {
        let (s, l) = (le64(c, 32), le64(c, 40));
        (s >= first_usable && s <= l && l <= last_usable && l < disk_sectors).then_some((s, l - s + 1))
    })
}

pub fn first_partition(f: &File) -> Option<Partition> {
    let sectors = f.metadata().ok()?.len() / SECTOR;
    if sectors < 3 {
        return None;
    }
    if let Some((start, n)) = at(f, 1, sectors) {
        return Some(Partition { start, sectors: n, from_backup: false });
    }
    at(f, sectors - 1, sectors).map(|(start, n)| Partition { start, sectors: n, from_backup: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use offdisk::disk::gpt::GptPlan;

    #[test]
    fn finds_offdisks_partition_and_falls_back_to_the_backup_header() {
        let size = 64u64 << 20;
        let plan = GptPlan::new(size, 512, "T", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()).unwrap();
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        assert_eq!(first_partition(&f), None, "blank");
        for (off, bytes) in plan.writes() {
            f.write_all_at(&bytes, off).unwrap();
        }
        let (off, len) = plan.partition_bytes();
        let got = first_partition(&f).unwrap();
        assert_eq!(got, Partition { start: off / 512, sectors: len / 512, from_backup: false });
        // A torn primary header: the backup still says where the partition is.
        f.write_all_at(&[0xffu8; 16], 512 + 40).unwrap();
        assert_eq!(first_partition(&f), Some(Partition { from_backup: true, ..got }));
        // Both gone: none.
        f.write_all_at(&[0u8; 512], size - 512).unwrap();
        assert_eq!(first_partition(&f), None);
    }
}
