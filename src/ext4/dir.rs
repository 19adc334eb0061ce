//! Directories: linear blocks, htree (read linearly: index blocks hide behind an empty
//! entry spanning the block), inline directories, and leaf-block checksums.

use super::inode::{FileKind, Inode, FL_ENCRYPT, FL_INDEX, I_BLOCK_LEN};
use super::{corrupt, crc32c_raw, incompat, Ext4Error, Fs, ReadAt, Result};
use crate::luks::codec::Le;

/// Largest directory read (a million long names fit in well under this).
pub const MAX_DIR_BYTES: u64 = 256 << 20;

/// One name in a directory ("." and ".." are not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name's bytes: never empty, never `/` or NUL, never "." or "..".
    pub name: Vec<u8>,
    pub ino: u32,
}

impl<D: ReadAt> Fs<D> {
    /// The entries of a directory, in on-disk order.
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        if dir.kind() != FileKind::Dir {
            return Err(Ext4Error::NotDir(format!("inode {}", dir.ino)));
        }
        if dir.flags & FL_ENCRYPT != 0 {
            return Err(Ext4Error::Unsupported(format!("directory inode {} is encrypted with fscrypt", dir.ino)));
        }
        let mut out = Vec::new();
        if dir.has_inline_data() {
            // i_block: the parent's inode number, then entries; more entries in system.data.
            self.parse_entries(dir, &dir.i_block[4..I_BLOCK_LEN], &mut out)?;
            if let Some(more) = self.system_data(dir)? {
                if !more.is_empty() {
                    self.parse_entries(dir, &more, &mut out)?;
                }
            }
            return Ok(out);
        }
        let data = self.read_all(dir, MAX_DIR_BYTES)?;
        let bs = self.sb.block_size as usize;
        if data.len() % bs != 0 {
            return corrupt(format!("directory inode {}: size {} is not whole blocks", dir.ino, data.len()));
        }
        for (i, block) in data.chunks_exact(bs).enumerate() {
            let f = Le::new(block, "ext4 directory block");
            let (first_ino, first_len) = (f.u32(0)?, self.rec_len(f.u16(4)?));
            // htree index blocks: the root (block 0) and nodes that hide behind one empty
            // entry covering the block. Their entries are not names.
            let index_block = dir.flags & FL_INDEX != 0 && (i == 0 || (first_ino == 0 && first_len == bs));
            let mut names = block;
            if self.sb.metadata_csum() && !index_block {
                names = self.check_leaf_tail(dir, block)?;
            }
            if index_block && i == 0 {
                // "." and ".." head the root; ".." spans the rest of the block.
                self.parse_entries(dir, names, &mut out)?;
            } else if !index_block {
                self.parse_entries(dir, names, &mut out)?;
            }
        }
        Ok(out)
    }

    fn rec_len(&self, raw: u16) -> usize {
        let len = usize::from(raw);
        if self.sb.block_size < 65536 {
            len
        } else if raw == 65535 || raw == 0 {
            65536
        } else {
            (len & 65532) | ((len & 3) << 16)
        }
    }

    /// Checks a leaf block's checksum tail; returns the block without it.
    fn check_leaf_tail<'b>(&self, dir: &Inode, block: &'b [u8]) -> Result<&'b [u8]> {
        let t = block.len() - 12;
        let f = Le::new(block, "ext4 directory block tail");
        if f.u32(t)? != 0 || f.u16(t + 4)? != 12 || f.u8(t + 6)? != 0 || f.u8(t + 7)? != 0xde {
            return corrupt(format!("directory inode {}: leaf block without its checksum tail", dir.ino));
        }
        if self.checks && crc32c_raw(dir.csum_seed, &block[..t]) != f.u32(t + 8)? {
            return corrupt(format!("directory inode {}: directory block checksum mismatch", dir.ino));
        }
        Ok(&block[..t])
    }

    /// Entries of one block (or inline area) that `rec_len`s tile exactly.
    fn parse_entries(&self, dir: &Inode, area: &[u8], out: &mut Vec<DirEntry>) -> Result<()> {
        let f = Le::new(area, "ext4 directory entry");
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        let mut pos = 0;
        while pos < area.len() {
            let ino = f.u32(pos)?;
            let rec_len = self.rec_len(f.u16(pos + 4)?);
            let name_len = if filetype { usize::from(f.u8(pos + 6)?) } else { usize::from(f.u16(pos + 6)?) };
            let bad = |why: &str| corrupt(format!("directory inode {}: entry at byte {pos}: {why}", dir.ino));
            if rec_len < 8 || rec_len % 4 != 0 || pos + rec_len > area.len() {
                return bad(&format!("record length {rec_len}"));
            }
            if 8 + name_len > rec_len {
                return bad("name longer than its record");
            }
            if ino != 0 {
                if ino > self.sb.inodes_count {
                    return bad(&format!("inode number {ino} out of range"));
                }
                let name = f.bytes(pos + 8, name_len)?;
                if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                    return bad("name is empty or holds `/` or NUL");
                }
                if name != b"." && name != b".." {
                    out.push(DirEntry { name: name.to_vec(), ino });
                }
            }
            pos += rec_len;
        }
        Ok(())
    }
}
