//! Rebuilding the logged device in an image file: entries applied in log order, and writes
//! applied "for one check only" with what they overwrote kept to undo them. Optionally a
//! second file follows the LUKS data segment in plaintext (decrypted with offdisk's sector
//! cipher), so the filesystem of each state can be checked without dm-crypt.

use crate::log::{Entry, Log};
use offdisk::luks::cipher::SectorCipher;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes moved per read/write: bounds memory whatever an entry's size.
const CHUNK: u64 = 1 << 20;

/// What one temporary write overwrote.
struct Undo {
    offset: u64,
    old: Vec<u8>,
}

/// A byte range of the device whose changes are tracked (e.g. the GPT and LUKS header).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub start: u64,
    pub len: u64,
}

impl Watch {
    fn touched_by(&self, e: &Entry, sectorsize: u64) -> bool {
        let (s, n) = (e.sector.saturating_mul(sectorsize), e.nr_sectors.saturating_mul(sectorsize));
        e.changes_device() && s < self.start.saturating_add(self.len) && self.start < s.saturating_add(n)
    }
}

/// The plaintext of a LUKS data segment, kept in step with the image.
pub struct Plain {
    pub file: File,
    /// Where the segment starts on the disk, and its length (bytes).
    pub start: u64,
    pub len: u64,
    pub cipher: SectorCipher,
    pub sector_size: u64,
    /// IV of the segment's first sector (512-byte units).
    pub iv_tweak: u64,
}

impl Plain {
    /// Decrypts the disk bytes [off, off + n) (widened to whole encryption sectors) from `raw`.
    fn refresh(&self, raw: &File, off: u64, n: u64) -> io::Result<()> {
        let end = off.saturating_add(n).min(self.start + self.len);
        if end <= self.start || off >= end {
            return Ok(());
        }
        let ss = self.sector_size;
        let mut at = (off.max(self.start) - self.start) / ss * ss;
        let stop = (end - self.start).div_ceil(ss) * ss;
        let mut buf = vec![0u8; CHUNK as usize];
        while at < stop {
            let n = (stop - at).min(CHUNK) as usize;
            read_or_zero(raw, &mut buf[..n], self.start + at)?;
            self.cipher.decrypt(&mut buf[..n], ss as usize, self.iv_tweak + at / 512).map_err(io::Error::other)?;
            self.file.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

pub struct Image<'a> {
    pub log: &'a Log,
    pub file: File,
    /// Entries [0, applied) are in the image.
    pub applied: usize,
    /// How many applied entries touched the watched range: with the temporary ones, a key
    /// that is equal only for states whose watched bytes are equal.
    watched_prefix: usize,
    watched_temp: Vec<usize>,
    watch: Option<Watch>,
    undo: Vec<Undo>,
    /// Bytes held for undo (bounded).
    undo_bytes: u64,
    pub undo_limit: u64,
    pub plain: Option<Plain>,
}

impl<'a> Image<'a> {
    pub fn new(log: &'a Log, file: File, watch: Option<Watch>) -> Image<'a> {
        Image { log, file, applied: 0, watched_prefix: 0, watched_temp: Vec::new(), watch, undo: Vec::new(), undo_bytes: 0, undo_limit: 1 << 30, plain: None }
    }

    fn write_entry(&self, e: &Entry, mut keep_old: Option<&mut Vec<Undo>>) -> io::Result<u64> {
        if !e.changes_device() {
            return Ok(0);
        }
        let ss = self.log.sectorsize;
        let (start, len) = (e.sector * ss, e.nr_sectors * ss);
        let mut buf = vec![0u8; len.min(CHUNK) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            if let Some(u) = keep_old.as_deref_mut() {
                let mut old = vec![0u8; n];
                read_or_zero(&self.file, &mut old, start + done)?;
                u.push(Undo { offset: start + done, old });
            }
            if e.is_discard() {
                // What a discarded range reads back as is up to the disk; zeroes here.
                buf[..n].fill(0);
            } else {
                self.log.file.read_exact_at(&mut buf[..n], e.data_offset + done)?;
            }
            self.file.write_all_at(&buf[..n], start + done)?;
            done += n as u64;
        }
        if let Some(p) = &self.plain {
            p.refresh(&self.file, start, len)?;
        }
        Ok(len)
    }

    /// Applies entries up to (not including) `end`, for good. Temporary writes must be undone first.
    pub fn advance_to(&mut self, end: usize) -> io::Result<()> {
        assert!(self.undo.is_empty(), "temporary writes still applied");
        assert!(end >= self.applied && end <= self.log.entries.len(), "replay only goes forward");
        for i in self.applied..end {
            let e = &self.log.entries[i];
            self.write_entry(e, None)?;
            if self.watch.is_some_and(|w| w.touched_by(e, self.log.sectorsize)) {
                self.watched_prefix += 1;
            }
        }
        self.applied = end;
        Ok(())
    }

    /// Applies entry `i` until `undo_temporary` (a write the disk's cache happened to keep).
    pub fn apply_temporary(&mut self, i: usize) -> io::Result<()> {
        let e = &self.log.entries[i];
        let len = e.nr_sectors.saturating_mul(self.log.sectorsize);
        if self.undo_bytes.saturating_add(len) > self.undo_limit {
            return Err(io::Error::other(format!("temporary writes exceed {} bytes", self.undo_limit)));
        }
        let mut undo = std::mem::take(&mut self.undo);
        let r = self.write_entry(e, Some(&mut undo));
        self.undo = undo;
        self.undo_bytes += r?;
        if self.watch.is_some_and(|w| w.touched_by(e, self.log.sectorsize)) {
            self.watched_temp.push(i);
        }
        Ok(())
    }

    /// Puts back what the temporary writes overwrote (newest first).
    pub fn undo_temporary(&mut self) -> io::Result<()> {
        while let Some(u) = self.undo.pop() {
            self.file.write_all_at(&u.old, u.offset)?;
            if let Some(p) = &self.plain {
                p.refresh(&self.file, u.offset, u.old.len() as u64)?;
            }
        }
        self.undo_bytes = 0;
        self.watched_temp.clear();
        Ok(())
    }

    /// Equal for two states only if the watched range holds the same bytes in both.
    pub fn watch_key(&self) -> String {
        if self.watched_temp.is_empty() {
            format!("p{}", self.watched_prefix)
        } else {
            let t: Vec<String> = self.watched_temp.iter().map(|i| i.to_string()).collect();
            format!("p{}+{}", self.watched_prefix, t.join("."))
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Reads, with zeroes past the end of a (sparse, short) image.
fn read_or_zero(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64)? {
            0 => {
                buf[done..].fill(0);
                break;
            }
            n => done += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::synth::LogBuilder;
    use crate::log::FUA;

    fn image(blocks: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(blocks * 512).unwrap();
        f
    }

    fn block(f: &File, n: u64) -> u8 {
        let mut b = [0u8; 512];
        f.read_exact_at(&mut b, n * 512).unwrap();
        assert!(b.iter().all(|&x| x == b[0]), "block {n} is not uniform");
        b[0]
    }

    #[test]
    fn replays_in_log_order_and_stops_where_asked() {
        let mut b = LogBuilder::new(512);
        b.fill(0, 2, 1, 0).flush().fill(1, 2, 2, 0).fill(2, 1, 3, FUA).discard(0, 1).mark("m");
        let log = Log::open(b.file(), 8 * 512).unwrap();
        let mut img = Image::new(&log, image(8), None);
        img.advance_to(1).unwrap();
        assert_eq!((block(&img.file, 0), block(&img.file, 1), block(&img.file, 2)), (1, 1, 0));
        img.advance_to(4).unwrap();
        // A later write to the same block wins.
        assert_eq!((block(&img.file, 0), block(&img.file, 1), block(&img.file, 2)), (1, 2, 3));
        img.advance_to(6).unwrap();
        assert_eq!(block(&img.file, 0), 0, "discard reads back as zeroes");
        assert_eq!(img.applied, 6);
    }

    #[test]
    fn temporary_writes_are_undone_exactly() {
        let mut b = LogBuilder::new(512);
        b.fill(0, 4, 9, 0).flush().fill(1, 1, 5, 0).fill(3, 3, 6, 0).fill(1, 2, 7, 0);
        let log = Log::open(b.file(), 8 * 512).unwrap();
        let mut img = Image::new(&log, image(8), Some(Watch { start: 0, len: 1024 }));
        img.advance_to(2).unwrap();
        assert_eq!(img.watch_key(), "p1");
        let before: Vec<u8> = (0..8).map(|n| block(&img.file, n)).collect();
        // Keep entries 2 and 4 (both touch block 1; 4 is later), lose 3.
        img.apply_temporary(2).unwrap();
        img.apply_temporary(4).unwrap();
        assert_eq!((0..8).map(|n| block(&img.file, n)).collect::<Vec<_>>(), vec![9, 7, 7, 9, 0, 0, 0, 0]);
        assert_eq!(img.watch_key(), "p1+2.4");
        img.undo_temporary().unwrap();
        assert_eq!((0..8).map(|n| block(&img.file, n)).collect::<Vec<_>>(), before);
        assert_eq!(img.watch_key(), "p1");
        // And the prefix can go on from there.
        img.advance_to(5).unwrap();
        assert_eq!((0..8).map(|n| block(&img.file, n)).collect::<Vec<_>>(), vec![9, 7, 7, 6, 6, 6, 0, 0]);
        assert_eq!(img.watch_key(), "p3", "entries 2 and 4 touch the first 1024 bytes, 3 does not");
    }

    #[test]
    fn the_plaintext_follows_every_write_and_undo() {
        // A "disk" whose blocks 2..6 are a segment encrypted with 1024-byte sectors.
        let key = [7u8; 64];
        let enc = |plain: &[u8], at: u64| {
            let mut b = plain.to_vec();
            SectorCipher::new("aes-xts-plain64", &key).unwrap().encrypt(&mut b, 1024, 100 + at / 512).unwrap();
            b
        };
        let mut b = LogBuilder::new(512);
        b.write(2, &enc(&[1u8; 2048], 0), 0).flush();
        // Half an encryption sector rewritten: the whole sector decrypts from what is on disk.
        let second = enc(&[2u8; 1024], 1024);
        b.write(4, &second[..512], 0).write(5, &second[512..], 0);
        let log = Log::open(b.file(), 8 * 512).unwrap();
        let mut img = Image::new(&log, image(8), None);
        let pf = tempfile::tempfile().unwrap();
        img.plain = Some(Plain { file: pf, start: 2 * 512, len: 4 * 512, cipher: SectorCipher::new("aes-xts-plain64", &key).unwrap(), sector_size: 1024, iv_tweak: 100 });
        let plain = |img: &Image| {
            let mut v = vec![0u8; 2048];
            img.plain.as_ref().unwrap().file.read_exact_at(&mut v, 0).unwrap();
            v
        };
        img.advance_to(2).unwrap();
        assert_eq!(plain(&img), vec![1u8; 2048]);
        img.apply_temporary(2).unwrap();
        img.apply_temporary(3).unwrap();
        assert_eq!(&plain(&img)[1024..], &[2u8; 1024][..]);
        img.undo_temporary().unwrap();
        assert_eq!(plain(&img), vec![1u8; 2048], "undo restores the plaintext too");
    }

    #[test]
    fn temporary_writes_are_bounded() {
        let mut b = LogBuilder::new(512);
        b.fill(0, 4, 1, 0);
        let log = Log::open(b.file(), 8 * 512).unwrap();
        let mut img = Image::new(&log, image(8), None);
        img.undo_limit = 1024;
        assert!(img.apply_temporary(0).is_err());
    }
}
