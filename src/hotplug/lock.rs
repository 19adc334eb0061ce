//! One dock at a time per disk: a non-blocking `flock` on `/run/offdisk/dock-<uuid>.lock`.
//! udev may send several add/change events for one plug-in (partition rescans, `change`
//! after mkfs); the second one finds the lock taken and steps aside. The kernel drops the
//! lock when the process dies, so a crash never leaves the disk "busy".

use super::HotplugError;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Default directory for lock files.
pub const RUN_DIR: &str = "/run/offdisk";

/// Held while a dock runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DockLock {
    _file: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl DockLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Lock file name for a LUKS UUID; the UUID is reduced to hex digits and dashes so no
/// header content can steer the path.
pub fn lock_path(dir: &Path, luks_uuid: &str) -> PathBuf {
    let safe: String = luks_uuid.chars().filter(|c| c.is_ascii_hexdigit() || *c == '-').collect();
    dir.join(format!("dock-{safe}.lock"))
}

/// Takes the lock, or returns `Ok(None)` when another dock of this disk holds it.
pub fn try_lock(dir: &Path, luks_uuid: &str) -> Result<Option<DockLock>, HotplugError> {
    std::fs::create_dir_all(dir).map_err(|e| HotplugError::io(format!("creating {}", dir.display()), e))?;
    let path = lock_path(dir, luks_uuid);
    let d = crate::fsaccess::Dir::open_path(dir).map_err(|e| HotplugError::io(format!("opening {}", dir.display()), e))?;
    let name = path.file_name().unwrap_or_default();
    // A regular file or nothing: a symlink is not followed and a FIFO does not block.
    let file = crate::fsaccess::state::open_lock(&d, name).map_err(|e| HotplugError::io(format!("opening {}", path.display()), e.into()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(f) => Ok(Some(DockLock { _file: f, path })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(HotplugError::io(format!("locking {}", path.display()), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_dock_of_same_disk_is_refused_until_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path(), "aaaa-1").unwrap().expect("free at first");
        assert!(try_lock(dir.path(), "aaaa-1").unwrap().is_none(), "second is refused");
        let other = try_lock(dir.path(), "bbbb-2").unwrap();
        assert!(other.is_some(), "another disk docks independently");
        drop(first);
        assert!(try_lock(dir.path(), "aaaa-1").unwrap().is_some(), "free again after the first ends");
    }

    #[test]
    fn hostile_uuid_cannot_escape_the_directory() {
        let p = lock_path(Path::new("/run/offdisk"), "../../etc/passwd");
        assert_eq!(p, Path::new("/run/offdisk/dock-ecad.lock"));
    }
}
