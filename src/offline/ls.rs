//! `offdisk ls --from`: what a generation holds at a path, as `ls -l` shows it.

use super::source::{FileKind, Source, Stat};
use super::{OfflineError, Result};
use crate::backup::restore::relative_in_tree;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Listed {
    /// The path as it was backed up (`/home/a/x`).
    pub path: PathBuf,
    pub stat: Stat,
    pub target: Option<Vec<u8>>,
    /// Why the entry could not be read, when it could not.
    pub error: Option<String>,
}

pub struct Listing {
    pub generation: String,
    pub entries: Vec<Listed>,
}

/// The entries of `path` (a directory: its contents; anything else: itself) in the
/// generation `want` (the newest when `None`).
pub fn ls<S: Source>(src: &S, want: Option<&str>, path: &Path) -> Result<Listing> {
    let g = super::pick(src, want)?;
    let tree = super::tree(src, &g)?;
    let rel = relative_in_tree(path).map_err(|e| OfflineError::Invalid(e.to_string()))?;
    let node = super::walk_to(src, &tree, &rel, path)?
        .ok_or_else(|| OfflineError::NotInGeneration { path: path.to_path_buf(), generation: g.generation.name.clone() })?;
    let shown = Path::new("/").join(&rel);
    let one = |p: PathBuf, n: &S::Node| {
        let stat = src.stat(n);
        let target = (stat.kind == FileKind::Symlink).then(|| src.read_link(n).ok()).flatten();
        Listed { path: p, stat, target, error: None }
    };
    let mut entries = Vec::new();
    if src.stat(&node).kind == FileKind::Dir {
        for (name, child) in src.list(&node)? {
            let p = shown.join(std::ffi::OsStr::from_bytes(&name));
            match child {
                Ok(c) => entries.push(one(p, &c)),
                Err(e) => entries.push(Listed { path: p, stat: blank(), target: None, error: Some(e.to_string()) }),
            }
        }
    } else {
        entries.push(one(shown, &node));
    }
    Ok(Listing { generation: g.generation.name, entries })
}

fn blank() -> Stat {
    Stat { kind: FileKind::File, perm: 0, uid: 0, gid: 0, size: 0, mtime: (0, 0), atime: (0, 0), ino: 0, nlink: 0, rdev: (0, 0) }
}

/// `drwxr-xr-x` for a kind and permission bits.
pub fn mode_string(kind: FileKind, perm: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Fifo => 'p',
        FileKind::CharDev => 'c',
        FileKind::BlockDev => 'b',
        FileKind::Socket => 's',
        FileKind::File => '-',
        FileKind::Unknown => '?',
    });
    for (i, who) in [(0o4000, 6), (0o2000, 3), (0o1000, 0)] {
        let bits = (perm >> who) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let special = perm & i != 0;
        let x = bits & 1 != 0;
        s.push(match (special, x, who) {
            (true, true, 0) => 't',
            (true, false, 0) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => 'x',
            (false, false, _) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_as_ls_shows_them() {
        assert_eq!(mode_string(FileKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(FileKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(FileKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(FileKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(FileKind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
