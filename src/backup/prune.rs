//! Removing generations fast and safely.
//!
//! A doomed generation is first renamed to `.deleting-<name>` (atomic: from then on it is
//! never listed as complete, and a crash leaves a leftover the next run finishes), then its
//! tree is deleted by several threads at once, directory by directory, with `unlinkat` on
//! directory descriptors (hard-link trees are mostly link-count updates, so the cost is
//! syscalls, which parallelise).

use super::generation::{Generation, DELETING_PREFIX};
use crate::fsaccess::{Dir, FileKind};
use rayon::prelude::*;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

/// Renames a complete generation (an entry of the open `gens`) out of the listing, then
/// deletes it.
pub fn prune_generation(gens: &Dir, g: &Generation) -> io::Result<()> {
    let name = OsStr::new(&g.name);
    let mut doomed = OsString::from(DELETING_PREFIX);
    doomed.push(name);
    gens.rename(name, gens, &doomed, true)?;
    gens.sync()?;
    let shown = g.path.with_file_name(&doomed);
    remove_tree_at(gens, &doomed, &shown)
}

/// Deletes `name` in `parent` and, if it is a directory, everything below it, never
/// following a symlink (a symlink is removed itself), using the rayon pool.
pub fn remove_tree_at(parent: &Dir, name: &OsStr, shown: &Path) -> io::Result<()> {
    let dir = match parent.open_dir(name) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return match parent.unlink(name) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(crate::fsaccess::at(shown, e)),
                _ => Ok(()),
            }
        }
        Err(e) => return Err(crate::fsaccess::at(shown, e)),
    };
    remove_contents(&dir, shown)?;
    drop(dir);
    match parent.remove_dir(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(crate::fsaccess::at(shown, e)),
        _ => Ok(()),
    }
}

fn remove_contents(dir: &Dir, shown: &Path) -> io::Result<()> {
    let mut subdirs: Vec<OsString> = Vec::new();
    let entries = dir.entries().map_err(|e| crate::fsaccess::at(shown, e))?;
    for e in entries {
        if e.kind == FileKind::Dir {
            subdirs.push(e.name);
            continue;
        }
        match dir.unlink(&e.name) {
            Ok(()) => {}
            // d_type unknown and it was a directory after all.
            Err(err) if err.raw_os_error() == Some(libc::EISDIR) && e.kind == FileKind::Unknown => subdirs.push(e.name),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(crate::fsaccess::at(&shown.join(&e.name), err)),
        }
    }
    subdirs.par_iter().try_for_each(|name| -> io::Result<()> {
        let child_shown = shown.join(name);
        let child = match dir.open_dir(name) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(crate::fsaccess::at(&child_shown, e)),
        };
        remove_contents(&child, &child_shown)?;
        drop(child);
        match dir.remove_dir(name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(crate::fsaccess::at(&child_shown, e)),
            _ => Ok(()),
        }
    })
}

/// Removes what interrupted runs left (partial and half-deleted generations) in the open
/// `generations/` directory shown as `gens_path`.
pub fn clean_leftovers(gens: &Dir, gens_path: &Path) -> io::Result<Vec<PathBuf>> {
    let left = super::generation::leftovers_in(gens)?;
    let mut out = Vec::new();
    for name in &left {
        let shown = gens_path.join(name);
        remove_tree_at(gens, name, &shown)?;
        out.push(shown);
    }
    if !left.is_empty() {
        gens.sync()?;
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_deep_trees_with_links_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        std::fs::create_dir_all(t.join("a/b/c")).unwrap();
        std::fs::create_dir_all(t.join("x")).unwrap();
        std::fs::write(t.join("a/b/c/f"), b"1").unwrap();
        std::fs::hard_link(t.join("a/b/c/f"), t.join("x/g")).unwrap();
        std::os::unix::fs::symlink(dir.path(), t.join("x/escape")).unwrap();
        std::fs::write(dir.path().join("keep"), b"k").unwrap();
        let d = Dir::open_path(dir.path()).unwrap();
        remove_tree_at(&d, OsStr::new("t"), &t).unwrap();
        assert!(!t.exists());
        assert!(dir.path().join("keep").exists(), "followed a symlink out of the tree");
    }
}
