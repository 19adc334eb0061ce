//! The copy pipeline shared by backup and restore.
//!
//! One thread walks (sorted, streaming) and decides per entry what to do — link to the
//! previous generation, copy, link to an earlier name of the same inode — while a few
//! workers carry the copies out. Results come back to the calling thread, which puts
//! them in walk order again and hands each record to a sink (the metadata and manifest
//! writers). A window bounds how far the walk may run ahead, so memory stays bounded
//! however big the tree is.

use super::copy::{self, CopyError};
use super::record::{Kind, MetadataReader, Record, RecordError};
use super::walk::{WalkEntry, WalkWarning, Walker};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// Entries the walk may be ahead of the ordered writer.
const WINDOW: u64 = 4096;

/// The previous generation, read in lockstep with the walk.
pub struct Previous {
    pub tree: PathBuf,
    cursor: Option<MetadataReader<io::BufReader<fs::File>>>,
    current: Option<Record>,
}

impl Previous {
    /// Opens generation `g` in the open `generations/` directory.
    pub fn open(gens: &crate::fsaccess::Dir, g: &super::generation::Generation) -> Result<Previous, RecordError> {
        let dir = gens.open_dir(std::ffi::OsStr::new(&g.name))?;
        let reader = MetadataReader::open_in(&dir, super::record::METADATA_FILE)?;
        let mut p = Previous { tree: g.path.join(super::record::TREE_DIR), cursor: Some(reader), current: None };
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

/// rsync's quick check plus owner and mode: same type, size, mtime (ns), mode, uid, gid.
pub fn unchanged(prev: &Record, meta: &Metadata) -> bool {
    prev.kind.has_content()
        && meta.file_type().is_file()
        && prev.size == meta.len()
        && prev.mtime_sec == meta.mtime()
        && prev.mtime_nsec as i64 == meta.mtime_nsec()
        && prev.mode == meta.mode() & 0o7777
        && prev.uid == meta.uid()
        && prev.gid == meta.gid()
}

/// What to do for one entry: decided by the walk thread, done by a worker.
#[derive(Debug)]
enum Action {
    /// The directory already exists (the walk makes directories before their children).
    Dir,
    Copy,
    LinkPrevious { from: PathBuf, hash: [u8; 32] },
    /// Another name of an inode met earlier in this run: linked in order by the writer.
    LinkEarlier { first: PathBuf },
    Symlink,
    Special,
}

struct Job {
    seq: u64,
    entry: WalkEntry,
    action: Action,
}

enum Outcome {
    Done { record: Record, new_bytes: u64, linked: bool },
    Deferred { first: PathBuf },
    Warning(String),
    Fatal(io::Error),
}

struct Done {
    seq: u64,
    ino: Option<(u64, u64)>,
    entry: Option<WalkEntry>,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writing into a fresh partial generation: nothing may exist yet.
    Backup,
    /// Writing into a restore destination: existing directories are reused and
    /// existing files are left alone (reported).
    Restore,
}

pub struct PipelineOptions {
    pub dst_root: PathBuf,
    pub threads: usize,
    pub mode: Mode,
    /// Once requested, the walk stops, workers skip what is queued, and the run fails.
    pub stop: super::Stop,
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

fn kind_of(meta: &Metadata) -> Kind {
    let ft = meta.file_type();
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        Kind::Socket
    }
}

pub fn record_for(rel: &Path, meta: &Metadata, kind: Kind, size: u64, hash: Option<[u8; 32]>, target: Option<Vec<u8>>) -> Record {
    Record {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size,
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        hash,
        path: rel.to_path_buf(),
        target,
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
    let mut batch = Batch { jobs: &jobs, pending: Vec::with_capacity(BATCH_JOBS), bytes: 0 };
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
            Err(WalkWarning { path, error }) => {
                let _ = done.send(vec![Done { seq, ino: None, entry: None, outcome: Outcome::Warning(format!("{}: {error}", path.display())) }]);
                seq += 1;
                continue;
            }
        };
        let meta = &entry.meta;
        let ft = meta.file_type();
        let action = if ft.is_dir() {
            let dst = dst_path(&opts.dst_root, &entry.rel);
            // Owner-only until the final directory pass applies the real metadata.
            match fs::DirBuilder::new().mode(0o700).create(&dst) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && (opts.mode == Mode::Restore || entry.rel.as_os_str().is_empty()) => {}
                Err(e) => {
                    batch.flush();
                    let _ = done.send(vec![Done { seq, ino: None, entry: None, outcome: Outcome::Fatal(io::Error::new(e.kind(), format!("{}: {e}", dst.display()))) }]);
                    return;
                }
            }
            Action::Dir
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = first_names.get(&key) {
                    let action = Action::LinkEarlier { first: first.clone() };
                    batch.push(Job { seq, entry, action });
                    seq += 1;
                    continue;
                }
                first_names.insert(key, entry.rel.clone());
            }
            match previous.as_mut().and_then(|p| {
                let tree = p.tree.clone();
                p.find(&entry.rel).filter(|r| unchanged(r, meta)).and_then(|r| r.hash).map(|h| (tree, h))
            }) {
                Some((tree, hash)) => Action::LinkPrevious { from: tree.join(&entry.rel), hash },
                None => Action::Copy,
            }
        } else if ft.is_symlink() {
            Action::Symlink
        } else {
            Action::Special
        };
        if let Action::Dir = action {
            let record = record_for(&entry.rel, meta, Kind::Dir, 0, None, None);
            let _ = done.send(vec![Done { seq, ino: None, entry: Some(entry), outcome: Outcome::Done { record, new_bytes: 0, linked: false } }]);
        } else {
            batch.push(Job { seq, entry, action });
        }
        seq += 1;
    }
    batch.flush();
}

/// Jobs go to the workers in batches: one channel hand-over per file would cost more in
/// futex calls than linking a small file does.
const BATCH_JOBS: usize = 64;
const BATCH_BYTES: u64 = 8 << 20;

struct Batch<'a> {
    jobs: &'a std::sync::mpsc::SyncSender<Vec<Job>>,
    pending: Vec<Job>,
    bytes: u64,
}

impl Batch<'_> {
    fn push(&mut self, job: Job) {
        if matches!(job.action, Action::Copy) {
            self.bytes += job.entry.meta.len();
        }
        self.pending.push(job);
        if self.pending.len() >= BATCH_JOBS || self.bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let jobs = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_JOBS));
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
        for job in jobs {
            if abort.load(Ordering::SeqCst) {
                return;
            }
            let ino = Some((job.entry.meta.dev(), job.entry.meta.ino()));
            let outcome = if opts.stop.requested() { Outcome::Warning(String::from("stopped")) } else { carry_out(&job, opts, &mut buf) };
            done.push(Done { seq: job.seq, ino, entry: Some(job.entry), outcome });
        }
        if tx.send(done).is_err() {
            return;
        }
    }
}

fn source_warning(entry: &WalkEntry, e: io::Error) -> Outcome {
    Outcome::Warning(format!("{}: {e}", entry.src.display()))
}

fn target_error(dst: &Path, e: io::Error) -> Outcome {
    if e.kind() == io::ErrorKind::AlreadyExists {
        return Outcome::Warning(format!("{}: exists, not overwritten", dst.display()));
    }
    Outcome::Fatal(io::Error::new(e.kind(), format!("{}: {e}", dst.display())))
}

fn carry_out(job: &Job, opts: &PipelineOptions, buf: &mut Vec<u8>) -> Outcome {
    let entry = &job.entry;
    let meta = &entry.meta;
    let dst = dst_path(&opts.dst_root, &entry.rel);
    match &job.action {
        Action::Dir => unreachable!("directories are made by the walk"),
        Action::LinkEarlier { first } => Outcome::Deferred { first: first.clone() },
        Action::LinkPrevious { from, hash } => match fs::hard_link(from, &dst) {
            Ok(()) => Outcome::Done { record: record_for(&entry.rel, meta, Kind::File, meta.len(), Some(*hash), None), new_bytes: 0, linked: true },
            // Gone from the previous generation, or too many links: copy instead.
            Err(_) => copy_regular(entry, &dst, buf),
        },
        Action::Copy => copy_regular(entry, &dst, buf),
        Action::Symlink => {
            let target = match fs::read_link(&entry.src) {
                Ok(t) => t,
                Err(e) => return source_warning(entry, e),
            };
            if let Err(e) = std::os::unix::fs::symlink(&target, &dst) {
                return target_error(&dst, e);
            }
            match copy::apply_metadata(&entry.src, &dst, meta, true) {
                Ok(_) => {}
                Err(CopyError::Source(e)) => return source_warning(entry, e),
                Err(CopyError::Target(e)) => return target_error(&dst, e),
            }
            let t = target.as_os_str().as_bytes().to_vec();
            Outcome::Done { record: record_for(&entry.rel, meta, Kind::Symlink, meta.len(), None, Some(t)), new_bytes: 0, linked: false }
        }
        Action::Special => {
            let kind = kind_of(meta);
            if let Err(e) = copy::make_special(&dst, meta) {
                return target_error(&dst, e);
            }
            match copy::apply_metadata(&entry.src, &dst, meta, true) {
                Ok(_) => {}
                Err(CopyError::Source(e)) => return source_warning(entry, e),
                Err(CopyError::Target(e)) => return target_error(&dst, e),
            }
            let target = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| {
                let rdev = meta.rdev();
                format!("{}:{}", rustix::fs::major(rdev as _), rustix::fs::minor(rdev as _)).into_bytes()
            });
            Outcome::Done { record: record_for(&entry.rel, meta, kind, 0, None, target), new_bytes: 0, linked: false }
        }
    }
}

fn copy_regular(entry: &WalkEntry, dst: &Path, buf: &mut Vec<u8>) -> Outcome {
    match copy::copy_file(&entry.src, dst, &entry.meta, buf) {
        Ok(c) => {
            let record = record_for(&entry.rel, &entry.meta, Kind::File, c.size, Some(c.hash), None);
            Outcome::Done { record, new_bytes: c.size, linked: false }
        }
        // copy_file removed anything it had created.
        Err(CopyError::Source(e)) => source_warning(entry, e),
        Err(CopyError::Target(e)) => target_error(dst, e),
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
            if let Err(e) = handle_done(done, opts, sink, &mut stats, &mut linked_names) {
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
            advanced.notify_all();
        } else {
            advanced.notify_all();
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    // A stopped walk ends early without an error of its own: never take that for the end.
    if opts.stop.requested() {
        return Err(PipelineError::Stopped);
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
) -> Result<(), PipelineError> {
    let record = match done.outcome {
        Outcome::Fatal(error) => {
            let path = done.entry.map(|e| e.rel).unwrap_or_default();
            return Err(PipelineError::Target { path, error });
        }
        Outcome::Warning(w) => {
            stats.warnings.push(w);
            return Ok(());
        }
        Outcome::Deferred { first } => {
            let entry = done.entry.expect("deferred links carry their entry");
            let Some(&(hash, size)) = linked_names.get(&first) else {
                stats.warnings.push(format!("{}: its other name {} was not copied", entry.src.display(), first.display()));
                return Ok(());
            };
            let dst = dst_path(&opts.dst_root, &entry.rel);
            if let Err(e) = fs::hard_link(dst_path(&opts.dst_root, &first), &dst) {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    stats.warnings.push(format!("{}: exists, not overwritten", dst.display()));
                    return Ok(());
                }
                return Err(PipelineError::Target { path: dst, error: e });
            }
            let first_bytes = first.as_os_str().as_bytes().to_vec();
            let mut r = record_for(&entry.rel, &entry.meta, Kind::HardLink, size, Some(hash), Some(first_bytes));
            r.size = size;
            r
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
                    if done.entry.as_ref().is_some_and(|e| e.meta.nlink() > 1) {
                        linked_names.insert(record.path.clone(), (record.hash.unwrap_or_default(), record.size));
                    }
                }
                Kind::Dir => stats.dirs += 1,
                Kind::Symlink => stats.symlinks += 1,
                _ => stats.others += 1,
            }
            let _ = done.ino;
            record
        }
    };
    if record.kind.has_content() {
        stats.files += 1;
        stats.bytes += record.size;
    }
    sink(&record).map_err(PipelineError::Sink)
}

/// Applies directory metadata once every child exists (creating children changes a
/// directory's mtime, and a default ACL set early would leak into new children).
pub fn apply_dir_record(src: &Path, dst: &Path, record: &Record) -> Result<usize, CopyError> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    use std::os::unix::fs::PermissionsExt;
    let t = CopyError::Target;
    match std::os::unix::fs::lchown(dst, Some(record.uid), Some(record.gid)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !copy::is_root() => {}
        Err(e) => return Err(t(e)),
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(record.mode)).map_err(t)?;
    // The source may have vanished or changed since; its xattrs are best effort.
    let skipped = match copy::copy_xattrs(copy::Node::Path(src), copy::Node::Path(dst)) {
        Ok(n) => n,
        Err(CopyError::Source(_)) => 0,
        Err(e) => return Err(e),
    };
    let ts = Timespec { tv_sec: record.mtime_sec, tv_nsec: record.mtime_nsec as _ };
    let times = Timestamps { last_access: ts, last_modification: ts };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| t(e.into()))?;
    Ok(skipped)
}
