//! `offdisk verify --from`: every generation's tree against its `metadata.tsv`, through a
//! [`Source`]. The same checks and report as the host verify: missing, unexpected and
//! damaged entries by generation and path; contents hashed on worker threads; generations
//! walked in lockstep, so a file shared by several generations (one inode at the same path)
//! is read once with no per-file state kept (see `crate::backup::verify`).

use super::source::{FileKind, Source, Stat};
use super::{Found, OfflineError, Result};
use crate::backup::record::{Kind as RKind, Record, MANIFEST_FILE, METADATA_FILE, TREE_DIR};
use crate::backup::verify::{by_generation, read_in_lockstep, LockstepFile, Problem, ProblemKind, VerifyReport};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
    for window in gens.chunks(WINDOW) {
        for (g, problems) in window.iter().zip(verify_window(src, window, opts, &mut report)) {
            report.problems.extend(problems);
            report.generations.push(g.generation.name.clone());
        }
    }
    Ok(report)
}

/// Generations verified together: each open walk holds its metadata reader (1 MiB of
/// buffer) and a listing per directory level, so few at a time. A file shared by
/// generations of one window is read once; of different windows, once per window.
const WINDOW: usize = 8;

/// A file to read in one generation of a window.
struct Member<N> {
    index: usize,
    node: N,
    rel: PathBuf,
    expected: [u8; 32],
    size: u64,
}

type Records<'a> = Box<dyn Iterator<Item = std::result::Result<Record, crate::backup::record::RecordError>> + 'a>;

/// One generation of a window: its metadata merged with its tree walk, yielding the files
/// whose contents need reading, in path order.
struct Cursor<'a, S: Source> {
    src: &'a S,
    index: usize,
    name: &'a str,
    records: std::iter::Peekable<Records<'a>>,
    walk: std::iter::Peekable<TreeWalk<'a, S>>,
    problems: Vec<Problem>,
    files: u64,
    bytes: u64,
    quick: bool,
    ended: bool,
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

impl<S: Source> Cursor<'_, S> {
    fn problem(&mut self, kind: ProblemKind, path: PathBuf, detail: String) {
        self.problems.push(Problem { generation: self.name.to_string(), kind, path, detail, device_error: false });
    }

    /// Advances to the next file whose contents need reading (none in quick mode), noting
    /// every missing, unexpected or damaged entry on the way.
    fn next_file(&mut self) -> Option<Member<S::Node>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(Err(_)) = self.records.peek() {
                if let Some(Err(e)) = self.records.next() {
                    self.problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string());
                }
                // What follows an unreadable record cannot be trusted: this generation ends.
                self.ended = true;
                return None;
            }
            if let Some(Visit::Bad { .. }) = self.walk.peek() {
                if let Some(Visit::Bad { rel, detail }) = self.walk.next() {
                    self.problem(ProblemKind::Damaged, shown(&rel), detail);
                }
                continue;
            }
            let order = match (self.records.peek(), self.walk.peek()) {
                (None, None) => return None,
                (Some(Ok(r)), Some(Visit::Entry { rel, .. })) => r.path.as_path().cmp(rel),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                _ => return None,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(Ok(r)) = self.records.next() else { return None };
                    if !r.path.as_os_str().is_empty() {
                        self.problem(ProblemKind::Missing, shown(&r.path), String::new());
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some(Visit::Entry { rel, .. }) = self.walk.next() {
                        self.problem(ProblemKind::Unexpected, shown(&rel), String::new());
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (Some(Ok(r)), Some(Visit::Entry { node, .. })) = (self.records.next(), self.walk.next()) else { return None };
                    let st = self.src.stat(&node);
                    if let Some(detail) = compare(self.src, &r, &node, &st, self.quick) {
                        self.problem(ProblemKind::Damaged, shown(&r.path), detail);
                        continue;
                    }
                    if r.kind.has_content() {
                        self.files += 1;
                        self.bytes += r.size;
                        if self.quick {
                            continue;
                        }
                        return Some(Member { index: self.index, node, rel: r.path, expected: r.hash.unwrap_or_default(), size: r.size });
                    }
                }
            }
        }
    }
}

/// Opens one generation for [`Cursor`]; what makes it unreadable as a whole goes to `head`.
fn open_cursor<'a, S: Source>(src: &'a S, g: &'a Found<S::Node>, index: usize, quick: bool, head: &mut Vec<Problem>) -> Option<Cursor<'a, S>> {
    let name = &g.generation.name;
    let problem = |kind, path: PathBuf, detail: String| Problem { generation: name.clone(), kind, path, detail, device_error: false };
    match src.child(&g.node, MANIFEST_FILE.as_bytes()) {
        Ok(Some(n)) if src.stat(&n).kind == FileKind::File => {}
        _ => head.push(problem(ProblemKind::Missing, PathBuf::from(MANIFEST_FILE), String::new())),
    }
    let records: Records = match super::records(src, g) {
        Ok(r) => Box::new(r),
        Err(e) => {
            head.push(problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string()));
            return None;
        }
    };
    let mut walk = TreeWalk { src, stack: Vec::new(), entered: Default::default() };
    match super::tree(src, g) {
        Ok(t) => {
            if let Err(detail) = walk.push(PathBuf::new(), &t) {
                head.push(problem(ProblemKind::Damaged, PathBuf::from(TREE_DIR), detail));
            }
        }
        Err(e) => head.push(problem(ProblemKind::Damaged, PathBuf::from(TREE_DIR), e.to_string())),
    }
    Some(Cursor { src, index, name, records: records.peekable(), walk: walk.peekable(), problems: Vec::new(), files: 0, bytes: 0, quick, ended: false })
}

/// The generations of one window in lockstep, as the host verify does: a path held by
/// several generations is one job; a file whose inode (as the filesystem reader found it
/// for that entry), expected hash and size equal those of one already read in the job takes
/// its verdict, so a shared file is read once and a damaged one named in each generation.
fn verify_window<S: Source>(src: &S, gens: &[Found<S::Node>], opts: &VerifyOptions, report: &mut VerifyReport) -> Vec<Vec<Problem>> {
    let mut heads: Vec<Vec<Problem>> = vec![Vec::new(); gens.len()];
    let mut cursors: Vec<Cursor<S>> = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        if let Some(c) = open_cursor(src, g, i, opts.quick, &mut heads[i]) {
            cursors.push(c);
        }
    }
    let workers = if opts.quick { 0 } else { opts.threads.max(1) };
    let (read, damaged) = read_in_lockstep(
        cursors.len(),
        |i| cursors[i].next_file(),
        || false,
        workers,
        || vec![0u8; READ_CHUNK],
        |job, buf, found| check_group(src, job, gens, buf, found),
    );
    report.bytes_read += read;
    let walked = cursors.into_iter().map(|c| {
        report.files += c.files;
        report.bytes += c.bytes;
        (c.index, c.problems)
    });
    by_generation(heads, walked, damaged)
}

impl<N: Send> LockstepFile for Member<N> {
    fn generation_index(&self) -> usize {
        self.index
    }
    fn rel(&self) -> &Path {
        &self.rel
    }
}

/// Checks one path's files (one per generation holding it); damaged ones go to `found`.
/// Returns the bytes read.
fn check_group<S: Source>(src: &S, job: Vec<Member<S::Node>>, gens: &[Found<S::Node>], buf: &mut [u8], found: &mut Vec<(usize, Problem)>) -> u64 {
    let mut known: Vec<((u64, [u8; 32], u64), std::result::Result<(), String>)> = Vec::new();
    let mut read = 0;
    for m in job {
        let st = src.stat(&m.node);
        let verdict = if st.size != m.size {
            Err(format!("size {}, expected {}", st.size, m.size))
        } else {
            let id = (st.ino, m.expected, m.size);
            match known.iter().find(|(k, _)| *k == id) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = hash_node(src, &m, buf).map(|n| read += n);
                    known.push((id, v.clone()));
                    v
                }
            }
        };
        if let Err(detail) = verdict {
            let generation = gens[m.index].generation.name.clone();
            found.push((m.index, Problem { generation, kind: ProblemKind::Damaged, path: shown(&m.rel), detail, device_error: false }));
        }
    }
    read
}

fn hash_node<S: Source>(src: &S, m: &Member<S::Node>, buf: &mut [u8]) -> std::result::Result<u64, String> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    while total < m.size {
        let n = match src.read_at(&m.node, total, buf) {
            Ok(n) => n,
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if hasher.finalize().as_bytes() != &m.expected {
        return Err("content does not match its checksum".into());
    }
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
