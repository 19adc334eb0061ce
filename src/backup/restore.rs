//! `offdisk restore`: copies paths out of a generation with their metadata.
//!
//! Each PATH (as it was on the host, e.g. `/home/a/docs`) is recreated under DEST at the
//! same relative place (`DEST/home/a/docs`), parents included, with the same engine as a
//! backup. Contents are hashed while copied and checked against the generation's
//! metadata, so a restore also reports files that rotted on the disk.

use super::engine::{self, Mode, PipelineOptions, Previous, Stats};
use super::record::{Kind, Record, TREE_DIR};
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

pub fn restore(opts: &RestoreOptions) -> Result<RestoreSummary, BackupError> {
    let (_root, gens_dir, g) = super::open_generation(&opts.root, opts.generation.as_deref())?;
    let tree = g.path.join(TREE_DIR);
    let mut sources = Vec::new();
    for p in &opts.paths {
        let rel = relative_in_tree(p)?;
        let abs = engine::dst_path(&tree, &rel);
        if std::fs::symlink_metadata(&abs).is_err() {
            return Err(BackupError::NotInGeneration { path: p.clone(), generation: g.name.clone() });
        }
        sources.push(Source { abs, rel });
    }
    std::fs::create_dir_all(&opts.dest).map_err(|error| BackupError::Io { path: opts.dest.clone(), error })?;
    let walker = Walker::new(normalise_sources(sources), WalkOptions::default());
    let popts = PipelineOptions { dst_root: opts.dest.clone(), threads: opts.threads, mode: Mode::Restore, stop: Default::default() };

    let mut expected = Previous::open(&gens_dir, &g).ok();
    let mut dirs: Vec<Record> = Vec::new();
    let mut damaged: Vec<String> = Vec::new();
    let mut sink = |r: &Record| -> std::io::Result<()> {
        if r.kind == Kind::Dir {
            dirs.push(r.clone());
        } else if r.kind.has_content() {
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
    for r in &dirs {
        let src = engine::dst_path(&tree, &r.path);
        let dst = engine::dst_path(&opts.dest, &r.path);
        if let Err(e) = engine::apply_dir_record(&src, &dst, r) {
            let e = match e {
                super::copy::CopyError::Source(e) | super::copy::CopyError::Target(e) => e,
            };
            warnings.push(format!("{}: {e}", dst.display()));
        }
    }
    Ok(RestoreSummary { generation: g.name, stats, warnings })
}
