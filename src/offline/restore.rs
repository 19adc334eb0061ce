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
//!
//! Like the host restore, the work is split: one walk, in name order, decides what each
//! entry becomes and makes directories, symlinks, special files and hard links; a pool of
//! `threads` workers reads, decrypts and writes the contents of regular files (small files
//! in parallel, not only the sectors of one large read); a collector takes what both did in
//! walk order, so warnings come in the order a one-at-a-time restore gives them and each
//! directory gets its metadata only after everything in it is written.

use super::source::{FileKind, Source, Stat};
use super::{OfflineError, Result};
use crate::backup::dest::{self, Rules};
use crate::backup::record::{Kind as RKind, TREE_DIR};
use crate::backup::restore::relative_in_tree;
use crate::fsaccess::{self, xattr, Dir};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub generation: Option<String>,
    /// Paths as they were backed up (`/home/a/docs`); recreated at the same place below DEST.
    pub paths: Vec<PathBuf>,
    pub dest: PathBuf,
    pub rules: Rules,
    /// Workers reading, decrypting and writing file contents (at least one).
    pub threads: usize,
}

#[derive(Debug, Default, PartialEq, Serialize)]
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
/// Entries the walk may be ahead of the in-order collector: bounds the handles held open
/// by files being written and directories waiting for their metadata.
const WINDOW: u64 = 1024;

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

impl RestoreStats {
    fn add(&mut self, o: &RestoreStats) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.hard_links += o.hard_links;
        self.others += o.others;
        self.skipped_xattrs += o.skipped_xattrs;
    }
}

/// What restoring some entries added: counts, warnings, and entries left out.
#[derive(Default)]
struct Tally {
    stats: RestoreStats,
    warnings: Vec<String>,
    /// Entries that could not be restored at all (reported with the warnings, first).
    failed: Vec<String>,
}

impl Tally {
    fn is_empty(&self) -> bool {
        self.stats == RestoreStats::default() && self.warnings.is_empty() && self.failed.is_empty()
    }
    fn merge(&mut self, o: Tally) {
        self.stats.add(&o.stats);
        self.warnings.extend(o.warnings);
        self.failed.extend(o.failed);
    }
}

/// A regular file the walk made (empty) in DEST, to be filled and finished.
struct FileJob<N> {
    out: std::fs::File,
    dir: Arc<Dir>,
    name: Vec<u8>,
    path: PathBuf,
    rel: PathBuf,
    node: N,
    st: Stat,
}

/// What the collector takes, in walk order (by sequence number).
enum Item<N> {
    /// What the walk itself did since its previous item.
    Noted(Tally),
    /// A file a worker wrote, or the error that ends the run.
    Written(Result<Tally>),
    /// A directory whose entries all come earlier: its metadata is set now, once nothing
    /// more is written into it.
    DirDone { fd: Arc<Dir>, st: Stat, node: N, path: PathBuf },
}

type Sent<N> = (u64, Item<N>);

/// What the walk, the workers and the collector share.
struct Shared<'a, S: Source> {
    src: &'a S,
    rules: Rules,
    expected: HashMap<PathBuf, [u8; 32]>,
    /// Set when the run ends early (no space, an I/O error): everyone stops.
    abort: AtomicBool,
    /// Items the collector has taken in order (the walk waits when [`WINDOW`] ahead).
    taken: Mutex<u64>,
    advanced: Condvar,
}

/// The walk: decides, in name order, what each entry becomes; makes directories,
/// symlinks, special files and hard links itself and hands regular files to the workers.
struct Walk<'a, S: Source> {
    sh: &'a Shared<'a, S>,
    /// Inode in the generation → where its first name was restored (for hard links).
    linked: HashMap<u64, (Arc<Dir>, Vec<u8>)>,
    /// Inodes whose first name was left out: their other names are left out too (as the
    /// host restore does), never made into copies of their own.
    unlinked: HashMap<u64, PathBuf>,
    /// What the walk did since its last item.
    t: Tally,
    seq: u64,
    jobs: SyncSender<(u64, FileJob<S::Node>)>,
    done: Sender<Sent<S::Node>>,
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
    fsaccess::raise_fd_limit();
    let sh = Shared { src, rules: opts.rules, expected, abort: AtomicBool::new(false), taken: Mutex::new(0), advanced: Condvar::new() };
    let threads = opts.threads.max(1);
    let (jobs, jobs_rx) = sync_channel::<(u64, FileJob<S::Node>)>(threads * 4);
    let jobs_rx = Mutex::new(jobs_rx);
    let (done, done_rx) = channel::<Sent<S::Node>>();
    let (walked, (total, fatal)) = std::thread::scope(|scope| {
        let shr = &sh;
        for _ in 0..threads {
            let (jobs_rx, done) = (&jobs_rx, done.clone());
            scope.spawn(move || worker(shr, jobs_rx, done));
        }
        let collector = scope.spawn(move || collect(shr, done_rx));
        let mut w = Walk { sh: shr, linked: HashMap::new(), unlinked: HashMap::new(), t: Tally::default(), seq: 0, jobs, done, buf: Vec::new() };
        let mut walked = Ok(());
        for (rel, node) in wanted {
            walked = w.restore_path(&opts.dest, &dest, &tree, &rel, node);
            if walked.is_err() {
                break;
            }
        }
        if walked.is_ok() {
            walked = w.note();
        } else {
            shr.abort.store(true, Ordering::SeqCst);
        }
        // Closing the walk's channels lets the workers, then the collector, finish.
        drop(w);
        (walked, collector.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    // An error the collector met first stopped the walk too.
    if let Some(e) = fatal {
        return Err(e);
    }
    walked?;
    let mut warnings = total.failed;
    warnings.extend(total.warnings);
    Ok(RestoreSummary { generation: g.generation.name, stats: total.stats, warnings })
}

/// Fills and finishes the files the walk made, each on its own, in any order.
fn worker<S: Source>(sh: &Shared<S>, jobs: &Mutex<Receiver<(u64, FileJob<S::Node>)>>, done: Sender<Sent<S::Node>>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let Ok((seq, job)) = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() else { return };
        if sh.abort.load(Ordering::SeqCst) {
            // The run has ended: leave nothing empty behind.
            let FileJob { out, dir, name, .. } = job;
            drop(out);
            let _ = dir.unlink(OsStr::from_bytes(&name));
            continue;
        }
        let mut t = Tally::default();
        let r = match finish_file(sh, &job, &mut buf, &mut t) {
            Ok(()) => Ok(t),
            Err(Miss::Skip(why)) => {
                t.failed.push(format!("{}: {why}", job.path.display()));
                Ok(t)
            }
            Err(Miss::Fatal(e)) => Err(e),
        };
        let _ = done.send((seq, Item::Written(r)));
    }
}

/// Takes the walk's and the workers' items in walk order: warnings in the order a
/// one-at-a-time restore gives them, and each directory's metadata set after everything
/// in it is written. Returns the totals and the error that ended the run, if one did.
fn collect<S: Source>(sh: &Shared<S>, rx: Receiver<Sent<S::Node>>) -> (Tally, Option<OfflineError>) {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut total = Tally::default();
    let mut fatal = None;
    for (seq, item) in rx {
        if fatal.is_some() {
            continue; // drain, so the senders can finish
        }
        pending.insert(seq, item);
        while let Some(item) = pending.remove(&next) {
            next += 1;
            match item {
                Item::Noted(t) | Item::Written(Ok(t)) => total.merge(t),
                Item::Written(Err(e)) => {
                    fatal = Some(e);
                    sh.abort.store(true, Ordering::SeqCst);
                    pending.clear();
                    break;
                }
                Item::DirDone { fd, st, node, path } => apply_dir(sh, &fd, &st, &node, &path, &mut total),
            }
        }
        *sh.taken.lock().unwrap_or_else(|e| e.into_inner()) = next;
        sh.advanced.notify_all();
    }
    (total, fatal)
}

impl<S: Source> Walk<'_, S> {
    /// The next sequence number, once the collector is less than [`WINDOW`] behind.
    fn next_seq(&mut self) -> Result<u64> {
        let mut taken = self.sh.taken.lock().unwrap_or_else(|e| e.into_inner());
        while self.seq >= *taken + WINDOW && !self.sh.abort.load(Ordering::SeqCst) {
            taken = self.sh.advanced.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        drop(taken);
        if self.sh.abort.load(Ordering::SeqCst) {
            // The collector holds the error that ended the run.
            return Err(OfflineError::Invalid("the restore was stopped".into()));
        }
        self.seq += 1;
        Ok(self.seq - 1)
    }

    /// Hands what the walk did so far to the collector.
    fn note(&mut self) -> Result<()> {
        if self.t.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq()?;
        let _ = self.done.send((seq, Item::Noted(std::mem::take(&mut self.t))));
        Ok(())
    }

    /// The directory `fd` is complete: its metadata once everything before is written.
    fn dir_done(&mut self, fd: Arc<Dir>, st: Stat, node: S::Node, path: PathBuf) -> Result<()> {
        self.note()?;
        let seq = self.next_seq()?;
        let _ = self.done.send((seq, Item::DirDone { fd, st, node, path }));
        Ok(())
    }

    /// Records a miss of `path`: a warning, or the error that ends the run.
    fn missed(&mut self, path: &Path, m: Miss) -> Result<()> {
        match m {
            Miss::Skip(why) => {
                self.t.failed.push(format!("{}: {why}", path.display()));
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
                self.t.failed.push(format!("{}: {e}", path.display()));
                Ok(None)
            }
        }
    }

    /// Creates the parents of `rel` (with the generation's metadata), then restores `rel`.
    fn restore_path(&mut self, dest_path: &Path, dest: &Arc<Dir>, tree: &S::Node, rel: &Path, node: S::Node) -> Result<()> {
        let src = self.sh.src;
        let comps: Vec<&OsStr> = rel.iter().collect();
        let Some((last, parents)) = comps.split_last() else {
            // The whole tree: its entries go straight into DEST, and DEST gets its metadata.
            self.restore_children(dest_path, dest, Path::new(""), tree, &mut HashSet::new(), 0)?;
            return self.dir_done(Arc::clone(dest), src.stat(tree), tree.clone(), dest_path.to_path_buf());
        };
        let mut fd = Arc::clone(dest);
        let mut at = dest_path.to_path_buf();
        let mut tnode = tree.clone();
        let mut made = Vec::new();
        for c in parents {
            at.push(c);
            tnode = src.child(&tnode, c.as_bytes())?.ok_or_else(|| OfflineError::Invalid(format!("{}: vanished", at.display())))?;
            let Some(next) = self.open_dir(&fd, c.as_bytes(), &at)? else { return Ok(()) };
            made.push((Arc::clone(&next), tnode.clone(), at.clone()));
            fd = next;
        }
        let rel_parent = rel.parent().unwrap_or(Path::new(""));
        self.restore_entry(&at, &fd, rel_parent, last.as_bytes(), node, &mut HashSet::new(), 0)?;
        for (dir, n, p) in made.into_iter().rev() {
            self.dir_done(dir, src.stat(&n), n, p)?;
        }
        Ok(())
    }

    fn restore_children(&mut self, at: &Path, dir: &Arc<Dir>, rel: &Path, node: &S::Node, open: &mut HashSet<u64>, depth: usize) -> Result<()> {
        let entries = match self.sh.src.list(node) {
            Ok(e) => e,
            Err(e) => {
                self.t.warnings.push(format!("{}: cannot read the directory on the backup disk: {e}", show(rel)));
                return Ok(());
            }
        };
        for (name, child) in entries {
            let child_rel = rel.join(OsStr::from_bytes(&name));
            match child {
                Ok(c) => self.restore_entry(at, dir, rel, &name, c, open, depth)?,
                Err(e) => self.t.warnings.push(format!("{}: cannot be read on the backup disk: {e}", show(&child_rel))),
            }
        }
        Ok(())
    }

    /// Restores one entry `name` of the directory `dir` (at `at`, `rel` in the tree).
    #[allow(clippy::too_many_arguments)]
    fn restore_entry(&mut self, at: &Path, dir: &Arc<Dir>, rel: &Path, name: &[u8], node: S::Node, open: &mut HashSet<u64>, depth: usize) -> Result<()> {
        let st = self.sh.src.stat(&node);
        let rel = rel.join(OsStr::from_bytes(name));
        let path = at.join(OsStr::from_bytes(name));
        let done = match st.kind {
            FileKind::Dir => {
                if depth >= MAX_DEPTH || !open.insert(st.ino) {
                    self.t.warnings.push(format!("{}: directory nested too deep or linked into itself on the backup disk; not restored", show(&rel)));
                    return Ok(());
                }
                let Some(fd) = self.open_dir(dir, name, &path)? else {
                    open.remove(&st.ino);
                    return Ok(());
                };
                self.restore_children(&path, &fd, &rel, &node, open, depth + 1)?;
                open.remove(&st.ino);
                self.t.stats.dirs += 1;
                return self.dir_done(fd, st, node, path);
            }
            FileKind::File => {
                let r = self.restore_file(dir, name, &path, &rel, &node, &st);
                if r.is_err() && st.nlink > 1 && !self.linked.contains_key(&st.ino) {
                    self.unlinked.entry(st.ino).or_insert_with(|| path.clone());
                }
                r
            }
            FileKind::Symlink => self.symlink(dir, name, &path, &node, &st),
            kind => match self.sh.rules.refuses(kind) {
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
        let to = self.sh.src.read_link(node).map_err(|e| Miss::Skip(format!("reading it on the backup disk: {e}")))?;
        let n = OsStr::from_bytes(name);
        dir.symlink(OsStr::from_bytes(&to), n).map_err(|e| target(path, e))?;
        self.apply_at(dir, n, path, node, st, false)?;
        self.t.stats.symlinks += 1;
        Ok(())
    }

    /// A FIFO, socket or (allowed) device node.
    fn special(&mut self, dir: &Dir, name: &[u8], path: &Path, node: &S::Node, st: &Stat) -> Step {
        let n = OsStr::from_bytes(name);
        let rdev = rustix::fs::makedev(st.rdev.0, st.rdev.1);
        dest::make_special(dir, n, st.kind, rdev).map_err(|e| target(path, e))?;
        self.apply_at(dir, n, path, node, st, true)?;
        self.t.stats.others += 1;
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
            let mode = self.sh.rules.mode(st.kind, st.perm);
            dir.chmod_at(name, mode).map_err(|e| target(path, e))?;
        }
        set_xattrs(self.sh.src, xattr::Node::At(dir, name), node, path, &mut self.t);
        dir.set_times_at(name, st.atime, st.mtime).map_err(|e| target(path, e))
    }

    /// Makes the file `name` in `dir`; a worker fills it, except the first name of a
    /// multiply-linked file, written here so that its other names can be linked to it.
    fn restore_file(&mut self, dir: &Arc<Dir>, name: &[u8], path: &Path, rel: &Path, node: &S::Node, st: &Stat) -> Step {
        let n = OsStr::from_bytes(name);
        if st.nlink > 1 {
            if let Some((first_dir, first_name)) = self.linked.get(&st.ino).cloned() {
                first_dir.hard_link(OsStr::from_bytes(&first_name), dir, n).map_err(|e| target(path, e))?;
                self.t.stats.hard_links += 1;
                return Ok(());
            }
            if let Some(first) = self.unlinked.get(&st.ino) {
                return Err(Miss::Skip(format!("its other name {} was not restored", first.display())));
            }
        }
        let mode = self.sh.rules.mode(FileKind::File, st.perm);
        let out = dir.create_file(n, mode & 0o777).map_err(|e| target(path, e))?;
        let job = FileJob { out, dir: Arc::clone(dir), name: name.to_vec(), path: path.to_path_buf(), rel: rel.to_path_buf(), node: node.clone(), st: *st };
        if st.nlink > 1 {
            if self.buf.is_empty() {
                self.buf = vec![0u8; CHUNK];
            }
            let mut buf = std::mem::take(&mut self.buf);
            let r = finish_file(self.sh, &job, &mut buf, &mut self.t);
            self.buf = buf;
            r?;
            self.linked.insert(st.ino, (Arc::clone(dir), name.to_vec()));
            return Ok(());
        }
        let seq = match self.note().and_then(|()| self.next_seq()) {
            Ok(s) => s,
            Err(e) => {
                drop(job);
                let _ = dir.unlink(n);
                return Err(Miss::Fatal(e));
            }
        };
        // The workers end only once this sender is dropped.
        let _ = self.jobs.send((seq, job));
        Ok(())
    }
}

/// Fills the file the walk made with the content of its node, checks it against the
/// generation's checksum, then sets owner, xattrs, mode and times on the open handle.
fn finish_file<S: Source>(sh: &Shared<S>, job: &FileJob<S::Node>, buf: &mut [u8], t: &mut Tally) -> Step {
    let (out, path, st) = (&job.out, job.path.as_path(), &job.st);
    // The file is ours: on any failure to fill it, leave nothing half-written behind.
    let hash = match fill(sh.src, out, &job.node, st, buf, path) {
        Ok(h) => h,
        Err(m) => {
            let _ = job.dir.unlink(OsStr::from_bytes(&job.name));
            return Err(m);
        }
    };
    if let Some(want) = sh.expected.get(&job.rel) {
        if hash.as_bytes() != want {
            t.warnings.push(format!("{}: content does not match the generation's checksum (damaged on the backup disk)", show(&job.rel)));
        }
    }
    // Owner, xattrs, mode (chown clears set-id bits), then times, on the open handle.
    let mode = sh.rules.mode(FileKind::File, st.perm);
    chown_fd(out, st).map_err(|e| target(path, e))?;
    set_xattrs(sh.src, xattr::Node::Fd(out.as_fd()), &job.node, path, t);
    fsaccess::set_mode(out, mode).map_err(|e| target(path, e))?;
    fsaccess::set_times(out, st.atime, st.mtime).map_err(|e| target(path, e))?;
    if mode != st.perm {
        t.warnings.push(dest::setid_dropped(path, st.perm, mode));
    }
    t.stats.files += 1;
    t.stats.bytes += st.size;
    Ok(())
}

/// Copies the content of `node` into `out`, hashing it.
fn fill<S: Source>(src: &S, out: &std::fs::File, node: &S::Node, st: &Stat, buf: &mut [u8], path: &Path) -> std::result::Result<blake3::Hash, Miss> {
    let mut hasher = blake3::Hasher::new();
    let mut off = 0u64;
    while off < st.size {
        let n = src.read_at(node, off, buf).map_err(|e| Miss::Skip(format!("reading it on the backup disk: {e}")))?;
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

fn set_xattrs<S: Source>(src: &S, to: xattr::Node, node: &S::Node, path: &Path, t: &mut Tally) {
    match src.xattrs(node) {
        Ok(xs) => match xattr::write_all(to, &xs) {
            Ok(skipped) => t.stats.skipped_xattrs += skipped as u64,
            Err(e) => t.warnings.push(format!("{}: setting extended attributes: {e}", path.display())),
        },
        Err(e) => t.warnings.push(format!("{}: extended attributes unreadable on the backup disk: {e}", path.display())),
    }
}

/// Owner, mode, xattrs and times of a directory once everything below it is written.
fn apply_dir<S: Source>(sh: &Shared<S>, fd: &Dir, st: &Stat, node: &S::Node, path: &Path, t: &mut Tally) {
    let mut note = |r: io::Result<()>, what: &str| {
        if let Err(e) = r {
            t.warnings.push(format!("{}: {what}: {e}", path.display()));
        }
    };
    note(chown_fd(fd, st), "setting the owner");
    note(fsaccess::set_mode(fd, sh.rules.mode(FileKind::Dir, st.perm)), "chmod");
    set_xattrs(sh.src, xattr::Node::Fd(fd.as_fd()), node, path, t);
    if let Err(e) = fsaccess::set_times(fd, st.atime, st.mtime) {
        t.warnings.push(format!("{}: setting times: {e}", path.display()));
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
