//! The one bounds-checked big-endian reader (and its writer twin) that every on-disk byte
//! of a LUKS header goes through. Reads past the end are errors, never panics; `finish`
//! refuses data left over after the structure. [`Le`] is its little-endian, fixed-offset
//! twin for the other untrusted on-disk structures offdisk parses (ext4, GPT).

use super::LuksError;

/// Sequential big-endian reader over an untrusted byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `what` names the structure in error messages ("LUKS2 binary header").
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], LuksError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| LuksError::Header(format!("{} is truncated at byte {}", self.what, self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], LuksError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub fn u16(&mut self) -> Result<u16, LuksError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, LuksError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, LuksError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A fixed-size, NUL-padded text field. The text must be NUL-terminated within the
    /// field and valid UTF-8 (`field` names it in errors).
    pub fn c_string(&mut self, n: usize, field: &str) -> Result<String, LuksError> {
        let raw = self.bytes(n)?;
        let end = raw
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| LuksError::Header(format!("{}: field {field} is not NUL-terminated", self.what)))?;
        std::str::from_utf8(&raw[..end])
            .map(str::to_owned)
            .map_err(|_| LuksError::Header(format!("{}: field {field} is not valid UTF-8", self.what)))
    }

    /// A fixed-size text field read as C code reads it: up to the first NUL, and never its
    /// last byte (which C readers overwrite with a NUL); invalid UTF-8 is replaced.
    pub fn c_string_lossy(&mut self, n: usize) -> Result<String, LuksError> {
        let raw = self.bytes(n)?;
        let raw = &raw[..n.saturating_sub(1)];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
    }

    pub fn skip(&mut self, n: usize) -> Result<(), LuksError> {
        self.bytes(n).map(|_| ())
    }

    /// Ends the read; any bytes left over are an error.
    pub fn finish(self) -> Result<(), LuksError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(LuksError::Header(format!(
                "{}: {} unexpected bytes after the structure",
                self.what,
                self.buf.len() - self.pos
            )))
        }
    }
}

/// A bounds-checked read that ran past the end of an on-disk structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is truncated: {len} bytes needed at byte {at}")]
pub struct Truncated {
    pub what: &'static str,
    pub at: usize,
    pub len: usize,
}

/// Little-endian fields at fixed offsets of one untrusted block (ext4 superblocks, inodes,
/// directory blocks; GPT headers). Every access is bounds-checked: past the end is a
/// [`Truncated`] error, never a panic.
#[derive(Clone, Copy)]
pub struct Le<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Le<'a> {
    /// `what` names the structure in error messages ("ext4 inode").
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Le { buf, what }
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn what(&self) -> &'static str {
        self.what
    }
    pub fn bytes(&self, at: usize, len: usize) -> Result<&'a [u8], Truncated> {
        at.checked_add(len)
            .and_then(|end| self.buf.get(at..end))
            .ok_or(Truncated { what: self.what, at, len })
    }
    /// The sub-structure of `len` bytes at `at`, named `what` in its own errors.
    pub fn sub(&self, at: usize, len: usize, what: &'static str) -> Result<Le<'a>, Truncated> {
        Ok(Le { buf: self.bytes(at, len)?, what })
    }
    /// Everything from `at` to the end.
    pub fn rest(&self, at: usize) -> Result<&'a [u8], Truncated> {
        self.buf.get(at..).ok_or(Truncated { what: self.what, at, len: 0 })
    }
    pub fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], Truncated> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(at, N)?);
        Ok(a)
    }
    pub fn u8(&self, at: usize) -> Result<u8, Truncated> {
        Ok(self.array::<1>(at)?[0])
    }
    pub fn u16(&self, at: usize) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(at)?))
    }
    pub fn u32(&self, at: usize) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(at)?))
    }
    pub fn u64(&self, at: usize) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(at)?))
    }
}

/// Big-endian writer into a fixed buffer; the layout is ours, so overruns are bugs (panic).
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes())
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes())
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes())
    }
    /// Text in a fixed field of `n` bytes, NUL-padded and NUL-terminated: longer text is
    /// cut at a character boundary (callers check lengths of what users give).
    pub fn c_string(&mut self, s: &str, n: usize) {
        let mut len = s.len().min(n - 1);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        self.bytes(&s.as_bytes()[..len]);
        self.zeros(n - len);
    }
    pub fn zeros(&mut self, n: usize) {
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }
    pub fn position(&self) -> usize {
        self.pos
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as LUKS2 JSON stores salts and digests.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict base64 decoding (padding required, no whitespace); `None` when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' {
                if !last || i < 2 {
                    return None;
                }
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                B64.iter().position(|&x| x == c)? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_overrun_and_trailing() {
        let data = [0u8, 1, 2, 3, 4];
        let mut r = Reader::new(&data, "test");
        assert_eq!(r.u32().unwrap(), 0x00010203);
        assert!(r.u16().is_err());
        let r = Reader::new(&data, "test");
        assert!(r.finish().unwrap_err().to_string().contains("5 unexpected bytes"));
    }

    #[test]
    fn le_fields_are_bounds_checked() {
        let data = [1u8, 0, 0, 0, 2, 0];
        let le = Le::new(&data, "test");
        assert_eq!(le.u32(0).unwrap(), 1);
        assert_eq!(le.u16(4).unwrap(), 2);
        assert_eq!(le.u32(4).unwrap_err(), Truncated { what: "test", at: 4, len: 4 });
        assert!(le.bytes(usize::MAX, 2).is_err());
        assert!(le.rest(7).is_err());
        assert_eq!(le.sub(4, 2, "inner").unwrap().u16(0).unwrap(), 2);
    }

    #[test]
    fn base64_round_trip() {
        for len in 0..10 {
            let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm8").is_none());
        assert!(base64_decode("Z=m8").is_none());
        assert!(base64_decode("Zm 8").is_none());
    }
}
