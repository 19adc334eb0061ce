//! Which processes keep a filesystem busy: open files, working or root directories and mapped
//! files whose device is the filesystem's device, found by scanning /proc; and what else holds
//! a block device (a device stacked on it, swap).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A process holding something on the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// What it holds: "open file", "working directory", "root directory", "mapped file".
    pub how: &'static str,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {}, {})", self.command, self.pid, self.how)
    }
}

/// Every other process in /proc, with what `how` says it holds (`None`: nothing), by pid.
fn scan_processes(mut how: impl FnMut(&Path) -> Option<&'static str>) -> Vec<Holder> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let base = p.path();
        if let Some(how) = how(&base) {
            let command = std::fs::read_to_string(base.join("comm")).map(|s| s.trim_end().to_string()).unwrap_or_default();
            out.push(Holder { pid, command, how });
        }
    }
    out.sort_by_key(|h| h.pid);
    out
}

/// Processes using files on the filesystem whose st_dev is `dev` (major, minor).
pub fn holders_of(dev: (u32, u32)) -> Vec<Holder> {
    let want = nix::sys::stat::makedev(dev.0 as _, dev.1 as _);
    let on_dev = |path: &Path| std::fs::metadata(path).map(|m| m.dev() == want).unwrap_or(false);
    scan_processes(|base| {
        if on_dev(&base.join("cwd")) {
            Some("working directory")
        } else if on_dev(&base.join("root")) {
            Some("root directory")
        } else if std::fs::read_dir(base.join("fd")).is_ok_and(|fds| fds.flatten().any(|fd| on_dev(&fd.path()))) {
            Some("open file")
        } else if std::fs::read_to_string(base.join("maps")).is_ok_and(|maps| maps_mention(&maps, dev)) {
            Some("mapped file")
        } else {
            None
        }
    })
}

/// Whether a /proc/PID/maps text maps a file from device `dev` (its field is "MAJ:MIN" in hex).
pub fn maps_mention(maps: &str, dev: (u32, u32)) -> bool {
    maps.lines().any(|l| {
        let mut f = l.split_whitespace();
        let dev_field = f.nth(3);
        let inode = f.next();
        matches!((dev_field, inode), (Some(d), Some(i)) if i != "0" && parse_hex_dev(d) == Some(dev))
    })
}

fn parse_hex_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((u32::from_str_radix(a, 16).ok()?, u32::from_str_radix(b, 16).ok()?))
}

/// Processes holding the block device node (major, minor) itself open (e.g. `dd of=/dev/dm-0`).
pub fn openers_of_node(dev: (u32, u32)) -> Vec<Holder> {
    use std::os::unix::fs::FileTypeExt;
    let want = nix::sys::stat::makedev(dev.0 as _, dev.1 as _);
    let is_node = |path: &Path| {
        std::fs::metadata(path).map(|m| m.file_type().is_block_device() && m.rdev() == want).unwrap_or(false)
    };
    scan_processes(|base| {
        let holds = std::fs::read_dir(base.join("fd")).is_ok_and(|fds| fds.flatten().any(|fd| is_node(&fd.path())));
        holds.then_some("device node open")
    })
}

/// A device stacked on ours, named with its device-mapper name when it has one.
pub(super) fn holder_description(kernel_name: &str) -> String {
    match std::fs::read_to_string(format!("/sys/class/block/{kernel_name}/dm/name")) {
        Ok(n) => format!("{kernel_name} (device-mapper '{}')", n.trim()),
        Err(_) => kernel_name.to_string(),
    }
}

/// Whether the device at `path` is active swap (/proc/swaps).
pub(super) fn swap_active(path: &Path) -> bool {
    let Ok(swaps) = std::fs::read_to_string("/proc/swaps") else { return false };
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    swaps.lines().skip(1).any(|l| l.split_whitespace().next().map(Path::new) == Some(canon.as_path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parsing() {
        let maps = "7f00-7f10 r--p 00000000 fe:00 1234 /mnt/x/lib.so\n7f10-7f20 rw-p 00000000 00:00 0 \n";
        assert!(maps_mention(maps, (254, 0)));
        assert!(!maps_mention(maps, (254, 1)));
        assert!(!maps_mention("7f10-7f20 rw-p 00000000 fe:01 0 [heap]\n", (254, 1)));
    }

    #[test]
    fn names_a_process_whose_working_directory_is_on_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let st = std::fs::metadata(dir.path()).unwrap().dev();
        let dev = (nix::sys::stat::major(st) as u32, nix::sys::stat::minor(st) as u32);
        let mut child = std::process::Command::new("sleep").arg("30").current_dir(dir.path()).spawn().unwrap();
        // spawn() returns before the child has exec'd; wait until it is really `sleep`.
        let comm = format!("/proc/{}/comm", child.id());
        for _ in 0..500 {
            if std::fs::read_to_string(&comm).map(|c| c.trim() == "sleep").unwrap_or(false) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let found = holders_of(dev);
        let _ = child.kill();
        let _ = child.wait();
        let h = found.iter().find(|h| h.pid == child.id()).expect("child named");
        assert_eq!(h.command, "sleep");
        assert!(found.iter().all(|h| h.pid != std::process::id()));
    }
}
