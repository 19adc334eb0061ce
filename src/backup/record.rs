//! The per-generation files: `metadata.tsv` (versioned, one line per entry, the
//! authoritative record) and `manifest.b3` (plain `b3sum --check` lines for regular files).
//!
//! Both are written in walk order, which is `Path`'s component-wise order, so a new
//! run can read the previous generation's metadata in lockstep with its own walk.

use std::ffi::OsStr;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Version written in the header of `metadata.tsv`. Version 2 adds the source file's
/// identity (ctime, device, inode, link count) for change detection; version 1 is still read.
pub const METADATA_VERSION: u32 = 2;
pub const METADATA_HEADER: &str = "#offdisk-metadata\tversion=2";
pub const METADATA_HEADER_V1: &str = "#offdisk-metadata\tversion=1";
pub const METADATA_FILE: &str = "metadata.tsv";
pub const MANIFEST_FILE: &str = "manifest.b3";
pub const INFO_FILE: &str = "info.json";
/// Directory inside a generation that holds the backed-up tree.
pub const TREE_DIR: &str = "tree";

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A further name of a regular file already listed in this generation.
    HardLink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    /// Whether an entry of type `found` on the disk is what this record says it is (a
    /// further hard-link name is a regular file). Host and offline verify both ask this.
    pub fn is(self, found: crate::fsaccess::FileKind) -> bool {
        use crate::fsaccess::FileKind as F;
        matches!(
            (self, found),
            (Kind::File | Kind::HardLink, F::File)
                | (Kind::Dir, F::Dir)
                | (Kind::Symlink, F::Symlink)
                | (Kind::Fifo, F::Fifo)
                | (Kind::CharDev, F::CharDev)
                | (Kind::BlockDev, F::BlockDev)
                | (Kind::Socket, F::Socket)
        )
    }

    fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::HardLink => 'h',
            Kind::Fifo => 'p',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
            Kind::Socket => 's',
        }
    }
    fn from_letter(c: &str) -> Option<Kind> {
        Some(match c {
            "f" => Kind::File,
            "d" => Kind::Dir,
            "l" => Kind::Symlink,
            "h" => Kind::HardLink,
            "p" => Kind::Fifo,
            "c" => Kind::CharDev,
            "b" => Kind::BlockDev,
            "s" => Kind::Socket,
            _ => return None,
        })
    }
    /// Regular file content (a file or a further name of one).
    pub fn has_content(self) -> bool {
        matches!(self, Kind::File | Kind::HardLink)
    }
}

/// One line of `metadata.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// Permission bits including set-id and sticky (`st_mode & 07777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// BLAKE3 of the content, for regular files.
    pub hash: Option<[u8; 32]>,
    /// Path relative to the generation's `tree/`.
    pub path: PathBuf,
    /// Symlink target; for `HardLink`, the earlier path; for devices, `major:minor`.
    pub target: Option<Vec<u8>>,
    /// The source object's identity when it was backed up (version 2; `None` from version 1
    /// files, whose entries are then re-examined once).
    pub src: Option<SourceId>,
}

/// Identity of the source object a record was made from: a file is reused (hard-linked from
/// the previous generation) only when this is unchanged along with type, size and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub dev: u64,
    pub ino: u64,
    /// Link count in the source: more than 1 means the file was one of a hard-link group.
    pub nlink: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("unsupported metadata version (header {0:?})")]
    Version(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Escapes a name for `metadata.tsv`: valid UTF-8 stays as it is except `\`, tab,
/// newline, carriage return and other control characters; every other byte is `\xHH`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_into(&mut out, bytes);
    out
}

/// [`escape`], appended to `out`.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    // Most names are printable ASCII without a backslash: copied as they are.
    if bytes.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        out.push_str(std::str::from_utf8(bytes).expect("ASCII"));
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// Inverse of [`escape`].
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'x') => {
                let hex = b.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "bad \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad \\x escape")?);
                i += 2;
            }
            _ => return Err("bad escape".into()),
        }
        i += 2;
    }
    Ok(out)
}

pub fn hex(hash: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    hex_into(&mut s, hash);
    s
}

/// [`hex`], appended to `out`.
pub fn hex_into(out: &mut String, hash: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in hash {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Record {
    /// The `metadata.tsv` line, newline included.
    /// The version-2 line: kind, mode, uid, gid, size, mtime, ctime, dev, ino, nlink, hash,
    /// path[, target] (the source identity as `-` fields when unknown).
    pub fn to_line(&self) -> String {
        use std::fmt::Write as _;
        let path = self.path.as_os_str().as_bytes();
        // One buffer, no intermediate strings: this runs once per entry of every backup.
        let mut line = String::with_capacity(192 + path.len());
        let _ = write!(
            line,
            "{}\t{:04o}\t{}\t{}\t{}\t{}.{:09}\t",
            self.kind.letter(),
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.mtime_sec,
            self.mtime_nsec,
        );
        match &self.src {
            Some(s) => {
                let _ = write!(line, "{}.{:09}\t{}\t{}\t{}\t", s.ctime_sec, s.ctime_nsec, s.dev, s.ino, s.nlink);
            }
            None => line.push_str("-\t-\t-\t-\t"),
        }
        match &self.hash {
            Some(h) => hex_into(&mut line, h),
            None => line.push('-'),
        }
        line.push('\t');
        escape_into(&mut line, path);
        if let Some(t) = &self.target {
            line.push('\t');
            escape_into(&mut line, t);
        }
        line.push('\n');
        line
    }

    /// Parses a version-2 line.
    pub fn parse_line(line: &str, lineno: u64) -> Result<Record, RecordError> {
        Self::parse_line_version(line, lineno, METADATA_VERSION)
    }

    /// Parses a line of a `metadata.tsv` of `version` (1 or 2).
    pub fn parse_line_version(line: &str, lineno: u64, version: u32) -> Result<Record, RecordError> {
        let bad = |reason: &str| RecordError::Malformed { line: lineno, reason: reason.to_string() };
        let mut f: Vec<&str> = line.split('\t').collect();
        let mut src = None;
        if version >= 2 {
            if f.len() != 12 && f.len() != 13 {
                return Err(bad("wrong number of fields"));
            }
            let id: Vec<&str> = f.drain(6..10).collect();
            if id != ["-", "-", "-", "-"] {
                let (cs, cn) = id[0].split_once('.').ok_or_else(|| bad("bad ctime"))?;
                let ctime_nsec: u32 = cn.parse().map_err(|_| bad("bad ctime"))?;
                if cn.len() != 9 || ctime_nsec >= 1_000_000_000 {
                    return Err(bad("bad ctime nanoseconds"));
                }
                src = Some(SourceId {
                    ctime_sec: cs.parse().map_err(|_| bad("bad ctime"))?,
                    ctime_nsec,
                    dev: id[1].parse().map_err(|_| bad("bad device"))?,
                    ino: id[2].parse().map_err(|_| bad("bad inode"))?,
                    nlink: id[3].parse().map_err(|_| bad("bad link count"))?,
                });
            }
        }
        if f.len() != 8 && f.len() != 9 {
            return Err(bad("wrong number of fields"));
        }
        let kind = Kind::from_letter(f[0]).ok_or_else(|| bad("unknown kind"))?;
        let mode = u32::from_str_radix(f[1], 8).map_err(|_| bad("bad mode"))?;
        let uid = f[2].parse().map_err(|_| bad("bad uid"))?;
        let gid = f[3].parse().map_err(|_| bad("bad gid"))?;
        let size = f[4].parse().map_err(|_| bad("bad size"))?;
        let (sec, nsec) = f[5].split_once('.').ok_or_else(|| bad("bad mtime"))?;
        let mtime_sec = sec.parse().map_err(|_| bad("bad mtime"))?;
        let mtime_nsec: u32 = nsec.parse().map_err(|_| bad("bad mtime"))?;
        if nsec.len() != 9 || mtime_nsec >= 1_000_000_000 {
            return Err(bad("bad mtime nanoseconds"));
        }
        let hash = match f[6] {
            "-" => None,
            h => Some(parse_hex(h).ok_or_else(|| bad("bad hash"))?),
        };
        let path = PathBuf::from(std::ffi::OsString::from_vec(unescape(f[7]).map_err(|e| bad(&e))?));
        if path.is_absolute() || path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(bad("path must be relative and plain"));
        }
        let target = match f.get(8) {
            Some(t) => Some(unescape(t).map_err(|e| bad(&e))?),
            None => None,
        };
        if kind.has_content() && hash.is_none() {
            return Err(bad("file without hash"));
        }
        Ok(Record { kind, mode, uid, gid, size, mtime_sec, mtime_nsec, hash, path, target, src })
    }
}

/// The `b3sum`-compatible manifest line for a file at `path` (relative to the
/// generation directory), or `None` when b3sum cannot name it (not UTF-8).
/// b3sum escapes `\` and newline and marks such lines with a leading `\`.
pub fn manifest_line(hash: &[u8; 32], path: &Path) -> Option<String> {
    let name = path.to_str()?;
    if name.contains('\\') || name.contains('\n') {
        let escaped = name.replace('\\', "\\\\").replace('\n', "\\n");
        Some(format!("\\{}  {}\n", hex(hash), escaped))
    } else {
        Some(format!("{}  {}\n", hex(hash), name))
    }
}

/// Longest `metadata.tsv` line accepted: a path of any practical depth (escaped names can
/// be four times their bytes), while a hostile file (say a link to `/dev/zero`, or one
/// endless line) cannot make the reader allocate without bound.
pub const MAX_LINE: usize = 4 << 20;

/// Reads one line (newline included) into `buf`, at most `max` bytes: `Ok(false)` at the
/// end of input, an error for a longer line.
pub fn read_line_bounded(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() + take > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("line longer than {max} bytes")));
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            return Ok(true);
        }
    }
}

/// Streams `metadata.tsv` records from any reader (pure parsing: the same code reads a
/// generation on this host or inside a disk image).
pub struct MetadataReader<R> {
    inner: R,
    line: u64,
    buf: Vec<u8>,
    done: bool,
    /// Format version from the header (1 or 2).
    pub version: u32,
}

impl<R: BufRead> MetadataReader<R> {
    /// Checks the header and returns a reader positioned at the first record.
    pub fn new(mut inner: R) -> Result<Self, RecordError> {
        let mut header = Vec::new();
        read_line_bounded(&mut inner, &mut header, 4096)?;
        let header = String::from_utf8_lossy(&header);
        let header = header.trim_end_matches('\n');
        let version = match header {
            METADATA_HEADER => 2,
            METADATA_HEADER_V1 => 1,
            _ => return Err(RecordError::Version(header.chars().take(80).collect())),
        };
        Ok(MetadataReader { inner, line: 1, buf: Vec::new(), done: false, version })
    }
}

impl MetadataReader<io::BufReader<std::fs::File>> {
    /// Opens `name` in the generation directory `dir`: a regular file, not followed.
    pub fn open_in(dir: &crate::fsaccess::Dir, name: &str) -> Result<Self, RecordError> {
        let (f, _) = dir.open_file(OsStr::new(name), None).map_err(io::Error::from)?;
        Self::new(io::BufReader::with_capacity(256 * 1024, f))
    }
}

impl<R: BufRead> Iterator for MetadataReader<R> {
    type Item = Result<Record, RecordError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match read_line_bounded(&mut self.inner, &mut self.buf, MAX_LINE) {
            Ok(false) => None,
            Ok(true) => {
                self.line += 1;
                if !self.buf.ends_with(b"\n") {
                    Some(Err(RecordError::Malformed { line: self.line, reason: "truncated line".into() }))
                } else {
                    match std::str::from_utf8(&self.buf[..self.buf.len() - 1]) {
                        Ok(l) => Some(Record::parse_line_version(l, self.line, self.version)),
                        Err(_) => Some(Err(RecordError::Malformed { line: self.line, reason: "not UTF-8".into() })),
                    }
                }
            }
            Err(e) => Some(Err(RecordError::Malformed { line: self.line + 1, reason: e.to_string() })),
        };
        // After an error nothing that follows can be trusted (and a reader that keeps
        // failing must not loop forever).
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// Writes the header then records.
pub fn write_header(w: &mut impl Write) -> io::Result<()> {
    w.write_all(METADATA_HEADER.as_bytes())?;
    w.write_all(b"\n")
}

/// `tree/<rel>` as written in manifests.
pub fn manifest_path(rel: &Path) -> PathBuf {
    let mut p = PathBuf::from(TREE_DIR);
    if !rel.as_os_str().is_empty() {
        p.push(rel);
    }
    p
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrips_hostile_names() {
        let names: [&[u8]; 6] = [b"plain", b"back\\slash", b"new\nline\ttab\r", b"bad\xff\xfe", "ünï".as_bytes(), b"\x01\x7f"];
        for n in names {
            let e = escape(n);
            assert!(!e.contains('\n') && !e.contains('\t'));
            assert_eq!(unescape(&e).unwrap(), n);
        }
        assert_eq!(escape(b"bad\xff"), "bad\\xff");
    }

    #[test]
    fn record_line_roundtrip() {
        let r = Record {
            kind: Kind::File,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            size: 42,
            mtime_sec: -5,
            mtime_nsec: 7,
            hash: Some([0xab; 32]),
            path: PathBuf::from(std::ffi::OsString::from_vec(b"a/b\tc\xff".to_vec())),
            target: None,
            src: Some(SourceId { ctime_sec: 1_700_000_000, ctime_nsec: 999_999_999, dev: 64769, ino: 1 << 40, nlink: 2 }),
        };
        let line = r.to_line();
        let back = Record::parse_line(line.trim_end_matches('\n'), 2).unwrap();
        assert_eq!(back, r);
        let mut l = r.clone();
        l.kind = Kind::Symlink;
        l.hash = None;
        l.target = Some(b"../x y".to_vec());
        assert_eq!(Record::parse_line(l.to_line().trim_end_matches('\n'), 3).unwrap(), l);
        l.src = None;
        assert_eq!(Record::parse_line(l.to_line().trim_end_matches('\n'), 4).unwrap(), l);
    }

    #[test]
    fn version_1_files_are_still_read() {
        let text = "#offdisk-metadata\tversion=1\nd\t0755\t0\t0\t0\t5.000000000\t-\t\nf\t0644\t1\t2\t3\t6.000000007\t".to_string()
            + &"ab".repeat(32)
            + "\ta\n";
        let r: Vec<_> = MetadataReader::new(text.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].size, r[1].mtime_nsec, r[1].src), (3, 7, None));
        assert!(MetadataReader::new(&b"#offdisk-metadata\tversion=3\n"[..]).is_err());
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for line in ["", "f", "f\t0644\t0\t0\t1\t1.000000000\tzz\ta", "f\t0644\t0\t0\t1\t1.0\t-\ta", "d\t0755\t0\t0\t0\t1.000000000\t-\t../etc", "d\t0755\t0\t0\t0\t1.000000000\t-\t/abs", "x\t0\t0\t0\t0\t0.000000000\t-\ta", "d\t0755\t0\t0\t0\t1.000000000\t-\ta\\"] {
            assert!(Record::parse_line_version(line, 1, 1).is_err(), "{line:?}");
        }
        for line in ["d\t0755\t0\t0\t0\t1.000000000\tx\t1\t2\t1\t-\ta", "d\t0755\t0\t0\t0\t1.000000000\t1.000000000\t-\t2\t1\t-\ta", "d\t0755\t0\t0\t0\t1.000000000\t-\t-\t-\t-\t-\t../a"] {
            assert!(Record::parse_line(line, 1).is_err(), "{line:?}");
        }
    }

    #[test]
    fn manifest_lines_follow_b3sum_escaping() {
        let h = [0u8; 32];
        assert_eq!(manifest_line(&h, Path::new("tree/a b")).unwrap(), format!("{}  tree/a b\n", hex(&h)));
        assert_eq!(manifest_line(&h, Path::new("tree/a\\b\nc")).unwrap(), format!("\\{}  tree/a\\\\b\\nc\n", hex(&h)));
        assert!(manifest_line(&h, Path::new(os(b"tree/\xff"))).is_none());
    }
}
