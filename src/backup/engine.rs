//! The copy pipeline shared by backup and restore.
//!
//! One thread walks (sorted, streaming, through directory handles) and decides per entry
//! what to do — link to the previous generation, copy, link to an earlier name of the same
//! inode — while a few workers carry the copies out. Results come back to the calling
//! thread, which puts them in walk order again, hands each record to a sink (the metadata
//! and manifest writers) and applies each directory's metadata on its open handle as soon
//! as everything below it is written. A window bounds how far the walk may run ahead, so
//! memory and open handles stay bounded however big the tree is.
//!
//! Change detection: a file is reused (hard-linked from the previous generation) only when
//! type, size, mtime (ns), mode, owner and the source identity recorded with it — ctime
//! (ns), device, inode — are all equal. When only the identity differs (or the previous
//! generation predates it), the source is re-hashed and its xattrs/ACLs compared with the
//! previous copy: equal in every respect (and not part of a hard-link group there) → reused,
//! else a new copy with the new metadata. See offdisk-format(5).

use super::copy::{self, CopyError};
use super::dest::{self, Rules};
use super::record::{Kind, MetadataReader, Record, RecordError, SourceId};
use super::walk::{Missed, WalkEntry, WalkWarning, Walker};
use crate::fsaccess::{self, hook, xattr, Dir, Meta, OpenError};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// Entries the walk may be ahead of the ordered writer.
const WINDOW: u64 = 4096;

/// The previous generation, read in lockstep with the walk.
pub struct Previous {
    pub tree: Arc<Dir>,
    cursor: Option<MetadataReader<io::BufReader<std::fs::File>>>,
    current: Option<Record>,
    /// Format version of its metadata (1 has no source identities).
    pub version: u32,
}

impl Previous {
    /// Opens generation `g` in the open `generations/` directory.
    pub fn open(gens: &Dir, g: &super::generation::Generation) -> Result<Previous, RecordError> {
        let dir = gens.open_dir(OsStr::new(&g.name))?;
        let reader = MetadataReader::open_in(&dir, super::record::METADATA_FILE)?;
        let tree = dir.open_dir(OsStr::new(super::record::TREE_DIR))?;
        let version = reader.version;
        let mut p = Previous { tree: Arc::new(tree), cursor: Some(reader), current: None, version };
        p.advance();
        Ok(p)
    }

    fn advance(&mut self) {
        let next = self.cursor.as_mut().and_then(|c| c.next());
        match next {
            Some(Ok(r)) => {
                // A stream out of order cannot be trusted for lockstep: stop using it.
                if self.current.as_ref().is_some_and(|c| c.path >= r.path) {
                    self.cursor = None;
                    self.current = None;
                } else {
                    self.current = Some(r);
                }
            }
            _ => {
                self.cursor = None;
                self.current = None;
            }
        }
    }

    /// The previous record for `rel`, if any. Calls must come in walk order.
    pub fn find(&mut self, rel: &Path) -> Option<&Record> {
        while self.current.as_ref().is_some_and(|c| c.path.as_path() < rel) {
            self.advance();
        }
        self.current.as_ref().filter(|c| c.path == rel)
    }
}

/// The source identity of `meta`.
pub fn source_id(meta: &Meta) -> SourceId {
    SourceId { ctime_sec: meta.ctime.0, ctime_nsec: meta.ctime.1, dev: meta.dev, ino: meta.ino, nlink: meta.nlink }
}

/// How a previous record relates to the file now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Type, size, mtime, mode, owner and source identity all equal: link it.
    Unchanged,
    /// Same type, size, mtime, mode and owner, but another (or unknown) ctime/inode/device:
    /// decide by content and xattrs.
    Recheck,
    /// Changed: copy.
    No,
}

/// Pure: what the previous record `prev` allows for a file described by `meta` now.
pub fn compare(prev: &Record, meta: &Meta) -> Reuse {
    let same_basics = prev.kind.has_content()
        && meta.is_file()
        && prev.size == meta.size
        && prev.mtime_sec == meta.mtime.0
        && prev.mtime_nsec == meta.mtime.1
        && prev.mode == meta.perm()
        && prev.uid == meta.uid
        && prev.gid == meta.gid;
    if !same_basics {
        return Reuse::No;
    }
    match &prev.src {
        Some(id) if *id == source_id(meta) => Reuse::Unchanged,
        // The link count is part of the identity, but a changed one changes ctime anyway.
        _ => Reuse::Recheck,
    }
}

/// Whether a previous record was one name of a hard-link group in its generation (so its
/// inode may only be reused for the same source inode).
fn in_group(prev: &Record) -> bool {
    prev.kind == Kind::HardLink || prev.src.is_none_or(|s| s.nlink > 1)
}

/// What to do for one entry: decided by the walk thread, done by a worker.
#[derive(Debug)]
enum Action {
    /// The directory exists already (the walk makes directories before their children).
    Dir,
    Copy,
    LinkPrevious { hash: [u8; 32] },
    /// Same size and mtime as the previous copy but another identity: re-hash, compare
    /// xattrs, then link or copy.
    Recheck { hash: [u8; 32] },
    /// Another name of an inode met earlier in this run: linked in order by the writer.
    LinkEarlier { first: PathBuf },
    Symlink,
    Special,
}

struct Job {
    seq: u64,
    entry: WalkEntry,
    action: Action,
    /// The destination directory that receives the entry.
    dst: Arc<Dir>,
    /// The previous generation's copy of that directory, if any.
    prev: Option<Arc<Dir>>,
}

enum Outcome {
    Done { record: Record, new_bytes: u64, linked: bool },
    /// Done, with a note for the run's warnings (a bit that was dropped, say).
    Noted { record: Record, new_bytes: u64, note: String },
    Deferred { first: PathBuf },
    /// An entry left out: the path (shown), why, and which kind of miss.
    Missed { path: PathBuf, why: String, missed: Missed },
    Fatal(io::Error),
}

struct Done {
    seq: u64,
    entry: Option<WalkEntry>,
    dst: Option<Arc<Dir>>,
    outcome: Outcome,
    /// The file was re-hashed (its ctime, inode or device had changed).
    rechecked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writing into a fresh partial generation: nothing may exist yet.
    Backup,
    /// Writing into a restore destination: existing directories are reused (never through
    /// a symlink) and existing files are left alone (reported).
    Restore,
}

pub struct PipelineOptions {
    /// The destination tree's root, and how to show it.
    pub dst_root: Arc<Dir>,
    pub dst_shown: PathBuf,
    pub threads: usize,
    pub mode: Mode,
    /// Once requested, the walk stops, workers skip what is queued, and the run fails.
    pub stop: super::Stop,
    /// What may be recreated as stored: everything for a backup; for a restore, set-id
    /// bits and device nodes only when asked (see [`dest`]).
    pub rules: Rules,
}

/// One entry that is not in the result, for the run's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MissedEntry {
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    pub reason: String,
}

fn lossy<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::record::escape(p.as_os_str().as_bytes()))
}

/// Files and bytes that one source contributed.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SourceTotals {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    /// Bytes of regular-file content in the result.
    pub bytes: u64,
    /// Bytes actually written (not linked).
    pub new_bytes: u64,
    pub copied_files: u64,
    pub linked_files: u64,
    pub skipped_xattrs: u64,
    /// Files re-hashed because their ctime, inode or device changed.
    pub rechecked_files: u64,
    /// Per source (index of the walk's sources).
    #[serde(skip)]
    pub per_source: Vec<SourceTotals>,
    /// Entries that could not be backed up (the run is incomplete).
    #[serde(skip)]
    pub not_backed_up: Vec<MissedEntry>,
    /// Entries that vanished or were replaced while being read.
    #[serde(skip)]
    pub vanished: Vec<MissedEntry>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// `error` already names the file.
    #[error("{error}")]
    Target { path: PathBuf, error: io::Error },
    #[error("writing the record: {0}")]
    Sink(io::Error),
    #[error("stopped on request")]
    Stopped,
}

impl PipelineError {
    pub fn is_no_space(&self) -> bool {
        let e = match self {
            PipelineError::Target { error, .. } => error,
            PipelineError::Sink(e) => e,
            PipelineError::Stopped => return false,
        };
        is_no_space(e)
    }
}

/// ENOSPC or EDQUOT, also when wrapped with a message.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

pub fn dst_path(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

fn kind_of(meta: &Meta) -> Kind {
    use fsaccess::FileKind as F;
    match meta.kind() {
        F::Dir => Kind::Dir,
        F::File => Kind::File,
        F::Symlink => Kind::Symlink,
        F::Fifo => Kind::Fifo,
        F::CharDev => Kind::CharDev,
        F::BlockDev => Kind::BlockDev,
        F::Socket | F::Unknown => Kind::Socket,
    }
}

pub fn record_for(rel: &Path, meta: &Meta, kind: Kind, size: u64, hash: Option<[u8; 32]>, target: Option<Vec<u8>>) -> Record {
    Record {
        kind,
        mode: meta.perm(),
        uid: meta.uid,
        gid: meta.gid,
        size,
        mtime_sec: meta.mtime.0,
        mtime_nsec: meta.mtime.1,
        hash,
        path: rel.to_path_buf(),
        target,
        src: Some(source_id(meta)),
    }
}

/// Runs the walk through the copy workers, handing records to `sink` in walk order.
/// `progress` is called from the ordered side with running totals.
pub fn run(
    walker: Walker,
    mut previous: Option<Previous>,
    opts: &PipelineOptions,
    sink: &mut dyn FnMut(&Record) -> io::Result<()>,
    progress: &mut dyn FnMut(&Stats),
) -> Result<Stats, PipelineError> {
    let abort = AtomicBool::new(false);
    let written = Mutex::new(0u64);
    let advanced = Condvar::new();
    let (job_tx, job_rx) = sync_channel::<Vec<Job>>(8);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = channel::<Vec<Done>>();
    let threads = opts.threads.max(1);

    std::thread::scope(|scope| {
        for _ in 0..threads {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let abort = &abort;
            scope.spawn(move || worker(rx, tx, opts, abort));
        }
        // Only the workers hold the receiver: when they are gone, the walk's sends fail.
        drop(job_rx);
        {
            let tx = done_tx.clone();
            let (abort, written, advanced) = (&abort, &written, &advanced);
            let previous = previous.as_mut();
            scope.spawn(move || walk_and_decide(walker, previous, opts, job_tx, tx, abort, written, advanced));
        }
        drop(done_tx);
        let result = write_in_order(done_rx, opts, sink, progress, &abort, &written, &advanced);
        if result.is_err() {
            abort.store(true, Ordering::SeqCst);
            advanced.notify_all();
        }
        result
    })
}


/// The destination (and previous-generation) directory for each directory level the walk
/// is in, root first.
struct Level {
    rel: PathBuf,
    dst: Arc<Dir>,
    prev: Option<Arc<Dir>>,
}

fn parent_rel(rel: &Path) -> Option<&Path> {
    if rel.as_os_str().is_empty() {
        None
    } else {
        Some(rel.parent().unwrap_or(Path::new("")))
    }
}

#[allow(clippy::too_many_arguments)]
fn walk_and_decide(
    walker: Walker,
    mut previous: Option<&mut Previous>,
    opts: &PipelineOptions,
    jobs: std::sync::mpsc::SyncSender<Vec<Job>>,
    done: Sender<Vec<Done>>,
    abort: &AtomicBool,
    written: &Mutex<u64>,
    advanced: &Condvar,
) {
    let mut seq = 0u64;
    let mut first_names: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Previous inodes reused for members of hard-link groups: which source inode took each
    // (keyed by the previous group's first name), so a split group is never joined again.
    let mut claims: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    let mut batch = Batch { jobs: &jobs, pending: Vec::with_capacity(64), bytes: 0 };
    let prev_tree = previous.as_ref().map(|p| Arc::clone(&p.tree));
    let mut levels: Vec<Level> = vec![Level { rel: PathBuf::new(), dst: Arc::clone(&opts.dst_root), prev: prev_tree }];
    // A directory that could not be made: everything below it is left out with it.
    let mut skip_under: Option<PathBuf> = None;
    let send_one = |seq: u64, entry: Option<WalkEntry>, dst: Option<Arc<Dir>>, outcome: Outcome| {
        let _ = done.send(vec![Done { seq, entry, dst, outcome, rechecked: false }]);
    };
    for item in walker {
        if seq >= *written.lock().unwrap() + WINDOW {
            // The writer may be waiting for exactly these jobs.
            batch.flush();
        }
        {
            let mut w = written.lock().unwrap();
            while seq >= *w + WINDOW && !abort.load(Ordering::SeqCst) {
                w = advanced.wait(w).unwrap();
            }
        }
        if abort.load(Ordering::SeqCst) || opts.stop.requested() {
            // The writer sees the stop request once everything sent so far is back.
            batch.flush();
            return;
        }
        let entry = match item {
            Ok(e) => e,
            Err(WalkWarning { path, error, missed }) => {
                send_one(seq, None, None, Outcome::Missed { why: error.to_string(), path, missed });
                seq += 1;
                continue;
            }
        };
        if let Some(s) = &skip_under {
            if entry.rel.starts_with(s) {
                continue;
            }
            skip_under = None;
        }
        let meta = entry.meta;
        // The destination directory of this entry: its parent's level.
        let Some(parent) = parent_rel(&entry.rel) else {
            // The tree root itself (a source of `/`): it exists already.
            let record = record_for(&entry.rel, &meta, Kind::Dir, 0, None, None);
            send_one(seq, Some(entry), Some(Arc::clone(&opts.dst_root)), Outcome::Done { record, new_bytes: 0, linked: false });
            seq += 1;
            continue;
        };
        while levels.len() > 1 && levels.last().is_some_and(|l| l.rel != parent) {
            levels.pop();
        }
        let level = levels.last().expect("the root level stays");
        if level.rel != parent {
            let why = "its parent directory is not in the backup".to_string();
            send_one(seq, None, None, Outcome::Missed { path: entry.src.clone(), why, missed: Missed::NotBackedUp });
            seq += 1;
            continue;
        }
        let (dst, prev_dir) = (Arc::clone(&level.dst), level.prev.clone());
        if meta.is_dir() {
            let made = match opts.mode {
                // Owner-only until its metadata is applied, once its children are written.
                Mode::Backup => dst.create_dir(&entry.name, 0o700).and_then(|()| dst.open_dir(&entry.name)),
                Mode::Restore => dest::open_dir(&dst, &entry.name),
            };
            let shown = dst_path(&opts.dst_shown, &entry.rel);
            match made {
                Ok(d) => {
                    let d = Arc::new(d);
                    let prev = prev_dir.and_then(|p| p.open_dir(&entry.name).ok().map(Arc::new));
                    levels.push(Level { rel: entry.rel.clone(), dst: Arc::clone(&d), prev });
                    let record = record_for(&entry.rel, &meta, Kind::Dir, 0, None, None);
                    batch.flush();
                    send_one(seq, Some(entry), Some(d), Outcome::Done { record, new_bytes: 0, linked: false });
                }
                Err(e) if !is_no_space(&e) && (opts.mode == Mode::Restore || e.raw_os_error() == Some(libc::ENAMETOOLONG)) => {
                    // DEST holds a symlink or a file where this directory belongs, or the
                    // target cannot hold the name: left out, and everything below it.
                    skip_under = Some(entry.rel.clone());
                    batch.flush();
                    send_one(seq, None, None, Outcome::Missed { path: shown, why: e.to_string(), missed: Missed::NotBackedUp });
                }
                Err(e) => {
                    batch.flush();
                    send_one(seq, None, None, Outcome::Fatal(fsaccess::at(&shown, e)));
                    return;
                }
            }
            seq += 1;
            continue;
        }
        let action = if meta.is_file() {
            let key = (meta.dev, meta.ino);
            if meta.nlink > 1 {
                if let Some(first) = first_names.get(&key) {
                    let action = Action::LinkEarlier { first: first.clone() };
                    batch.push(Job { seq, entry, action, dst, prev: prev_dir });
                    seq += 1;
                    continue;
                }
                first_names.insert(key, entry.rel.clone());
            }
            let verdict = previous.as_mut().and_then(|p| {
                let r = p.find(&entry.rel)?;
                let reuse = compare(r, &meta);
                let hash = r.hash?;
                // A previous group's inode goes to one source inode only.
                let group = in_group(r).then(|| match r.kind {
                    Kind::HardLink => PathBuf::from(OsStr::from_bytes(r.target.as_deref().unwrap_or_default())),
                    _ => r.path.clone(),
                });
                Some((reuse, hash, group))
            });
            match verdict {
                Some((Reuse::No, ..)) | None => Action::Copy,
                Some((reuse, hash, group)) => {
                    let free = match group {
                        None => true,
                        Some(g) => match claims.get(&g) {
                            Some(owner) => *owner == key,
                            None => {
                                claims.insert(g, key);
                                true
                            }
                        },
                    };
                    match (reuse, free) {
                        (Reuse::Unchanged, true) => Action::LinkPrevious { hash },
                        (Reuse::Recheck, true) => Action::Recheck { hash },
                        _ => Action::Copy,
                    }
                }
            }
        } else if meta.is_symlink() {
            Action::Symlink
        } else {
            Action::Special
        };
        batch.push(Job { seq, entry, action, dst, prev: prev_dir });
        seq += 1;
    }
    batch.flush();
}

/// Jobs go to the workers in batches: one channel hand-over per file would cost more in
/// futex calls than linking a small file does. A batch holds entries of one destination
/// directory only, up to a whole (ordinary) directory: two workers making entries in the
/// same directory serialize on its inode lock in the kernel (linkat, O_CREAT), so each
/// worker gets directories of its own. The byte cap still spreads big files over workers.
const BATCH_JOBS: usize = 1024;
const BATCH_BYTES: u64 = 8 << 20;

struct Batch<'a> {
    jobs: &'a std::sync::mpsc::SyncSender<Vec<Job>>,
    pending: Vec<Job>,
    bytes: u64,
}

impl Batch<'_> {
    fn push(&mut self, job: Job) {
        if self.pending.last().is_some_and(|last| !Arc::ptr_eq(&last.dst, &job.dst)) {
            self.flush();
        }
        if matches!(job.action, Action::Copy | Action::Recheck { .. }) {
            self.bytes += job.entry.meta.size;
        }
        self.pending.push(job);
        if self.pending.len() >= BATCH_JOBS || self.bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            // Small to start with: most directories are small.
            let jobs = std::mem::replace(&mut self.pending, Vec::with_capacity(64));
            self.bytes = 0;
            // A closed channel means the workers are gone because the run is aborting.
            let _ = self.jobs.send(jobs);
        }
    }
}

fn worker(rx: Arc<Mutex<Receiver<Vec<Job>>>>, tx: Sender<Vec<Done>>, opts: &PipelineOptions, abort: &AtomicBool) {
    let mut buf = Vec::new();
    loop {
        let jobs = match rx.lock().unwrap().recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let mut done = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            if abort.load(Ordering::SeqCst) {
                return;
            }
            let rechecked = matches!(job.action, Action::Recheck { .. });
            // Stopped: what is still queued is skipped, and the run fails.
            let outcome = if opts.stop.requested() { Outcome::Fatal(io::Error::other("stopped on request")) } else { carry_out(&mut job, opts, &mut buf) };
            done.push(Done { seq: job.seq, entry: Some(job.entry), dst: Some(job.dst), outcome, rechecked });
        }
        if tx.send(done).is_err() {
            return;
        }
    }
}

fn source_missed(entry: &WalkEntry, e: io::Error) -> Outcome {
    let missed = if e.kind() == io::ErrorKind::NotFound { Missed::Vanished } else { Missed::NotBackedUp };
    Outcome::Missed { path: entry.src.clone(), why: e.to_string(), missed }
}

fn target_error(opts: &PipelineOptions, entry: &WalkEntry, e: io::Error) -> Outcome {
    let shown = dst_path(&opts.dst_shown, &entry.rel);
    // Something already in DEST, or a name the target filesystem cannot hold, leaves this
    // entry out, not the run.
    match dest::left_out(&e) {
        Some(why) if e.kind() == io::ErrorKind::AlreadyExists => Outcome::Missed { path: shown, why, missed: Missed::NotBackedUp },
        Some(why) => Outcome::Missed { path: entry.src.clone(), why, missed: Missed::NotBackedUp },
        None => Outcome::Fatal(fsaccess::at(&shown, e)),
    }
}

/// Opens the regular file the walk saw; if the name now holds another object, looks once
/// more and takes a regular file that is there now (its new metadata goes with it).
fn open_source(entry: &mut WalkEntry) -> Result<std::fs::File, io::Error> {
    match entry.parent.open_file(&entry.name, Some(&entry.meta)) {
        Ok((f, _)) => Ok(f),
        Err(OpenError::Changed { now }) if now.is_file() => {
            let (f, now) = entry.parent.open_file(&entry.name, Some(&now)).map_err(changed_error)?;
            entry.meta = now;
            Ok(f)
        }
        Err(e) => Err(changed_error(e)),
    }
}

fn changed_error(e: OpenError) -> io::Error {
    match e {
        OpenError::Io(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            io::Error::new(io::ErrorKind::NotFound, "changed during the backup (now a symbolic link; not followed)")
        }
        OpenError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::NotFound, format!("changed during the backup ({other})")),
    }
}

fn carry_out(job: &mut Job, opts: &PipelineOptions, buf: &mut Vec<u8>) -> Outcome {
    let action = std::mem::replace(&mut job.action, Action::Dir);
    match action {
        Action::Dir => unreachable!("directories are made by the walk"),
        Action::LinkEarlier { first } => Outcome::Deferred { first },
        Action::LinkPrevious { hash } => {
            if link_previous(job) {
                let m = &job.entry.meta;
                Outcome::Done { record: record_for(&job.entry.rel, m, Kind::File, m.size, Some(hash), None), new_bytes: 0, linked: true }
            } else {
                // Gone from the previous generation, not what it should be, or too many
                // links: copy instead.
                copy_regular(job, opts, buf)
            }
        }
        Action::Recheck { hash } => match recheck(job, hash, buf) {
            Ok(true) if link_previous(job) => {
                let m = &job.entry.meta;
                Outcome::Done { record: record_for(&job.entry.rel, m, Kind::File, m.size, Some(hash), None), new_bytes: 0, linked: true }
            }
            Ok(_) => copy_regular(job, opts, buf),
            Err(e) => source_missed(&job.entry, e),
        },
        Action::Copy => copy_regular(job, opts, buf),
        Action::Symlink => {
            let entry = &job.entry;
            let target = match entry.parent.read_link(&entry.name) {
                Ok(t) => t,
                Err(e) => return source_missed(entry, e),
            };
            if let Err(e) = job.dst.symlink(&target, &entry.name) {
                return target_error(opts, entry, e);
            }
            // Symlinks hold only trusted.*/security.* attributes: best effort from the source.
            match copy::apply_at_metadata(&entry.parent, &entry.name, &job.dst, &entry.name, &entry.meta) {
                Ok(_) | Err(CopyError::Source(_)) => {}
                Err(CopyError::Target(e)) => return target_error(opts, entry, e),
            }
            let t = target.as_bytes().to_vec();
            let record = record_for(&entry.rel, &entry.meta, Kind::Symlink, entry.meta.size, None, Some(t));
            Outcome::Done { record, new_bytes: 0, linked: false }
        }
        Action::Special => {
            let entry = &job.entry;
            let kind = kind_of(&entry.meta);
            if let Some(why) = opts.rules.refuses(entry.meta.kind()) {
                return Outcome::Missed { path: dst_path(&opts.dst_shown, &entry.rel), why: why.into(), missed: Missed::NotBackedUp };
            }
            if let Err(e) = dest::make_special(&job.dst, &entry.name, entry.meta.kind(), entry.meta.rdev) {
                return target_error(opts, entry, e);
            }
            match copy::apply_at_metadata(&entry.parent, &entry.name, &job.dst, &entry.name, &entry.meta) {
                Ok(_) | Err(CopyError::Source(_)) => {}
                Err(CopyError::Target(e)) => return target_error(opts, entry, e),
            }
            let target = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| {
                let rdev = entry.meta.rdev;
                format!("{}:{}", rustix::fs::major(rdev as _), rustix::fs::minor(rdev as _)).into_bytes()
            });
            Outcome::Done { record: record_for(&entry.rel, &entry.meta, kind, 0, None, target), new_bytes: 0, linked: false }
        }
    }
}

/// Hard-links the previous generation's copy, after checking it is still a regular file of
/// the recorded size (the disk may have been changed since).
fn link_previous(job: &Job) -> bool {
    let Some(prev) = &job.prev else { return false };
    let name = &job.entry.name;
    match prev.stat(name) {
        Ok(m) if m.is_file() && m.size == job.entry.meta.size => prev.hard_link(name, &job.dst, name).is_ok(),
        _ => false,
    }
}

/// Same content and the same xattrs/ACLs as the previous copy?
fn recheck(job: &mut Job, hash: [u8; 32], buf: &mut Vec<u8>) -> io::Result<bool> {
    let Some(prev) = job.prev.clone() else { return Ok(false) };
    let mut f = open_source(&mut job.entry)?;
    let (h, n) = copy::hash_file(&mut f, buf)?;
    if h != hash || n != job.entry.meta.size {
        return Ok(false);
    }
    let src_attrs = xattr::read_all(xattr::Node::Fd(f.as_fd()))?;
    let prev_attrs = match prev.open_file(&job.entry.name, None) {
        Ok((pf, _)) => xattr::read_all(xattr::Node::Fd(pf.as_fd())).unwrap_or_default(),
        Err(_) => return Ok(false),
    };
    Ok(src_attrs == prev_attrs)
}

fn copy_regular(job: &mut Job, opts: &PipelineOptions, buf: &mut Vec<u8>) -> Outcome {
    let mut input = match open_source(&mut job.entry) {
        Ok(f) => f,
        Err(e) => return source_missed(&job.entry, e),
    };
    let entry = &job.entry;
    let mode = opts.rules.mode(entry.meta.kind(), entry.meta.perm());
    match copy::copy_file(&mut input, &entry.meta, mode, &job.dst, &entry.name, buf) {
        Ok(c) => {
            let mut record = record_for(&entry.rel, &entry.meta, Kind::File, c.size, Some(c.hash), None);
            if mode != entry.meta.perm() {
                // Recorded as written: the bits the file now has.
                record.mode = mode;
                let note = dest::setid_dropped(&dst_path(&opts.dst_shown, &entry.rel), entry.meta.perm(), mode);
                return Outcome::Noted { record, new_bytes: c.size, note };
            }
            Outcome::Done { record, new_bytes: c.size, linked: false }
        }
        // copy_file removed anything it had created.
        Err(CopyError::Source(e)) => source_missed(entry, e),
        Err(CopyError::Target(e)) => target_error(opts, entry, e),
    }
}

/// A directory whose children are still being written; its metadata is applied when the
/// ordered writer has passed its last descendant.
struct OpenDirRecord {
    rel: PathBuf,
    dst: Arc<Dir>,
    src: Option<Arc<Dir>>,
    meta: Meta,
}

fn close_dir(d: OpenDirRecord, opts: &PipelineOptions, stats: &mut Stats) -> Result<(), PipelineError> {
    hook::at(hook::Point::DirComplete, &d.rel);
    let mode = d.meta.perm();
    match copy::apply_dir_metadata(d.src.as_deref(), &d.dst, &d.meta, mode) {
        Ok(skipped) => {
            stats.skipped_xattrs += skipped as u64;
            Ok(())
        }
        Err(CopyError::Source(_)) => Ok(()),
        Err(CopyError::Target(error)) => {
            let path = dst_path(&opts.dst_shown, &d.rel);
            Err(PipelineError::Target { error: fsaccess::at(&path, error), path })
        }
    }
}

fn write_in_order(
    rx: Receiver<Vec<Done>>,
    opts: &PipelineOptions,
    sink: &mut dyn FnMut(&Record) -> io::Result<()>,
    progress: &mut dyn FnMut(&Stats),
    abort: &AtomicBool,
    written: &Mutex<u64>,
    advanced: &Condvar,
) -> Result<Stats, PipelineError> {
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let mut stats = Stats::default();
    // Hash and size of every multiply-linked file written so far, for its later names.
    let mut linked_names: HashMap<PathBuf, ([u8; 32], u64)> = HashMap::new();
    let mut open_dirs: Vec<OpenDirRecord> = Vec::new();
    let mut fatal: Option<PipelineError> = None;
    for batch in rx {
        if fatal.is_some() {
            continue; // drain so senders can finish
        }
        for done in batch {
            pending.insert(done.seq, done);
        }
        while let Some(done) = pending.remove(&next) {
            next += 1;
            if let Err(e) = handle_done(done, opts, sink, &mut stats, &mut linked_names, &mut open_dirs) {
                fatal = Some(e);
                abort.store(true, Ordering::SeqCst);
                break;
            }
            if next % 256 == 0 {
                *written.lock().unwrap() = next;
                advanced.notify_all();
                progress(&stats);
            }
        }
        if fatal.is_none() {
            *written.lock().unwrap() = next;
        }
        advanced.notify_all();
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    // A stopped walk ends early without an error of its own: never take that for the end.
    if opts.stop.requested() {
        return Err(PipelineError::Stopped);
    }
    while let Some(d) = open_dirs.pop() {
        close_dir(d, opts, &mut stats)?;
    }
    progress(&stats);
    Ok(stats)
}

fn handle_done(
    done: Done,
    opts: &PipelineOptions,
    sink: &mut dyn FnMut(&Record) -> io::Result<()>,
    stats: &mut Stats,
    linked_names: &mut HashMap<PathBuf, ([u8; 32], u64)>,
    open_dirs: &mut Vec<OpenDirRecord>,
) -> Result<(), PipelineError> {
    // Every directory not containing this entry is complete now.
    if let Some(e) = &done.entry {
        while open_dirs.last().is_some_and(|d| !(e.rel.starts_with(&d.rel) && e.rel != d.rel)) {
            let d = open_dirs.pop().expect("checked");
            close_dir(d, opts, stats)?;
        }
    }
    let source = done.entry.as_ref().map(|e| e.source);
    if done.rechecked {
        stats.rechecked_files += 1;
    }
    let record = match done.outcome {
        Outcome::Fatal(error) => {
            let path = done.entry.map(|e| e.rel).unwrap_or_default();
            return Err(PipelineError::Target { path, error });
        }
        Outcome::Noted { record, new_bytes, note } => {
            stats.warnings.push(note);
            stats.new_bytes += new_bytes;
            stats.copied_files += 1;
            record
        }
        Outcome::Missed { path, why, missed } => {
            stats.warnings.push(format!("{}: {why}", path.display()));
            let m = MissedEntry { path, reason: why };
            match missed {
                Missed::NotBackedUp => stats.not_backed_up.push(m),
                Missed::Vanished => stats.vanished.push(m),
            }
            return Ok(());
        }
        Outcome::Deferred { first } => {
            let entry = done.entry.expect("deferred links carry their entry");
            let dst = done.dst.expect("deferred links carry their directory");
            let Some(&(hash, size)) = linked_names.get(&first) else {
                let why = format!("its other name {} was not backed up", first.display());
                stats.warnings.push(format!("{}: {why}", entry.src.display()));
                stats.not_backed_up.push(MissedEntry { path: entry.src.clone(), reason: why });
                return Ok(());
            };
            let shown = dst_path(&opts.dst_shown, &entry.rel);
            let first_parent = first.parent().unwrap_or(Path::new(""));
            let first_name = first.file_name().unwrap_or_default();
            let linked = opts.dst_root.open_beneath(first_parent).and_then(|d| d.hard_link(first_name, &dst, &entry.name));
            if let Err(e) = linked {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    stats.warnings.push(format!("{}: {}", shown.display(), dest::EXISTS));
                    stats.not_backed_up.push(MissedEntry { path: shown, reason: dest::EXISTS.into() });
                    return Ok(());
                }
                return Err(PipelineError::Target { error: fsaccess::at(&shown, e), path: shown });
            }
            let first_bytes = first.as_os_str().as_bytes().to_vec();
            record_for(&entry.rel, &entry.meta, Kind::HardLink, size, Some(hash), Some(first_bytes))
        }
        Outcome::Done { record, new_bytes, linked } => {
            stats.new_bytes += new_bytes;
            match record.kind {
                Kind::File => {
                    if linked {
                        stats.linked_files += 1;
                    } else {
                        stats.copied_files += 1;
                    }
                    if done.entry.as_ref().is_some_and(|e| e.meta.nlink > 1) {
                        linked_names.insert(record.path.clone(), (record.hash.unwrap_or_default(), record.size));
                    }
                }
                Kind::Dir => {
                    stats.dirs += 1;
                    if let (Some(e), Some(dst)) = (done.entry, done.dst) {
                        open_dirs.push(OpenDirRecord { rel: e.rel, dst, src: e.dir, meta: e.meta });
                    }
                }
                Kind::Symlink => stats.symlinks += 1,
                _ => stats.others += 1,
            }
            record
        }
    };
    if record.kind.has_content() {
        stats.files += 1;
        stats.bytes += record.size;
        if let Some(i) = source {
            if stats.per_source.len() <= i {
                stats.per_source.resize(i + 1, SourceTotals::default());
            }
            stats.per_source[i].files += 1;
            stats.per_source[i].bytes += record.size;
        }
    }
    sink(&record).map_err(PipelineError::Sink)
}
