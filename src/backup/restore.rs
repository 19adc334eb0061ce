//! `offdisk restore`: copies paths out of a generation with their metadata.
//!
//! Each PATH (as it was on the host, e.g. `/home/a/docs`) is recreated under DEST at the
//! same relative place (`DEST/home/a/docs`), parents included, with the same engine as a
//! backup. Contents are hashed while copied and checked against the generation's
//! metadata, so a restore also reports files that rotted on the disk.

use super::engine::{self, Mode, PipelineOptions, Previous, Stats};
use super::record::{Record, TREE_DIR};
use crate::fsaccess::Dir;
use std::sync::Arc;
use super::walk::{normalise_sources, Source, WalkOptions, Walker};
use super::BackupError;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub root: PathBuf,
    pub generation: Option<String>,
    pub paths: Vec<PathBuf>,
    pub dest: PathBuf,
    pub threads: usize,
    /// Set-id bits and device nodes: kept or made only when asked (see [`super::dest`]).
    pub rules: super::dest::Rules,
}

#[derive(Debug)]
pub struct RestoreSummary {
    pub generation: String,
    pub stats: Stats,
    pub warnings: Vec<String>,
}

/// `/home/a` or `home/a` → `home/a`; `..` is refused.
pub fn relative_in_tree(path: &Path) -> Result<PathBuf, BackupError> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(BackupError::Invalid(format!("{}: `..` is not allowed in a restore path", path.display()))),
        }
    }
    Ok(rel)
}

/// `PATH is not in generation G`: a restore path the generation does not hold (both routes).
pub fn not_in_generation(path: &Path, generation: &str) -> String {
    format!("{} is not in generation {generation}", path.display())
}

/// A restore path that runs through `link`, a symlink stored in the generation (both routes).
pub fn through_symlink(path: &Path, link: &Path) -> String {
    format!("{}: the path runs through a symlink stored in the generation ({}); it is not followed", path.display(), link.display())
}

/// What to do about [`through_symlink`].
pub const THROUGH_SYMLINK_HINT: &str = "restore the symlink itself, or the path it points to";

/// `N file(s)`, `N warning(s)`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The line a restore ends with, whichever route it took (a mounted disk or `--from`).
pub fn summary_line(generation: &str, files: u64, bytes: u64, dest: &Path, warnings: usize) -> String {
    format!(
        "restore from {generation}: {}, {} into {}{}",
        count(files, "file", "files"),
        super::human_bytes(bytes),
        dest.display(),
        if warnings == 0 { String::new() } else { format!("; {}", count(warnings as u64, "warning", "warnings")) }
    )
}

/// The note for extended attributes the destination would not take (both routes).
pub fn skipped_xattrs_note(n: u64) -> Option<String> {
    (n > 0).then(|| format!("{} could not be set on the destination", count(n, "extended attribute", "extended attributes")))
}

pub fn restore(opts: &RestoreOptions) -> Result<RestoreSummary, BackupError> {
    let (_root, gens_dir, g) = super::open_generation(&opts.root, opts.generation.as_deref())?;
    let tree_shown = g.path.join(TREE_DIR);
    let refused = |why: String| BackupError::Refused { path: tree_shown.clone(), why };
    let gdir = gens_dir.open_dir(std::ffi::OsStr::new(&g.name)).map_err(|e| refused(e.to_string()))?;
    let tree = Arc::new(gdir.open_dir(std::ffi::OsStr::new(TREE_DIR)).map_err(|e| refused(format!("tree: {e}")))?);
    let mut sources = Vec::new();
    for p in &opts.paths {
        let rel = relative_in_tree(p)?;
        // Every component below the tree must be a real directory: a restore path that
        // runs through a symlink stored in the generation is refused, never followed.
        let parent = rel.parent().unwrap_or(Path::new(""));
        let found = tree.open_beneath(parent).and_then(|d| match rel.file_name() {
            Some(n) => d.stat(n).map(|_| ()),
            None => Ok(()),
        });
        match found {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NotInGeneration { path: p.clone(), generation: g.name.clone() })
            }
            Err(e) => {
                // What is in the way, as a restore from the disk read directly (`--from`) names it.
                let mut so_far = PathBuf::new();
                for c in parent.components() {
                    let meta = tree.open_beneath(&so_far).and_then(|d| d.stat(c.as_os_str()));
                    so_far.push(c);
                    match meta {
                        Ok(m) if m.is_symlink() => return Err(BackupError::ThroughSymlink { path: p.clone(), link: so_far }),
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => return Err(BackupError::NotInGeneration { path: p.clone(), generation: g.name.clone() }),
                        Err(_) => break,
                    }
                }
                return Err(BackupError::Refused {
                    path: p.clone(),
                    why: format!("cannot be restored from {}: a component of it is not a directory in the generation (a stored symbolic link is never followed): {e}", g.name),
                });
            }
        }
        sources.push(Source::beneath(Arc::clone(&tree), engine::dst_path(&tree_shown, &rel), rel));
    }
    // DEST itself is the user's path; everything below it is reached without following.
    std::fs::create_dir_all(&opts.dest).map_err(|error| BackupError::Io { path: opts.dest.clone(), error })?;
    let dest = Dir::open_path(&opts.dest).map_err(|error| BackupError::Io { path: opts.dest.clone(), error })?;
    crate::fsaccess::raise_fd_limit();
    let walker = Walker::new(normalise_sources(sources), WalkOptions::default());
    let popts = PipelineOptions {
        dst_root: Arc::new(dest),
        dst_shown: opts.dest.clone(),
        threads: opts.threads,
        mode: Mode::Restore,
        rules: opts.rules,
        stop: Default::default(),
    };

    let mut expected = Previous::open(&gens_dir, &g).ok();
    let mut damaged: Vec<String> = Vec::new();
    let mut sink = |r: &Record| -> std::io::Result<()> {
        if r.kind.has_content() {
            if let Some(exp) = expected.as_mut().and_then(|p| p.find(&r.path)) {
                if exp.hash != r.hash {
                    damaged.push(format!("{}: content does not match the generation's checksum (damaged on the backup disk)", r.path.display()));
                }
            }
        }
        Ok(())
    };
    let stats = engine::run(walker, None, &popts, &mut sink, &mut |_| {})
        .map_err(|e| BackupError::Io { path: opts.dest.clone(), error: std::io::Error::other(e.to_string()) })?;
    let mut warnings = stats.warnings.clone();
    warnings.extend(damaged);
    Ok(RestoreSummary { generation: g.name, stats, warnings })
}
