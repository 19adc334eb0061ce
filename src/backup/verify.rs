//! `offdisk verify`: re-reads generations and names every missing, damaged or unexpected
//! file by generation and path.
//!
//! The generation's tree is walked in the same order as its `metadata.tsv`, so the two are
//! merged in one streaming pass; content hashing runs on a few worker threads. A file shared
//! (hard-linked) by several generations is read once per run.

use super::record::{Kind, MetadataReader, Record, MANIFEST_FILE, METADATA_FILE, TREE_DIR};
use super::walk::WalkWarning;
use super::{generation::Generation, BackupError};
use serde::Serialize;
use std::collections::HashSet;
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
pub fn verify_observed(opts: &VerifyOptions, done: &mut dyn FnMut(&Generation, &VerifyReport)) -> Result<VerifyReport, BackupError> {
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
    let seen = Seen::new();
    for (i, g) in gens.iter().enumerate() {
        opts.stop.check()?;
        // Only a generation still to come can share an inode with this one: the last one
        // remembers nothing, so verifying one generation holds no per-file state at all.
        seen.remember.store(seen.keyed && i + 1 < gens.len(), std::sync::atomic::Ordering::Relaxed);
        verify_one(&gens_dir, g, opts, &seen, &mut report);
        opts.stop.check()?;
        report.generations.push(g.name.clone());
        done(g, &report);
    }
    Ok(report)
}

/// Inodes already found to hold the content a record expects, so a file shared by several
/// generations is read once per run. One 16-byte keyed digest of (device, inode, expected
/// hash) per inode, not the triple itself (48 bytes): the key is random per run, so a disk
/// cannot make a damaged file's digest collide with a good one's (chance 2^-128 per pair).
/// Only inodes with other links are kept (a file with one name cannot come again).
struct Seen {
    key: [u8; 32],
    /// The key is random (else nothing is remembered and every file is hashed).
    keyed: bool,
    set: Mutex<HashSet<u128>>,
    remember: std::sync::atomic::AtomicBool,
}

impl Seen {
    fn new() -> Seen {
        let mut key = [0u8; 32];
        let keyed = getrandom::fill(&mut key).is_ok();
        Seen { key, keyed, set: Mutex::new(HashSet::new()), remember: std::sync::atomic::AtomicBool::new(false) }
    }

    fn digest(&self, dev: u64, ino: u64, expected: &[u8; 32]) -> u128 {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&dev.to_le_bytes());
        h.update(&ino.to_le_bytes());
        h.update(expected);
        let out = h.finalize();
        u128::from_le_bytes(out.as_bytes()[..16].try_into().expect("16 bytes"))
    }
}

struct HashJob {
    dir: Arc<Dir>,
    name: OsString,
    shown: PathBuf,
    expected: [u8; 32],
    size: u64,
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

fn verify_one(gens_dir: &Dir, g: &Generation, opts: &VerifyOptions, seen: &Seen, report: &mut VerifyReport) {
    let problem = |kind, path: PathBuf, detail: String| Problem { generation: g.name.clone(), kind, path, detail };
    let gdir = match gens_dir.open_dir(OsStr::new(&g.name)) {
        Ok(d) => d,
        Err(e) => {
            report.problems.push(problem(ProblemKind::Damaged, PathBuf::new(), e.to_string()));
            return;
        }
    };
    if !gdir.stat(OsStr::new(MANIFEST_FILE)).is_ok_and(|m| m.is_file()) {
        report.problems.push(problem(ProblemKind::Missing, PathBuf::from(MANIFEST_FILE), String::new()));
    }
    let records = match MetadataReader::open_in(&gdir, METADATA_FILE) {
        Ok(r) => r,
        Err(e) => {
            report.problems.push(problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string()));
            return;
        }
    };
    // A tree that is not a real directory (a symlink to a host directory, say) is damage,
    // never followed: nothing outside the disk is listed or read.
    let tree = match gdir.open_dir(OsStr::new(TREE_DIR)) {
        Ok(t) => t,
        Err(e) => {
            report.problems.push(problem(ProblemKind::Damaged, PathBuf::from(TREE_DIR), e.to_string()));
            return;
        }
    };
    let (walker, root_warning) = NameWalk::new(tree);
    if let Some(w) = root_warning {
        report.problems.push(problem(ProblemKind::Damaged, PathBuf::from(TREE_DIR), w.error.to_string()));
    }
    let shown = |rel: &Path| -> PathBuf {
        let mut p = PathBuf::from(TREE_DIR);
        p.push(rel);
        p
    };

    let problems: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let read_bytes = Mutex::new(0u64);
    // Jobs travel in batches: a channel hand-over per small file costs more than hashing it.
    let (tx, rx) = sync_channel::<Vec<HashJob>>(8);
    let mut batch: Vec<HashJob> = Vec::with_capacity(64);
    let rx = Arc::new(Mutex::new(rx));
    std::thread::scope(|scope| {
        if !opts.quick {
            for _ in 0..opts.threads.max(1) {
                let rx = Arc::clone(&rx);
                let (problems, read_bytes) = (&problems, &read_bytes);
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    loop {
                        let jobs = match rx.lock().unwrap().recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        let mut read = 0;
                        for job in jobs {
                            match check_content(&job, seen, &mut buf) {
                                Ok(n) => read += n,
                                Err(detail) => problems.lock().unwrap().push(problem(ProblemKind::Damaged, job.shown, detail)),
                            }
                        }
                        *read_bytes.lock().unwrap() += read;
                    }
                });
            }
        }
        drop(rx);

        let mut records = records.peekable();
        let mut walk = walker.peekable();
        loop {
            if opts.stop.requested() {
                break;
            }
            // Unreadable records end the comparison: what follows cannot be trusted.
            if let Some(Err(_)) = records.peek() {
                if let Some(Err(e)) = records.next() {
                    problems.lock().unwrap().push(problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string()));
                }
                break;
            }
            if let Some(Err(_)) = walk.peek() {
                if let Some(Err(w)) = walk.next() {
                    problems.lock().unwrap().push(problem(ProblemKind::Damaged, shown(&w.path), w.error.to_string()));
                }
                continue;
            }
            let order = match (records.peek(), walk.peek()) {
                (None, None) => break,
                (Some(Ok(r)), Some(Ok(e))) => r.path.as_path().cmp(&e.rel),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => unreachable!("errors handled above"),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(Ok(r)) = records.next() else { break };
                    if r.path.as_os_str().is_empty() {
                        continue; // the tree root itself
                    }
                    problems.lock().unwrap().push(problem(ProblemKind::Missing, shown(&r.path), String::new()));
                }
                std::cmp::Ordering::Greater => {
                    let Some(Ok(e)) = walk.next() else { break };
                    problems.lock().unwrap().push(problem(ProblemKind::Unexpected, shown(&e.rel), String::new()));
                }
                std::cmp::Ordering::Equal => {
                    let (Some(Ok(r)), Some(Ok(e))) = (records.next(), walk.next()) else { break };
                    if let Some(detail) = compare(&r, &e, opts.quick) {
                        problems.lock().unwrap().push(problem(ProblemKind::Damaged, shown(&r.path), detail));
                        continue;
                    }
                    if r.kind.has_content() {
                        report.files += 1;
                        report.bytes += r.size;
                        if opts.quick {
                            continue;
                        }
                        let job = HashJob { dir: e.dir, name: e.name, shown: shown(&r.path), expected: r.hash.unwrap_or_default(), size: r.size };
                        batch.push(job);
                        if batch.len() >= 64 && tx.send(std::mem::take(&mut batch)).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(std::mem::take(&mut batch));
        }
        drop(tx);
    });
    let mut found = problems.into_inner().unwrap();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    report.bytes_read += read_bytes.into_inner().unwrap();
    report.problems.extend(found);
}

/// Opens, checks size, and hashes unless this inode was already found good with the
/// same hash (generations share unchanged files). Returns the bytes read.
fn check_content(job: &HashJob, seen: &Seen, buf: &mut Vec<u8>) -> Result<u64, String> {
    use std::io::Read;
    let (mut f, meta) = job.dir.open_file(&job.name, None).map_err(|e| format!("cannot read: {e}"))?;
    if meta.size != job.size {
        return Err(format!("size {}, expected {}", meta.size, job.size));
    }
    // A file with one name was never seen before (nor will be): no lookup, no digest.
    let digest = (meta.nlink > 1).then(|| seen.digest(meta.dev, meta.ino, &job.expected));
    if let Some(d) = digest {
        if seen.set.lock().unwrap().contains(&d) {
            return Ok(0);
        }
    }
    buf.resize(super::copy::BUF_SIZE, 0);
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    // fstat confirmed the size: read exactly that much (no extra read to find EOF).
    while total < job.size {
        let want = ((job.size - total) as usize).min(buf.len());
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != job.size {
        return Err(format!("size {total}, expected {}", job.size));
    }
    if hasher.finalize().as_bytes() != &job.expected {
        return Err("content does not match its checksum".into());
    }
    if let Some(d) = digest.filter(|_| seen.remember.load(std::sync::atomic::Ordering::Relaxed)) {
        seen.set.lock().unwrap().insert(d);
    }
    Ok(total)
}

/// Checks that need no reading: type always; size and mtime in quick mode (one lstat);
/// symlink targets.
fn compare(r: &Record, e: &Named, quick: bool) -> Option<String> {
    let type_ok = r.kind.is(e.kind);
    if !type_ok {
        return Some("type changed".into());
    }
    match r.kind {
        Kind::File | Kind::HardLink if quick => {
            let meta = match e.dir.stat(&e.name) {
                Ok(m) => m,
                Err(err) => return Some(format!("cannot stat: {err}")),
            };
            if meta.size != r.size {
                return Some(format!("size {}, expected {}", meta.size, r.size));
            }
            if meta.mtime != (r.mtime_sec, r.mtime_nsec) {
                return Some("modification time changed".into());
            }
            None
        }
        Kind::Symlink => {
            let target = e.dir.read_link(&e.name).ok()?;
            (r.target.as_deref() != Some(target.as_bytes())).then(|| "symlink target changed".into())
        }
        _ => None,
    }
}
