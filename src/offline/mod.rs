//! Reading a backup disk anywhere: list, restore and verify its generations as an ordinary
//! user, without root, device-mapper, kernel modules or a mount. The disk (or an image of
//! it) is unlocked and decrypted in userspace ([`volume`]), its ext4 read by
//! [`crate::ext4`], and the generation format parsed by the same code as on the host
//! ([`crate::backup::record`], [`crate::backup::generation`]).
//!
//! The generation logic is written once against [`source::Source`], a read-only view of a
//! backup root that never follows a link: [`source::Ext4Source`] implements it over an
//! image.

pub mod ls;
pub mod restore;
pub mod source;
pub mod verify;
pub mod volume;

use crate::backup::generation::{self, Generation};
use crate::backup::record::{MetadataReader, Record, RecordError, INFO_FILE, METADATA_FILE, TREE_DIR};
use crate::backup::GenerationInfo;
use crate::error::{exit, Diagnose};
use crate::ext4::{self, Ext4Error, Fs};
use crate::luks::LuksError;
use crate::secret::Passphrase;
use source::{Ext4Source, FileKind, Source};
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{path}: {error}")]
    Open { path: PathBuf, error: io::Error },
    #[error("{0}: no LUKS volume found (not a backup disk, its LUKS partition, or an image of either)")]
    NotBackupDisk(PathBuf),
    #[error("partition table: {0}")]
    Partition(String),
    #[error(transparent)]
    Luks(#[from] LuksError),
    #[error("the backup disk's filesystem: {0}")]
    Ext4(#[from] Ext4Error),
    #[error("no backups on this disk (no generations/ directory)")]
    NoBackups,
    #[error("no complete generation on this disk")]
    NoGenerations,
    #[error("no generation named {0:?}")]
    NoSuchGeneration(String),
    #[error("generation {generation}: {file}: {error}")]
    Metadata { generation: String, file: &'static str, error: String },
    #[error("{}", crate::backup::restore::not_in_generation(path, generation))]
    NotInGeneration { path: PathBuf, generation: String },
    #[error("{}", crate::backup::restore::through_symlink(path, link))]
    ThroughSymlink { path: PathBuf, link: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {error}")]
    Dest { path: PathBuf, error: io::Error },
}

impl Diagnose for OfflineError {
    fn exit_code(&self) -> i32 {
        match self {
            OfflineError::Luks(e) => e.exit_code(),
            OfflineError::Open { .. } | OfflineError::Partition(_) | OfflineError::Ext4(_) | OfflineError::Dest { .. } => exit::DEVICE,
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            OfflineError::Luks(e) => e.hint(),
            OfflineError::Open { error, .. } if error.kind() == io::ErrorKind::PermissionDenied => {
                Some("you need read access to the device or image (e.g. membership of the `disk` group); root is not needed".into())
            }
            OfflineError::NotBackupDisk(_) => Some("give the whole disk (/dev/sdX), its LUKS partition, or an image file of either".into()),
            OfflineError::Ext4(Ext4Error::Corrupt(_)) => {
                Some("the filesystem is damaged: `offdisk verify --from` names what can still be read; `e2fsck -n` on the opened volume tells more".into())
            }
            OfflineError::NoSuchGeneration(_) => Some("`offdisk generations --from` lists them".into()),
            OfflineError::ThroughSymlink { .. } => Some(crate::backup::restore::THROUGH_SYMLINK_HINT.into()),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, OfflineError>;

/// An opened backup disk: its filesystem, ready to read.
pub struct BackupDisk {
    pub source: Ext4Source,
    pub located: volume::Located,
    /// Warnings about the disk as a whole (an unreplayed journal).
    pub warnings: Vec<String>,
}

/// How to get the passphrase, asked only once a LUKS header was found.
pub type AskPassphrase<'a> = &'a mut dyn FnMut(&volume::Located) -> io::Result<Passphrase>;

impl BackupDisk {
    /// Opens a whole disk, a LUKS partition or an image of either, and unlocks it.
    pub fn open(path: &Path, ask: AskPassphrase) -> Result<BackupDisk> {
        let (slice, vol, located) = volume::locate(path)?;
        let pass = ask(&located).map_err(|error| OfflineError::Open { path: path.to_path_buf(), error })?;
        let crypt = volume::CryptVolume::unlock(&slice, &vol, &pass)?;
        drop(pass);
        let fs = Fs::open(Box::new(crypt) as Box<dyn ext4::ReadAt>)?;
        let mut warnings = Vec::new();
        if fs.needs_recovery() {
            warnings.push(
                "the disk was not closed cleanly: its journal was not replayed, so the newest changes may not be visible (open and close it once on a Linux machine to replay it)"
                    .to_string(),
            );
        }
        Ok(BackupDisk { source: Ext4Source::new(fs), located, warnings })
    }
}

/// A complete generation found through a [`Source`].
pub struct Found<N> {
    pub generation: Generation,
    pub node: N,
}

/// Complete generations, oldest first, as the host listing decides (name parses, is a
/// directory holding `metadata.tsv` and `info.json` as regular files).
pub fn generations<S: Source>(src: &S) -> Result<Vec<Found<S::Node>>> {
    let root = src.root()?;
    let Some(dir) = src.child(&root, generation::GENERATIONS_DIR.as_bytes())? else {
        return Err(OfflineError::NoBackups);
    };
    if src.stat(&dir).kind != FileKind::Dir {
        return Err(OfflineError::NoBackups);
    }
    let mut out = Vec::new();
    for (name, node) in src.list(&dir)? {
        let Ok(name) = String::from_utf8(name) else { continue };
        let Some((time, seq)) = generation::parse_name(&name) else { continue };
        let node = node?;
        if src.stat(&node).kind != FileKind::Dir {
            continue;
        }
        let regular = |f: &str| -> Result<bool> { Ok(src.child(&node, f.as_bytes())?.is_some_and(|n| src.stat(&n).kind == FileKind::File)) };
        if !regular(METADATA_FILE)? || !regular(INFO_FILE)? {
            continue;
        }
        let path = PathBuf::from(generation::GENERATIONS_DIR).join(&name);
        out.push(Found { generation: Generation { name, path, time, seq }, node });
    }
    out.sort_by_key(|f| (f.generation.time, f.generation.seq));
    Ok(out)
}

/// One generation by name, unique prefix or `latest` (the newest when `None`).
pub fn pick<S: Source>(src: &S, want: Option<&str>) -> Result<Found<S::Node>> {
    let mut all = generations(src)?;
    if all.is_empty() {
        return Err(OfflineError::NoGenerations);
    }
    let gens: Vec<Generation> = all.iter().map(|f| f.generation.clone()).collect();
    let name = match want {
        None => gens.last().map(|g| g.name.clone()),
        Some(w) => generation::find(&gens, w).map(|g| g.name.clone()),
    }
    .ok_or_else(|| OfflineError::NoSuchGeneration(want.unwrap_or("latest").to_string()))?;
    let i = all.iter().position(|f| f.generation.name == name).expect("found above");
    Ok(all.swap_remove(i))
}

/// Largest `info.json` read.
const MAX_INFO: u64 = 1 << 20;
/// Longest `metadata.tsv` line accepted (a path of any depth fits; /dev/zero does not).
pub const MAX_LINE: usize = 1 << 20;

/// A generation's `info.json`, if readable.
pub fn info<S: Source>(src: &S, gen: &S::Node) -> Option<GenerationInfo> {
    let node = src.child(gen, INFO_FILE.as_bytes()).ok()??;
    let st = src.stat(&node);
    if st.kind != FileKind::File || st.size > MAX_INFO {
        return None;
    }
    let mut buf = Vec::new();
    src.reader(&node).take(MAX_INFO).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// Streams a generation's `metadata.tsv` records, lines bounded by [`MAX_LINE`].
pub fn records<'a, S: Source>(src: &'a S, g: &Found<S::Node>) -> Result<impl Iterator<Item = std::result::Result<Record, RecordError>> + 'a> {
    let bad = |error: String| OfflineError::Metadata { generation: g.generation.name.clone(), file: METADATA_FILE, error };
    let node = src.child(&g.node, METADATA_FILE.as_bytes())?.ok_or_else(|| bad("missing".into()))?;
    if src.stat(&node).kind != FileKind::File {
        return Err(bad("not a regular file".into()));
    }
    let reader = LineBounded { inner: io::BufReader::with_capacity(1 << 20, src.reader(&node)), since_newline: 0 };
    MetadataReader::new(reader).map_err(|e| bad(e.to_string()))
}

/// The generation's `tree/` directory.
pub fn tree<S: Source>(src: &S, g: &Found<S::Node>) -> Result<S::Node> {
    match src.child(&g.node, TREE_DIR.as_bytes())? {
        Some(n) if src.stat(&n).kind == FileKind::Dir => Ok(n),
        _ => Err(OfflineError::Metadata { generation: g.generation.name.clone(), file: TREE_DIR, error: "missing or not a directory".into() }),
    }
}

/// Looks `rel` up below `tree`, one component at a time; a stored symlink on the way is
/// refused (never followed). `Ok(None)` when it is not there.
pub fn walk_to<S: Source>(src: &S, tree: &S::Node, rel: &Path, shown: &Path) -> Result<Option<S::Node>> {
    use std::os::unix::ffi::OsStrExt;
    let mut cur = tree.clone();
    let mut so_far = PathBuf::new();
    for c in rel.components() {
        if src.stat(&cur).kind == FileKind::Symlink {
            return Err(OfflineError::ThroughSymlink { path: shown.to_path_buf(), link: so_far });
        }
        if src.stat(&cur).kind != FileKind::Dir {
            return Ok(None);
        }
        so_far.push(c);
        match src.child(&cur, c.as_os_str().as_bytes())? {
            Some(n) => cur = n,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// A `BufRead` that refuses lines longer than [`MAX_LINE`] instead of growing without end.
struct LineBounded<R> {
    inner: R,
    since_newline: usize,
}

impl<R: BufRead> Read for LineBounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineBounded<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_newline > MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a line longer than {MAX_LINE} bytes")));
        }
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            match buf[..n.min(buf.len())].iter().rposition(|&b| b == b'\n') {
                Some(i) => self.since_newline = n - i - 1,
                None => self.since_newline += n,
            }
        }
        self.inner.consume(n);
    }
}

#[cfg(test)]
mod tests;
