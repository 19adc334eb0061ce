//! Inodes: parsing, checksums, kinds, times, symlink targets.

use super::{corrupt, crc32c_raw, incompat, Ext4Error, Fs, ReadAt, Result};
use crate::luks::codec::Le;

/// i_flags bits this reader acts on.
pub(crate) const FL_ENCRYPT: u32 = 0x800;
pub(crate) const FL_INDEX: u32 = 0x1000;
pub(crate) const FL_HUGE_FILE: u32 = 0x40000;
pub(crate) const FL_EXTENTS: u32 = 0x80000;
pub(crate) const FL_EA_INODE: u32 = 0x20_0000;
pub(crate) const FL_INLINE_DATA: u32 = 0x1000_0000;

/// Length of `i_block`, where extents, block maps, fast symlinks and inline data start.
pub(crate) const I_BLOCK_LEN: usize = 60;
/// Longest symlink target read (the kernel's limit is one page).
pub const MAX_SYMLINK: u64 = 4096;

/// One notion of file kind across the crate: the file-access layer's.
pub use crate::fsaccess::FileKind;

/// Seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// One inode as read from its table, checked.
#[derive(Clone)]
pub struct Inode {
    pub ino: u32,
    /// Type and permission bits (`st_mode`).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub generation: u32,
    /// External xattr block (0: none).
    pub file_acl: u64,
    /// `i_blocks` in 512-byte units.
    pub blocks_512: u64,
    pub(crate) i_block: [u8; I_BLOCK_LEN],
    /// The in-inode extended attribute area (after `i_extra_isize`), possibly empty.
    pub(crate) ibody_xattrs: Vec<u8>,
    /// Seed for the checksums of this inode's extent, directory and EA-inode blocks.
    pub(crate) csum_seed: u32,
}

impl std::fmt::Debug for Inode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inode").field("ino", &self.ino).field("mode", &format_args!("{:o}", self.mode)).field("size", &self.size).finish()
    }
}

impl Inode {
    /// The kind its mode says; a type the kernel does not know reads as a regular file
    /// (so its bytes are still reachable, bounded like any file's).
    pub fn kind(&self) -> FileKind {
        match self.mode & 0o170000 {
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Symlink,
            0o010000 => FileKind::Fifo,
            0o020000 => FileKind::CharDev,
            0o060000 => FileKind::BlockDev,
            0o140000 => FileKind::Socket,
            _ => FileKind::File,
        }
    }
    /// Permission bits with set-id and sticky.
    pub fn perm(&self) -> u32 {
        u32::from(self.mode) & 0o7777
    }
    pub fn has_inline_data(&self) -> bool {
        self.flags & FL_INLINE_DATA != 0
    }
    /// `(major, minor)` of a device node, as the kernel decodes `i_block`.
    pub fn rdev(&self) -> (u32, u32) {
        let f = Le::new(&self.i_block, "device number");
        let old = f.u32(0).unwrap_or(0);
        if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let new = f.u32(4).unwrap_or(0);
            ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
        }
    }
}

fn timestamp(f: &Le, base: usize, extra: Option<usize>) -> Result<Timestamp> {
    let mut sec = i64::from(f.u32(base)? as i32);
    let mut nsec = 0;
    if let Some(e) = extra {
        let x = f.u32(e)?;
        sec += i64::from(x & 3) << 32;
        nsec = x >> 2;
        if nsec >= 1_000_000_000 {
            nsec = 0;
        }
    }
    Ok(Timestamp { sec, nsec })
}

impl<D: ReadAt> Fs<D> {
    /// Reads inode `ino`, checking its number, group descriptor and checksum.
    pub fn inode(&self, ino: u32) -> Result<Inode> {
        let sb = &self.sb;
        if ino == 0 || ino > sb.inodes_count {
            return corrupt(format!("inode number {ino} is out of range (1..={})", sb.inodes_count));
        }
        let index = u64::from(ino - 1);
        let g = (index / u64::from(sb.inodes_per_group)) as usize;
        let group = self.groups.get(g).ok_or_else(|| Ext4Error::Corrupt(format!("inode {ino}: no group {g}")))?;
        if group.bad_checksum {
            return corrupt(format!("inode {ino}: the descriptor of group {g} fails its checksum"));
        }
        let byte = (index % u64::from(sb.inodes_per_group)) * sb.inode_size as u64;
        let block = self.block(group.inode_table + byte / sb.block_size)?;
        let at = (byte % sb.block_size) as usize;
        let raw = Le::new(&block, "ext4 inode").bytes(at, sb.inode_size)?;
        self.parse_inode(ino, raw)
    }

    pub(crate) fn parse_inode(&self, ino: u32, raw: &[u8]) -> Result<Inode> {
        let sb = &self.sb;
        let f = Le::new(raw, "ext4 inode");
        let extra_isize = if raw.len() > 128 { usize::from(f.u16(0x80)?) } else { 0 };
        if extra_isize > raw.len() - 128.min(raw.len()) || extra_isize % 4 != 0 {
            return corrupt(format!("inode {ino}: extra size {extra_isize} does not fit"));
        }
        let fits = |end: usize| 128 + extra_isize >= end;
        let generation = f.u32(0x64)?;
        let seed = crc32c_raw(crc32c_raw(sb.csum_seed, &ino.to_le_bytes()), &generation.to_le_bytes());
        if self.checks && sb.metadata_csum() {
            let mut z = raw.to_vec();
            z[0x7c..0x7e].fill(0);
            let hi = raw.len() > 128 && fits(0x84);
            if hi {
                z[0x82..0x84].fill(0);
            }
            let c = crc32c_raw(seed, &z);
            let stored_lo = u32::from(f.u16(0x7c)?);
            let ok = if hi { c == stored_lo | (u32::from(f.u16(0x82)?) << 16) } else { c & 0xffff == stored_lo };
            if !ok {
                return corrupt(format!("inode {ino}: checksum mismatch"));
            }
        }
        let mode = f.u16(0x00)?;
        let links = f.u16(0x1a)?;
        if mode == 0 || links == 0 {
            return corrupt(format!("inode {ino} is not in use (a directory entry points at a free inode)"));
        }
        let uid = u32::from(f.u16(0x02)?) | (u32::from(f.u16(0x78)?) << 16);
        let gid = u32::from(f.u16(0x18)?) | (u32::from(f.u16(0x7a)?) << 16);
        let flags = f.u32(0x20)?;
        let mut size = u64::from(f.u32(0x04)?);
        let is_reg = mode & 0o170000 == 0o100000;
        let is_dir = mode & 0o170000 == 0o040000;
        if is_reg || (is_dir && sb.has_incompat(incompat::LARGEDIR)) {
            size |= u64::from(f.u32(0x6c)?) << 32;
        }
        let extra = |off: usize| fits(off + 4).then_some(off);
        let mtime = timestamp(&f, 0x10, extra(0x88))?;
        let atime = timestamp(&f, 0x08, extra(0x8c))?;
        let ctime = timestamp(&f, 0x0c, extra(0x84))?;
        let mut file_acl = u64::from(f.u32(0x68)?);
        if sb.has_incompat(incompat::BIT64) {
            file_acl |= u64::from(f.u16(0x76)?) << 32;
        }
        let i_block: [u8; I_BLOCK_LEN] = f.array(0x28)?;
        let mut blocks_512 = u64::from(f.u32(0x1c)?) | (u64::from(f.u16(0x74)?) << 32);
        if flags & FL_HUGE_FILE != 0 {
            blocks_512 = blocks_512.saturating_mul(sb.block_size / 512);
        }
        let ibody_xattrs = if raw.len() > 128 { f.rest(128 + extra_isize)?.to_vec() } else { Vec::new() };
        Ok(Inode { ino, mode, uid, gid, size, links, flags, atime, mtime, ctime, generation, file_acl, blocks_512, i_block, ibody_xattrs, csum_seed: seed })
    }

    /// A symlink's target, bounded by [`MAX_SYMLINK`].
    pub fn read_link(&self, inode: &Inode) -> Result<Vec<u8>> {
        if inode.kind() != FileKind::Symlink {
            return corrupt(format!("inode {} is not a symlink", inode.ino));
        }
        if inode.size > MAX_SYMLINK || inode.size == 0 {
            return corrupt(format!("inode {}: symlink length {}", inode.ino, inode.size));
        }
        let len = inode.size as usize;
        // As the kernel decides: a symlink with no data blocks (its xattr block aside)
        // keeps its target in i_block.
        let xattr_blocks = if inode.file_acl != 0 { self.sb.cluster_size / 512 } else { 0 };
        let fast = !inode.has_inline_data() && inode.blocks_512.saturating_sub(xattr_blocks) == 0;
        let target = if fast {
            if len >= I_BLOCK_LEN {
                return corrupt(format!("inode {}: fast symlink of {len} bytes", inode.ino));
            }
            inode.i_block[..len].to_vec()
        } else {
            self.read_all(inode, MAX_SYMLINK)?
        };
        if target.len() != len || target.contains(&0) {
            return corrupt(format!("inode {}: malformed symlink target", inode.ino));
        }
        Ok(target)
    }
}
