//! Copying one object with its metadata: contents hashed while copied (one read pass),
//! sparse files kept sparse (SEEK_DATA/SEEK_HOLE), owner, mode, ns times, xattrs
//! (which carry POSIX ACLs as `system.posix_acl_*`), symlinks and special files.

use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};
use std::fs::{self, File, Metadata, OpenOptions};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

pub const BUF_SIZE: usize = 256 * 1024;

/// What copying a regular file produced.
pub struct Copied {
    pub hash: [u8; 32],
    /// Bytes read (the file may have changed size since it was listed).
    pub size: u64,
    /// Extended attributes the target could not hold.
    pub skipped_xattrs: usize,
}

/// Where a failure happened decides what it means: a source problem skips one file,
/// a target problem (e.g. ENOSPC) stops the run.
#[derive(Debug)]
pub enum CopyError {
    Source(io::Error),
    Target(io::Error),
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Copies `src` to a new file `dst` (which must not exist) and hashes what it copied.
pub fn copy_file(src: &Path, dst: &Path, meta: &Metadata, buf: &mut Vec<u8>) -> Result<Copied, CopyError> {
    let mut input = open_source(src).map_err(CopyError::Source)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        // Created with its final permission bits where the umask allows, saving a chmod.
        .mode(meta.mode() & 0o777)
        .open(dst)
        .map_err(CopyError::Target)?;
    // From here on the file is ours: on any failure, leave nothing half-copied behind.
    let result = (|| {
        let mut hasher = blake3::Hasher::new();
        let sparse = meta.len() > 0 && meta.blocks().saturating_mul(512) < meta.len();
        let size = if sparse {
            copy_sparse(&mut input, &mut out, &mut hasher, buf)?
        } else {
            copy_dense(&mut input, &mut out, &mut hasher, buf, meta.len())?
        };
        let skipped_xattrs = apply_fd_metadata(&input, &out, meta)?;
        Ok(Copied { hash: *hasher.finalize().as_bytes(), size, skipped_xattrs })
    })();
    if result.is_err() {
        drop(out);
        let _ = fs::remove_file(dst);
    }
    result
}

/// Owner, mode, xattrs, then times, on open files (no path lookups).
fn apply_fd_metadata(input: &File, out: &File, meta: &Metadata) -> Result<usize, CopyError> {
    use std::os::unix::fs::PermissionsExt;
    let t = CopyError::Target;
    match std::os::unix::fs::fchown(out, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => {}
        Err(e) => return Err(t(e)),
    }
    // Set-id bits (which chown clears) and bits the umask took need an explicit chmod.
    let mode = meta.mode() & 0o7777;
    if mode & 0o7000 != 0 || mode & umask() != 0 {
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(t)?;
    }
    let skipped = copy_xattrs(Node::Fd(input), Node::Fd(out))?;
    rustix::fs::futimens(out, &timestamps(meta)).map_err(|e| t(e.into()))?;
    Ok(skipped)
}

/// The process umask, read once (from /proc, since reading it any other way changes it).
/// Unknown means "assume every bit may be masked" so modes are always set explicitly.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
            .unwrap_or(0o777)
    })
}

fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() as _ },
        last_modification: Timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() as _ },
    }
}

fn open_source(src: &Path) -> io::Result<File> {
    // O_NOATIME keeps the backup from touching access times; only the owner or root may ask.
    match OpenOptions::new().read(true).custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW).open(src) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(src),
        r => r,
    }
}

/// Copies the `len` bytes the walk saw. A file that grew since is copied as it was then
/// (its newer mtime makes the next run copy it again); one that shrank stops at EOF.
/// Not copy_file_range: the bytes must pass through memory for the hash anyway, and the
/// backup disk is another filesystem (no reflinks), so read+write is the one-pass copy.
fn copy_dense(input: &mut File, out: &mut File, hasher: &mut blake3::Hasher, buf: &mut Vec<u8>, len: u64) -> Result<u64, CopyError> {
    buf.resize(BUF_SIZE, 0);
    let mut total = 0u64;
    while total < len {
        let want = (len - total).min(BUF_SIZE as u64) as usize;
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Source(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Target)?;
        total += n as u64;
    }
    Ok(total)
}

/// Copies only the data extents; holes are hashed as zeros (as any reader sees them)
/// and left unwritten so the copy stays sparse.
fn copy_sparse(input: &mut File, out: &mut File, hasher: &mut blake3::Hasher, buf: &mut Vec<u8>) -> Result<u64, CopyError> {
    use rustix::fs::{seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    buf.resize(BUF_SIZE, 0);
    let len = input.metadata().map_err(CopyError::Source)?.len();
    let zeros = vec![0u8; BUF_SIZE];
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(&*input, SeekFrom::Data(pos)) {
            Ok(d) => d.min(len),
            Err(rustix::io::Errno::NXIO) => len,
            Err(e) => return Err(CopyError::Source(e.into())),
        };
        let mut gap = data - pos;
        while gap > 0 {
            let n = gap.min(BUF_SIZE as u64) as usize;
            hasher.update(&zeros[..n]);
            gap -= n as u64;
        }
        if data >= len {
            pos = len;
            break;
        }
        let hole = match seek(&*input, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(e) => return Err(CopyError::Source(e.into())),
        };
        let mut at = data;
        while at < hole {
            let want = ((hole - at) as usize).min(BUF_SIZE);
            let n = input.read_at(&mut buf[..want], at).map_err(CopyError::Source)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all_at(&buf[..n], at).map_err(CopyError::Target)?;
            at += n as u64;
        }
        pos = at.max(hole);
    }
    // The tail hole (if any) is made by extending the length.
    out.set_len(pos).map_err(CopyError::Target)?;
    Ok(pos)
}

/// Hashes a file's contents.
pub fn hash_file(path: &Path, buf: &mut Vec<u8>) -> io::Result<([u8; 32], u64)> {
    let mut f = open_source(path)?;
    buf.resize(BUF_SIZE, 0);
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((*hasher.finalize().as_bytes(), total))
}

/// Something extended attributes can be read from or written to.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    /// A path, not followed if it is a symlink.
    Path(&'a Path),
    Fd(&'a File),
}

impl Node<'_> {
    fn list_query(self) -> rustix::io::Result<usize> {
        match self {
            Node::Path(p) => rustix::fs::llistxattr_query(p),
            Node::Fd(f) => rustix::fs::flistxattr_query(f),
        }
    }
    fn list(self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Node::Path(p) => rustix::fs::llistxattr(p, buf),
            Node::Fd(f) => rustix::fs::flistxattr(f, buf),
        }
    }
    fn get_query(self, name: &OsStr) -> rustix::io::Result<usize> {
        match self {
            Node::Path(p) => rustix::fs::lgetxattr_query(p, name),
            Node::Fd(f) => rustix::fs::fgetxattr_query(f, name),
        }
    }
    fn get(self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Node::Path(p) => rustix::fs::lgetxattr(p, name, buf),
            Node::Fd(f) => rustix::fs::fgetxattr(f, name, buf),
        }
    }
    fn set(self, name: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        match self {
            Node::Path(p) => rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()),
            Node::Fd(f) => rustix::fs::fsetxattr(f, name, value, XattrFlags::empty()),
        }
    }
}

/// Copies extended attributes (POSIX ACLs among them) from `src` to `dst`.
/// Attributes the target cannot hold (no support, or not permitted) are skipped:
/// returns how many were. Source read failures are errors of the source.
pub fn copy_xattrs(src: Node, dst: Node) -> Result<usize, CopyError> {
    let n = match src.list_query() {
        Ok(0) => return Ok(0),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(0),
        Err(e) => return Err(CopyError::Source(e.into())),
    };
    // Attributes can be added between the two calls: leave room and retry on ERANGE.
    let mut names = vec![0u8; n + 256];
    let n = loop {
        match src.list(&mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 2, 0),
            Err(e) => return Err(CopyError::Source(e.into())),
        }
    };
    names.truncate(n);
    let mut skipped = 0;
    let mut value = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let len = match src.get_query(name) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(CopyError::Source(e.into())),
        };
        value.resize(len + 256, 0);
        let l = match src.get(name, &mut value) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(CopyError::Source(e.into())),
        };
        match dst.set(name, &value[..l]) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM | rustix::io::Errno::ACCESS) => skipped += 1,
            Err(e) => return Err(CopyError::Target(e.into())),
        }
    }
    Ok(skipped)
}

/// Applies owner, mode, xattrs and times of `meta`/`src` to `dst`, in the order that keeps
/// each step from undoing the last (chown clears set-id bits; any change touches ctime only).
/// Owner changes that are not permitted (not root) are skipped silently, like `cp -a`.
pub fn apply_metadata(src: &Path, dst: &Path, meta: &Metadata, with_xattrs: bool) -> Result<usize, CopyError> {
    apply_metadata_inner(src, dst, meta, with_xattrs)
}

fn apply_metadata_inner(src: &Path, dst: &Path, meta: &Metadata, with_xattrs: bool) -> Result<usize, CopyError> {
    let t = CopyError::Target;
    let is_link = meta.file_type().is_symlink();
    match std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => {}
        Err(e) => return Err(t(e)),
    }
    if !is_link {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(t)?;
    }
    let skipped = if with_xattrs { copy_xattrs(Node::Path(src), Node::Path(dst))? } else { 0 };
    set_times(dst, meta).map_err(t)?;
    Ok(skipped)
}

pub fn set_times(dst: &Path, meta: &Metadata) -> io::Result<()> {
    rustix::fs::utimensat(CWD, dst, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Recreates a fifo, device or socket node.
pub fn make_special(dst: &Path, meta: &Metadata) -> io::Result<()> {
    use rustix::fs::{FileType, Mode};
    let ft = FileType::from_raw_mode(meta.mode());
    rustix::fs::mknodat(CWD, dst, ft, Mode::from_raw_mode(0o600), meta.rdev() as _)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn sparse_copy_keeps_holes_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        let f = File::create(&src).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 8 << 20).unwrap();
        f.set_len(32 << 20).unwrap();
        drop(f);
        let meta = fs::symlink_metadata(&src).unwrap();
        let dst = dir.path().join("d");
        let mut buf = Vec::new();
        let c = copy_file(&src, &dst, &meta, &mut buf).unwrap();
        let expected = blake3::hash(&fs::read(&src).unwrap());
        assert_eq!(&c.hash, expected.as_bytes());
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
        let dmeta = fs::metadata(&dst).unwrap();
        assert_eq!(dmeta.len(), 32 << 20);
        assert!(dmeta.blocks() * 512 < 1 << 20, "copy is not sparse: {} blocks", dmeta.blocks());
    }
}
