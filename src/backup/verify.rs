//! `offdisk verify`: re-reads generations and names every missing, damaged or unexpected
//! file by generation and path.
//!
//! The generation's tree is walked in the same order as its `metadata.tsv`, so the two are
//! merged in one streaming pass; content hashing runs on a few worker threads. A file shared
//! (hard-linked) by several generations is read once per run.

use super::record::{Kind, MetadataReader, Record, MANIFEST_FILE, METADATA_FILE, TREE_DIR};
use super::walk::{Source, WalkEntry, WalkOptions, Walker};
use super::{generation::Generation, BackupError};
use serde::Serialize;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    let gens: Vec<Generation> = match &opts.generation {
        Some(g) => vec![super::pick_generation(&opts.root, Some(g))?],
        None => super::generation::list(&opts.root).map_err(|error| BackupError::Io { path: opts.root.clone(), error })?,
    };
    if gens.is_empty() {
        return Err(BackupError::NoGenerations(opts.root.clone()));
    }
    let mut report = VerifyReport::default();
    let seen: Mutex<HashMap<(u64, u64), [u8; 32]>> = Mutex::new(HashMap::new());
    for g in &gens {
        verify_one(g, opts, &seen, &mut report);
        report.generations.push(g.name.clone());
    }
    Ok(report)
}

struct HashJob {
    path: PathBuf,
    shown: PathBuf,
    expected: [u8; 32],
    size: u64,
    ino: (u64, u64),
}

fn verify_one(g: &Generation, opts: &VerifyOptions, seen: &Mutex<HashMap<(u64, u64), [u8; 32]>>, report: &mut VerifyReport) {
    let problem = |kind, path: PathBuf, detail: String| Problem { generation: g.name.clone(), kind, path, detail };
    if !g.path.join(MANIFEST_FILE).is_file() {
        report.problems.push(problem(ProblemKind::Missing, PathBuf::from(MANIFEST_FILE), String::new()));
    }
    let records = match MetadataReader::open(&g.path.join(METADATA_FILE)) {
        Ok(r) => r,
        Err(e) => {
            report.problems.push(problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string()));
            return;
        }
    };
    let tree = g.path.join(TREE_DIR);
    let walker = Walker::new(vec![Source { abs: tree.clone(), rel: PathBuf::new() }], WalkOptions::default());
    let shown = |rel: &Path| -> PathBuf {
        let mut p = PathBuf::from(TREE_DIR);
        p.push(rel);
        p
    };

    let problems: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let read_bytes = Mutex::new(0u64);
    let (tx, rx) = sync_channel::<HashJob>(256);
    let rx = Arc::new(Mutex::new(rx));
    std::thread::scope(|scope| {
        if !opts.quick {
            for _ in 0..opts.threads.max(1) {
                let rx = Arc::clone(&rx);
                let (problems, read_bytes) = (&problems, &read_bytes);
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    loop {
                        let job = match rx.lock().unwrap().recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        let detail = match super::copy::hash_file(&job.path, &mut buf) {
                            Ok((h, n)) => {
                                *read_bytes.lock().unwrap() += n;
                                if h == job.expected && n == job.size {
                                    seen.lock().unwrap().insert(job.ino, h);
                                    continue;
                                }
                                if n != job.size {
                                    format!("size {n}, expected {}", job.size)
                                } else {
                                    "content does not match its checksum".to_string()
                                }
                            }
                            Err(e) => format!("cannot read: {e}"),
                        };
                        problems.lock().unwrap().push(problem(ProblemKind::Damaged, job.shown, detail));
                    }
                });
            }
        }
        drop(rx);

        let mut records = records.peekable();
        let mut walk = walker.filter(|e| !matches!(e, Ok(e) if e.rel.as_os_str().is_empty())).peekable();
        loop {
            // Unreadable records end the comparison: what follows cannot be trusted.
            if let Some(Err(_)) = records.peek() {
                if let Some(Err(e)) = records.next() {
                    problems.lock().unwrap().push(problem(ProblemKind::Damaged, PathBuf::from(METADATA_FILE), e.to_string()));
                }
                break;
            }
            if let Some(Err(_)) = walk.peek() {
                if let Some(Err(w)) = walk.next() {
                    let rel = w.path.strip_prefix(&tree).unwrap_or(&w.path).to_path_buf();
                    problems.lock().unwrap().push(problem(ProblemKind::Damaged, shown(&rel), w.error.to_string()));
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
                        let ino = (e.meta.dev(), e.meta.ino());
                        let expected = r.hash.unwrap_or_default();
                        if opts.quick || seen.lock().unwrap().get(&ino) == Some(&expected) {
                            continue;
                        }
                        let job = HashJob { path: e.src, shown: shown(&r.path), expected, size: r.size, ino };
                        if tx.send(job).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        drop(tx);
    });
    let mut found = problems.into_inner().unwrap();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    report.bytes_read += read_bytes.into_inner().unwrap();
    report.problems.extend(found);
}

/// Metadata checks that need no reading: type, size, mtime, symlink target.
fn compare(r: &Record, e: &WalkEntry, quick: bool) -> Option<String> {
    let ft = e.meta.file_type();
    let type_ok = match r.kind {
        Kind::File | Kind::HardLink => ft.is_file(),
        Kind::Dir => ft.is_dir(),
        Kind::Symlink => ft.is_symlink(),
        Kind::Fifo => ft.is_fifo(),
        Kind::CharDev => ft.is_char_device(),
        Kind::BlockDev => ft.is_block_device(),
        Kind::Socket => ft.is_socket(),
    };
    if !type_ok {
        return Some("type changed".into());
    }
    match r.kind {
        Kind::File | Kind::HardLink => {
            if e.meta.len() != r.size {
                return Some(format!("size {}, expected {}", e.meta.len(), r.size));
            }
            // Times are a quick signal only; a full check judges by content.
            if quick && (e.meta.mtime() != r.mtime_sec || e.meta.mtime_nsec() != r.mtime_nsec as i64) {
                return Some("modification time changed".into());
            }
            None
        }
        Kind::Symlink => {
            let target = std::fs::read_link(&e.src).ok()?;
            (r.target.as_deref() != Some(target.as_os_str().as_bytes())).then(|| "symlink target changed".into())
        }
        _ => None,
    }
}
