//! Removing generations fast and safely.
//!
//! A doomed generation is first renamed to `.deleting-<name>` (atomic: from then on it is
//! never listed as complete, and a crash leaves a leftover the next run finishes), then its
//! tree is deleted by several threads at once, directory by directory, with `unlinkat` on
//! directory descriptors (hard-link trees are mostly link-count updates, so the cost is
//! syscalls, which parallelise).

use super::generation::{fsync_dir, DELETING_PREFIX};
use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Renames a complete generation out of the listing, then deletes it.
pub fn prune_generation(gen_path: &Path) -> io::Result<()> {
    let parent = gen_path.parent().ok_or_else(|| io::Error::other("generation has no parent"))?;
    let name = gen_path.file_name().ok_or_else(|| io::Error::other("generation has no name"))?;
    let mut doomed_name = OsString::from(DELETING_PREFIX);
    doomed_name.push(name);
    let doomed = parent.join(doomed_name);
    std::fs::rename(gen_path, &doomed)?;
    fsync_dir(parent)?;
    remove_tree(&doomed)
}

/// Deletes a directory tree (not following symlinks), using the rayon pool.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
    }
    let fd = open_dir(None, path)?;
    remove_contents(&fd, path)?;
    drop(fd);
    std::fs::remove_dir(path)
}

fn open_dir(parent: Option<&OwnedFd>, name: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(match parent {
        Some(p) => rustix::fs::openat(p, name, flags, Mode::empty())?,
        None => rustix::fs::openat(CWD, name, flags, Mode::empty())?,
    })
}

fn remove_contents(dir: &OwnedFd, shown: &Path) -> io::Result<()> {
    let mut subdirs: Vec<OsString> = Vec::new();
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsString::from_vec(name.to_vec());
        match entry.file_type() {
            rustix::fs::FileType::Directory => subdirs.push(name),
            rustix::fs::FileType::Unknown => names.push((name, true)),
            _ => names.push((name, false)),
        }
    }
    for (name, unknown) in names {
        match rustix::fs::unlinkat(dir, name.as_os_str(), AtFlags::empty()) {
            Ok(()) => {}
            // d_type unknown and it was a directory after all.
            Err(rustix::io::Errno::ISDIR) if unknown => subdirs.push(name),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", shown.join(&name).display()))),
        }
    }
    subdirs.par_iter().try_for_each(|name| -> io::Result<()> {
        let child = open_dir(Some(dir), Path::new(name))?;
        remove_contents(&child, &shown.join(name))?;
        drop(child);
        match rustix::fs::unlinkat(dir, name.as_os_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", shown.join(name).display()))),
        }
    })
}

/// Removes what interrupted runs left (partial and half-deleted generations).
pub fn clean_leftovers(root: &Path) -> io::Result<Vec<PathBuf>> {
    let left = super::generation::leftovers(root)?;
    for p in &left {
        remove_tree(p)?;
    }
    if !left.is_empty() {
        fsync_dir(&super::generation::generations_dir(root))?;
    }
    Ok(left)
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
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        assert!(dir.path().join("keep").exists(), "followed a symlink out of the tree");
    }
}
