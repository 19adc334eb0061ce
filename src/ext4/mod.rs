//! A read-only ext2/3/4 reader, for backup disks read without the kernel (no mount, no
//! root): superblock and group descriptors (32- and 64-bit, meta_bg, flex_bg), inodes,
//! extent trees and ext2/3 block maps, linear and htree directories, inline data, fast and
//! slow symlinks, extended attributes (in-inode, external block, EA inodes; POSIX ACLs
//! converted to the form `getxattr` returns), and metadata checksums (crc32c; crc16 group
//! descriptors).
//!
//! Why our own and not `ext4-view` (1.0, which builds here at MSRV 1.85 and has a pluggable
//! reader): it refuses any filesystem with `inline_data`, has no extended-attribute API (a
//! restore must keep xattrs and ACLs), gives no inode numbers or physical extents (verify
//! reads a file shared by generations once; bulk reads decrypt whole extents on all cores),
//! and its `Ext4` is not `Sync`.
//!
//! Everything on the disk is untrusted. Every field goes through the bounds-checked
//! [`Le`](crate::luks::codec::Le) codec; block numbers are checked against the filesystem
//! size; extent trees are depth-limited; directories, symlinks and xattrs are size-bounded;
//! names with `/` or NUL are refused, so a name read here can never leave its directory.
//! Damage is an [`Ext4Error::Corrupt`] naming the structure, never a panic (fuzzed by
//! `fuzz/fuzz_targets/ext4_image.rs`).

mod dir;
mod inode;
mod map;
mod xattr;

pub use dir::DirEntry;
pub use inode::{FileKind, Inode, Timestamp};
pub use map::Run;
pub use xattr::Xattr;

use crate::luks::codec::{Le, Truncated};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// Positioned reads from whatever holds the filesystem: an image file, a block device, a
/// decrypted LUKS volume, or memory. Shared by threads (bulk reads run in parallel).
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|s| Some(s..s.checked_add(buf.len())?))
            .and_then(|r| self.get(r))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("reading the filesystem at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("no ext2/3/4 filesystem found (no superblock magic)")]
    NotExt4,
    #[error("unsupported ext4 feature: {0}")]
    Unsupported(String),
    #[error("damaged ext4 filesystem: {0}")]
    Corrupt(String),
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotDir(String),
}

impl From<Truncated> for Ext4Error {
    fn from(t: Truncated) -> Self {
        Ext4Error::Corrupt(t.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Ext4Error>;

pub(crate) fn corrupt<T>(msg: impl Into<String>) -> Result<T> {
    Err(Ext4Error::Corrupt(msg.into()))
}

/// Incompatible features (`s_feature_incompat`).
pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
    /// Every feature this reader knows how to read (or to refuse per inode).
    pub const KNOWN: u32 = FILETYPE
        | RECOVER
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}

/// Read-only compatible features this reader acts on.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const GDT_CSUM: u32 = 0x10;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
}

const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xef53;
/// Metadata blocks kept decrypted in memory (inode tables, directories, extent nodes).
const CACHE_BLOCKS: usize = 2048;

/// What the superblock says, validated.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub block_size: u64,
    /// Allocation unit (bigalloc clusters; else the block size).
    pub cluster_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u32,
    pub inodes_count: u32,
    pub inode_size: usize,
    pub desc_size: usize,
    pub groups: u64,
    pub incompat: u32,
    pub ro_compat: u32,
    pub compat: u32,
    pub uuid: [u8; 16],
    pub label: String,
    /// crc32c seed for metadata checksums (when `metadata_csum`).
    pub csum_seed: u32,
    first_meta_bg: u64,
    backup_bgs: [u32; 2],
}

impl Superblock {
    pub fn parse(raw: &[u8]) -> Result<Superblock> {
        Self::parse_with(raw, true)
    }

    fn parse_with(raw: &[u8], checks: bool) -> Result<Superblock> {
        let f = Le::new(raw, "ext4 superblock");
        if f.u16(0x38)? != MAGIC {
            return Err(Ext4Error::NotExt4);
        }
        let log_block = f.u32(0x18)?;
        if log_block > 6 {
            return corrupt(format!("superblock: block size 2^{} KiB", log_block));
        }
        let block_size = 1024u64 << log_block;
        let log_cluster = f.u32(0x1c)?;
        let ro_compat = f.u32(0x64)?;
        let cluster_size = if ro_compat & ro_compat::BIGALLOC != 0 && (log_block..=log_block + 16).contains(&log_cluster) {
            1024u64 << log_cluster
        } else {
            block_size
        };
        let incompat = f.u32(0x60)?;
        let compat = f.u32(0x5c)?;
        let unknown = incompat & !incompat::KNOWN;
        if unknown != 0 {
            return Err(Ext4Error::Unsupported(format!("incompatible feature flags {unknown:#x}")));
        }
        if incompat & incompat::JOURNAL_DEV != 0 {
            return Err(Ext4Error::Unsupported("this is an external journal device, not a filesystem".into()));
        }
        if ro_compat & ro_compat::METADATA_CSUM != 0 {
            if f.u8(0x175)? != 1 {
                return corrupt("superblock: unknown checksum type");
            }
            let stored = f.u32(0x3fc)?;
            if checks && crc32c_raw(!0, f.bytes(0, 0x3fc)?) != stored {
                return corrupt("superblock checksum mismatch");
            }
        }
        let rev = f.u32(0x4c)?;
        let (inode_size, first_ino) = if rev == 0 { (128, 11) } else { (f.u16(0x58)? as usize, f.u32(0x54)?) };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size as u64 > block_size {
            return corrupt(format!("superblock: inode size {inode_size}"));
        }
        let _ = first_ino;
        let bit64 = incompat & incompat::BIT64 != 0;
        let desc_size = if bit64 { f.u16(0xfe)? as usize } else { 32 };
        if bit64 && (!(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return corrupt(format!("superblock: group descriptor size {desc_size}"));
        }
        let mut blocks_count = u64::from(f.u32(0x04)?);
        if bit64 {
            blocks_count |= u64::from(f.u32(0x150)?) << 32;
        }
        let first_data_block = u64::from(f.u32(0x14)?);
        let blocks_per_group = u64::from(f.u32(0x20)?);
        let inodes_per_group = f.u32(0x28)?;
        let inodes_count = f.u32(0x00)?;
        if blocks_per_group == 0 || blocks_per_group > 8 * block_size {
            return corrupt(format!("superblock: {blocks_per_group} blocks per group"));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > 8 * block_size {
            return corrupt(format!("superblock: {inodes_per_group} inodes per group"));
        }
        if first_data_block >= blocks_count || first_data_block > 1 {
            return corrupt(format!("superblock: first data block {first_data_block}"));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if groups.checked_mul(u64::from(inodes_per_group)) != Some(u64::from(inodes_count)) {
            return corrupt(format!(
                "superblock: {inodes_count} inodes is not {groups} groups of {inodes_per_group}"
            ));
        }
        let uuid: [u8; 16] = f.array(0x68)?;
        let label_raw = f.bytes(0x78, 16)?;
        let end = label_raw.iter().position(|&b| b == 0).unwrap_or(16);
        let label = String::from_utf8_lossy(&label_raw[..end]).into_owned();
        let csum_seed = if incompat & incompat::CSUM_SEED != 0 { f.u32(0x270)? } else { crc32c_raw(!0, &uuid) };
        let backup_bgs = [f.u32(0x24c)?, f.u32(0x250)?];
        Ok(Superblock {
            block_size,
            cluster_size,
            blocks_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inodes_count,
            inode_size,
            desc_size,
            groups,
            incompat,
            ro_compat,
            compat,
            uuid,
            label,
            csum_seed,
            first_meta_bg: u64::from(f.u32(0x104)?),
            backup_bgs,
        })
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }
    pub fn metadata_csum(&self) -> bool {
        self.ro_compat & ro_compat::METADATA_CSUM != 0
    }

    /// Whether group `g` holds a superblock backup (and so its descriptors sit after it).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return self.backup_bgs.iter().any(|&b| u64::from(b) == g);
        }
        if g <= 1 || self.ro_compat & ro_compat::SPARSE_SUPER == 0 {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut n = base;
            while n < g {
                n *= base;
            }
            n == g
        })
    }

    /// Block holding the group descriptors of descriptor block `i` (0-based).
    fn descriptor_block(&self, i: u64) -> u64 {
        let per_block = self.block_size / self.desc_size as u64;
        if !self.has_incompat(incompat::META_BG) || i < self.first_meta_bg {
            return self.first_data_block + 1 + i;
        }
        let g = i * per_block;
        self.first_data_block + g * self.blocks_per_group + u64::from(self.has_super(g))
    }
}

/// Raw crc32c as ext4 uses it: the given seed, no final inversion.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// CRC-16 (polynomial 0x8005, reflected) as the `gdt_csum` feature uses it.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xa001 } else { crc >> 1 };
        }
    }
    crc
}

#[derive(Debug, Clone, Copy)]
struct Group {
    inode_table: u64,
    /// The descriptor's checksum did not match: inodes of this group are not trusted.
    bad_checksum: bool,
}

/// An ext4 filesystem opened read-only on `D`.
pub struct Fs<D> {
    dev: D,
    sb: Superblock,
    groups: Vec<Group>,
    cache: Mutex<HashMap<u64, Arc<[u8]>>>,
    /// Compare metadata checksums (off only for fuzzing, to reach past them).
    pub(crate) checks: bool,
}

impl<D: ReadAt> Fs<D> {
    /// Reads and checks the superblock and group descriptors.
    pub fn open(dev: D) -> Result<Fs<D>> {
        Self::open_with(dev, true)
    }

    /// `open` without comparing metadata checksums: for the fuzzer only, so mutations reach
    /// the structures behind them. Bounds and structure checks all stay.
    #[doc(hidden)]
    pub fn open_unchecked(dev: D) -> Result<Fs<D>> {
        Self::open_with(dev, false)
    }

    fn open_with(dev: D, checks: bool) -> Result<Fs<D>> {
        let mut raw = vec![0u8; 1024];
        read(&dev, &mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse_with(&raw, checks)?;
        let per_block = sb.block_size / sb.desc_size as u64;
        let desc_blocks = sb.groups.div_ceil(per_block);
        let mut groups = Vec::new();
        let mut block = vec![0u8; sb.block_size as usize];
        for i in 0..desc_blocks {
            let b = sb.descriptor_block(i);
            if b >= sb.blocks_count {
                return corrupt(format!("group descriptor block {b} is past the end of the filesystem"));
            }
            read(&dev, &mut block, b * sb.block_size)?;
            for (j, d) in block.chunks_exact(sb.desc_size).enumerate() {
                let g = i * per_block + j as u64;
                if g >= sb.groups {
                    break;
                }
                groups.push(parse_group(&sb, g, d, checks)?);
            }
        }
        Ok(Fs { dev, sb, groups, cache: Mutex::new(HashMap::new()), checks })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The journal holds transactions not yet written to their places: what this reader
    /// sees is the state of the last clean checkpoint (the kernel would replay the journal).
    pub fn needs_recovery(&self) -> bool {
        self.sb.has_incompat(incompat::RECOVER)
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    /// One metadata block, cached.
    fn block(&self, n: u64) -> Result<Arc<[u8]>> {
        if n >= self.sb.blocks_count {
            return corrupt(format!("block {n} is past the end of the filesystem ({} blocks)", self.sb.blocks_count));
        }
        if let Some(b) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&n) {
            return Ok(Arc::clone(b));
        }
        let mut buf = vec![0u8; self.sb.block_size as usize];
        read(&self.dev, &mut buf, n * self.sb.block_size)?;
        let b: Arc<[u8]> = buf.into();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_BLOCKS {
            cache.clear();
        }
        cache.insert(n, Arc::clone(&b));
        Ok(b)
    }

    /// The root directory's inode.
    pub fn root(&self) -> Result<Inode> {
        self.inode(2)
    }

    /// Looks up `path` (components separated by `/`, relative to the root) without
    /// following symlinks at any step.
    pub fn lookup(&self, path: &[u8]) -> Result<Inode> {
        let mut cur = self.root()?;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
            if cur.kind() != FileKind::Dir {
                return Err(Ext4Error::NotDir(String::from_utf8_lossy(path).into_owned()));
            }
            let entry = self
                .read_dir(&cur)?
                .into_iter()
                .find(|e| e.name == comp)
                .ok_or_else(|| Ext4Error::NotFound(String::from_utf8_lossy(path).into_owned()))?;
            cur = self.inode(entry.ino)?;
        }
        Ok(cur)
    }
}

fn read<D: ReadAt + ?Sized>(dev: &D, buf: &mut [u8], offset: u64) -> Result<()> {
    dev.read_exact_at(buf, offset).map_err(|source| Ext4Error::Io { offset, source })
}

fn parse_group(sb: &Superblock, g: u64, d: &[u8], checks: bool) -> Result<Group> {
    let f = Le::new(d, "ext4 group descriptor");
    let mut inode_table = u64::from(f.u32(0x08)?);
    if sb.desc_size >= 64 {
        inode_table |= u64::from(f.u32(0x28)?) << 32;
    }
    let stored = f.u16(0x1e)?;
    let bad_checksum = if !checks {
        false
    } else if sb.metadata_csum() {
        let mut z = d.to_vec();
        z[0x1e..0x20].fill(0);
        let c = crc32c_raw(crc32c_raw(sb.csum_seed, &(g as u32).to_le_bytes()), &z);
        c as u16 != stored
    } else if sb.ro_compat & ro_compat::GDT_CSUM != 0 {
        let mut c = crc16(!0, &sb.uuid);
        c = crc16(c, &(g as u32).to_le_bytes());
        c = crc16(c, &d[..0x1e]);
        if d.len() > 0x20 {
            c = crc16(c, &d[0x20..]);
        }
        c != stored
    } else {
        false
    };
    let table_blocks = (u64::from(sb.inodes_per_group) * sb.inode_size as u64).div_ceil(sb.block_size);
    if inode_table == 0 || inode_table.checked_add(table_blocks).is_none_or(|e| e > sb.blocks_count) {
        return corrupt(format!("group {g}: inode table at block {inode_table} is outside the filesystem"));
    }
    Ok(Group { inode_table, bad_checksum })
}

/// Fuzzing entry point (cargo-fuzz target `ext4_image` and the smoke test): treats `data`
/// as a filesystem image and reads everything reachable, within fixed work bounds. Must
/// never panic, hang or allocate without bound.
#[doc(hidden)]
pub fn exercise_reader(data: &[u8], checks: bool) {
    let Ok(fs) = Fs::open_with(data, checks) else { return };
    let _ = fs.needs_recovery();
    let Ok(root) = fs.root() else { return };
    let mut todo = vec![root];
    let mut budget = 2000usize;
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs.read_dir(&dir) else { continue };
        for e in entries {
            budget = match budget.checked_sub(1) {
                Some(b) => b,
                None => return,
            };
            let Ok(ino) = fs.inode(e.ino) else { continue };
            let _ = fs.xattrs(&ino);
            match ino.kind() {
                FileKind::Dir => todo.push(ino),
                FileKind::Symlink => {
                    let _ = fs.read_link(&ino);
                }
                _ => {
                    let _ = fs.read_at(&ino, 0, &mut buf);
                    let _ = fs.read_at(&ino, ino.size.saturating_sub(100), &mut buf);
                    let _ = fs.map(&ino, 0, 4096);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
