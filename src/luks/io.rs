//! Positioned I/O on the device or image holding a LUKS header. A trait so tests can use
//! memory devices that fail after a chosen number of writes (crash-safety tests).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

pub trait BlockIo {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes earlier writes durable.
    fn sync(&self) -> io::Result<()>;
    /// Size in bytes (works for block devices too).
    fn size(&self) -> io::Result<u64>;
}

impl BlockIo for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        let mut f: &File = self;
        f.seek(SeekFrom::End(0))
    }
}

/// An in-memory device; with `fail_after(n)` the n+1-th write fails (after writing only
/// its first half when `tear` is set: a torn write), and all later writes fail too, like
/// a disk pulled out mid-update.
pub struct MemDevice {
    pub data: RefCell<Vec<u8>>,
    writes_left: Cell<Option<usize>>,
    pub writes: Cell<usize>,
    pub tear: Cell<bool>,
}

impl MemDevice {
    pub fn new(data: Vec<u8>) -> Self {
        MemDevice { data: RefCell::new(data), writes_left: Cell::new(None), writes: Cell::new(0), tear: Cell::new(false) }
    }
    pub fn fail_after(&self, n: usize) {
        self.writes_left.set(Some(n));
    }
    /// Lets writes succeed again (the disk is back).
    pub fn heal(&self) {
        self.writes_left.set(None);
        self.tear.set(false);
    }
    pub fn into_inner(self) -> Vec<u8> {
        self.data.into_inner()
    }
}

impl BlockIo for MemDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.data.borrow();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).filter(|&e| e <= d.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&d[start..end]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(n) = self.writes_left.get() {
            if n == 0 {
                if self.tear.replace(false) {
                    let half = buf.len() / 2;
                    let start = offset as usize;
                    let mut d = self.data.borrow_mut();
                    if start + half <= d.len() {
                        d[start..start + half].copy_from_slice(&buf[..half]);
                    }
                }
                return Err(io::Error::other("simulated crash: device gone"));
            }
            self.writes_left.set(Some(n - 1));
        }
        self.writes.set(self.writes.get() + 1);
        let mut d = self.data.borrow_mut();
        let start = offset as usize;
        let end = start + buf.len();
        if end > d.len() {
            return Err(io::Error::other("write past the end of the device"));
        }
        d[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.data.borrow().len() as u64)
    }
}
