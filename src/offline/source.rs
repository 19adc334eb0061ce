//! A read-only view of a backup root that never follows a link: what listing, verifying and
//! restoring generations need, and nothing else. [`Ext4Source`] reads an ext4 image in
//! userspace; a host directory can implement it the same way, so the generation logic in
//! [`super::verify`], [`super::restore`] and [`super::ls`] exists once.

use super::Result;
use crate::ext4::{self, Fs, Inode, ReadAt};
use std::io;

pub use crate::fsaccess::FileKind;

/// What `lstat` says of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits with set-id and sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub atime: (i64, u32),
    /// Identifies the file within the source (hard links share it).
    pub ino: u64,
    pub nlink: u64,
    /// `(major, minor)` for device nodes.
    pub rdev: (u32, u32),
}

/// A directory's entries: each name with its node, or why that entry cannot be read.
pub type Entries<N> = Vec<(Vec<u8>, Result<N>)>;

pub trait Source: Sync {
    type Node: Clone + Send + Sync;
    /// The backup root (the directory holding `generations/`).
    fn root(&self) -> Result<Self::Node>;
    fn stat(&self, node: &Self::Node) -> Stat;
    /// The entry `name` of directory `dir`, not followed if it is a symlink.
    fn child(&self, dir: &Self::Node, name: &[u8]) -> Result<Option<Self::Node>>;
    /// The entries of `dir`, sorted by name bytes; an entry that cannot be read is an error
    /// of its own (the rest of the directory still lists).
    fn list(&self, dir: &Self::Node) -> Result<Entries<Self::Node>>;
    fn read_link(&self, node: &Self::Node) -> Result<Vec<u8>>;
    /// Content bytes from `offset`; fewer than `buf.len()` only at the end.
    fn read_at(&self, node: &Self::Node, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Extended attributes (name, value) as `getxattr` shows them.
    fn xattrs(&self, node: &Self::Node) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Sequential reads of a node's content.
    fn reader<'a>(&'a self, node: &Self::Node) -> NodeReader<'a, Self>
    where
        Self: Sized,
    {
        NodeReader { src: self, node: node.clone(), pos: 0 }
    }
}

pub struct NodeReader<'a, S: Source> {
    src: &'a S,
    node: S::Node,
    pos: u64,
}

impl<S: Source> io::Read for NodeReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(&self.node, self.pos, buf).map_err(|e| io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An ext4 filesystem read in userspace.
pub struct Ext4Source {
    pub fs: Fs<Box<dyn ReadAt>>,
}

impl Ext4Source {
    pub fn new(fs: Fs<Box<dyn ReadAt>>) -> Self {
        Ext4Source { fs }
    }
}

impl Source for Ext4Source {
    type Node = Inode;
    fn root(&self) -> Result<Inode> {
        Ok(self.fs.root()?)
    }
    fn stat(&self, n: &Inode) -> Stat {
        Stat {
            kind: n.kind(),
            perm: n.perm(),
            uid: n.uid,
            gid: n.gid,
            size: n.size,
            mtime: (n.mtime.sec, n.mtime.nsec),
            atime: (n.atime.sec, n.atime.nsec),
            ino: u64::from(n.ino),
            nlink: u64::from(n.links),
            rdev: n.rdev(),
        }
    }
    fn child(&self, dir: &Inode, name: &[u8]) -> Result<Option<Inode>> {
        if dir.kind() != FileKind::Dir {
            return Ok(None);
        }
        match self.fs.read_dir(dir)?.into_iter().find(|e| e.name == name) {
            Some(e) => Ok(Some(self.fs.inode(e.ino)?)),
            None => Ok(None),
        }
    }
    fn list(&self, dir: &Inode) -> Result<Entries<Inode>> {
        let mut entries = self.fs.read_dir(dir)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(entries.into_iter().map(|e| (e.name, self.fs.inode(e.ino).map_err(Into::into))).collect())
    }
    fn read_link(&self, n: &Inode) -> Result<Vec<u8>> {
        Ok(self.fs.read_link(n)?)
    }
    fn read_at(&self, n: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Ok(self.fs.read_at(n, offset, buf)?)
    }
    fn xattrs(&self, n: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.fs.xattrs(n)?.into_iter().map(|x: ext4::Xattr| (x.name, x.value)).collect())
    }
}
