//! `offdisk restore --from`: copies paths out of a generation read through a [`Source`]
//! into DEST, with contents, modes, times, symlinks, hard links and xattrs (owners when run
//! as root), hashing contents on the way and naming any file that does not match the
//! generation's `metadata.tsv`.
//!
//! DEST is written as the host restore's safety rules say: every entry is made relative to
//! an open directory handle; nothing already in DEST is followed (a symlink where a
//! directory is needed is an error naming it); files and symlinks are made under a fresh
//! `O_EXCL` name and renamed into place, which replaces an entry rather than writing
//! through it; a restore path through a stored symlink is refused; set-id bits and device
//! nodes are restored only when [`Policy`] allows it, else dropped with a warning.

use super::source::{Kind, Source, Stat};
use super::{OfflineError, Result};
use crate::backup::record::{Kind as RKind, TREE_DIR};
use crate::backup::restore::relative_in_tree;
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the restore may recreate beyond plain files, as `cp`/`rsync` users choose it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep set-user-ID and set-group-ID bits (else they are dropped, with a warning).
    pub keep_setid: bool,
    /// Recreate device nodes (else skipped, with a warning; needs root anyway).
    pub devices: bool,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub generation: Option<String>,
    /// Paths as they were backed up (`/home/a/docs`); recreated at the same place below DEST.
    pub paths: Vec<PathBuf>,
    pub dest: PathBuf,
    pub policy: Policy,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub others: u64,
    pub skipped_xattrs: u64,
}

#[derive(Debug)]
pub struct RestoreSummary {
    pub generation: String,
    pub stats: RestoreStats,
    pub warnings: Vec<String>,
}

/// Deepest directory nesting restored (one open handle per level).
const MAX_DEPTH: usize = 800;
const CHUNK: usize = 8 << 20;

struct Restorer<'a, S: Source> {
    src: &'a S,
    policy: Policy,
    root: bool,
    expected: HashMap<PathBuf, [u8; 32]>,
    /// Inode in the generation → where its first name was restored (for hard links).
    linked: HashMap<u64, (Arc<OwnedFd>, Vec<u8>)>,
    stats: RestoreStats,
    warnings: Vec<String>,
    /// Entries that could not be restored at all (reported with the warnings, first).
    failed: Vec<String>,
    buf: Vec<u8>,
    tmp_seq: u64,
}

pub fn restore<S: Source>(src: &S, opts: &RestoreOptions) -> Result<RestoreSummary> {
    let g = super::pick(src, opts.generation.as_deref())?;
    let tree = super::tree(src, &g)?;
    let mut wanted = Vec::new();
    for p in &opts.paths {
        let rel = relative_in_tree(p).map_err(|e| OfflineError::Invalid(e.to_string()))?;
        let node = super::walk_to(src, &tree, &rel, p)?
            .ok_or_else(|| OfflineError::NotInGeneration { path: p.clone(), generation: g.generation.name.clone() })?;
        wanted.push((rel, node));
    }
    // The checksums the generation recorded for what is restored.
    let mut expected = HashMap::new();
    for r in super::records(src, &g)? {
        let r = r.map_err(|e| OfflineError::Metadata { generation: g.generation.name.clone(), file: "metadata.tsv", error: e.to_string() })?;
        if matches!(r.kind, RKind::File | RKind::HardLink) && wanted.iter().any(|(rel, _)| r.path.starts_with(rel)) {
            if let Some(h) = r.hash {
                expected.insert(r.path, h);
            }
        }
    }
    std::fs::create_dir_all(&opts.dest).map_err(|error| OfflineError::Dest { path: opts.dest.clone(), error })?;
    let dest = rustix::fs::open(&opts.dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| OfflineError::Dest { path: opts.dest.clone(), error: e.into() })?;
    let dest = Arc::new(dest);
    let mut r = Restorer {
        src,
        policy: opts.policy,
        root: rustix::process::geteuid().is_root(),
        expected,
        linked: HashMap::new(),
        stats: RestoreStats::default(),
        warnings: Vec::new(),
        failed: Vec::new(),
        buf: vec![0u8; CHUNK],
        tmp_seq: 0,
    };
    for (rel, node) in wanted {
        r.restore_path(&opts.dest, &dest, &tree, &rel, node)?;
    }
    let mut warnings = r.failed;
    warnings.extend(r.warnings);
    Ok(RestoreSummary { generation: g.generation.name, stats: r.stats, warnings })
}

fn dest_err(path: &Path, e: Errno) -> OfflineError {
    OfflineError::Dest { path: path.to_path_buf(), error: e.into() }
}

impl<S: Source> Restorer<'_, S> {
    /// Creates the parents of `rel` (with the generation's metadata), then restores `rel`.
    fn restore_path(&mut self, dest_path: &Path, dest: &Arc<OwnedFd>, tree: &S::Node, rel: &Path, node: S::Node) -> Result<()> {
        let comps: Vec<&OsStr> = rel.iter().collect();
        let Some((last, parents)) = comps.split_last() else {
            // The whole tree: its entries go straight into DEST.
            return self.restore_children(dest_path, dest, Path::new(""), tree, &mut HashSet::new(), 0);
        };
        let mut fd = Arc::clone(dest);
        let mut at = dest_path.to_path_buf();
        let mut tnode = tree.clone();
        let mut made = Vec::new();
        for c in parents {
            at.push(c);
            tnode = self.src.child(&tnode, c.as_bytes())?.ok_or_else(|| OfflineError::Invalid(format!("{}: vanished", at.display())))?;
            let next = Arc::new(open_dir(&fd, c.as_bytes(), &at)?);
            made.push((Arc::clone(&next), tnode.clone()));
            fd = next;
        }
        let rel_parent = rel.parent().unwrap_or(Path::new(""));
        self.restore_entry(&at, &fd, rel_parent, last.as_bytes(), node, &mut HashSet::new(), 0)?;
        for (dir, n) in made.iter().rev() {
            let st = self.src.stat(n);
            self.apply_dir(dir, &st, n, &at);
        }
        Ok(())
    }

    fn restore_children(&mut self, at: &Path, dir: &Arc<OwnedFd>, rel: &Path, node: &S::Node, open: &mut HashSet<u64>, depth: usize) -> Result<()> {
        let entries = match self.src.list(node) {
            Ok(e) => e,
            Err(e) => {
                self.warnings.push(format!("{}: cannot read the directory on the backup disk: {e}", show(rel)));
                return Ok(());
            }
        };
        for (name, child) in entries {
            let child_rel = rel.join(OsStr::from_bytes(&name));
            match child {
                Ok(c) => self.restore_entry(at, dir, rel, &name, c, open, depth)?,
                Err(e) => self.warnings.push(format!("{}: cannot be read on the backup disk: {e}", show(&child_rel))),
            }
        }
        Ok(())
    }

    /// Restores one entry `name` of the directory `dir` (at `at`, `rel` in the tree).
    #[allow(clippy::too_many_arguments)]
    fn restore_entry(&mut self, at: &Path, dir: &Arc<OwnedFd>, rel: &Path, name: &[u8], node: S::Node, open: &mut HashSet<u64>, depth: usize) -> Result<()> {
        let st = self.src.stat(&node);
        let rel = rel.join(OsStr::from_bytes(name));
        let path = at.join(OsStr::from_bytes(name));
        match st.kind {
            Kind::Dir => {
                if depth >= MAX_DEPTH || !open.insert(st.ino) {
                    self.warnings.push(format!("{}: directory nested too deep or linked into itself on the backup disk; not restored", show(&rel)));
                    return Ok(());
                }
                let fd = match open_dir(dir, name, &path) {
                    Ok(fd) => Arc::new(fd),
                    Err(e) => {
                        open.remove(&st.ino);
                        self.failed.push(e.to_string());
                        return Ok(());
                    }
                };
                self.restore_children(&path, &fd, &rel, &node, open, depth + 1)?;
                open.remove(&st.ino);
                self.apply_dir(&fd, &st, &node, &path);
                self.stats.dirs += 1;
            }
            Kind::File => {
                if let Err(e) = self.restore_file(dir, name, &path, &rel, &node, &st) {
                    self.warnings.push(format!("{}: {e}", path.display()));
                }
            }
            Kind::Symlink => {
                let made = self.src.read_link(&node).map_err(|e| e.to_string()).and_then(|target| {
                    let make = |tmp: &[u8], dir: &OwnedFd| rustix::fs::symlinkat(OsStr::from_bytes(&target), dir, tmp).map(|()| None);
                    self.replace(dir, name, &path, make, |tmp, dir, _, me| me.apply_link(dir, tmp, &st))
                });
                match made {
                    Ok(()) => self.stats.symlinks += 1,
                    Err(e) => self.warnings.push(format!("{}: {e}", path.display())),
                }
            }
            Kind::Fifo => self.special(dir, name, &path, &node, &st, rustix::fs::FileType::Fifo, 0),
            Kind::CharDev | Kind::BlockDev if self.policy.devices => {
                let t = if st.kind == Kind::CharDev { rustix::fs::FileType::CharacterDevice } else { rustix::fs::FileType::BlockDevice };
                self.special(dir, name, &path, &node, &st, t, rustix::fs::makedev(st.rdev.0, st.rdev.1));
            }
            Kind::CharDev | Kind::BlockDev => {
                self.warnings.push(format!("{}: device node not restored (use --devices to recreate device nodes)", path.display()))
            }
            Kind::Socket => self.warnings.push(format!("{}: socket not restored (a socket is made by the program that listens on it)", path.display())),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn special(&mut self, dir: &Arc<OwnedFd>, name: &[u8], path: &Path, node: &S::Node, st: &Stat, t: rustix::fs::FileType, dev: rustix::fs::Dev) {
        let fifo = t == rustix::fs::FileType::Fifo;
        let made = self.replace(
            dir,
            name,
            path,
            |tmp, dir| {
                rustix::fs::mknodat(dir, tmp, t, Mode::from_raw_mode(0o600), dev)?;
                if fifo {
                    // Opening a FIFO for reading without blocking needs no writer.
                    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    return rustix::fs::openat(dir, tmp, flags, Mode::empty()).map(Some);
                }
                Ok(None)
            },
            |tmp, dir, fd, me| match fd {
                Some(fd) => {
                    me.apply_fd(fd.as_fd(), st, node, path, true);
                    Ok(())
                }
                None => {
                    // A device node is never opened: act on the fresh name in our handle.
                    me.apply_owner_at(dir, tmp, st);
                    let mode = me.mode_for(st, path);
                    rustix::fs::chmodat(dir, tmp, Mode::from_raw_mode(mode), AtFlags::empty()).map_err(|e| e.to_string())?;
                    rustix::fs::utimensat(dir, tmp, &times(st), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| e.to_string())
                }
            },
        );
        match made {
            Ok(()) => self.stats.others += 1,
            Err(e) => self.warnings.push(format!("{}: {e}", path.display())),
        }
    }

    fn restore_file(&mut self, dir: &Arc<OwnedFd>, name: &[u8], path: &Path, rel: &Path, node: &S::Node, st: &Stat) -> std::result::Result<(), String> {
        if st.nlink > 1 {
            if let Some((first_dir, first_name)) = self.linked.get(&st.ino).cloned() {
                let link = |tmp: &[u8], dir: &OwnedFd| rustix::fs::linkat(&*first_dir, first_name.as_slice(), dir, tmp, AtFlags::empty()).map(|()| None);
                self.replace(dir, name, path, link, |_, _, _, _| Ok(()))?;
                self.stats.hard_links += 1;
                return Ok(());
            }
        }
        let expected = self.expected.get(rel).copied();
        let mut buf = std::mem::take(&mut self.buf);
        let create = |tmp: &[u8], dir: &OwnedFd| {
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(dir, tmp, flags, Mode::from_raw_mode(0o600)).map(Some)
        };
        let result = self.replace(dir, name, path, create, |_, _, fd, me| {
            let out = std::fs::File::from(fd.ok_or("no handle")?);
            let mut hasher = blake3::Hasher::new();
            let mut off = 0u64;
            while off < st.size {
                let n = me.src.read_at(node, off, &mut buf).map_err(|e| format!("reading it on the backup disk: {e}"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                write_sparse(&out, &buf[..n], off).map_err(|e| e.to_string())?;
                off += n as u64;
            }
            out.set_len(st.size).map_err(|e| e.to_string())?;
            if let Some(want) = expected {
                if hasher.finalize().as_bytes() != &want {
                    me.warnings.push(format!("{}: content does not match the generation's checksum (damaged on the backup disk)", show(rel)));
                }
            }
            me.apply_fd(out.as_fd(), st, node, path, true);
            Ok(())
        });
        self.buf = buf;
        result?;
        self.stats.files += 1;
        self.stats.bytes += st.size;
        if st.nlink > 1 {
            self.linked.insert(st.ino, (Arc::clone(dir), name.to_vec()));
        }
        Ok(())
    }

    /// Makes an entry under a fresh temporary name (`make`, which may hand back its open
    /// handle), finishes it (`finish`), then renames it over `name`: whatever was at `name`
    /// is replaced, never written through.
    fn replace(
        &mut self,
        dir: &Arc<OwnedFd>,
        name: &[u8],
        path: &Path,
        make: impl Fn(&[u8], &OwnedFd) -> rustix::io::Result<Option<OwnedFd>>,
        finish: impl FnOnce(&[u8], &OwnedFd, Option<OwnedFd>, &mut Self) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        let (tmp, fd) = loop {
            self.tmp_seq += 1;
            let tmp = format!(".offdisk-restore.{}.{}", std::process::id(), self.tmp_seq).into_bytes();
            match make(&tmp, dir) {
                Ok(fd) => break (tmp, fd),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.to_string()),
            }
        };
        let done = finish(&tmp, dir, fd, self).and_then(|()| {
            rustix::fs::renameat(&**dir, tmp.as_slice(), &**dir, name).map_err(|e| match e {
                Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => format!("a directory is in the way in {}", path.display()),
                e => e.to_string(),
            })
        });
        if done.is_err() {
            let _ = rustix::fs::unlinkat(&**dir, tmp.as_slice(), AtFlags::empty());
        }
        done
    }

    fn mode_for(&mut self, st: &Stat, path: &Path) -> u32 {
        if st.perm & 0o6000 != 0 && !self.policy.keep_setid {
            self.warnings.push(format!("{}: set-user/group-ID bits dropped (use --keep-setid to keep them)", path.display()));
            return st.perm & !0o6000;
        }
        st.perm
    }

    fn apply_owner(&self, fd: impl AsFd, st: &Stat) {
        if self.root && st.uid != u32::MAX && st.gid != u32::MAX {
            let _ = rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(st.uid)), Some(rustix::fs::Gid::from_raw(st.gid)));
        }
    }

    fn apply_owner_at(&self, dir: &OwnedFd, name: &[u8], st: &Stat) {
        if self.root && st.uid != u32::MAX && st.gid != u32::MAX {
            let _ = rustix::fs::chownat(dir, name, Some(rustix::fs::Uid::from_raw(st.uid)), Some(rustix::fs::Gid::from_raw(st.gid)), AtFlags::SYMLINK_NOFOLLOW);
        }
    }

    /// Owner, xattrs, mode, then times, on an open handle (chown clears set-id bits; any
    /// change but the last would touch the times).
    fn apply_fd(&mut self, fd: std::os::fd::BorrowedFd, st: &Stat, node: &S::Node, path: &Path, times_too: bool) {
        self.apply_owner(fd, st);
        match self.src.xattrs(node) {
            Ok(xs) => {
                for (name, value) in xs {
                    if rustix::fs::fsetxattr(fd, OsStr::from_bytes(&name), &value, rustix::fs::XattrFlags::empty()).is_err() {
                        self.stats.skipped_xattrs += 1;
                    }
                }
            }
            Err(e) => self.warnings.push(format!("{}: extended attributes unreadable on the backup disk: {e}", path.display())),
        }
        let mode = self.mode_for(st, path);
        if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)) {
            self.warnings.push(format!("{}: chmod: {e}", path.display()));
        }
        if times_too {
            if let Err(e) = rustix::fs::futimens(fd, &times(st)) {
                self.warnings.push(format!("{}: setting times: {e}", path.display()));
            }
        }
    }

    fn apply_dir(&mut self, fd: &OwnedFd, st: &Stat, node: &S::Node, path: &Path) {
        self.apply_fd(fd.as_fd(), st, node, path, true);
    }

    fn apply_link(&mut self, dir: &OwnedFd, tmp: &[u8], st: &Stat) -> std::result::Result<(), String> {
        self.apply_owner_at(dir, tmp, st);
        rustix::fs::utimensat(dir, tmp, &times(st), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| e.to_string())
    }
}

/// Opens (making it if needed) the directory `name` in `dir`, never following a symlink.
fn open_dir(dir: &OwnedFd, name: &[u8], path: &Path) -> Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(dest_err(path, e)),
    }
    rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => OfflineError::Dest {
            path: path.to_path_buf(),
            error: std::io::Error::other("exists and is not a directory (a symlink in DEST is never followed)"),
        },
        e => dest_err(path, e),
    })
}

/// Writes `data` at `offset`, leaving holes where whole aligned pieces are zeros (as
/// `cp --sparse`/`rsync -S` do); the caller sets the final length.
fn write_sparse(out: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 64 * 1024;
    let mut at = 0;
    while at < data.len() {
        // Pieces end on PIECE boundaries of the file, so holes stay aligned.
        let end = (((offset as usize + at) / PIECE + 1) * PIECE - offset as usize).min(data.len());
        let piece = &data[at..end];
        if piece.iter().any(|&b| b != 0) {
            out.write_all_at(piece, offset + at as u64)?;
        }
        at = end;
    }
    Ok(())
}

fn times(st: &Stat) -> Timestamps {
    let ts = |(sec, nsec): (i64, u32)| rustix::fs::Timespec { tv_sec: sec, tv_nsec: i64::from(nsec.min(999_999_999)) as _ };
    Timestamps { last_access: ts(st.atime), last_modification: ts(st.mtime) }
}

fn show(rel: &Path) -> String {
    let mut p = PathBuf::from(TREE_DIR);
    p.push(rel);
    crate::backup::record::escape(p.as_os_str().as_bytes())
}
