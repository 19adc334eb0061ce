//! The backup engine: dated generations as plain trees of files on the backup disk.
//!
//! A backup root (the `--target` directory, or the mounted disk) holds
//! `generations/<YYYY-MM-DDTHHMMSSZ>/` directories, each with `tree/` (the sources under
//! their absolute paths, readable with `ls` and `cp -a`), `metadata.tsv` (versioned record
//! of every entry with BLAKE3 of every file), `manifest.b3` (the same hashes as
//! `b3sum --check` lines) and `info.json` (counts). See `man/offdisk-format.5`.
//!
//! Life cycle: a run writes into `.partial-<name>/`, links files unchanged since the
//! previous generation, copies the rest (hashing in the same pass), applies each
//! directory's metadata on its handle once its children are written, checks the shrink
//! guard, syncs the filesystem, and only then renames the partial directory to its final
//! name. All of it goes through [`crate::fsaccess`]: nothing on either side is followed. Retention pruning runs after that. Each step is a pure decision followed by its
//! application: [`retention::plan`] decides what to prune, [`engine`] decides link or copy
//! per file before a worker does it.

pub mod copy;
pub mod dest;
pub mod engine;
pub mod generation;
pub mod prune;
pub mod record;
pub mod restore;
pub mod retention;
pub mod verify;
pub mod walk;

use crate::error::{exit, Diagnose};
use crate::fsaccess::{state, Dir};
use generation::{Generation, Root, RootError, PARTIAL_PREFIX};
use record::{Record, INFO_FILE, MANIFEST_FILE, METADATA_FILE, TREE_DIR};
use retention::Retention;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("another offdisk run is using {0}")]
    Busy(PathBuf),
    #[error("no space left on {root} for a new generation ({detail}); every complete generation was left intact")]
    NoSpace { root: PathBuf, detail: String },
    #[error("no generation named {0:?}")]
    NoSuchGeneration(String),
    #[error("no complete generation in {0}")]
    NoGenerations(PathBuf),
    #[error("generation {generation}: {error}")]
    Metadata { generation: String, error: record::RecordError },
    #[error("source {path}: {error}")]
    Source { path: PathBuf, error: io::Error },
    #[error("{}", restore::not_in_generation(path, generation))]
    NotInGeneration { path: PathBuf, generation: String },
    #[error("{}", restore::through_symlink(path, link))]
    ThroughSymlink { path: PathBuf, link: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Root(#[from] RootError),
    /// Something on the backup disk is not what offdisk makes (a symlink, FIFO or device
    /// where a file or directory belongs): refused, nothing followed.
    #[error("{}: {why}", .path.display())]
    Refused { path: PathBuf, why: String },
    /// The shrink guard refused the run; no generation was made and nothing was pruned.
    #[error("source {name} {detail}; no generation was made and nothing was pruned")]
    Shrunk { name: String, detail: String },
    #[error("stopped before the run was complete; every complete generation was left intact")]
    Stopped,
    /// Verify met the errors of a disk that went away or fails (EIO, ENODEV, ENXIO): the same
    /// errnos either way, so the words name both and the hint says how to tell them apart.
    #[error("the disk stopped answering during verify (removed, or failing); nothing on it was judged (at {}: {first})", .root.display())]
    DiskGone { root: PathBuf, first: String },
}

impl Diagnose for BackupError {
    fn exit_code(&self) -> i32 {
        match self {
            BackupError::Busy(_) => exit::BUSY,
            BackupError::Io { .. } | BackupError::NoSpace { .. } | BackupError::Refused { .. } | BackupError::DiskGone { .. } => exit::DEVICE,
            BackupError::Root(RootError::Unsafe { .. } | RootError::Io { .. }) => exit::DEVICE,
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            BackupError::Busy(_) => Some("wait for the other run to finish".into()),
            BackupError::NoSpace { .. } => Some(
                "lower the retention (--keep-*) so more old generations are pruned, exclude more, or use a bigger disk".into(),
            ),
            BackupError::NoSuchGeneration(_) => Some("`offdisk generations` lists them".into()),
            BackupError::ThroughSymlink { .. } => Some(restore::THROUGH_SYMLINK_HINT.into()),
            BackupError::Shrunk { .. } => Some(
                "check that the source is mounted and complete; if the loss is intended, run again with --allow-shrink (or set allow_shrink = true for the disk)".into(),
            ),
            BackupError::Metadata { .. } => Some("`offdisk verify` reports what else is damaged".into()),
            BackupError::DiskGone { .. } => Some(
                "plug the disk in again and run the verify once more; if it was not removed, it cannot be read (the kernel log, `dmesg`, says why)".into(),
            ),
            BackupError::Root(RootError::Missing(_) | RootError::NotADirectory(_)) => {
                Some("check the path; offdisk makes only generations/ inside an existing directory".into())
            }
            BackupError::Root(RootError::NoGenerationsDir(_)) => {
                Some("check the path, or make a first backup there with `offdisk backup --target`".into())
            }
            BackupError::Root(RootError::Unsafe { .. }) | BackupError::Refused { .. } => Some(
                "this is not what offdisk writes there; the disk may have been tampered with: inspect it before using it".into(),
            ),
            _ => None,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |error| BackupError::Io { path: path.to_path_buf(), error }
}

/// `info.json`: counts for one generation (format version 2: adds `incomplete`,
/// `source_totals` and `rechecked_files`; version 1 files read with those empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GenerationInfo {
    pub format: u32,
    pub name: String,
    /// Unix seconds (UTC).
    pub time: i64,
    pub created: String,
    pub previous: Option<String>,
    pub sources: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub copied_files: u64,
    pub linked_files: u64,
    pub warnings: u64,
    pub seconds: f64,
    /// Files re-hashed because their ctime, inode or device changed.
    #[serde(default)]
    pub rechecked_files: u64,
    /// Set when some entries are not in the generation (see [`NOT_BACKED_UP_FILE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
    /// Files and bytes per source, for the shrink guard of the next run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_totals: Vec<SourceTotal>,
}

/// Written in `info.json` of a generation that does not hold everything its sources had.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Incomplete {
    /// Entries that could not be backed up (permission denied, I/O error, a name the
    /// target cannot hold, ...).
    pub not_backed_up: u64,
    /// Entries that vanished or were replaced while the run read them.
    pub vanished: u64,
    /// The first ten paths; all of them are in [`NOT_BACKED_UP_FILE`].
    pub paths: Vec<String>,
}

/// One source's share of a generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceTotal {
    pub source: String,
    pub files: u64,
    pub bytes: u64,
}

/// In a generation directory: every entry left out, one a line (`not-backed-up` or
/// `vanished`, the escaped path, the reason, tab-separated).
pub const NOT_BACKED_UP_FILE: &str = "not-backed-up.tsv";

/// The shrink guard: a run whose source lost too much since the previous complete
/// generation fails instead of becoming the newest generation (and so never causes
/// retention to prune the generation that still holds the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShrinkGuard {
    /// Largest loss accepted, in percent of a source's files or of its bytes.
    pub max_loss_percent: u32,
    /// Accept any loss (`--allow-shrink`).
    pub allow: bool,
}

impl Default for ShrinkGuard {
    fn default() -> Self {
        ShrinkGuard { max_loss_percent: DEFAULT_SHRINK_PERCENT, allow: false }
    }
}

pub const DEFAULT_SHRINK_PERCENT: u32 = 50;

/// Pure: why source totals `now` are refused against `before` under `guard`, or `None`.
pub fn shrink_refusal(before: &SourceTotal, now: &SourceTotal, guard: &ShrinkGuard) -> Option<String> {
    if guard.allow || before.files == 0 {
        return None;
    }
    if now.files == 0 {
        return Some(format!("is empty now but held {} files ({}) in the previous generation", before.files, human_bytes(before.bytes)));
    }
    let lost = |b: u64, n: u64| if n >= b || b == 0 { 0 } else { ((b - n) as u128 * 100 / b as u128) as u32 };
    let (lf, lb) = (lost(before.files, now.files), lost(before.bytes, now.bytes));
    if lf > guard.max_loss_percent || lb > guard.max_loss_percent {
        return Some(format!(
            "has {} files ({}) now against {} files ({}) in the previous generation: {lf}% of its files and {lb}% of its bytes gone, more than the {}% allowed",
            now.files,
            human_bytes(now.bytes),
            before.files,
            human_bytes(before.bytes),
            guard.max_loss_percent
        ));
    }
    None
}

/// Amounts of file data as people read them, in binary units: `512 B`, `4.9 KiB`, `1.2 GiB`
/// (the one formatter for backup, verify, restore and dock; disk sizes are decimal, see
/// `disk::sysfs::human_size`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Largest `info.json` accepted.
pub const MAX_INFO_BYTES: u64 = 1 << 20;

/// Parses `info.json` (pure: for any reader of a generation, on this host or not).
pub fn parse_info(bytes: &[u8]) -> Option<GenerationInfo> {
    serde_json::from_slice(bytes).ok()
}

/// The `info.json` of generation `name` in the open `generations/` (None if it is missing,
/// unreadable, not a regular file or too big).
pub fn read_info_in(gens: &Dir, name: &str) -> Option<GenerationInfo> {
    let g = gens.open_dir(OsStr::new(name)).ok()?;
    parse_info(&state::read(&g, OsStr::new(INFO_FILE), MAX_INFO_BYTES).ok()?)
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The backup root that holds `generations/`.
    pub root: PathBuf,
    pub sources: Vec<PathBuf>,
    pub walk: walk::WalkOptions,
    pub retention: Retention,
    pub threads: usize,
    /// The generation's time (defaults to now); tests use it to simulate days.
    pub time: Option<i64>,
    /// Set from outside (a signal) to stop at the next safe point.
    pub stop: Stop,
    pub shrink: ShrinkGuard,
}

impl BackupSummary {
    /// The run's exit status: [`exit::PARTIAL`] when entries could not be backed up,
    /// else [`exit::VANISHED`] when some vanished while being read, else 0.
    pub fn exit_code(&self) -> i32 {
        if !self.not_backed_up.is_empty() {
            exit::PARTIAL
        } else if !self.vanished.is_empty() {
            exit::VANISHED
        } else {
            exit::OK
        }
    }
}

impl BackupOptions {
    /// `sources` into `root` with the defaults: no excludes, one filesystem, no retention.
    pub fn new(root: &Path, sources: &[PathBuf]) -> BackupOptions {
        BackupOptions {
            root: root.to_path_buf(),
            sources: sources.to_vec(),
            walk: walk::WalkOptions { one_file_system: true, ..Default::default() },
            retention: Retention::default(),
            threads: default_threads(),
            time: None,
            stop: Stop::default(),
            shrink: ShrinkGuard::default(),
        }
    }
}

/// A request to stop a running backup, verify or restore at its next safe point: between
/// entries, before a generation is made complete, between prunes. Cheap to clone; set it
/// from another thread (dock's signal thread).
#[derive(Debug, Clone, Default)]
pub struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn check(&self) -> Result<(), BackupError> {
        if self.requested() {
            Err(BackupError::Stopped)
        } else {
            Ok(())
        }
    }
}

/// The phases of a backup run, as [`EngineEvent::Step`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Walking the sources, linking and copying files (directory metadata is applied as
    /// each directory is finished).
    Copying,
    /// The shrink guard, then making everything durable before the generation is complete.
    Syncing,
    /// Removing generations the retention policy no longer keeps.
    Pruning,
}

/// What the engine reports while it runs, in order; `crate::job` turns these into the
/// typed events its observers see. Borrowed, so reporting costs nothing when unobserved.
#[derive(Debug)]
pub enum EngineEvent<'a> {
    /// A leftover of an interrupted run was removed before starting.
    Cleaned(&'a Path),
    Step(Step),
    /// Running totals, every few hundred entries and once at the end of the copy.
    Stats(&'a engine::Stats),
    /// A generation was pruned (by retention, or to make room when the disk was full).
    Pruned(&'a str),
}

#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub info: GenerationInfo,
    pub path: PathBuf,
    pub warnings: Vec<String>,
    /// Entries not in the generation, all of them (the info holds the first ten).
    pub not_backed_up: Vec<engine::MissedEntry>,
    pub vanished: Vec<engine::MissedEntry>,
    pub pruned: Vec<String>,
    pub prune_seconds: f64,
    /// Leftovers of interrupted runs removed first.
    pub cleaned: Vec<PathBuf>,
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
}

/// Holds the root's lock file for one run.
pub struct RootLock {
    _lock: nix::fcntl::Flock<File>,
}

pub fn lock_root(root: &Root) -> Result<RootLock, BackupError> {
    let path = root.path.join(generation::LOCK_FILE);
    let file = match state::open_lock(&root.dir, OsStr::new(generation::LOCK_FILE)) {
        Ok(f) => f,
        Err(state::StateError::Io(error)) => return Err(BackupError::Io { path, error }),
        Err(e) => return Err(BackupError::Refused { path, why: e.to_string() }),
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(RootLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(BackupError::Busy(root.path.clone())),
        Err((_, e)) => Err(BackupError::Io { path, error: e.into() }),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Makes one new generation, then prunes by the retention policy.
pub fn backup(opts: &BackupOptions) -> Result<BackupSummary, BackupError> {
    backup_observed(opts, &mut |_| {})
}

/// [`backup`], reporting each step to `on` as it happens.
pub fn backup_observed(opts: &BackupOptions, on: &mut dyn FnMut(EngineEvent<'_>)) -> Result<BackupSummary, BackupError> {
    if opts.sources.is_empty() {
        return Err(BackupError::Invalid("no sources given".into()));
    }
    let root = Root::open(&opts.root)?;
    crate::fsaccess::raise_fd_limit();
    let gen_dir = root.generations_path();
    let gens_dir = root.generations_or_create()?;
    let _lock = lock_root(&root)?;
    let cleaned = prune::clean_leftovers(&gens_dir, &gen_dir).map_err(io_at(&gen_dir))?;
    for c in &cleaned {
        on(EngineEvent::Cleaned(c));
    }

    let mut sources = Vec::new();
    for s in &opts.sources {
        crate::fsaccess::lstat_path(s).map_err(|error| BackupError::Source { path: s.clone(), error })?;
        sources.push(walk::Source::host(s).map_err(|error| BackupError::Source { path: s.clone(), error })?);
    }
    let sources = walk::normalise_sources(sources);
    let mut walk_opts = opts.walk.clone();
    // Never back up the backup itself.
    let root_meta = root.dir.meta().map_err(io_at(&opts.root))?;
    walk_opts.skip.push((root_meta.dev, root_meta.ino));
    let same_fs_warnings: Vec<String> = opts
        .sources
        .iter()
        .filter(|s| walk::source_meta(s).is_ok_and(|m| m.dev == root_meta.dev))
        .map(|s| format!("{}: this backup is on the same disk as its data (the target is on the same filesystem as this source)", s.display()))
        .collect();

    let time = opts.time.unwrap_or_else(now);
    let list = || generation::list_in(&gens_dir, &gen_dir).map_err(io_at(&gen_dir));
    let mut gens = list()?;
    let mut pruned = Vec::new();
    let mut prune_seconds = 0.0;
    let made = match make_generation(opts, &gens_dir, &sources, &walk_opts, &gens, time, on) {
        Err(Attempt::NoSpace(detail)) => {
            // Prune what the policy would prune once the new generation exists, then retry.
            let mut with_new = gens.clone();
            let (name, t, seq) = generation::next_name(&gens, time);
            with_new.push(Generation { name, path: PathBuf::new(), time: t, seq });
            let doomed: Vec<_> = retention::plan(&with_new, &opts.retention)
                .into_iter()
                .filter(|d| d.keep.is_none())
                .filter_map(|d| gens.iter().find(|g| g.name == d.name).cloned())
                .collect();
            let newest = gens.last().map(|g| g.name.clone());
            let doomed: Vec<_> = doomed.into_iter().filter(|g| Some(&g.name) != newest.as_ref()).collect();
            if doomed.is_empty() {
                let free = free_bytes(&opts.root).map(|b| format!("; {} MiB free", b >> 20)).unwrap_or_default();
                return Err(BackupError::NoSpace { root: opts.root.clone(), detail: format!("{detail}{free}; the retention policy allows no pruning") });
            }
            let started = Instant::now();
            on(EngineEvent::Step(Step::Pruning));
            for g in &doomed {
                opts.stop.check()?;
                prune::prune_generation(&gens_dir, g).map_err(io_at(&g.path))?;
                on(EngineEvent::Pruned(&g.name));
                pruned.push(g.name.clone());
            }
            prune_seconds += started.elapsed().as_secs_f64();
            gens = list()?;
            match make_generation(opts, &gens_dir, &sources, &walk_opts, &gens, time, on) {
                Err(Attempt::NoSpace(detail)) => {
                    let free = free_bytes(&opts.root).map(|b| format!("; {} MiB free", b >> 20)).unwrap_or_default();
                    return Err(BackupError::NoSpace { root: opts.root.clone(), detail: format!("{detail}{free}; pruned {} by policy first", pruned.len()) })
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Ok(m) => m,
            }
        }
        Err(Attempt::Failed(e)) => return Err(e),
        Ok(m) => m,
    };
    let Made { info, path, mut warnings, not_backed_up, vanished } = made;
    warnings.splice(0..0, same_fs_warnings);

    // Retention runs only now that the new generation is complete and synced.
    let gens = list()?;
    let started = Instant::now();
    let doomed: Vec<_> = retention::plan(&gens, &opts.retention)
        .into_iter()
        .filter(|d| d.keep.is_none() && d.name != info.name)
        .filter_map(|d| gens.iter().find(|g| g.name == d.name))
        .collect();
    if !doomed.is_empty() {
        on(EngineEvent::Step(Step::Pruning));
    }
    for g in doomed {
        // The new generation is complete: stopping here only leaves more generations.
        if opts.stop.requested() {
            break;
        }
        prune::prune_generation(&gens_dir, g).map_err(io_at(&g.path))?;
        on(EngineEvent::Pruned(&g.name));
        pruned.push(g.name.clone());
    }
    prune_seconds += started.elapsed().as_secs_f64();
    Ok(BackupSummary { info, path, warnings, not_backed_up, vanished, pruned, prune_seconds, cleaned })
}

struct Made {
    info: GenerationInfo,
    path: PathBuf,
    warnings: Vec<String>,
    not_backed_up: Vec<engine::MissedEntry>,
    vanished: Vec<engine::MissedEntry>,
}

enum Attempt {
    NoSpace(String),
    Failed(BackupError),
}

impl From<BackupError> for Attempt {
    fn from(e: BackupError) -> Self {
        Attempt::Failed(e)
    }
}

struct Writers {
    metadata: BufWriter<File>,
    manifest: BufWriter<File>,
}

impl Writers {
    fn write(&mut self, r: &Record) -> io::Result<()> {
        self.metadata.write_all(r.to_line().as_bytes())?;
        if r.kind.has_content() {
            if let Some(line) = r.hash.as_ref().and_then(|h| record::manifest_line(h, &record::manifest_path(&r.path))) {
                self.manifest.write_all(line.as_bytes())?;
            }
        }
        Ok(())
    }
}

fn make_generation(
    opts: &BackupOptions,
    gens_dir: &Dir,
    sources: &[walk::Source],
    walk_opts: &walk::WalkOptions,
    gens: &[Generation],
    time: i64,
    on: &mut dyn FnMut(EngineEvent<'_>),
) -> Result<Made, Attempt> {
    let started = Instant::now();
    let gen_dir = generation::generations_dir(&opts.root);
    let (name, time, _) = generation::next_name(gens, time);
    let partial_name = format!("{PARTIAL_PREFIX}{name}");
    let partial = gen_dir.join(&partial_name);
    let final_path = gen_dir.join(&name);
    let no_space = engine::is_no_space;
    let fail = |path: &Path, e: io::Error| -> Attempt {
        if no_space(&e) {
            Attempt::NoSpace(format!("{}: {e}", path.display()))
        } else {
            Attempt::Failed(BackupError::Io { path: path.to_path_buf(), error: e })
        }
    };
    let tree = partial.join(TREE_DIR);
    gens_dir.create_dir(OsStr::new(&partial_name), 0o755).map_err(|e| fail(&partial, e))?;
    let result = (|| -> Result<(GenerationInfo, Vec<String>, engine::Stats), Attempt> {
        let pdir = gens_dir.open_dir(OsStr::new(&partial_name)).map_err(|e| fail(&partial, e))?;
        pdir.create_dir(OsStr::new(TREE_DIR), 0o755).map_err(|e| fail(&tree, e))?;
        let tree_dir = std::sync::Arc::new(pdir.open_dir(OsStr::new(TREE_DIR)).map_err(|e| fail(&tree, e))?);
        let create = |n: &str| -> Result<File, Attempt> { pdir.create_file(OsStr::new(n), 0o644).map_err(|e| fail(&partial.join(n), e)) };
        let (meta_file, manifest_file) = (create(METADATA_FILE)?, create(MANIFEST_FILE)?);
        let buffered = |f: &File| -> Result<BufWriter<File>, Attempt> {
            Ok(BufWriter::with_capacity(256 * 1024, f.try_clone().map_err(|e| fail(&partial, e))?))
        };
        let mut w = Writers { metadata: buffered(&meta_file)?, manifest: buffered(&manifest_file)? };
        record::write_header(&mut w.metadata).map_err(|e| fail(&partial, e))?;

        let mut warnings = Vec::new();
        let previous = match gens.last() {
            Some(g) => match engine::Previous::open(gens_dir, g) {
                Ok(p) => Some(p),
                Err(e) => {
                    warnings.push(format!("previous generation {}: {e}; copying everything", g.name));
                    None
                }
            },
            None => None,
        };
        // The previous generation's counts, for the shrink guard.
        let expected = gens.last().and_then(|g| read_info_in(gens_dir, &g.name));
        let walker = walk::Walker::new(sources.to_vec(), walk_opts.clone());
        let popts = engine::PipelineOptions {
            dst_root: std::sync::Arc::clone(&tree_dir),
            dst_shown: tree.clone(),
            threads: opts.threads,
            mode: engine::Mode::Backup,
            rules: dest::Rules::ALL,
            stop: opts.stop.clone(),
        };
        on(EngineEvent::Step(Step::Copying));
        let flusher = Flusher::start(gens_dir);
        let stats = engine::run(walker, previous, &popts, &mut |r| w.write(r), &mut |s| on(EngineEvent::Stats(s)));
        flusher.stop();
        let stats = match stats {
            Err(_) if opts.stop.requested() => return Err(Attempt::Failed(BackupError::Stopped)),
            Ok(s) => s,
            Err(e) if e.is_no_space() => return Err(Attempt::NoSpace(e.to_string())),
            Err(e) => return Err(Attempt::Failed(BackupError::Io { path: tree.clone(), error: io::Error::other(e.to_string()) })),
        };
        warnings.extend(stats.warnings.iter().cloned());
        for mut f in [w.metadata, w.manifest] {
            f.flush().map_err(|e| fail(&partial, e))?;
        }

        opts.stop.check()?;
        on(EngineEvent::Step(Step::Syncing));
        // Per-source totals, and the shrink guard against the previous complete generation.
        let source_totals: Vec<SourceTotal> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = stats.per_source.get(i).copied().unwrap_or_default();
                SourceTotal { source: s.abs.to_string_lossy().into_owned(), files: t.files, bytes: t.bytes }
            })
            .collect();
        if let Some(g) = gens.last() {
            let before = previous_totals(gens_dir, g, expected.as_ref(), sources);
            for (now, before) in source_totals.iter().zip(before) {
                if let Some(detail) = before.as_ref().and_then(|b| shrink_refusal(b, now, &opts.shrink)) {
                    return Err(Attempt::Failed(BackupError::Shrunk { name: now.source.clone(), detail }));
                }
            }
        }

        // Everything left out, listed in the generation itself.
        let incomplete = if stats.not_backed_up.is_empty() && stats.vanished.is_empty() {
            None
        } else {
            let mut text = String::new();
            for (kind, list) in [("not-backed-up", &stats.not_backed_up), ("vanished", &stats.vanished)] {
                for m in list {
                    text.push_str(&format!("{kind}\t{}\t{}\n", record::escape(m.path.as_os_str().as_encoded_bytes()), record::escape(m.reason.as_bytes())));
                }
            }
            let mut f = create(NOT_BACKED_UP_FILE)?;
            f.write_all(text.as_bytes()).map_err(|e| fail(&partial.join(NOT_BACKED_UP_FILE), e))?;
            f.sync_all().map_err(|e| fail(&partial.join(NOT_BACKED_UP_FILE), e))?;
            let paths = stats.not_backed_up.iter().chain(stats.vanished.iter()).take(10).map(|m| m.path.to_string_lossy().into_owned()).collect();
            Some(Incomplete { not_backed_up: stats.not_backed_up.len() as u64, vanished: stats.vanished.len() as u64, paths })
        };

        let info = GenerationInfo {
            format: 2,
            name: name.clone(),
            time,
            created: generation::format_time_iso(time),
            previous: gens.last().map(|g| g.name.clone()),
            sources: sources.iter().map(|s| s.abs.to_string_lossy().into_owned()).collect(),
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            others: stats.others,
            bytes: stats.bytes,
            new_bytes: stats.new_bytes,
            copied_files: stats.copied_files,
            linked_files: stats.linked_files,
            warnings: warnings.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
            rechecked_files: stats.rechecked_files,
            incomplete,
            source_totals,
        };
        let info_path = partial.join(INFO_FILE);
        let json = serde_json::to_vec_pretty(&info).map_err(|e| Attempt::Failed(BackupError::Invalid(e.to_string())))?;
        let mut info_file = create(INFO_FILE)?;
        info_file.write_all(&json).map_err(|e| fail(&info_path, e))?;

        // One syncfs makes every file, directory and link written above durable
        // (far cheaper than an fsync per file); then the small files and dirs once more.
        pdir.syncfs().map_err(|e| fail(&opts.root, e))?;
        for (n, f) in [(METADATA_FILE, &meta_file), (MANIFEST_FILE, &manifest_file), (INFO_FILE, &info_file)] {
            f.sync_all().map_err(|e| fail(&partial.join(n), e))?;
        }
        tree_dir.sync().map_err(|e| fail(&tree, e))?;
        // The last moment a stop can still leave no new generation behind.
        opts.stop.check()?;
        generation::complete(gens_dir, OsStr::new(&partial_name), OsStr::new(&name)).map_err(|e| fail(&final_path, e))?;
        Ok((info, warnings, stats))
    })();
    match result {
        Ok((info, warnings, stats)) => Ok(Made { info, path: final_path, warnings, not_backed_up: stats.not_backed_up, vanished: stats.vanished }),
        // Stopped (a signal; the disk may be going away): leave the partial generation for the
        // next run to clean up, so teardown stays quick.
        Err(e @ Attempt::Failed(BackupError::Stopped)) => Err(e),
        Err(e) => {
            // The partial generation is useless now; removing it frees the space it took.
            let _ = prune::remove_tree_at(gens_dir, OsStr::new(&partial_name), &partial);
            Err(e)
        }
    }
}

/// Files and bytes each source had in generation `g`: from its `info.json` when it lists
/// them, else summed from its `metadata.tsv` (generations made before the totals existed).
fn previous_totals(gens_dir: &Dir, g: &Generation, info: Option<&GenerationInfo>, sources: &[walk::Source]) -> Vec<Option<SourceTotal>> {
    let name = |s: &walk::Source| s.abs.to_string_lossy().into_owned();
    if let Some(i) = info.filter(|i| !i.source_totals.is_empty()) {
        return sources.iter().map(|s| i.source_totals.iter().find(|t| t.source == name(s)).cloned()).collect();
    }
    let Ok(reader) = gens_dir.open_dir(OsStr::new(&g.name)).map_err(record::RecordError::from).and_then(|d| record::MetadataReader::open_in(&d, METADATA_FILE)) else {
        return vec![None; sources.len()];
    };
    let mut out: Vec<SourceTotal> = sources.iter().map(|s| SourceTotal { source: name(s), files: 0, bytes: 0 }).collect();
    let mut seen = vec![false; sources.len()];
    for r in reader {
        let Ok(r) = r else { return vec![None; sources.len()] };
        if let Some(i) = sources.iter().position(|s| r.path.starts_with(&s.rel)) {
            seen[i] = true;
            if r.kind.has_content() {
                out[i].files += 1;
                out[i].bytes += r.size;
            }
        }
    }
    // A source the previous generation did not have is new: nothing to compare.
    out.into_iter().zip(seen).map(|(t, seen)| seen.then_some(t)).collect()
}

/// Starts writeback while the copy is still running: without it the kernel holds every
/// dirty page until the final sync, which then does all the I/O at once, after the CPU
/// work instead of beside it. A background thread syncs the target filesystem twice a second.
struct Flusher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(dir: &Dir) -> Flusher {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = dir.try_clone().ok().map(|fd| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering;
                'outer: loop {
                    for _ in 0..5 {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        if stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                    }
                    // Errors show up again in the final, checked sync.
                    let _ = fd.syncfs();
                }
            })
        });
        Flusher { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Complete generations with their `info.json` (None if unreadable), oldest first.
pub fn list_generations(root: &Path) -> Result<Vec<(Generation, Option<GenerationInfo>)>, BackupError> {
    let r = Root::open(root)?;
    let gens_dir = r.generations()?;
    let gens = generation::list_in(&gens_dir, &r.generations_path()).map_err(io_at(root))?;
    Ok(gens.into_iter().map(|g| {
        let info = read_info_in(&gens_dir, &g.name);
        (g, info)
    }).collect())
}

/// Deletes generation `name` (exact name only: a prefix is too easy to get wrong when
/// deleting; never the newest complete one), under the root's lock.
pub fn delete_generation(root: &Path, name: &str) -> Result<(), BackupError> {
    let r = Root::open(root)?;
    let gens_dir = r.generations()?;
    let _lock = lock_root(&r)?;
    let gens = generation::list_in(&gens_dir, &r.generations_path()).map_err(io_at(root))?;
    let g = gens.iter().find(|g| g.name == name).ok_or_else(|| BackupError::NoSuchGeneration(name.to_string()))?;
    if gens.last() == Some(g) {
        return Err(BackupError::Invalid(format!("{} is the newest complete generation; make a new backup first", g.name)));
    }
    prune::prune_generation(&gens_dir, g).map_err(io_at(&g.path))
}

/// Opens the root and its `generations/` and resolves `--generation` there.
pub fn open_generation(root: &Path, want: Option<&str>) -> Result<(Root, Dir, Generation), BackupError> {
    let r = Root::open(root)?;
    let gens_dir = r.generations()?;
    let gens = generation::list_in(&gens_dir, &r.generations_path()).map_err(io_at(root))?;
    let g = match want {
        None => gens.last().cloned().ok_or_else(|| BackupError::NoGenerations(root.to_path_buf()))?,
        Some(w) => generation::find(&gens, w).cloned().ok_or_else(|| BackupError::NoSuchGeneration(w.to_string()))?,
    };
    Ok((r, gens_dir, g))
}

/// Resolves `--generation` (a name, a unique prefix, or `latest`; default the newest).
pub fn pick_generation(root: &Path, want: Option<&str>) -> Result<Generation, BackupError> {
    let gens = generation::list(root)?;
    match want {
        None => gens.last().cloned().ok_or_else(|| BackupError::NoGenerations(root.to_path_buf())),
        Some(w) => generation::find(&gens, w).cloned().ok_or_else(|| BackupError::NoSuchGeneration(w.to_string())),
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    Dir::open_path(path)?.free_bytes()
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_reads_as_before() {
        // What the backup/verify/dock output (and its snapshot) shows.
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(5000), "4.9 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }
}
