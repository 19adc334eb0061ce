//! Extended attributes (POSIX ACLs among them, as `system.posix_acl_*`) on handles.

use super::Dir;
use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where attributes are read or written.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// `name` in a directory, not followed: symlinks and special files, which have no
    /// usable handle. Reached as `/proc/self/fd/<dir>/<name>` with the `l*xattr` calls.
    At(&'a Dir, &'a OsStr),
}

enum Resolved<'a> {
    Fd(BorrowedFd<'a>),
    Path(PathBuf),
}

impl<'a> Node<'a> {
    fn resolve(self) -> io::Result<Resolved<'a>> {
        Ok(match self {
            Node::Fd(fd) => Resolved::Fd(fd),
            Node::At(d, n) => Resolved::Path(d.proc_path(n)?),
        })
    }
}

impl Resolved<'_> {
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Resolved::Fd(f) => rustix::fs::flistxattr(f, buf),
            Resolved::Path(p) => rustix::fs::llistxattr(p, buf),
        }
    }
    fn list_query(&self) -> rustix::io::Result<usize> {
        match self {
            Resolved::Fd(f) => rustix::fs::flistxattr_query(f),
            Resolved::Path(p) => rustix::fs::llistxattr_query(p),
        }
    }
    fn get(&self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Resolved::Fd(f) => rustix::fs::fgetxattr(f, name, buf),
            Resolved::Path(p) => rustix::fs::lgetxattr(p, name, buf),
        }
    }
    fn get_query(&self, name: &OsStr) -> rustix::io::Result<usize> {
        match self {
            Resolved::Fd(f) => rustix::fs::fgetxattr_query(f, name),
            Resolved::Path(p) => rustix::fs::lgetxattr_query(p, name),
        }
    }
    fn set(&self, name: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        match self {
            Resolved::Fd(f) => rustix::fs::fsetxattr(f, name, value, flags),
            Resolved::Path(p) => rustix::fs::lsetxattr(p, name, value, flags),
        }
    }
}

/// A failure of the side that read or of the side that wrote.
#[derive(Debug)]
pub enum XattrError {
    Source(io::Error),
    Target(io::Error),
}

/// Largest attribute list and value accepted (the kernel's own limit is 64 KiB each).
const MAX_XATTR: usize = 1 << 20;

/// Every attribute of `node`, sorted by name. A filesystem without xattrs gives none.
pub fn read_all(node: Node) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let r = node.resolve()?;
    let n = match r.list_query() {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    // Attributes can be added between the two calls: leave room and retry on ERANGE.
    let mut names = vec![0u8; n + 256];
    let n = loop {
        match r.list(&mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < MAX_XATTR => names.resize(names.len() * 2, 0),
            Err(e) => return Err(e.into()),
        }
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let os = OsStr::from_bytes(name);
        let mut value = vec![0u8; r.get_query(os).or_else(|e| if e == rustix::io::Errno::NODATA { Ok(0) } else { Err(e) })? + 256];
        let l = loop {
            match r.get(os, &mut value) {
                Ok(l) => break Some(l),
                Err(rustix::io::Errno::NODATA) => break None,
                Err(rustix::io::Errno::RANGE) if value.len() < MAX_XATTR => value.resize(value.len() * 2, 0),
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(l) = l {
            value.truncate(l);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `attrs` to `dst`. Attributes the target cannot hold (no support, not permitted)
/// are skipped: returns how many were.
pub fn write_all(dst: Node, attrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<usize> {
    if attrs.is_empty() {
        return Ok(0);
    }
    let r = dst.resolve()?;
    let mut skipped = 0;
    for (name, value) in attrs {
        match r.set(OsStr::from_bytes(name), value) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM | rustix::io::Errno::ACCESS) => skipped += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(skipped)
}

/// Copies every attribute of `src` to `dst`; returns how many the target could not hold.
pub fn copy(src: Node, dst: Node) -> Result<usize, XattrError> {
    let attrs = read_all(src).map_err(XattrError::Source)?;
    write_all(dst, &attrs).map_err(XattrError::Target)
}
