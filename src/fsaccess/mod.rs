//! File access that neither side can steer: every entry reached relative to an open
//! directory handle, one component at a time, never following a link that was not meant.
//!
//! offdisk runs as root between two untrusted sides: source trees that users keep writing
//! while a backup runs, and a backup disk that anyone may have changed while it was off-site.
//! A path string is re-resolved by the kernel at every call, so a directory swapped for a
//! symlink between two calls redirects root anywhere. This module holds the only ways the
//! backup engine, restore, verify, prune and the state files touch a filesystem:
//!
//! - [`Dir`] is an open directory (`O_DIRECTORY | O_NOFOLLOW`). Children are named by one
//!   component ([`Dir::open_dir`], [`Dir::stat`], [`Dir::open_file`], ...); several
//!   components at once go through [`Dir::open_beneath`], which uses `openat2` with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` where the kernel has it
//!   (Linux 5.6) and otherwise opens each component `O_NOFOLLOW | O_DIRECTORY` in turn.
//!   Walking with handles also means depth is unlimited: no path longer than one name is
//!   ever handed to the kernel, so trees deeper than `PATH_MAX` work.
//! - Metadata is changed on the open handle (`fchown`, `fchmod`, `futimens`, `fsetxattr`)
//!   or with the `*at` calls and `AT_SYMLINK_NOFOLLOW`; never by a path that follows links.
//! - Regular files are opened `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` (a FIFO or terminal
//!   swapped in cannot hang the run) and [`Dir::open_file`] checks with `fstat` that what was
//!   opened is the object the caller saw (device, inode, type): else [`OpenError::Changed`].
//! - State files ([`state`]) are regular files or an error naming what they are, read with a
//!   size bound, and replaced atomically through a temporary created
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` inside the directory handle.
//! - [`Meta`] is a plain copy of `struct stat` (with ctime), so callers and other
//!   filesystems' readers (a userspace ext4 reader) share one type.
//!
//! Built on `rustix` (already a dependency): safe, typed wrappers for exactly these system
//! calls (`openat2`, `*at`, `f*xattr`, `getdents`), with errno kept for callers that decide by
//! it (ENOSPC, EXDEV, ELOOP). cap-std was considered: its `Dir` sandboxes a tree the same way,
//! but it hides `openat2`'s flags and errno behind its own emulation, has no `mknodat`,
//! `fsetxattr` or `AT_SYMLINK_NOFOLLOW` ownership calls, and would add a second I/O layer;
//! the engine needs the raw calls. Host paths the user typed (`--target`, a source, DEST)
//! are opened as any command-line path is ([`Dir::open_path`]); from there down nothing is
//! followed.
//!
//! Extended attributes of symlinks and special files cannot be reached through a file
//! handle; they go through `/proc/self/fd/<dir>/<name>` with the `l*xattr` calls, which
//! resolves the directory by its handle and does not follow the last component.

pub mod hook;
pub mod state;
pub mod xattr;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// What kind of object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
    Unknown,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            libc::S_IFSOCK => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }

    fn from_rustix(t: rustix::fs::FileType) -> FileKind {
        use rustix::fs::FileType as T;
        match t {
            T::RegularFile => FileKind::File,
            T::Directory => FileKind::Dir,
            T::Symlink => FileKind::Symlink,
            T::Fifo => FileKind::Fifo,
            T::CharacterDevice => FileKind::CharDev,
            T::BlockDevice => FileKind::BlockDev,
            T::Socket => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }

    /// How people call it in messages ("a symbolic link").
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::File => "a regular file",
            FileKind::Dir => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO",
            FileKind::CharDev => "a character device",
            FileKind::BlockDev => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Unknown => "of unknown type",
        }
    }
}

/// The parts of `struct stat` offdisk uses, in fixed-width types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl Meta {
    // The field types of `struct stat` differ between architectures: the casts are no-ops
    // only on some.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(s: &rustix::fs::Stat) -> Meta {
        Meta {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            rdev: s.st_rdev as u64,
            size: s.st_size.max(0) as u64,
            blocks: s.st_blocks as u64,
            atime: (s.st_atime as i64, s.st_atime_nsec as u32),
            mtime: (s.st_mtime as i64, s.st_mtime_nsec as u32),
            ctime: (s.st_ctime as i64, s.st_ctime_nsec as u32),
        }
    }

    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == FileKind::Dir
    }
    pub fn is_file(&self) -> bool {
        self.kind() == FileKind::File
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == FileKind::Symlink
    }
    /// Permission bits with set-id and sticky (`st_mode & 07777`).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    /// The same object: device, inode and type equal.
    pub fn same_object(&self, other: &Meta) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.kind() == other.kind()
    }
    /// Fewer blocks allocated than the length needs: holes worth keeping.
    pub fn is_sparse(&self) -> bool {
        self.size > 0 && self.blocks.saturating_mul(512) < self.size
    }
}

/// One directory entry: its name and the type `getdents` reported (may be `Unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: FileKind,
}

/// Why [`Dir::open_file`] refused.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The name now holds another object than the one seen (swapped during the run).
    #[error("changed while being read (now {})", .now.kind().describe())]
    Changed { now: Meta },
    /// Not a regular file (a FIFO, a device, a directory, ...).
    #[error("is {}, not a regular file", .0.describe())]
    NotRegular(FileKind),
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        match e {
            OpenError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// Checks that `name` is one plain path component: not empty, no `/` or NUL, not `.` or `..`.
pub fn check_name(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{:?} is not a single file name", name)));
    }
    Ok(name)
}

/// Splits a relative path into plain components; `..`, a root or a prefix is refused.
pub fn plain_components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(check_name(n)?),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: must be a relative path without `..`", rel.display())))
            }
        }
    }
    Ok(out)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
/// For files that may be FIFOs, devices or ttys until `fstat` says otherwise.
const READ_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::NOFOLLOW).union(OFlags::NONBLOCK).union(OFlags::NOCTTY).union(OFlags::CLOEXEC);

/// An open directory. Cheap to share behind an `Arc`; every method is one or two syscalls.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens a directory named by a host path the user gave (`--target`, a source's parent,
    /// DEST): resolved like any command-line path, symlinks included. Use only for paths
    /// from the command line or the configuration, never for names read off a disk.
    pub fn open_path(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(errno)?;
        Ok(Dir { fd })
    }

    /// Wraps an open directory (checked with `fstat`).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Dir> {
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        if FileKind::from_mode(st.st_mode as u32) != FileKind::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(Dir { fd })
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir { fd: self.fd.try_clone()? })
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// `fstat` of the directory itself.
    pub fn meta(&self) -> io::Result<Meta> {
        Ok(Meta::from_stat(&rustix::fs::fstat(&self.fd).map_err(errno)?))
    }

    /// A child directory, not following a symlink (ELOOP) and refusing non-directories
    /// (ENOTDIR).
    /// The error says what is there instead ("is a symbolic link, not a directory; not
    /// followed"), with the kind `NotADirectory`.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        match rustix::fs::openat(&self.fd, check_name(name)?, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Dir { fd }),
            Err(e @ (rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)) => Err(self.not_a_dir(name, e)),
            Err(e) => Err(errno(e)),
        }
    }

    fn not_a_dir(&self, name: &OsStr, e: rustix::io::Errno) -> io::Error {
        match self.stat(name) {
            Ok(m) if m.is_symlink() => {
                io::Error::new(io::ErrorKind::NotADirectory, "is a symbolic link, not a directory; not followed")
            }
            Ok(m) => io::Error::new(io::ErrorKind::NotADirectory, format!("is {}, not a directory", m.kind().describe())),
            Err(_) => errno(e),
        }
    }

    /// A directory several components below, none of which may be a symlink or `..`.
    /// An empty path gives another handle on `self`.
    pub fn open_beneath(&self, rel: &Path) -> io::Result<Dir> {
        let parts = plain_components(rel)?;
        if parts.is_empty() {
            return self.try_clone();
        }
        if parts.len() > 1 && rel.as_os_str().len() < 4000 && openat2_available() {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), how) {
                Ok(fd) => return Ok(Dir { fd }),
                Err(e) if openat2_unusable(e) => OPENAT2.store(NO, Ordering::Relaxed),
                Err(e) => return Err(errno(e)),
            }
        }
        let mut d = self.open_dir(parts[0])?;
        for p in &parts[1..] {
            d = d.open_dir(p)?;
        }
        Ok(d)
    }

    /// `fstatat(.., AT_SYMLINK_NOFOLLOW)`: a symlink is described, not followed.
    pub fn stat(&self, name: &OsStr) -> io::Result<Meta> {
        let st = rustix::fs::statat(&self.fd, check_name(name)?, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        Ok(Meta::from_stat(&st))
    }

    /// The entries (without `.` and `..`) in byte order of their names.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut rd = rustix::fs::Dir::read_from(&self.fd).map_err(errno)?;
        while let Some(e) = rd.read() {
            let e = e.map_err(errno)?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(Entry { name: OsString::from_vec(name.to_vec()), kind: FileKind::from_rustix(e.file_type()) });
        }
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }

    /// Opens `name` for reading without following it and without blocking on a FIFO or
    /// device; `O_NOATIME` where permitted. The caller checks what it got ([`Dir::open_file`]).
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let name = check_name(name)?;
        let fd = match rustix::fs::openat(&self.fd, name, READ_FLAGS | OFlags::NOATIME, Mode::empty()) {
            // Only the owner (or CAP_FOWNER) may ask for O_NOATIME.
            Err(rustix::io::Errno::PERM) => rustix::fs::openat(&self.fd, name, READ_FLAGS, Mode::empty()),
            r => r,
        }
        .map_err(errno)?;
        // O_NONBLOCK stays: it changes nothing for regular files.
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading and checks it is the object the caller saw
    /// (`expect`: device, inode and type from an earlier `stat`), or any regular file when
    /// `expect` is `None`. Returns the file and its `fstat`.
    pub fn open_file(&self, name: &OsStr, expect: Option<&Meta>) -> Result<(File, Meta), OpenError> {
        let f = self.open_read(name)?;
        let now = Meta::from_stat(&rustix::fs::fstat(&f).map_err(errno)?);
        if let Some(seen) = expect {
            if !now.same_object(seen) {
                return Err(OpenError::Changed { now });
            }
        }
        if !now.is_file() {
            return Err(OpenError::NotRegular(now.kind()));
        }
        Ok((f, now))
    }

    /// Creates a new file (`O_CREAT | O_EXCL | O_NOFOLLOW`): never opens anything that exists.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, check_name(name)?, flags, Mode::from_raw_mode(mode)).map_err(errno)?;
        Ok(File::from(fd))
    }

    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        rustix::fs::mkdirat(&self.fd, check_name(name)?, Mode::from_raw_mode(mode)).map_err(errno)
    }

    /// Creates `name` if missing, then opens it no-follow. A symlink or file already there is
    /// an error (ELOOP / ENOTDIR), never followed.
    pub fn create_or_open_dir(&self, name: &OsStr, mode: u32) -> io::Result<(Dir, bool)> {
        let created = match self.create_dir(name, mode) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
            Err(e) => return Err(e),
        };
        Ok((self.open_dir(name)?, created))
    }

    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        rustix::fs::symlinkat(target, &self.fd, check_name(name)?).map_err(errno)
    }

    /// The target of the symlink `name` (bytes, any length).
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        let t = rustix::fs::readlinkat(&self.fd, check_name(name)?, Vec::new()).map_err(errno)?;
        Ok(OsString::from_vec(t.into_bytes()))
    }

    /// `linkat(self/name, to/to_name)` without following `name` if it is a symlink.
    pub fn hard_link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        rustix::fs::linkat(&self.fd, check_name(name)?, &to.fd, check_name(to_name)?, AtFlags::empty()).map_err(errno)
    }

    /// Makes a FIFO, socket or device node (`mode` holds type and permission bits).
    pub fn mknod(&self, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        let ft = rustix::fs::FileType::from_raw_mode(mode as _);
        rustix::fs::mknodat(&self.fd, check_name(name)?, ft, Mode::from_raw_mode(mode & 0o7777), rdev as _).map_err(errno)
    }

    /// Removes a non-directory entry (a symlink itself, never its target).
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, check_name(name)?, AtFlags::empty()).map_err(errno)
    }

    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, check_name(name)?, AtFlags::REMOVEDIR).map_err(errno)
    }

    /// Renames within or across directory handles; `noreplace` refuses an existing target.
    pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr, noreplace: bool) -> io::Result<()> {
        let flags = if noreplace { rustix::fs::RenameFlags::NOREPLACE } else { rustix::fs::RenameFlags::empty() };
        rustix::fs::renameat_with(&self.fd, check_name(name)?, &to.fd, check_name(to_name)?, flags).map_err(errno)
    }

    /// Access and modification times of `name` itself (a symlink's own times).
    pub fn set_times_at(&self, name: &OsStr, atime: (i64, u32), mtime: (i64, u32)) -> io::Result<()> {
        rustix::fs::utimensat(&self.fd, check_name(name)?, &timestamps(atime, mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
    }

    /// Owner of `name` itself (`fchownat(.., AT_SYMLINK_NOFOLLOW)`).
    /// chmod of `name` itself, never of what a symlink there points to. fchmodat cannot
    /// refuse to follow a link on the kernels Debian ships, and a node made in a directory
    /// someone else can write to (a user-owned restore DEST) can be swapped for a symlink
    /// to /etc/shadow between mknod and chmod. So the node is pinned with
    /// O_PATH|O_NOFOLLOW, checked not to be a link, and changed through its
    /// /proc/self/fd entry (glibc's AT_SYMLINK_NOFOLLOW emulation does the same).
    pub fn chmod_at(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let fd = rustix::fs::openat(&self.fd, check_name(name)?, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno)?;
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        rustix::fs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()), Mode::from_raw_mode(mode & 0o7777)).map_err(errno)
    }

    pub fn chown_at(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            &self.fd,
            check_name(name)?,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// `/proc/self/fd/<this dir>/<name>`: a path for the `l*xattr` calls that reaches `name`
    /// through this handle and does not follow `name` itself.
    pub fn proc_path(&self, name: &OsStr) -> io::Result<PathBuf> {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        p.push(check_name(name)?);
        Ok(p)
    }

    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(errno)
    }

    pub fn syncfs(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(errno)
    }

    /// Free bytes for an unprivileged writer on this directory's filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let s = rustix::fs::fstatvfs(&self.fd).map_err(errno)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Metadata changes on an open handle (a file or a directory).
pub fn set_owner(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid))).map_err(errno)
}

pub fn set_mode(fd: impl AsFd, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777)).map_err(errno)
}

pub fn set_times(fd: impl AsFd, atime: (i64, u32), mtime: (i64, u32)) -> io::Result<()> {
    rustix::fs::futimens(fd, &timestamps(atime, mtime)).map_err(errno)
}

pub fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::fstat(fd).map_err(errno)?))
}

fn timestamps(atime: (i64, u32), mtime: (i64, u32)) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: atime.0 as _, tv_nsec: atime.1 as _ },
        last_modification: Timespec { tv_sec: mtime.0 as _, tv_nsec: mtime.1 as _ },
    }
}

/// `lstat` of a host path the user gave (never of a name read from a disk).
pub fn lstat_path(path: &Path) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::lstat(path).map_err(errno)?))
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Errors that mean "this kernel (or its seccomp filter) has no usable openat2".
fn openat2_unusable(e: rustix::io::Errno) -> bool {
    matches!(e, rustix::io::Errno::NOSYS | rustix::io::Errno::PERM | rustix::io::Errno::INVAL | rustix::io::Errno::TOOBIG)
}

/// Whether `openat2` with the resolve flags works here (probed once, on `/`).
pub fn openat2_available() -> bool {
    match OPENAT2.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let ok = match rustix::fs::openat2(rustix::fs::CWD, ".", DIR_FLAGS, Mode::empty(), how) {
                Ok(_) => true,
                Err(e) => !openat2_unusable(e),
            };
            OPENAT2.store(if ok { YES } else { NO }, Ordering::Relaxed);
            ok
        }
    }
}

/// Forces the per-component fallback (tests of the path older kernels take).
#[doc(hidden)]
pub fn disable_openat2_for_tests() {
    OPENAT2.store(NO, Ordering::Relaxed);
}

/// Raises the soft limit on open files to the hard limit (walks hold one directory handle
/// per level and per directory in flight). Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum) {
        if cur < max {
            l.current = Some(max.min(1 << 20));
            if setrlimit(Resource::Nofile, l).is_ok() {
                return l.current.unwrap_or(cur);
            }
        }
        return cur;
    }
    l.current.unwrap_or(1 << 20)
}

/// `err` with `shown` (a path for people) in front, errno kept.
pub fn at(shown: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", shown.display()))
}

#[cfg(test)]
mod tests;
