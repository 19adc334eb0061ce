//! `offdisk restore --from`: copies paths out of a generation read through a [`Source`]
//! into DEST, with contents, modes, times, symlinks, hard links and xattrs (owners when run
//! as root), hashing contents on the way and naming any file that does not match the
//! generation's `metadata.tsv`.
//!
//! DEST is written by the same rules as the host restore, with the same functions
//! ([`crate::backup::dest`]): every entry made relative to an open directory handle with
//! `O_EXCL | O_NOFOLLOW`; nothing already in DEST overwritten or followed (reported, and the
//! run's exit status says so); a restore path through a stored symlink refused; set-id bits
//! and device nodes restored only when [`Rules`] allow it, else dropped with a warning.

use super::source::{FileKind, Source, Stat};
use super::{OfflineError, Result};
use crate::backup::dest::{self, Rules};
use crate::backup::record::{Kind as RKind, TREE_DIR};
use crate::backup::restore::relative_in_tree;
use crate::fsaccess::{self, xattr, Dir};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub generation: Option<String>,
    /// Paths as they were backed up (`/home/a/docs`); recreated at the same place below DEST.
    pub paths: Vec<PathBuf>,
    pub dest: PathBuf,
    pub rules: Rules,
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

/// An entry that was not restored: left out with a warning, or the end of the run (DEST
/// cannot take more: no space, an I/O error).
enum Miss {
    Skip(String),
    Fatal(OfflineError),
}

type Step = std::result::Result<(), Miss>;

/// What a failure to write `path` in DEST means, by the shared rules.
fn target(path: &Path, e: io::Error) -> Miss {
    match dest::left_out(&e) {
        Some(why) => Miss::Skip(why),
        None => Miss::Fatal(OfflineError::Dest { path: path.to_path_buf(), error: e }),
    }
}

struct Restorer<'a, S: Source> {
    src: &'a S,
    rules: Rules,
    expected: HashMap<PathBuf, [u8; 32]>,
    /// Inode in the generation → where its first name was restored (for hard links).
    linked: HashMap<u64, (Arc<Dir>, Vec<u8>)>,
    /// Inodes whose first name was left out: their other names are left out too (as the
    /// host restore does), never made into copies of their own.
    unlinked: HashMap<u64, PathBuf>,
    stats: RestoreStats,
    warnings: Vec<String>,
    /// Entries that could not be restored at all (reported with the warnings, first).
    failed: Vec<String>,
    buf: Vec<u8>,
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
    // DEST itself is the user's path; everything below it is reached without following.
    std::fs::create_dir_all(&opts.dest).map_err(|error| OfflineError::Dest { path: opts.dest.clone(), error })?;
    let dest = Arc::new(Dir::open_path(&opts.dest).map_err(|error| OfflineError::Dest { path: opts.dest.clone(), error })?);
    let mut r = Restorer {
        src,
        rules: opts.rules,
        expected,
        linked: HashMap::new(),
        unlinked: HashMap::new(),
        stats: RestoreStats::default(),
        warnings: Vec::new(),
        failed: Vec::new(),
        buf: vec![0u8; CHUNK],
    };
    for (rel, node) in wanted {
        r.restore_path(&opts.dest, &dest, &tree, &rel, node)?;
    }
    let mut warnings = r.failed;
    warnings.extend(r.warnings);
    Ok(RestoreSummary { generation: g.generation.name, stats: r.stats, warnings })
}

impl<S: Source> Restorer<'_, S> {
    /// Records a miss of `path`: a warning, or the error that ends the run.
    fn missed(&mut self, path: &Path, m: Miss) -> Result<()> {
        match m {
            Miss::Skip(why) => {
                self.failed.push(format!("{}: {why}", path.display()));
                Ok(())
            }
            Miss::Fatal(e) => Err(e),
        }
    }

    /// Opens (making it) the directory `name` of `dir` by the shared rules: a symlink or
    /// file in the way leaves it (and what is below) out; no space ends the run.
    fn open_dir(&mut self, dir: &Dir, name: &[u8], path: &Path) -> Result<Option<Arc<Dir>>> {
        match dest::open_dir(dir, OsStr::from_bytes(name)) {
            Ok(d) => Ok(Some(Arc::new(d))),
            Err(e) if crate::backup::engine::is_no_space(&e) => Err(OfflineError::Dest { path: path.to_path_buf(), error: e }),
            Err(e) => {
                self.failed.push(format!("{}: {e}", path.display()));
                Ok(None)
            }
        }
    }

    /// Creates the parents of `rel` (with the generation's metadata), then restores `rel`.
    fn restore_path(&mut self, dest_path: &Path, dest: &Arc<Dir>, tree: &S::Node, rel: &Path, node: S::Node) -> Result<()> {
        let comps: Vec<&OsStr> = rel.iter().collect();
        let Some((last, parents)) = comps.split_last() else {
            // The whole tree: its entries go straight into DEST, and DEST gets its metadata.
            self.restore_children(dest_path, dest, Path::new(""), tree, &mut HashSet::new(), 0)?;
            let st = self.src.stat(tree);
            self.apply_dir(dest, &st, tree, dest_path);
            return Ok(());
        };
        let mut fd = Arc::clone(dest);
        let mut at = dest_path.to_path_buf();
        let mut tnode = tree.clone();
        let mut made = Vec::new();
        for c in parents {
            at.push(c);
            tnode = self.src.child(&tnode, c.as_bytes())?.ok_or_else(|| OfflineError::Invalid(format!("{}: vanished", at.display())))?;
            let Some(next) = self.open_dir(&fd, c.as_bytes(), &at)? else { return Ok(()) };
            made.push((Arc::clone(&next), tnode.clone(), at.clone()));
            fd = next;
        }
        let rel_parent = rel.parent().unwrap_or(Path::new(""));
        self.restore_entry(&at, &fd, rel_parent, last.as_bytes(), node, &mut HashSet::new(), 0)?;
        for (dir, n, p) in made.iter().rev() {
            let st = self.src.stat(n);
            self.apply_dir(dir, &st, n, p);
        }
        Ok(())
    }

    fn restore_children(&mut self, at: &Path, dir: &Arc<Dir>, rel: &Path, node: &S::Node, open: &mut HashSet<u64>, depth: usize) -> Result<()> {
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
    fn restore_entry(&mut self, at: &Path, dir: &Arc<Dir>, rel: &Path, name: &[u8], node: S::Node, open: &mut HashSet<u64>, depth: usize) -> Result<()> {
        let st = self.src.stat(&node);
        let rel = rel.join(OsStr::from_bytes(name));
        let path = at.join(OsStr::from_bytes(name));
        let done = match st.kind {
            FileKind::Dir => {
                if depth >= MAX_DEPTH || !open.insert(st.ino) {
                    self.warnings.push(format!("{}: directory nested too deep or linked into itself on the backup disk; not restored", show(&rel)));
                    return Ok(());
                }
                let Some(fd) = self.open_dir(dir, name, &path)? else {
                    open.remove(&st.ino);
                    return Ok(());
                };
                self.restore_children(&path, &fd, &rel, &node, open, depth + 1)?;
                open.remove(&st.ino);
                self.apply_dir(&fd, &st, &node, &path);
                self.stats.dirs += 1;
                Ok(())
            }
            FileKind::File => {
                let r = self.restore_file(dir, name, &path, &rel, &node, &st);
                if r.is_err() && st.nlink > 1 && !self.linked.contains_key(&st.ino) {
                    self.unlinked.entry(st.ino).or_insert_with(|| path.clone());
                }
                r
            }
            FileKind::Symlink => self.symlink(dir, name, &path, &node, &st),
            kind => match self.rules.refuses(kind) {
                Some(why) => Err(Miss::Skip(why.into())),
                None => self.special(dir, name, &path, &node, &st),
            },
        };
        match done {
            Ok(()) => Ok(()),
            Err(m) => self.missed(&path, m),
        }
    }

    fn symlink(&mut self, dir: &Dir, name: &[u8], path: &Path, node: &S::Node, st: &Stat) -> Step {
        let to = self.src.read_link(node).map_err(|e| Miss::Skip(format!("reading it on the backup disk: {e}")))?;
        let n = OsStr::from_bytes(name);
        dir.symlink(OsStr::from_bytes(&to), n).map_err(|e| target(path, e))?;
        self.apply_at(dir, n, path, node, st, false)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A FIFO, socket or (allowed) device node.
    fn special(&mut self, dir: &Dir, name: &[u8], path: &Path, node: &S::Node, st: &Stat) -> Step {
        let n = OsStr::from_bytes(name);
        let rdev = rustix::fs::makedev(st.rdev.0, st.rdev.1);
        dest::make_special(dir, n, st.kind, rdev).map_err(|e| target(path, e))?;
        self.apply_at(dir, n, path, node, st, true)?;
        self.stats.others += 1;
        Ok(())
    }

    /// Owner, mode (not of symlinks), xattrs and times of `name`, a node this run just made
    /// in its open directory, each change refusing to follow a link swapped in there.
    fn apply_at(&mut self, dir: &Dir, name: &OsStr, path: &Path, node: &S::Node, st: &Stat, mode_too: bool) -> Step {
        match dir.chown_at(name, st.uid, st.gid) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => {}
            r => r.map_err(|e| target(path, e))?,
        }
        if mode_too {
            let mode = self.rules.mode(st.kind, st.perm);
            dir.chmod_at(name, mode).map_err(|e| target(path, e))?;
        }
        self.set_xattrs(xattr::Node::At(dir, name), node, path);
        dir.set_times_at(name, st.atime, st.mtime).map_err(|e| target(path, e))
    }

    fn set_xattrs(&mut self, to: xattr::Node, node: &S::Node, path: &Path) {
        match self.src.xattrs(node) {
            Ok(xs) => match xattr::write_all(to, &xs) {
                Ok(skipped) => self.stats.skipped_xattrs += skipped as u64,
                Err(e) => self.warnings.push(format!("{}: setting extended attributes: {e}", path.display())),
            },
            Err(e) => self.warnings.push(format!("{}: extended attributes unreadable on the backup disk: {e}", path.display())),
        }
    }

    fn restore_file(&mut self, dir: &Arc<Dir>, name: &[u8], path: &Path, rel: &Path, node: &S::Node, st: &Stat) -> Step {
        let n = OsStr::from_bytes(name);
        if st.nlink > 1 {
            if let Some((first_dir, first_name)) = self.linked.get(&st.ino).cloned() {
                first_dir.hard_link(OsStr::from_bytes(&first_name), dir, n).map_err(|e| target(path, e))?;
                self.stats.hard_links += 1;
                return Ok(());
            }
            if let Some(first) = self.unlinked.get(&st.ino) {
                return Err(Miss::Skip(format!("its other name {} was not restored", first.display())));
            }
        }
        let mode = self.rules.mode(FileKind::File, st.perm);
        let out = dir.create_file(n, mode & 0o777).map_err(|e| target(path, e))?;
        // From here on the file is ours: on any failure, leave nothing half-written behind.
        let mut buf = std::mem::take(&mut self.buf);
        let copied = self.fill(&out, node, st, &mut buf, path);
        self.buf = buf;
        let hash = match copied {
            Ok(h) => h,
            Err(m) => {
                drop(out);
                let _ = dir.unlink(n);
                return Err(m);
            }
        };
        if let Some(want) = self.expected.get(rel) {
            if hash.as_bytes() != want {
                self.warnings.push(format!("{}: content does not match the generation's checksum (damaged on the backup disk)", show(rel)));
            }
        }
        // Owner, xattrs, mode (chown clears set-id bits), then times, on the open handle.
        chown_fd(&out, st).map_err(|e| target(path, e))?;
        self.set_xattrs(xattr::Node::Fd(out.as_fd()), node, path);
        fsaccess::set_mode(&out, mode).map_err(|e| target(path, e))?;
        fsaccess::set_times(&out, st.atime, st.mtime).map_err(|e| target(path, e))?;
        if mode != st.perm {
            self.warnings.push(dest::setid_dropped(path, st.perm, mode));
        }
        self.stats.files += 1;
        self.stats.bytes += st.size;
        if st.nlink > 1 {
            self.linked.insert(st.ino, (Arc::clone(dir), name.to_vec()));
        }
        Ok(())
    }

    /// Copies the content of `node` into `out`, hashing it.
    fn fill(&self, out: &std::fs::File, node: &S::Node, st: &Stat, buf: &mut [u8], path: &Path) -> std::result::Result<blake3::Hash, Miss> {
        let mut hasher = blake3::Hasher::new();
        let mut off = 0u64;
        while off < st.size {
            let n = self.src.read_at(node, off, buf).map_err(|e| Miss::Skip(format!("reading it on the backup disk: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            write_sparse(out, &buf[..n], off).map_err(|e| target(path, e))?;
            off += n as u64;
        }
        out.set_len(st.size).map_err(|e| target(path, e))?;
        Ok(hasher.finalize())
    }

    /// Owner, mode, xattrs and times of a directory once everything below it is written.
    fn apply_dir(&mut self, fd: &Dir, st: &Stat, node: &S::Node, path: &Path) {
        let mut note = |r: io::Result<()>, what: &str| {
            if let Err(e) = r {
                self.warnings.push(format!("{}: {what}: {e}", path.display()));
            }
        };
        note(chown_fd(fd, st), "setting the owner");
        note(fsaccess::set_mode(fd, self.rules.mode(FileKind::Dir, st.perm)), "chmod");
        self.set_xattrs(xattr::Node::Fd(fd.as_fd()), node, path);
        if let Err(e) = fsaccess::set_times(fd, st.atime, st.mtime) {
            self.warnings.push(format!("{}: setting times: {e}", path.display()));
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The stored owner on `fd`; not permitted (not root) is skipped silently, like `cp -a`.
fn chown_fd(fd: impl AsFd, st: &Stat) -> io::Result<()> {
    match fsaccess::set_owner(fd, st.uid, st.gid) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => Ok(()),
        r => r,
    }
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

fn show(rel: &Path) -> String {
    let mut p = PathBuf::from(TREE_DIR);
    p.push(rel);
    crate::backup::record::escape(p.as_os_str().as_bytes())
}
