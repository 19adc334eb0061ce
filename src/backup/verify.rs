//! `offdisk verify`: re-reads generations and names every missing, damaged or unexpected
//! file by generation and path.
//!
//! Each generation's tree is walked in the same order as its `metadata.tsv`, so the two are
//! merged in one streaming pass; the generations advance in lockstep (up to [`WINDOW`] at a
//! time), so a file shared (hard-linked) by several generations at the same path is read once,
//! with no per-file state kept: memory stays flat however many files the generations hold.
//! Content hashing runs on a few worker threads.

use super::record::{Kind, MetadataReader, Record, MANIFEST_FILE, METADATA_FILE, TREE_DIR};
use super::walk::WalkWarning;
use super::{generation::Generation, BackupError};
use serde::Serialize;
use crate::fsaccess::{Dir, Entry, FileKind};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    Missing,
    Damaged,
    Unexpected,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub generation: String,
    pub kind: ProblemKind,
    /// Path inside the generation directory, e.g. `tree/home/a/x` or `metadata.tsv`.
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    pub detail: String,
    /// Reading failed the way it does when the disk goes away ([`is_device_error`]): this is
    /// no verdict about the file, and [`verify`] reports the disk gone instead.
    #[serde(skip)]
    pub device_error: bool,
}

/// Whether an I/O error is the disk's, not the file's: EIO, ENODEV, ENXIO, as reads give
/// once the device under the mount was pulled out (or fails).
pub fn is_device_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::ENODEV | libc::ENXIO))
}

/// [`is_device_error`] for what reading `metadata.tsv` can fail with.
fn is_device_record_error(e: &super::record::RecordError) -> bool {
    matches!(e, super::record::RecordError::Io(io) if is_device_error(io))
}

/// What a check found wrong with one entry (the [`Problem`]'s detail and its cause).
#[derive(Debug, Clone)]
struct Bad {
    detail: String,
    device: bool,
}

impl Bad {
    fn new(detail: impl Into<String>) -> Bad {
        Bad { detail: detail.into(), device: false }
    }
    fn io(what: &str, e: &std::io::Error) -> Bad {
        Bad { detail: format!("{what}: {e}"), device: is_device_error(e) }
    }
}

/// The verdict of a verify that met device errors: none. The first such problem names where.
fn judged(found: &[Vec<Problem>], root: &Path) -> Result<(), BackupError> {
    match found.iter().flatten().find(|p| p.device_error) {
        Some(p) => Err(BackupError::DiskGone { root: root.to_path_buf(), first: p.to_string() }),
        None => Ok(()),
    }
}

/// An error opening the disk's generations that is the device's, as [`BackupError::DiskGone`].
fn gone_or(e: BackupError, root: &Path) -> BackupError {
    let device = match &e {
        BackupError::Io { error, .. } => is_device_error(error),
        BackupError::Metadata { error, .. } => is_device_record_error(error),
        _ => false,
    };
    if device {
        BackupError::DiskGone { root: root.to_path_buf(), first: e.to_string() }
    } else {
        e
    }
}

fn lossy<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::record::escape(p.as_os_str().as_bytes()))
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ProblemKind::Missing => "missing",
            ProblemKind::Damaged => "damaged",
            ProblemKind::Unexpected => "unexpected",
        };
        write!(f, "{kind}: {}/{}", self.generation, super::record::escape(self.path.as_os_str().as_bytes()))?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub root: PathBuf,
    /// One generation (name, unique prefix or `latest`); all when `None`.
    pub generation: Option<String>,
    /// Sizes and times only, no reading of contents.
    pub quick: bool,
    pub threads: usize,
    /// Checked between entries: a requested stop ends the run with [`BackupError::Stopped`].
    pub stop: super::Stop,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub generations: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    /// Bytes actually read (shared files are read once).
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
}

pub fn verify(opts: &VerifyOptions) -> Result<VerifyReport, BackupError> {
    verify_observed(opts, &mut |_, _| {})
}

/// [`verify`], calling `done` after each generation with the report so far.
///
/// Reads that fail as they do when the disk goes away (EIO, ENODEV, ENXIO) end it with
/// [`BackupError::DiskGone`]: a pulled disk is not "damaged", and nothing it held is judged.
pub fn verify_observed(opts: &VerifyOptions, done: &mut dyn FnMut(&Generation, &VerifyReport)) -> Result<VerifyReport, BackupError> {
    verify_generations(opts, done).map_err(|e| gone_or(e, &opts.root))
}

fn verify_generations(opts: &VerifyOptions, done: &mut dyn FnMut(&Generation, &VerifyReport)) -> Result<VerifyReport, BackupError> {
    let (gens_dir, gens): (Dir, Vec<Generation>) = match &opts.generation {
        Some(want) => {
            let (_, d, g) = super::open_generation(&opts.root, Some(want))?;
            (d, vec![g])
        }
        None => {
            let r = super::generation::Root::open(&opts.root)?;
            let d = r.generations()?;
            let gens = super::generation::list_in(&d, &r.generations_path()).map_err(|error| BackupError::Io { path: opts.root.clone(), error })?;
            (d, gens)
        }
    };
    if gens.is_empty() {
        return Err(BackupError::NoGenerations(opts.root.clone()));
    }
    let mut report = VerifyReport::default();
    for window in gens.chunks(WINDOW) {
        opts.stop.check()?;
        let found = verify_window(&gens_dir, window, opts, &mut report);
        // Before the stop: a pull both fails the reads and stops the run.
        judged(&found, &opts.root)?;
        opts.stop.check()?;
        for (g, problems) in window.iter().zip(found) {
            report.problems.extend(problems);
            report.generations.push(g.name.clone());
            done(g, &report);
        }
    }
    Ok(report)
}

/// Generations verified together, in lockstep: at most this many walks (each a stack of
/// directory handles and a metadata reader) are open at once. A file shared by generations
/// of one window is read once; by generations of different windows, once per window.
const WINDOW: usize = 16;

/// One generation of a window: its metadata merged with its tree walk, yielding the files
/// whose contents need reading, in path order (the order of `metadata.tsv`).
struct Cursor<'a> {
    /// Index in the window.
    index: usize,
    name: &'a str,
    records: std::iter::Peekable<MetadataReader<std::io::BufReader<std::fs::File>>>,
    walk: std::iter::Peekable<NameWalk>,
    /// Problems found without reading contents.
    problems: Vec<Problem>,
    files: u64,
    bytes: u64,
    quick: bool,
    /// Unreadable records ended the comparison: nothing more is read from this generation.
    ended: bool,
}

/// A file to read in one generation.
struct Member {
    index: usize,
    dir: Arc<Dir>,
    name: OsString,
    rel: PathBuf,
    expected: [u8; 32],
    size: u64,
}

fn shown(rel: &Path) -> PathBuf {
    let mut p = PathBuf::from(TREE_DIR);
    p.push(rel);
    p
}

impl Cursor<'_> {
    fn problem(&mut self, kind: ProblemKind, path: PathBuf, detail: String) {
        self.bad(kind, path, Bad::new(detail));
    }

    fn bad(&mut self, kind: ProblemKind, path: PathBuf, bad: Bad) {
        self.problems.push(Problem { generation: self.name.to_string(), kind, path, detail: bad.detail, device_error: bad.device });
    }

    /// Advances to the next file whose contents need reading (none in quick mode), noting
    /// every missing, unexpected or damaged entry on the way. `None` at the end, or when a
    /// stop is requested.
    fn next_file(&mut self, stop: &super::Stop) -> Option<Member> {
        loop {
            if self.ended || stop.requested() {
                return None;
            }
            // Unreadable records end the comparison: what follows cannot be trusted.
            if let Some(Err(_)) = self.records.peek() {
                if let Some(Err(e)) = self.records.next() {
                    let bad = Bad { detail: e.to_string(), device: is_device_record_error(&e) };
                    self.bad(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), bad);
                }
                self.ended = true;
                return None;
            }
            if let Some(Err(_)) = self.walk.peek() {
                if let Some(Err(w)) = self.walk.next() {
                    let bad = Bad { detail: w.error.to_string(), device: is_device_error(&w.error) };
                    self.bad(ProblemKind::Damaged, shown(&w.path), bad);
                }
                continue;
            }
            let order = match (self.records.peek(), self.walk.peek()) {
                (None, None) => return None,
                (Some(Ok(r)), Some(Ok(e))) => r.path.as_path().cmp(&e.rel),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => unreachable!("errors handled above"),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(Ok(r)) = self.records.next() else { return None };
                    if r.path.as_os_str().is_empty() {
                        continue; // the tree root itself
                    }
                    self.problem(ProblemKind::Missing, shown(&r.path), String::new());
                }
                std::cmp::Ordering::Greater => {
                    let Some(Ok(e)) = self.walk.next() else { return None };
                    self.problem(ProblemKind::Unexpected, shown(&e.rel), String::new());
                }
                std::cmp::Ordering::Equal => {
                    let (Some(Ok(r)), Some(Ok(e))) = (self.records.next(), self.walk.next()) else { return None };
                    if let Some(bad) = compare(&r, &e, self.quick) {
                        self.bad(ProblemKind::Damaged, shown(&r.path), bad);
                        continue;
                    }
                    if r.kind.has_content() {
                        self.files += 1;
                        self.bytes += r.size;
                        if self.quick {
                            continue;
                        }
                        return Some(Member { index: self.index, dir: e.dir, name: e.name, rel: r.path, expected: r.hash.unwrap_or_default(), size: r.size });
                    }
                }
            }
        }
    }
}

/// Opens one generation for [`Cursor`]; what makes it unreadable as a whole goes to `head`.
fn open_cursor<'a>(gens_dir: &Dir, g: &'a Generation, index: usize, quick: bool, head: &mut Vec<Problem>) -> Option<Cursor<'a>> {
    let problem = |kind, path: PathBuf, detail: String, device_error| Problem { generation: g.name.clone(), kind, path, detail, device_error };
    let gdir = match gens_dir.open_dir(OsStr::new(&g.name)) {
        Ok(d) => d,
        Err(e) => {
            head.push(problem(ProblemKind::Damaged, PathBuf::new(), e.to_string(), is_device_error(&e)));
            return None;
        }
    };
    match gdir.stat(OsStr::new(MANIFEST_FILE)) {
        Ok(m) if m.is_file() => {}
        Err(e) if is_device_error(&e) => head.push(problem(ProblemKind::Damaged, PathBuf::from(MANIFEST_FILE), e.to_string(), true)),
        _ => head.push(problem(ProblemKind::Missing, PathBuf::from(MANIFEST_FILE), String::new(), false)),
    }
    let records = match MetadataReader::open_in(&gdir, METADATA_FILE) {
        Ok(r) => r,
        Err(e) => {
            head.push(problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string(), is_device_record_error(&e)));
            return None;
        }
    };
    // A tree that is not a real directory (a symlink to a host directory, say) is damage,
    // never followed: nothing outside the disk is listed or read.
    let tree = match gdir.open_dir(OsStr::new(TREE_DIR)) {
        Ok(t) => t,
        Err(e) => {
            head.push(problem(ProblemKind::Damaged, PathBuf::from(TREE_DIR), e.to_string(), is_device_error(&e)));
            return None;
        }
    };
    let (walker, root_warning) = NameWalk::new(tree);
    if let Some(w) = root_warning {
        head.push(problem(ProblemKind::Damaged, PathBuf::from(TREE_DIR), w.error.to_string(), is_device_error(&w.error)));
    }
    Some(Cursor { index, name: &g.name, records: records.peekable(), walk: walker.peekable(), problems: Vec::new(), files: 0, bytes: 0, quick, ended: false })
}

/// Verifies the generations of one window in lockstep and returns each one's problems.
///
/// The walks advance together in path order. A path held by several generations becomes one
/// job: each generation's file there is opened and `fstat`ed, and one whose inode (device and
/// number, as the kernel reports for the file opened) and expected hash and size equal those
/// of a file already read in that job takes its verdict, good or damaged; any other is read.
/// So an unchanged file (linked into each generation) is read once, and a damaged one is
/// named in every generation holding it. Nothing is remembered across paths: the state is a
/// few directory handles per generation and the jobs in flight, whatever the tree's size.
/// A record cannot make a file skip reading: only the identity of the file opened can.
fn verify_window(gens_dir: &Dir, gens: &[Generation], opts: &VerifyOptions, report: &mut VerifyReport) -> Vec<Vec<Problem>> {
    let mut heads: Vec<Vec<Problem>> = vec![Vec::new(); gens.len()];
    let mut cursors: Vec<Cursor> = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        if let Some(c) = open_cursor(gens_dir, g, i, opts.quick, &mut heads[i]) {
            cursors.push(c);
        }
    }
    let workers = if opts.quick { 0 } else { opts.threads.max(1) };
    let (read, damaged) = read_in_lockstep(
        cursors.len(),
        |i| cursors[i].next_file(&opts.stop),
        || opts.stop.requested(),
        workers,
        Vec::new,
        |job, buf, found| check_group(job, gens, buf, found),
    );
    report.bytes_read += read;
    let walked = cursors.into_iter().map(|c| {
        report.files += c.files;
        report.bytes += c.bytes;
        (c.index, c.problems)
    });
    by_generation(heads, walked, damaged)
}

/// A file met by a lockstep walk of generations: which generation, and its path in the tree.
pub(crate) trait LockstepFile: Send {
    fn generation_index(&self) -> usize;
    fn rel(&self) -> &Path;
}

impl LockstepFile for Member {
    fn generation_index(&self) -> usize {
        self.index
    }
    fn rel(&self) -> &Path {
        &self.rel
    }
}

/// The lockstep walk shared by the host verify and `verify --from`: `next(i)` gives walk
/// `i`'s next file needing a read (walks in generation order, each in path order); the files
/// of every walk at the least path make one job, checked on one of `workers` threads by
/// `check`, which adds what it finds damaged to its list and returns the bytes it read.
/// Each worker keeps one `buffer()`. Jobs travel in batches of about 64 files: a channel
/// hand-over per small file costs more than hashing it. Ends when every walk does or when
/// `stopped()`; returns the bytes read and the damage found, by generation index.
pub(crate) fn read_in_lockstep<M: LockstepFile, B>(
    walks: usize,
    mut next: impl FnMut(usize) -> Option<M>,
    stopped: impl Fn() -> bool,
    workers: usize,
    buffer: impl Fn() -> B + Sync,
    check: impl Fn(Vec<M>, &mut B, &mut Vec<(usize, Problem)>) -> u64 + Sync,
) -> (u64, Vec<(usize, Problem)>) {
    let damaged: Mutex<Vec<(usize, Problem)>> = Mutex::new(Vec::new());
    let read_bytes = Mutex::new(0u64);
    let (tx, rx) = sync_channel::<Vec<Vec<M>>>(8);
    let rx = Arc::new(Mutex::new(rx));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let rx = Arc::clone(&rx);
            let (damaged, read_bytes, buffer, check) = (&damaged, &read_bytes, &buffer, &check);
            scope.spawn(move || {
                let mut buf = buffer();
                loop {
                    let Ok(jobs) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else { return };
                    let (mut read, mut found) = (0, Vec::new());
                    for job in jobs {
                        read += check(job, &mut buf, &mut found);
                    }
                    *read_bytes.lock().unwrap_or_else(|e| e.into_inner()) += read;
                    if !found.is_empty() {
                        damaged.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
                    }
                }
            });
        }
        drop(rx);

        let mut heads: Vec<Option<M>> = (0..walks).map(&mut next).collect();
        let (mut batch, mut in_batch): (Vec<Vec<M>>, usize) = (Vec::new(), 0);
        while !stopped() {
            // The least path any walk holds next (the first such walk: generation order), and
            // every later walk holding it too.
            let Some(first) = (0..walks).filter(|&i| heads[i].is_some()).min_by(|&a, &b| {
                let (a, b) = (heads[a].as_ref().expect("some"), heads[b].as_ref().expect("some"));
                a.rel().cmp(b.rel()).then(a.generation_index().cmp(&b.generation_index()))
            }) else {
                break;
            };
            let lead = heads[first].take().expect("some");
            heads[first] = next(first);
            let mut job = vec![lead];
            for i in first + 1..walks {
                if heads[i].as_ref().is_some_and(|m| m.rel() == job[0].rel()) {
                    job.push(heads[i].take().expect("some"));
                    heads[i] = next(i);
                }
            }
            in_batch += job.len();
            batch.push(job);
            if in_batch >= 64 {
                in_batch = 0;
                if tx.send(std::mem::take(&mut batch)).is_err() {
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
    });
    (read_bytes.into_inner().unwrap_or_else(|e| e.into_inner()), damaged.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Each generation's problems: those found opening it (`heads`), then those its walk noted
/// and those reading found, the two sorted together by path (stably: walk notes first).
pub(crate) fn by_generation(
    heads: Vec<Vec<Problem>>,
    walked: impl IntoIterator<Item = (usize, Vec<Problem>)>,
    damaged: Vec<(usize, Problem)>,
) -> Vec<Vec<Problem>> {
    let mut found: Vec<Vec<Problem>> = vec![Vec::new(); heads.len()];
    for (i, p) in walked {
        found[i].extend(p);
    }
    for (i, p) in damaged {
        found[i].push(p);
    }
    heads
        .into_iter()
        .zip(found)
        .map(|(mut head, mut found)| {
            found.sort_by(|a, b| a.path.cmp(&b.path));
            head.extend(found);
            head
        })
        .collect()
}

/// (device, inode, expected hash, size): files with equal ids share a verdict.
type FileId = (u64, u64, [u8; 32], u64);

/// Checks one path's files (one per generation holding it, in generation order); damaged ones
/// go to `found`. Returns the bytes read of files found good (as before: damaged ones are
/// not counted).
fn check_group(job: Vec<Member>, gens: &[Generation], buf: &mut Vec<u8>, found: &mut Vec<(usize, Problem)>) -> u64 {
    // (device, inode, expected hash, size) of each file read here, with its verdict.
    let mut known: Vec<(FileId, Result<(), Bad>)> = Vec::new();
    let mut read = 0;
    for m in job {
        let verdict = match m.dir.open_file(&m.name, None) {
            Err(crate::fsaccess::OpenError::Io(e)) => Err(Bad::io("cannot read", &e)),
            Err(e) => Err(Bad::new(format!("cannot read: {e}"))),
            Ok((_, meta)) if meta.size != m.size => Err(Bad::new(format!("size {}, expected {}", meta.size, m.size))),
            Ok((mut f, meta)) => {
                let id = (meta.dev, meta.ino, m.expected, m.size);
                match known.iter().find(|(k, _)| *k == id) {
                    Some((_, v)) => v.clone(),
                    None => {
                        let v = hash_file(&mut f, &m, buf).map(|n| read += n);
                        known.push((id, v.clone()));
                        v
                    }
                }
            }
        };
        if let Err(bad) = verdict {
            let generation = gens[m.index].name.clone();
            found.push((m.index, Problem { generation, kind: ProblemKind::Damaged, path: shown(&m.rel), detail: bad.detail, device_error: bad.device }));
        }
    }
    read
}

/// Reads `m.size` bytes of `f` (its size, just confirmed by `fstat`) and compares their hash.
fn hash_file(f: &mut std::fs::File, m: &Member, buf: &mut Vec<u8>) -> Result<u64, Bad> {
    use std::io::Read;
    buf.resize(super::copy::BUF_SIZE, 0);
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    // Exactly that much: no extra read to find EOF.
    while total < m.size {
        let want = ((m.size - total) as usize).min(buf.len());
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Bad::io("cannot read", &e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != m.size {
        return Err(Bad::new(format!("size {total}, expected {}", m.size)));
    }
    if hasher.finalize().as_bytes() != &m.expected {
        return Err(Bad::new("content does not match its checksum"));
    }
    Ok(total)
}

/// A sorted walk that reads only directories (types from `d_type`, no stat per entry),
/// through directory handles (never following a symlink on the disk): a full verify opens
/// every file anyway and learns the rest from `fstat`.
struct NameWalk {
    /// (directory handle, its path in the tree, its remaining entries sorted descending)
    stack: Vec<(Arc<Dir>, PathBuf, Vec<Entry>)>,
}

struct Named {
    dir: Arc<Dir>,
    name: OsString,
    rel: PathBuf,
    kind: FileKind,
}

impl NameWalk {
    fn new(root: Dir) -> (NameWalk, Option<WalkWarning>) {
        let mut w = NameWalk { stack: Vec::new() };
        let warn = w.push(Arc::new(root), PathBuf::new()).err();
        (w, warn)
    }

    fn push(&mut self, dir: Arc<Dir>, rel: PathBuf) -> Result<(), WalkWarning> {
        let mut names = dir.entries().map_err(|error| WalkWarning::new(rel.clone(), error))?;
        for e in names.iter_mut().filter(|e| e.kind == FileKind::Unknown) {
            e.kind = dir.stat(&e.name).map(|m| m.kind()).map_err(|error| WalkWarning::new(rel.join(&e.name), error))?;
        }
        names.reverse();
        self.stack.push((dir, rel, names));
        Ok(())
    }
}

impl Iterator for NameWalk {
    type Item = Result<Named, WalkWarning>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (dir, rel, names) = self.stack.last_mut()?;
            let Some(e) = names.pop() else {
                self.stack.pop();
                continue;
            };
            let (dir, rel) = (Arc::clone(dir), rel.join(&e.name));
            if e.kind == FileKind::Dir {
                match dir.open_dir(&e.name) {
                    Ok(child) => {
                        if let Err(w) = self.push(Arc::new(child), rel.clone()) {
                            return Some(Err(w));
                        }
                    }
                    Err(error) => return Some(Err(WalkWarning::new(rel, error))),
                }
            }
            return Some(Ok(Named { dir, name: e.name, rel, kind: e.kind }));
        }
    }
}

/// Checks that need no reading: type always; size and mtime in quick mode (one lstat);
/// symlink targets.
fn compare(r: &Record, e: &Named, quick: bool) -> Option<Bad> {
    let type_ok = r.kind.is(e.kind);
    if !type_ok {
        return Some(Bad::new("type changed"));
    }
    match r.kind {
        Kind::File | Kind::HardLink if quick => {
            let meta = match e.dir.stat(&e.name) {
                Ok(m) => m,
                Err(err) => return Some(Bad::io("cannot stat", &err)),
            };
            if meta.size != r.size {
                return Some(Bad::new(format!("size {}, expected {}", meta.size, r.size)));
            }
            if meta.mtime != (r.mtime_sec, r.mtime_nsec) {
                return Some(Bad::new("modification time changed"));
            }
            None
        }
        Kind::Symlink => match e.dir.read_link(&e.name) {
            Ok(target) => (r.target.as_deref() != Some(target.as_bytes())).then(|| Bad::new("symlink target changed")),
            Err(err) if is_device_error(&err) => Some(Bad::io("cannot read the link", &err)),
            Err(_) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error;

    fn problem(detail: &str, device_error: bool) -> Problem {
        Problem { generation: "2026-12-03T061500Z".into(), kind: ProblemKind::Damaged, path: PathBuf::from("tree/home/a"), detail: detail.into(), device_error }
    }

    #[test]
    fn a_vanished_disk_s_errors_are_the_disk_s_not_the_file_s() {
        for errno in [libc::EIO, libc::ENODEV, libc::ENXIO] {
            let e = Error::from_raw_os_error(errno);
            assert!(is_device_error(&e), "{e}");
            assert!(Bad::io("cannot read", &e).device, "{e}");
            assert!(is_device_record_error(&super::super::record::RecordError::Io(Error::from_raw_os_error(errno))));
        }
        // What a file that is really missing, unreadable or damaged gives.
        for errno in [libc::ENOENT, libc::EACCES, libc::ELOOP, libc::ENOTDIR, libc::EUCLEAN] {
            let e = Error::from_raw_os_error(errno);
            assert!(!is_device_error(&e), "{e}");
            assert!(!Bad::io("cannot stat", &e).device, "{e}");
        }
        assert!(!is_device_error(&Error::other("no errno")));
        assert!(!Bad::new("content does not match its checksum").device);
    }

    #[test]
    fn one_device_error_means_nothing_was_judged() {
        let root = Path::new("/run/offdisk/mnt/x");
        let mismatches = vec![vec![problem("size 1, expected 2", false)], vec![]];
        assert!(judged(&mismatches, root).is_ok(), "real mismatches are a verdict");
        let pulled = vec![vec![problem("size 1, expected 2", false), problem("cannot stat: Input/output error (os error 5)", true)], vec![problem("x", false)]];
        let err = judged(&pulled, root).unwrap_err();
        assert!(matches!(&err, BackupError::DiskGone { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("the disk stopped answering during verify (removed, or failing); nothing on it was judged"), "{text}");
        assert!(text.contains("Input/output error") && !text.contains("problems") && !text.contains("size 1"), "names the first device error only: {text}");
        use crate::error::Diagnose;
        assert_eq!(err.exit_code(), crate::error::exit::DEVICE, "non-zero: a device problem");
    }

    #[test]
    fn opening_a_vanished_disk_is_the_disk_gone_too() {
        let root = Path::new("/mnt/backup");
        let eio = BackupError::Io { path: root.join("generations"), error: Error::from_raw_os_error(libc::ENXIO) };
        assert!(matches!(gone_or(eio, root), BackupError::DiskGone { .. }));
        let missing = BackupError::Io { path: root.join("generations"), error: Error::from_raw_os_error(libc::ENOENT) };
        assert!(matches!(gone_or(missing, root), BackupError::Io { .. }));
        assert!(matches!(gone_or(BackupError::Stopped, root), BackupError::Stopped));
    }
}
