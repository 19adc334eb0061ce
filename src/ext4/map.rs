//! Where a file's bytes are: extent trees, ext2/3 block maps, inline data; and reading them.

use super::inode::{Inode, FL_EXTENTS, I_BLOCK_LEN};
use super::{corrupt, crc32c_raw, Fs, ReadAt, Result};
use crate::luks::codec::Le;

/// A run of a file's logical blocks: on disk from `physical`, or a hole (`None`: zeros,
/// which is also how unwritten extents read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub len: u64,
    pub physical: Option<u64>,
}

const EXTENT_MAGIC: u16 = 0xf30a;
/// The kernel's limit on extent tree depth.
const MAX_DEPTH: u16 = 5;
/// Logical block numbers in an extent are 32-bit.
const LBLK_LIMIT: u64 = 1 << 32;

impl<D: ReadAt> Fs<D> {
    /// The runs covering logical blocks `[start, start + count)`, in order, holes explicit.
    pub fn map(&self, inode: &Inode, start: u64, count: u64) -> Result<Vec<Run>> {
        let end = start.saturating_add(count);
        let mut found = Vec::new();
        if inode.flags & FL_EXTENTS != 0 {
            self.extent_node(inode, &inode.i_block, None, (start, end), (0, LBLK_LIMIT), &mut found)?;
        } else {
            self.block_map(inode, start, end, &mut found)?;
        }
        // Fill the gaps with holes.
        let mut out = Vec::with_capacity(found.len() * 2 + 1);
        let mut at = start;
        for r in found {
            if r.logical > at {
                out.push(Run { logical: at, len: r.logical - at, physical: None });
            }
            out.push(r);
            at = r.logical + r.len;
        }
        if at < end {
            out.push(Run { logical: at, len: end - at, physical: None });
        }
        Ok(out)
    }

    /// One extent tree node: `range` is the window asked for, `span` the logical range this
    /// node may cover (its parent's index says so); children are only entered where both meet,
    /// so a hostile tree costs at most its depth times the window.
    fn extent_node(
        &self,
        inode: &Inode,
        node: &[u8],
        want_depth: Option<u16>,
        range: (u64, u64),
        span: (u64, u64),
        out: &mut Vec<Run>,
    ) -> Result<()> {
        let ino = inode.ino;
        let f = Le::new(node, "ext4 extent node");
        if f.u16(0)? != EXTENT_MAGIC {
            return corrupt(format!("inode {ino}: bad extent header magic"));
        }
        let (entries, max, depth) = (usize::from(f.u16(2)?), usize::from(f.u16(4)?), f.u16(6)?);
        let is_root = want_depth.is_none();
        let capacity = (node.len() - 12) / 12;
        if entries > max || max > capacity || max == 0 {
            return corrupt(format!("inode {ino}: extent node with {entries} of {max} entries in room for {capacity}"));
        }
        if depth > MAX_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return corrupt(format!("inode {ino}: extent tree depth {depth} is wrong"));
        }
        if !is_root && self.checks && self.sb.metadata_csum() {
            let tail = 12 + 12 * max;
            let stored = f.u32(tail)?;
            if crc32c_raw(inode.csum_seed, f.bytes(0, tail)?) != stored {
                return corrupt(format!("inode {ino}: extent block checksum mismatch"));
            }
        }
        let (lo, hi) = (range.0.max(span.0), range.1.min(span.1));
        let mut prev_end = span.0;
        for i in 0..entries {
            let e = 12 + 12 * i;
            let first = u64::from(f.u32(e)?);
            if first < prev_end {
                return corrupt(format!("inode {ino}: extents out of order or overlapping"));
            }
            if depth == 0 {
                let raw_len = u64::from(f.u16(e + 4)?);
                let (len, unwritten) = if raw_len > 32768 { (raw_len - 32768, true) } else { (raw_len, false) };
                let phys = u64::from(f.u32(e + 8)?) | (u64::from(f.u16(e + 6)?) << 32);
                let last = first + len;
                if len == 0 || last > span.1 {
                    return corrupt(format!("inode {ino}: extent {first}+{len} is outside its node"));
                }
                if phys < self.sb.first_data_block || phys.checked_add(len).is_none_or(|x| x > self.sb.blocks_count) {
                    return corrupt(format!("inode {ino}: extent points at blocks {phys}+{len}, outside the filesystem"));
                }
                prev_end = last;
                let (a, b) = (first.max(lo), last.min(hi));
                if a < b {
                    let physical = (!unwritten).then_some(phys + (a - first));
                    out.push(Run { logical: a, len: b - a, physical });
                }
            } else {
                let next = if i + 1 < entries { u64::from(f.u32(e + 12)?) } else { span.1 };
                if next <= first || next > span.1 {
                    return corrupt(format!("inode {ino}: extent index out of order"));
                }
                prev_end = next;
                if first < hi && next > lo {
                    let child = u64::from(f.u32(e + 4)?) | (u64::from(f.u16(e + 8)?) << 32);
                    let block = self.block(child)?;
                    self.extent_node(inode, &block, Some(depth - 1), range, (first, next), out)?;
                }
            }
        }
        Ok(())
    }

    /// ext2/3 direct and indirect block pointers.
    fn block_map(&self, inode: &Inode, start: u64, end: u64, out: &mut Vec<Run>) -> Result<()> {
        let per = self.sb.block_size / 4;
        let direct = Le::new(&inode.i_block, "ext4 block map");
        let limit = 12 + per + per * per + per * per * per;
        let mut push = |logical: u64, phys: u32| -> Result<()> {
            if phys == 0 {
                return Ok(());
            }
            let phys = u64::from(phys);
            if phys < self.sb.first_data_block || phys >= self.sb.blocks_count {
                return corrupt(format!("inode {}: block pointer {phys} is outside the filesystem", inode.ino));
            }
            match out.last_mut() {
                Some(r) if r.logical + r.len == logical && r.physical.is_some_and(|p| p + r.len == phys) => r.len += 1,
                _ => out.push(Run { logical, len: 1, physical: Some(phys) }),
            }
            Ok(())
        };
        for lblk in start..end.min(limit) {
            let phys = if lblk < 12 {
                direct.u32(4 * lblk as usize)?
            } else {
                let rel = lblk - 12;
                let (slot, levels, rel) = if rel < per {
                    (12, 1, rel)
                } else if rel - per < per * per {
                    (13, 2, rel - per)
                } else {
                    (14, 3, rel - per - per * per)
                };
                let mut ptr = direct.u32(4 * slot)?;
                for level in (0..levels).rev() {
                    if ptr == 0 {
                        break;
                    }
                    let idx = (rel / per.pow(level)) % per;
                    let b = self.block(u64::from(ptr))?;
                    ptr = Le::new(&b, "ext4 indirect block").u32(4 * idx as usize)?;
                }
                ptr
            };
            push(lblk, phys)?;
        }
        Ok(())
    }

    /// Reads file bytes from `offset` into `buf`; returns how many (fewer at the end of the file).
    pub fn read_at(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= inode.size {
            return Ok(0);
        }
        let n = (inode.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        if inode.has_inline_data() {
            let data = self.inline_data(inode)?;
            let o = offset as usize;
            if data.len() < o + n {
                return corrupt(format!("inode {}: inline data shorter than the file size", inode.ino));
            }
            buf.copy_from_slice(&data[o..o + n]);
            return Ok(n);
        }
        let bs = self.sb.block_size;
        let first = offset / bs;
        let last = (offset + n as u64 - 1) / bs;
        for run in self.map(inode, first, last - first + 1)? {
            let run_start = run.logical * bs;
            let a = run_start.max(offset);
            let b = (run_start + run.len * bs).min(offset + n as u64);
            let dst = &mut buf[(a - offset) as usize..(b - offset) as usize];
            match run.physical {
                None => dst.fill(0),
                Some(p) => super::read(&self.dev, dst, p * bs + (a - run_start))?,
            }
        }
        Ok(n)
    }

    /// The whole content of a small file (directories, symlinks, EA values), at most `limit` bytes.
    pub fn read_all(&self, inode: &Inode, limit: u64) -> Result<Vec<u8>> {
        if inode.size > limit {
            return corrupt(format!("inode {}: {} bytes where at most {limit} are expected", inode.ino, inode.size));
        }
        let mut buf = vec![0u8; inode.size as usize];
        let n = self.read_at(inode, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Inline data: the first 60 bytes in `i_block`, the rest in the `system.data` xattr.
    pub(crate) fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>> {
        let mut data = inode.i_block[..I_BLOCK_LEN].to_vec();
        if inode.size > I_BLOCK_LEN as u64 {
            match self.system_data(inode)? {
                Some(more) => data.extend_from_slice(&more),
                None => return corrupt(format!("inode {}: inline data without its system.data attribute", inode.ino)),
            }
        }
        Ok(data)
    }
}
