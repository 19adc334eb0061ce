//! The dm-log-writes log, read with every field bounded (the log is input).
//!
//! Layout (Documentation/admin-guide/device-mapper/log-writes.rst and the target's own
//! description of its format; all fields little-endian, `B` = the logged device's logical
//! block size, which the super block records):
//! - block 0: the super block: magic u64, version u64 (1), nr_entries u64, sectorsize u32;
//! - from byte `B` on, `nr_entries` entries, each one block holding the entry header
//!   (sector u64, nr_sectors u64, flags u64, data_len u64; `sector` and `nr_sectors` count
//!   blocks of `B` bytes) followed, for a mark, by `data_len` bytes of its name in the same
//!   block; then, unless the entry is a discard, the `nr_sectors * B` bytes written.
//! - Entries are in the order writes reached stable storage as the target saw it: plain
//!   writes are logged only when the next flush completes (so everything logged before a
//!   flush entry was durable once it completed), FUA writes and marks as they complete.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;

pub const MAGIC: u64 = 0x006a_7366_7773_6872;
pub const VERSION: u64 = 1;
pub const FLUSH: u64 = 1 << 0;
pub const FUA: u64 = 1 << 1;
pub const DISCARD: u64 = 1 << 2;
pub const MARK: u64 = 1 << 3;
pub const METADATA: u64 = 1 << 4;
const KNOWN_FLAGS: u64 = FLUSH | FUA | DISCARD | MARK | METADATA;
const ENTRY_HEADER: usize = 32;

#[derive(Debug)]
pub enum LogError {
    Io(std::io::Error),
    /// What is wrong, and where (byte offset in the log).
    Format { offset: u64, what: String },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LogError::Io(e) => write!(f, "reading the log: {e}"),
            LogError::Format { offset, what } => write!(f, "bad log at byte {offset}: {what}"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(e)
    }
}

fn bad(offset: u64, what: impl Into<String>) -> LogError {
    LogError::Format { offset, what: what.into() }
}

/// One logged entry; the written bytes stay in the log (at `data_offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First block written (in `sectorsize` units).
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    /// Where the written bytes start in the log (meaningful when `data_len() > 0`).
    pub data_offset: u64,
    pub mark: Option<String>,
}

impl Entry {
    pub fn is_flush(&self) -> bool {
        self.flags & FLUSH != 0
    }
    pub fn is_fua(&self) -> bool {
        self.flags & FUA != 0
    }
    pub fn is_discard(&self) -> bool {
        self.flags & DISCARD != 0
    }
    pub fn is_mark(&self) -> bool {
        self.flags & MARK != 0
    }
    /// Changes the device (a write with data, or a discard).
    pub fn changes_device(&self) -> bool {
        !self.is_mark() && self.nr_sectors > 0
    }
    /// A point where what came before is durable: a flush, or a FUA write.
    pub fn is_barrier(&self) -> bool {
        !self.is_mark() && (self.is_flush() || self.is_fua())
    }
    /// Its own data is durable once logged (FUA, or nothing to write).
    pub fn self_durable(&self) -> bool {
        self.is_fua() || self.nr_sectors == 0
    }
}

#[derive(Debug)]
pub struct Log {
    pub file: File,
    pub sectorsize: u64,
    pub entries: Vec<Entry>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Log {
    /// Reads the super block and indexes every entry. `device_bytes` bounds where entries may
    /// write (the size of the logged device).
    pub fn open(file: File, device_bytes: u64) -> Result<Log, LogError> {
        let len = file.metadata()?.len();
        let mut sup = [0u8; 28];
        if len < 512 {
            return Err(bad(0, format!("{len} bytes is too short for a super block")));
        }
        file.read_exact_at(&mut sup, 0)?;
        if u64_at(&sup, 0) != MAGIC {
            return Err(bad(0, "no dm-log-writes magic"));
        }
        let version = u64_at(&sup, 8);
        if version != VERSION {
            return Err(bad(8, format!("version {version}, only {VERSION} is known")));
        }
        let nr_entries = u64_at(&sup, 16);
        let sectorsize = u32::from_le_bytes(sup[24..28].try_into().expect("4 bytes")) as u64;
        if !(512..=65536).contains(&sectorsize) || !sectorsize.is_power_of_two() {
            return Err(bad(24, format!("sector size {sectorsize} is not a power of two in 512..=65536")));
        }
        if device_bytes % sectorsize != 0 {
            return Err(bad(24, format!("device size {device_bytes} is not a multiple of the sector size {sectorsize}")));
        }
        // Every entry takes at least one block after the super block.
        let room = len / sectorsize - 1;
        if nr_entries > room {
            return Err(bad(16, format!("{nr_entries} entries cannot fit in {len} bytes")));
        }
        let device_blocks = device_bytes / sectorsize;
        let mut entries = Vec::with_capacity(nr_entries as usize);
        let mut block = vec![0u8; sectorsize as usize];
        let mut off = sectorsize;
        for i in 0..nr_entries {
            if off.checked_add(sectorsize).is_none_or(|end| end > len) {
                return Err(bad(off, format!("entry {i} starts past the end of the log")));
            }
            file.read_exact_at(&mut block, off)?;
            let (sector, nr_sectors, flags, data_len) = (u64_at(&block, 0), u64_at(&block, 8), u64_at(&block, 16), u64_at(&block, 24));
            if flags & !KNOWN_FLAGS != 0 {
                return Err(bad(off + 16, format!("entry {i} has unknown flags {flags:#x}")));
            }
            let mark = if flags & MARK != 0 {
                if data_len > sectorsize - ENTRY_HEADER as u64 {
                    return Err(bad(off + 24, format!("entry {i}: mark of {data_len} bytes does not fit its block")));
                }
                let text = &block[ENTRY_HEADER..ENTRY_HEADER + data_len as usize];
                Some(String::from_utf8_lossy(text).into_owned())
            } else {
                if data_len != 0 {
                    return Err(bad(off + 24, format!("entry {i} carries {data_len} bytes of inline data (not a format this target writes)")));
                }
                let end = sector.checked_add(nr_sectors);
                if end.is_none_or(|e| e > device_blocks) {
                    return Err(bad(off, format!("entry {i} writes blocks {sector}+{nr_sectors}, past the device end ({device_blocks} blocks)")));
                }
                None
            };
            let data_offset = off + sectorsize;
            let data_bytes = if flags & (DISCARD | MARK) != 0 { 0 } else { nr_sectors * sectorsize };
            off = data_offset
                .checked_add(data_bytes)
                .filter(|&e| e <= len)
                .ok_or_else(|| bad(off, format!("entry {i}: its {data_bytes} data bytes run past the end of the log")))?;
            entries.push(Entry { sector, nr_sectors, flags, data_offset, mark });
        }
        Ok(Log { file, sectorsize, entries })
    }

    /// (index, name) of every mark.
    pub fn marks(&self) -> Vec<(usize, &str)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| e.mark.as_deref().map(|m| (i, m))).collect()
    }
}

/// Writes logs in the kernel's format: for tests, and for the synthetic logs they replay.
#[cfg(test)]
pub mod synth {
    use super::*;

    pub struct LogBuilder {
        pub sectorsize: u64,
        blocks: Vec<Vec<u8>>,
        entries: u64,
    }

    impl LogBuilder {
        pub fn new(sectorsize: u64) -> Self {
            LogBuilder { sectorsize, blocks: Vec::new(), entries: 0 }
        }
        fn header(&mut self, sector: u64, nr: u64, flags: u64, mark: &[u8]) {
            let mut b = vec![0u8; self.sectorsize as usize];
            b[0..8].copy_from_slice(&sector.to_le_bytes());
            b[8..16].copy_from_slice(&nr.to_le_bytes());
            b[16..24].copy_from_slice(&flags.to_le_bytes());
            b[24..32].copy_from_slice(&(mark.len() as u64).to_le_bytes());
            b[32..32 + mark.len()].copy_from_slice(mark);
            self.blocks.push(b);
            self.entries += 1;
        }
        /// A write of `data` (whole blocks) at block `sector`.
        pub fn write(&mut self, sector: u64, data: &[u8], flags: u64) -> &mut Self {
            assert_eq!(data.len() as u64 % self.sectorsize, 0);
            self.header(sector, data.len() as u64 / self.sectorsize, flags, b"");
            self.blocks.push(data.to_vec());
            self
        }
        /// A write of `n` blocks all filled with `byte`.
        pub fn fill(&mut self, sector: u64, n: u64, byte: u8, flags: u64) -> &mut Self {
            let d = vec![byte; (n * self.sectorsize) as usize];
            self.write(sector, &d, flags)
        }
        pub fn flush(&mut self) -> &mut Self {
            self.header(0, 0, FLUSH, b"");
            self
        }
        pub fn discard(&mut self, sector: u64, n: u64) -> &mut Self {
            self.header(sector, n, DISCARD, b"");
            self
        }
        pub fn mark(&mut self, name: &str) -> &mut Self {
            self.header(0, 0, MARK, name.as_bytes());
            self
        }
        /// Raw header with any fields (malformed logs).
        pub fn raw(&mut self, sector: u64, nr: u64, flags: u64, data_len: u64) -> &mut Self {
            self.header(sector, nr, flags, b"");
            let last = self.blocks.last_mut().expect("just pushed");
            last[24..32].copy_from_slice(&data_len.to_le_bytes());
            self
        }
        pub fn bytes(&self) -> Vec<u8> {
            let mut sup = vec![0u8; self.sectorsize as usize];
            sup[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            sup[8..16].copy_from_slice(&VERSION.to_le_bytes());
            sup[16..24].copy_from_slice(&self.entries.to_le_bytes());
            sup[24..28].copy_from_slice(&(self.sectorsize as u32).to_le_bytes());
            let mut out = sup;
            for b in &self.blocks {
                out.extend_from_slice(b);
            }
            out
        }
        pub fn file(&self) -> File {
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, &self.bytes()).unwrap();
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::synth::LogBuilder;
    use super::*;

    fn open(b: &LogBuilder, dev: u64) -> Result<Log, LogError> {
        Log::open(b.file(), dev)
    }

    #[test]
    fn indexes_writes_flushes_marks_and_discards() {
        let mut b = LogBuilder::new(512);
        b.mark("start").fill(3, 2, 0xaa, 0).flush().fill(0, 1, 0xbb, FUA).discard(8, 4).mark("end");
        let log = open(&b, 64 * 512).unwrap();
        assert_eq!(log.sectorsize, 512);
        assert_eq!(log.entries.len(), 6);
        assert_eq!(log.marks(), vec![(0, "start"), (5, "end")]);
        let w = &log.entries[1];
        assert_eq!((w.sector, w.nr_sectors, w.flags), (3, 2, 0));
        // super (1 block) + mark (1) + this header (1): the data starts at block 3.
        assert_eq!(w.data_offset, 3 * 512);
        assert!(log.entries[2].is_barrier() && log.entries[2].self_durable());
        assert!(log.entries[3].is_barrier() && log.entries[3].is_fua());
        // The discard carries no data: the end mark's header follows it directly.
        assert!(log.entries[4].is_discard() && log.entries[4].changes_device());
        assert_eq!(log.entries[4].data_offset, (1 + 1 + 1 + 2 + 1 + 1 + 1 + 1) * 512);
    }

    #[test]
    fn larger_sector_sizes() {
        let mut b = LogBuilder::new(4096);
        b.fill(1, 3, 7, 0).flush();
        let log = open(&b, 16 * 4096).unwrap();
        assert_eq!(log.entries[0].data_offset, 2 * 4096);
        assert_eq!(log.entries.len(), 2);
    }

    #[test]
    fn refuses_malformed_logs() {
        let dev = 64 * 512;
        let err = |b: &LogBuilder| open(b, dev).unwrap_err().to_string();
        // Bad magic, version, sector size.
        let good = LogBuilder::new(512);
        for (at, val, want) in [(0usize, 1u64, "magic"), (8, 2, "version")] {
            let mut bytes = good.bytes();
            bytes[at..at + 8].copy_from_slice(&val.to_le_bytes());
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, &bytes).unwrap();
            assert!(Log::open(f, dev).unwrap_err().to_string().contains(want));
        }
        let mut bytes = good.bytes();
        bytes[24..28].copy_from_slice(&1000u32.to_le_bytes());
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        assert!(Log::open(f, dev).unwrap_err().to_string().contains("sector size"));
        // More entries claimed than could fit.
        let mut bytes = good.bytes();
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        assert!(Log::open(f, dev).unwrap_err().to_string().contains("cannot fit"));
        // Unknown flags, a mark longer than its block, inline data, writes past the device,
        // sector + count overflowing.
        assert!(err(LogBuilder::new(512).raw(0, 0, 1 << 9, 0)).contains("unknown flags"));
        assert!(err(LogBuilder::new(512).raw(0, 0, MARK, 600)).contains("does not fit"));
        assert!(err(LogBuilder::new(512).raw(0, 0, 0, 8)).contains("inline data"));
        assert!(err(LogBuilder::new(512).fill(63, 2, 1, 0)).contains("past the device end"));
        assert!(err(LogBuilder::new(512).raw(u64::MAX, 2, DISCARD, 0)).contains("past the device end"));
        // Data claimed but the log ends (a truncated log).
        let mut b = LogBuilder::new(512);
        b.fill(0, 4, 1, 0);
        let bytes = b.bytes();
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes[..bytes.len() - 512]).unwrap();
        assert!(Log::open(f, dev).unwrap_err().to_string().contains("past the end of the log"));
        // A huge block count must not overflow the offset arithmetic.
        assert!(err(LogBuilder::new(512).raw(0, u64::MAX / 256, 0, 0)).contains("past"));
    }

    #[test]
    fn stops_at_nr_entries() {
        // Stale entries after nr_entries (an earlier, longer log on the same device) are ignored.
        let mut b = LogBuilder::new(512);
        b.fill(0, 1, 1, 0).flush().fill(1, 1, 2, 0);
        let mut bytes = b.bytes();
        bytes[16..24].copy_from_slice(&2u64.to_le_bytes());
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        assert_eq!(Log::open(f, 64 * 512).unwrap().entries.len(), 2);
    }
}
