//! The restore destination's rules: one set for every restore, whichever side the data
//! comes from (a mounted generation read through directory handles, by
//! [`super::restore`], or a disk read in userspace, by `offline::restore`). Both write DEST
//! with these functions only, so the rules cannot drift apart:
//!
//! - every entry is made relative to an open directory handle, `O_EXCL | O_NOFOLLOW`;
//! - nothing already in DEST is overwritten or followed: an existing file, symlink or node
//!   is left alone and reported ([`EXISTS`]); a symlink (or file) where a directory belongs
//!   is reported and everything below it left out;
//! - set-user-ID and set-group-ID bits of files are kept only with `--keep-setid`, device
//!   nodes are made only with `--devices` (like rsync's option); FIFOs and sockets are made.

use crate::fsaccess::{Dir, FileKind};
use std::ffi::OsStr;
use std::io;
use std::path::Path;

/// Why an entry already in DEST was left alone.
pub const EXISTS: &str = "exists, not overwritten";

/// What a restore may recreate beyond plain files, as `cp`/`rsync` users choose it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Keep set-user-ID and set-group-ID bits of files (`--keep-setid`).
    pub keep_setid: bool,
    /// Recreate device nodes (`--devices`).
    pub devices: bool,
}

impl Rules {
    /// Everything as stored (a backup copies what it sees).
    pub const ALL: Rules = Rules { keep_setid: true, devices: true };

    /// The permission bits to give a restored object of `kind` stored with `perm`.
    pub fn mode(&self, kind: FileKind, perm: u32) -> u32 {
        if !self.keep_setid && kind == FileKind::File {
            perm & !(libc::S_ISUID | libc::S_ISGID)
        } else {
            perm
        }
    }

    /// Why an object of `kind` is not recreated, if it is not.
    pub fn refuses(&self, kind: FileKind) -> Option<&'static str> {
        match kind {
            FileKind::CharDev | FileKind::BlockDev if !self.devices => Some("device node not restored (use --devices to recreate device nodes)"),
            FileKind::Unknown => Some("of an unknown file type; not copied"),
            _ => None,
        }
    }
}

/// The warning for a file whose set-id bits were dropped (`perm` stored, `mode` written).
pub fn setid_dropped(shown: &Path, perm: u32, mode: u32) -> String {
    format!("{}: set-user/group-ID bits dropped ({perm:04o} restored as {mode:04o}; --keep-setid keeps them)", shown.display())
}

/// Opens the directory `name` in `dir`, making it (owner-only until its metadata is
/// applied) when missing. A symlink or anything else already there is refused, never
/// followed.
pub fn open_dir(dir: &Dir, name: &OsStr) -> io::Result<Dir> {
    dir.create_or_open_dir(name, 0o700).map(|(d, _)| d)
}

/// What a failure to make an entry in DEST means: `Some(why)` when only this entry is left
/// out (it exists already, or the target cannot hold its name), `None` when the restore
/// cannot go on (no space, I/O error).
pub fn left_out(e: &io::Error) -> Option<String> {
    if e.kind() == io::ErrorKind::AlreadyExists {
        return Some(EXISTS.into());
    }
    if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
        return Some(format!("the target cannot hold this name: {e}"));
    }
    None
}

/// Makes the FIFO, socket or device node `name` (owner-only until its metadata is applied).
pub fn make_special(dir: &Dir, name: &OsStr, kind: FileKind, rdev: u64) -> io::Result<()> {
    let t = match kind {
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDev => libc::S_IFCHR,
        FileKind::BlockDev => libc::S_IFBLK,
        _ => return Err(io::Error::other("not a special file")),
    };
    dir.mknod(name, t | 0o600, rdev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setid_bits_of_files_only_are_dropped_by_default() {
        let r = Rules::default();
        assert_eq!(r.mode(FileKind::File, 0o4755), 0o755);
        assert_eq!(r.mode(FileKind::File, 0o2750), 0o750);
        assert_eq!(r.mode(FileKind::Dir, 0o2775), 0o2775, "a setgid directory only sets new files' group");
        assert_eq!(Rules { keep_setid: true, devices: false }.mode(FileKind::File, 0o4755), 0o4755);
        assert!(r.refuses(FileKind::CharDev).unwrap().contains("--devices"));
        assert_eq!(r.refuses(FileKind::Fifo), None);
        assert_eq!(Rules::ALL.refuses(FileKind::BlockDev), None);
    }

    #[test]
    fn nothing_in_dest_is_followed_or_overwritten() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), t.path().join("link")).unwrap();
        std::fs::write(t.path().join("file"), b"mine").unwrap();
        let d = Dir::open_path(t.path()).unwrap();
        let e = open_dir(&d, OsStr::new("link")).err().unwrap();
        assert!(e.to_string().contains("is a symbolic link, not a directory; not followed"), "{e}");
        assert!(open_dir(&d, OsStr::new("file")).is_err());
        let e = d.create_file(OsStr::new("file"), 0o644).err().unwrap();
        assert_eq!(left_out(&e).as_deref(), Some(EXISTS));
        assert_eq!(std::fs::read(t.path().join("file")).unwrap(), b"mine");
        open_dir(&d, OsStr::new("new")).unwrap();
        assert!(t.path().join("new").is_dir());
    }
}
