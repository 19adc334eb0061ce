//! Loop devices for disk images: `offdisk init/open disk.img` attach the image themselves.
//! Attached with partition scanning (so the GPT partition appears as loopNp1) and autoclear
//! (the kernel detaches it when the last user, e.g. the dm-crypt mapping, lets go).

use crate::dm::ioctl;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An attached loop device, kept open: while this lives the device stays attached.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub file: File,
}

/// The loop device already backed by `image`, if one is attached.
pub fn find_attached(image: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(image).ok()?;
    for entry in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = backing.trim_end();
        if let Ok(b) = std::fs::metadata(backing) {
            if b.dev() == meta.dev() && b.ino() == meta.ino() {
                return Some(PathBuf::from("/dev").join(name));
            }
        }
    }
    None
}

/// Attaches `image` to a free loop device.
pub fn attach(image: &Path, read_only: bool) -> io::Result<LoopDevice> {
    let backing = OpenOptions::new().read(true).write(!read_only).open(image)?;
    let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control").map_err(|e| {
        io::Error::new(e.kind(), format!("/dev/loop-control: {e} (load the loop module: modprobe loop)"))
    })?;
    let mut flags = ioctl::LO_FLAGS_AUTOCLEAR | ioctl::LO_FLAGS_PARTSCAN;
    if read_only {
        flags |= ioctl::LO_FLAGS_READ_ONLY;
    }
    let name = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    // Another process may grab the same free device between GET_FREE and CONFIGURE: retry.
    for _ in 0..10 {
        let n = ioctl::loop_get_free(&control)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = wait_for_path(&path, Duration::from_secs(5))
            .and_then(|_| OpenOptions::new().read(true).write(!read_only).open(&path))?;
        match ioctl::loop_configure(&dev, &backing, flags, &name.to_string_lossy()) {
            Ok(()) => return Ok(LoopDevice { path, file: dev }),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free loop device"))
}

/// Waits until `path` exists (device nodes appear asynchronously).
pub fn wait_for_path(path: &Path, timeout: Duration) -> io::Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} did not appear", path.display())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Detaches a loop device now (used when autoclear is not wanted to wait).
pub fn detach(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    ioctl::loop_clear(&f)
}

/// The backing file of a loop device, when it is one.
pub fn backing_file(dev_name: &str) -> Option<PathBuf> {
    let s = std::fs::read_to_string(format!("/sys/block/{dev_name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim_end()))
}
