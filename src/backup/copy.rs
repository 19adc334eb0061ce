//! Copying one object with its metadata: contents hashed while copied (one read pass),
//! sparse files kept sparse (SEEK_DATA/SEEK_HOLE), owner, mode, ns times, xattrs
//! (which carry POSIX ACLs as `system.posix_acl_*`), symlinks and special files.

use crate::fsaccess::xattr::{self, Node, XattrError};
use crate::fsaccess::{self, Dir, Meta};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

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

impl From<XattrError> for CopyError {
    fn from(e: XattrError) -> CopyError {
        match e {
            XattrError::Source(e) => CopyError::Source(e),
            XattrError::Target(e) => CopyError::Target(e),
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Copies the open source file `input` (described by `meta`) to a new file `name` in
/// `dst` (created `O_EXCL | O_NOFOLLOW`) and hashes what it copied. `mode` is the
/// permission set to give it (set-id bits already dropped where the caller wants that).
pub fn copy_file(input: &mut File, meta: &Meta, mode: u32, dst: &Dir, name: &OsStr, buf: &mut Vec<u8>) -> Result<Copied, CopyError> {
    // Created with its final permission bits where the umask allows, saving a chmod.
    let mut out = dst.create_file(name, mode & 0o777).map_err(CopyError::Target)?;
    // From here on the file is ours: on any failure, leave nothing half-copied behind.
    let result = (|| {
        let mut hasher = blake3::Hasher::new();
        let size = if meta.is_sparse() {
            copy_sparse(input, &mut out, &mut hasher, buf)?
        } else {
            copy_dense(input, &mut out, &mut hasher, buf, meta.size)?
        };
        let skipped_xattrs = apply_fd_metadata(input, &out, meta, mode)?;
        Ok(Copied { hash: *hasher.finalize().as_bytes(), size, skipped_xattrs })
    })();
    if result.is_err() {
        drop(out);
        let _ = dst.unlink(name);
    }
    result
}

/// Owner, mode, xattrs, then times, on open files (no path lookups).
fn apply_fd_metadata(input: &File, out: &File, meta: &Meta, mode: u32) -> Result<usize, CopyError> {
    let t = CopyError::Target;
    chown_fd(out, meta).map_err(t)?;
    // Set-id bits (which chown clears) and bits the umask took need an explicit chmod.
    if mode & 0o7000 != 0 || mode & umask() != 0 {
        fsaccess::set_mode(out, mode).map_err(t)?;
    }
    let skipped = xattr::copy(Node::Fd(input.as_fd()), Node::Fd(out.as_fd()))?;
    fsaccess::set_times(out, meta.atime, meta.mtime).map_err(t)?;
    Ok(skipped)
}

/// Gives `fd` the owner in `meta`; not permitted (not root) is skipped silently, like `cp -a`.
pub fn chown_fd(fd: impl AsFd, meta: &Meta) -> io::Result<()> {
    match fsaccess::set_owner(fd, meta.uid, meta.gid) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => Ok(()),
        r => r,
    }
}

/// Owner, mode, xattrs (from the open source directory, when there is one) and times of a
/// directory, on its open handle, once every child exists.
pub fn apply_dir_metadata(src: Option<&Dir>, dst: &Dir, meta: &Meta, mode: u32) -> Result<usize, CopyError> {
    let t = CopyError::Target;
    chown_fd(dst, meta).map_err(t)?;
    fsaccess::set_mode(dst, mode).map_err(t)?;
    // The source may have changed since; its xattrs are best effort.
    let skipped = match src {
        Some(s) => match xattr::copy(Node::Fd(s.as_fd()), Node::Fd(dst.as_fd())) {
            Ok(n) => n,
            Err(XattrError::Source(_)) => 0,
            Err(e) => return Err(e.into()),
        },
        None => 0,
    };
    fsaccess::set_times(dst, meta.atime, meta.mtime).map_err(t)?;
    Ok(skipped)
}

/// Owner, mode (not for symlinks), xattrs and times of a symlink or special file `name` in
/// `dst`, copied from `src_name` in `src` — all without following either.
pub fn apply_at_metadata(src: &Dir, src_name: &OsStr, dst: &Dir, name: &OsStr, meta: &Meta) -> Result<usize, CopyError> {
    let t = CopyError::Target;
    match dst.chown_at(name, meta.uid, meta.gid) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => {}
        r => r.map_err(t)?,
    }
    if !meta.is_symlink() {
        dst.chmod_at(name, meta.perm()).map_err(t)?;
    }
    let skipped = xattr::copy(Node::At(src, src_name), Node::At(dst, name))?;
    dst.set_times_at(name, meta.atime, meta.mtime).map_err(t)?;
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

/// Hashes an open file's contents.
pub fn hash_file(f: &mut File, buf: &mut Vec<u8>) -> io::Result<([u8; 32], u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn sparse_copy_keeps_holes_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s");
        let f = File::create(&src).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 8 << 20).unwrap();
        f.set_len(32 << 20).unwrap();
        drop(f);
        let d = Dir::open_path(dir.path()).unwrap();
        let meta = d.stat(OsStr::new("s")).unwrap();
        let dst = dir.path().join("d");
        let mut buf = Vec::new();
        let (mut input, _) = d.open_file(OsStr::new("s"), Some(&meta)).unwrap();
        let c = copy_file(&mut input, &meta, meta.perm(), &d, OsStr::new("d"), &mut buf).unwrap();
        let expected = blake3::hash(&fs::read(&src).unwrap());
        assert_eq!(&c.hash, expected.as_bytes());
        assert_eq!(fs::read(&dst).unwrap(), fs::read(&src).unwrap());
        let dmeta = fs::metadata(&dst).unwrap();
        assert_eq!(dmeta.len(), 32 << 20);
        assert!(dmeta.blocks() * 512 < 1 << 20, "copy is not sparse: {} blocks", dmeta.blocks());
    }
}
