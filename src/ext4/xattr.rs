//! Extended attributes: in the inode body, in an external block, or (ea_inode) in an inode
//! of their own. Names get their namespace prefix back; POSIX ACLs are converted from ext4's
//! compact on-disk form to the form `getxattr(2)` returns, so they can be set as they are.

use super::inode::{Inode, FL_EA_INODE};
use super::{corrupt, crc32c_raw, Fs, ReadAt, Result};
use crate::luks::codec::Le;

const XATTR_MAGIC: u32 = 0xea02_0000;
/// The kernel's limit on one value (XATTR_SIZE_MAX).
pub const MAX_VALUE: u64 = 65536;

/// One extended attribute as `getxattr` names and returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

struct Raw {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        0 => b"",
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    })
}

impl<D: ReadAt> Fs<D> {
    fn raw_xattrs(&self, inode: &Inode) -> Result<Vec<Raw>> {
        let mut out = Vec::new();
        let body = &inode.ibody_xattrs;
        if body.len() >= 4 && Le::new(body, "ext4 in-inode xattrs").u32(0)? == XATTR_MAGIC {
            // Value offsets count from the first entry, just after the magic.
            self.parse_xattr_entries(inode, &body[4..], 0, &mut out)?;
        }
        if inode.file_acl != 0 {
            let block = self.block(inode.file_acl)?;
            let f = Le::new(&block, "ext4 xattr block");
            if f.u32(0)? != XATTR_MAGIC || f.u32(8)? != 1 {
                return corrupt(format!("inode {}: xattr block {} has a bad header", inode.ino, inode.file_acl));
            }
            if self.checks && self.sb.metadata_csum() {
                let mut z = block.to_vec();
                z[0x10..0x14].fill(0);
                let c = crc32c_raw(crc32c_raw(self.sb.csum_seed, &inode.file_acl.to_le_bytes()), &z);
                if c != f.u32(0x10)? {
                    return corrupt(format!("inode {}: xattr block checksum mismatch", inode.ino));
                }
            }
            self.parse_xattr_entries(inode, &block, 32, &mut out)?;
        }
        Ok(out)
    }

    /// Entries from `start` in `area` up to the terminating zero word; values at offsets
    /// relative to `area`'s start.
    fn parse_xattr_entries(&self, inode: &Inode, area: &[u8], start: usize, out: &mut Vec<Raw>) -> Result<()> {
        let f = Le::new(area, "ext4 xattr entry");
        let mut pos = start;
        while pos + 4 <= area.len() && f.u32(pos)? != 0 {
            let name_len = usize::from(f.u8(pos)?);
            let index = f.u8(pos + 1)?;
            let value_offs = usize::from(f.u16(pos + 2)?);
            let value_inum = f.u32(pos + 4)?;
            let value_size = f.u32(pos + 8)?;
            let name = f.bytes(pos + 16, name_len)?.to_vec();
            if u64::from(value_size) > MAX_VALUE {
                return corrupt(format!("inode {}: xattr value of {value_size} bytes", inode.ino));
            }
            let value = if value_inum != 0 {
                let ea = self.inode(value_inum)?;
                if ea.flags & FL_EA_INODE == 0 || ea.has_inline_data() || ea.size != u64::from(value_size) {
                    return corrupt(format!("inode {}: xattr value inode {value_inum} is not one", inode.ino));
                }
                self.read_all(&ea, MAX_VALUE)?
            } else {
                f.bytes(value_offs, value_size as usize)?.to_vec()
            };
            out.push(Raw { index, name, value });
            pos += (16 + name_len + 3) & !3;
        }
        Ok(())
    }

    /// The inline-data continuation (`system.data`), if the inode has one.
    pub(crate) fn system_data(&self, inode: &Inode) -> Result<Option<Vec<u8>>> {
        Ok(self.raw_xattrs(inode)?.into_iter().find(|r| r.index == 7 && r.name == b"data").map(|r| r.value))
    }

    /// The extended attributes `listxattr`/`getxattr` would show, in on-disk order.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        for r in self.raw_xattrs(inode)? {
            if r.index == 7 && r.name == b"data" {
                continue; // inline data, not an attribute
            }
            let Some(p) = prefix(r.index) else { continue };
            let mut name = p.to_vec();
            name.extend_from_slice(&r.name);
            if name.is_empty() || name.contains(&0) {
                return corrupt(format!("inode {}: xattr with an empty or NUL-holding name", inode.ino));
            }
            let value = if r.index == 2 || r.index == 3 { acl_to_xattr(&r.value, inode.ino)? } else { r.value };
            out.push(Xattr { name, value });
        }
        Ok(out)
    }
}

/// ext4's ACL form (version 1; 4-byte entries for the owner, group, mask and other, 8-byte
/// ones with an id for named users and groups) to the xattr form (version 2, 8-byte entries).
fn acl_to_xattr(disk: &[u8], ino: u32) -> Result<Vec<u8>> {
    const USER: u16 = 0x02;
    const GROUP: u16 = 0x08;
    let f = Le::new(disk, "ext4 POSIX ACL");
    if f.u32(0)? != 1 {
        return corrupt(format!("inode {ino}: POSIX ACL of unknown version"));
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut pos = 4;
    while pos < disk.len() {
        let tag = f.u16(pos)?;
        let perm = f.u16(pos + 2)?;
        let (id, len) = match tag {
            USER | GROUP => (f.u32(pos + 4)?, 8),
            0x01 | 0x04 | 0x10 | 0x20 => (u32::MAX, 4),
            _ => return corrupt(format!("inode {ino}: POSIX ACL entry with tag {tag:#x}")),
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        pos += len;
    }
    Ok(out)
}
