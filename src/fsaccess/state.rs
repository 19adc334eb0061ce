//! Small state files (ledgers, identity records, `info.json`, lock files) in a directory
//! that may be hostile: read no-follow with a size bound, replaced atomically through a
//! temporary that cannot be pre-planted.

use super::{check_name, Dir, FileKind, OpenError};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

/// The default bound for JSON state files.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("does not exist")]
    Missing,
    #[error("is {}, not a regular file; refusing to use it", .0.describe())]
    NotRegular(FileKind),
    #[error("is {size} bytes, more than the {max} a valid one can be")]
    TooBig { size: u64, max: u64 },
    #[error("{0}")]
    Io(io::Error),
}

impl From<StateError> for io::Error {
    fn from(e: StateError) -> io::Error {
        match e {
            StateError::Missing => io::Error::from(io::ErrorKind::NotFound),
            StateError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

fn classify(e: io::Error) -> StateError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => StateError::Missing,
        // O_NOFOLLOW on a symlink.
        Some(libc::ELOOP) => StateError::NotRegular(FileKind::Symlink),
        Some(libc::EISDIR) => StateError::NotRegular(FileKind::Dir),
        _ => StateError::Io(e),
    }
}

/// Reads the regular file `name` in `dir`, at most `max` bytes: a symlink, FIFO, device or
/// directory there is refused without being followed, opened for long or read.
pub fn read(dir: &Dir, name: &OsStr, max: u64) -> Result<Vec<u8>, StateError> {
    let (f, meta) = match dir.open_file(name, None) {
        Ok(x) => x,
        Err(OpenError::Io(e)) => return Err(classify(e)),
        Err(OpenError::NotRegular(k)) => return Err(StateError::NotRegular(k)),
        Err(OpenError::Changed { now }) => return Err(StateError::NotRegular(now.kind())),
    };
    if meta.size > max {
        return Err(StateError::TooBig { size: meta.size, max });
    }
    let mut out = Vec::with_capacity(meta.size as usize);
    // The file may grow after fstat: never read past the bound.
    f.take(max + 1).read_to_end(&mut out).map_err(StateError::Io)?;
    if out.len() as u64 > max {
        return Err(StateError::TooBig { size: out.len() as u64, max });
    }
    Ok(out)
}

/// [`read`], with a missing file as `None`.
pub fn read_optional(dir: &Dir, name: &OsStr, max: u64) -> Result<Option<Vec<u8>>, StateError> {
    match read(dir, name, max) {
        Ok(v) => Ok(Some(v)),
        Err(StateError::Missing) => Ok(None),
        Err(e) => Err(e),
    }
}

fn temp_name(name: &OsStr) -> OsString {
    let mut r = [0u8; 6];
    let _ = getrandom::fill(&mut r);
    let mut t = OsString::from(".");
    // Keep the temporary's name within NAME_MAX whatever the target's length.
    let stem = &name.as_bytes()[..name.len().min(200)];
    t.push(OsStr::from_bytes(stem));
    t.push(format!(".tmp-{}-{}", std::process::id(), r.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    t
}

/// Replaces `name` in `dir` with `bytes`, crash-safely: a new temporary (`O_CREAT | O_EXCL
/// | O_NOFOLLOW`, so nothing planted under its name is opened), written, `fsync`ed,
/// renamed over `name` (a symlink there is replaced, not followed), and the directory
/// `fsync`ed. `mode` applies to the new file whatever the umask.
pub fn write_atomic(dir: &Dir, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    check_name(name)?;
    let (tmp, mut f) = loop {
        let tmp = temp_name(name);
        match dir.create_file(&tmp, mode & 0o777) {
            Ok(f) => break (tmp, f),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        super::set_mode(&f, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        dir.rename(&tmp, dir, name, false)
    })();
    if result.is_err() {
        let _ = dir.unlink(&tmp);
        return result;
    }
    dir.sync()
}

/// Opens (creating it 0600 if missing) the lock file `name` for `flock`: must be a regular
/// file; a symlink is not followed and a FIFO does not block the open.
pub fn open_lock(dir: &Dir, name: &OsStr) -> Result<File, StateError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, check_name(name).map_err(StateError::Io)?, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| classify(io::Error::from(e)))?;
    let f = File::from(fd);
    let meta = super::fstat(&f).map_err(StateError::Io)?;
    if !meta.is_file() {
        return Err(StateError::NotRegular(meta.kind()));
    }
    Ok(f)
}
