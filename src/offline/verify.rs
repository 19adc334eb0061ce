//! `offdisk verify --from`: every generation's tree against its `metadata.tsv`, through a
//! [`Source`]. The same checks and report as the host verify: missing, unexpected and
//! damaged entries by generation and path; contents hashed on worker threads; a file shared
//! by several generations (one inode) read once.

use super::source::{FileKind, Source, Stat};
use super::{Found, OfflineError, Result};
use crate::backup::record::{Kind as RKind, Record, MANIFEST_FILE, METADATA_FILE, TREE_DIR};
use crate::backup::verify::{Problem, ProblemKind, VerifyReport};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// One generation (name, unique prefix or `latest`); all when `None`.
    pub generation: Option<String>,
    /// Sizes and times only, no reading of contents.
    pub quick: bool,
    pub threads: usize,
}

/// Bytes read per call while hashing.
const READ_CHUNK: usize = 4 << 20;

pub fn verify<S: Source>(src: &S, opts: &VerifyOptions) -> Result<VerifyReport> {
    let gens: Vec<Found<S::Node>> = match &opts.generation {
        Some(g) => vec![super::pick(src, Some(g))?],
        None => super::generations(src)?,
    };
    if gens.is_empty() {
        return Err(OfflineError::NoGenerations);
    }
    let mut report = VerifyReport::default();
    let seen: Mutex<HashMap<u64, [u8; 32]>> = Mutex::new(HashMap::new());
    for g in &gens {
        verify_one(src, g, opts, &seen, &mut report);
        report.generations.push(g.generation.name.clone());
    }
    Ok(report)
}

struct Job<N> {
    node: N,
    shown: PathBuf,
    expected: [u8; 32],
    size: u64,
}

/// Depth-first walk in name order (the order of `metadata.tsv`).
struct TreeWalk<'a, S: Source> {
    src: &'a S,
    /// (path of the directory, its entries not yet visited, in reverse order)
    stack: Vec<(PathBuf, super::source::Entries<S::Node>)>,
    /// Directories already entered: a hostile disk can link one into itself.
    entered: std::collections::HashSet<u64>,
}

enum Visit<N> {
    Entry { rel: PathBuf, node: N },
    Bad { rel: PathBuf, detail: String },
}

impl<S: Source> TreeWalk<'_, S> {
    fn push(&mut self, rel: PathBuf, dir: &S::Node) -> std::result::Result<(), String> {
        let mut entries = self.src.list(dir).map_err(|e| e.to_string())?;
        entries.reverse();
        self.stack.push((rel, entries));
        Ok(())
    }
}

impl<S: Source> Iterator for TreeWalk<'_, S> {
    type Item = Visit<S::Node>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (dir, entries) = self.stack.last_mut()?;
            let Some((name, node)) = entries.pop() else {
                self.stack.pop();
                continue;
            };
            let rel = dir.join(std::ffi::OsStr::from_bytes(&name));
            let node = match node {
                Ok(n) => n,
                Err(e) => return Some(Visit::Bad { rel, detail: e.to_string() }),
            };
            let st = self.src.stat(&node);
            if st.kind == FileKind::Dir {
                if !self.entered.insert(st.ino) {
                    return Some(Visit::Bad { rel, detail: "directory linked more than once (a loop on the backup disk); not entered".into() });
                }
                if let Err(detail) = self.push(rel.clone(), &node) {
                    return Some(Visit::Bad { rel, detail });
                }
            }
            return Some(Visit::Entry { rel, node });
        }
    }
}

fn shown(rel: &Path) -> PathBuf {
    let mut p = PathBuf::from(TREE_DIR);
    p.push(rel);
    p
}

fn verify_one<S: Source>(src: &S, g: &Found<S::Node>, opts: &VerifyOptions, seen: &Mutex<HashMap<u64, [u8; 32]>>, report: &mut VerifyReport) {
    let name = g.generation.name.clone();
    let problem = |kind, path: PathBuf, detail: String| Problem { generation: name.clone(), kind, path, detail };
    let problems: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let add = |kind, path, detail| problems.lock().unwrap_or_else(|e| e.into_inner()).push(problem(kind, path, detail));
    match src.child(&g.node, MANIFEST_FILE.as_bytes()) {
        Ok(Some(n)) if src.stat(&n).kind == FileKind::File => {}
        _ => add(ProblemKind::Missing, PathBuf::from(MANIFEST_FILE), String::new()),
    }
    let records = match super::records(src, g) {
        Ok(r) => r,
        Err(e) => {
            add(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string());
            report.problems.extend(problems.into_inner().unwrap_or_default());
            return;
        }
    };
    let mut walk = TreeWalk { src, stack: Vec::new(), entered: Default::default() };
    match super::tree(src, g) {
        Ok(t) => {
            if let Err(detail) = walk.push(PathBuf::new(), &t) {
                add(ProblemKind::Damaged, PathBuf::from(TREE_DIR), detail);
            }
        }
        Err(e) => add(ProblemKind::Damaged, PathBuf::from(TREE_DIR), e.to_string()),
    }

    let read_bytes = Mutex::new(0u64);
    let (tx, rx) = sync_channel::<Vec<Job<S::Node>>>(8);
    let rx = Arc::new(Mutex::new(rx));
    let (mut files, mut bytes) = (0u64, 0u64);
    std::thread::scope(|scope| {
        if !opts.quick {
            for _ in 0..opts.threads.max(1) {
                let rx = Arc::clone(&rx);
                let (add, read_bytes) = (&add, &read_bytes);
                scope.spawn(move || {
                    let mut buf = vec![0u8; READ_CHUNK];
                    loop {
                        let Ok(jobs) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else { return };
                        let mut read = 0;
                        for job in jobs {
                            match check_content(src, &job, seen, &mut buf) {
                                Ok(n) => read += n,
                                Err(detail) => add(ProblemKind::Damaged, job.shown, detail),
                            }
                        }
                        *read_bytes.lock().unwrap_or_else(|e| e.into_inner()) += read;
                    }
                });
            }
        }
        drop(rx);
        let mut batch = Vec::with_capacity(64);
        let mut records = records.peekable();
        let mut walk = walk.by_ref().peekable();
        loop {
            if let Some(Err(_)) = records.peek() {
                if let Some(Err(e)) = records.next() {
                    add(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string());
                }
                break; // what follows an unreadable record cannot be trusted
            }
            if let Some(Visit::Bad { .. }) = walk.peek() {
                if let Some(Visit::Bad { rel, detail }) = walk.next() {
                    add(ProblemKind::Damaged, shown(&rel), detail);
                }
                continue;
            }
            let order = match (records.peek(), walk.peek()) {
                (None, None) => break,
                (Some(Ok(r)), Some(Visit::Entry { rel, .. })) => r.path.as_path().cmp(rel),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => break,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(Ok(r)) = records.next() else { break };
                    if !r.path.as_os_str().is_empty() {
                        add(ProblemKind::Missing, shown(&r.path), String::new());
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some(Visit::Entry { rel, .. }) = walk.next() {
                        add(ProblemKind::Unexpected, shown(&rel), String::new());
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (Some(Ok(r)), Some(Visit::Entry { node, .. })) = (records.next(), walk.next()) else { break };
                    let st = src.stat(&node);
                    if let Some(detail) = compare(src, &r, &node, &st, opts.quick) {
                        add(ProblemKind::Damaged, shown(&r.path), detail);
                        continue;
                    }
                    if r.kind.has_content() {
                        files += 1;
                        bytes += r.size;
                        if opts.quick {
                            continue;
                        }
                        batch.push(Job { node, shown: shown(&r.path), expected: r.hash.unwrap_or_default(), size: r.size });
                        if batch.len() >= 64 && tx.send(std::mem::take(&mut batch)).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
    });
    let mut found = problems.into_inner().unwrap_or_default();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    report.files += files;
    report.bytes += bytes;
    report.bytes_read += read_bytes.into_inner().unwrap_or(0);
    report.problems.extend(found);
}

/// Hashes a file's content unless this inode was already found good with the same hash.
fn check_content<S: Source>(src: &S, job: &Job<S::Node>, seen: &Mutex<HashMap<u64, [u8; 32]>>, buf: &mut [u8]) -> std::result::Result<u64, String> {
    let st = src.stat(&job.node);
    if st.size != job.size {
        return Err(format!("size {}, expected {}", st.size, job.size));
    }
    if seen.lock().unwrap_or_else(|e| e.into_inner()).get(&st.ino) == Some(&job.expected) {
        return Ok(0);
    }
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    while total < job.size {
        let n = src.read_at(&job.node, total, buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if hasher.finalize().as_bytes() != &job.expected {
        return Err("content does not match its checksum".into());
    }
    seen.lock().unwrap_or_else(|e| e.into_inner()).insert(st.ino, job.expected);
    Ok(total)
}

fn compare<S: Source>(src: &S, r: &Record, node: &S::Node, st: &Stat, quick: bool) -> Option<String> {
    let type_ok = r.kind.is(st.kind);
    if !type_ok {
        return Some("type changed".into());
    }
    match r.kind {
        RKind::File | RKind::HardLink if quick => {
            if st.size != r.size {
                return Some(format!("size {}, expected {}", st.size, r.size));
            }
            if st.mtime != (r.mtime_sec, r.mtime_nsec) {
                return Some("modification time changed".into());
            }
            None
        }
        RKind::Symlink => match src.read_link(node) {
            Ok(t) if r.target.as_deref() == Some(t.as_slice()) => None,
            Ok(_) => Some("symlink target changed".into()),
            Err(e) => Some(format!("cannot read the symlink: {e}")),
        },
        _ => None,
    }
}
