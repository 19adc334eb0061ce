//! How library errors are shown to people: every error type knows its exit status
//! (cryptsetup's numbering where the same thing is meant) and, where it can, what to do next.

/// Exit statuses shared with cryptsetup.
pub mod exit {
    pub const OK: i32 = 0;
    /// Wrong parameters or a generic failure.
    pub const USAGE: i32 = 1;
    /// No key available with this passphrase.
    pub const NO_KEY: i32 = 2;
    /// Out of memory.
    pub const NO_MEMORY: i32 = 3;
    /// Wrong device specified, or an I/O error on it.
    pub const DEVICE: i32 = 4;
    /// Device already exists or is busy.
    pub const BUSY: i32 = 5;
    /// A backup that made its generation but could not back up some entries (permission
    /// denied, I/O error, a name too long for the target), as rsync's 23.
    pub const PARTIAL: i32 = 23;
    /// A backup that made its generation, where some entries vanished or were replaced
    /// while being read, as rsync's 24.
    pub const VANISHED: i32 = 24;
    /// The disk was pulled out during the run and everything opened was closed again: as a
    /// stop by SIGTERM (128 + 15), which is how systemd tells a dock of the pull, so both
    /// ways of learning it end alike.
    pub const PULLED: i32 = 143;
}

/// Implemented by every library error so the CLI can render it as
/// "what went wrong" plus "what to do".
pub trait Diagnose: std::error::Error {
    /// The process exit status for this error.
    fn exit_code(&self) -> i32 {
        exit::USAGE
    }
    /// A short suggestion of what the user can do about it.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Rewrites the raw `... : No such file or directory (os error 2)` that `io::Error` prints
/// into a sentence ("...: it does not exist"), and returns a hint for the first such error.
/// The CLI applies it to every message it shows, so no error reaches people as an errno.
pub fn plain_os_errors(message: &str) -> (String, Option<String>) {
    let mut out = message.to_string();
    let mut hint = None;
    while let Some(at) = out.find(" (os error ") {
        let rest = &out[at + " (os error ".len()..];
        let Some(close) = rest.find(')') else { break };
        let Ok(errno) = rest[..close].parse::<i32>() else { break };
        let end = at + " (os error ".len() + close + 1;
        // The text io::Error puts before "(os error N)" for this errno.
        let full = std::io::Error::from_raw_os_error(errno).to_string();
        let text = full.split(" (os error ").next().unwrap_or("").to_string();
        let start = out[..at].rfind(&text).filter(|s| s + text.len() == at).unwrap_or(at);
        // "path: Text" becomes "path: it does not exist"; a bare "Text" loses only the errno.
        let (start, joined) = match out[..start].strip_suffix(": ") {
            Some(before) => (before.len(), true),
            None => (start, false),
        };
        let (sentence, h) = errno_sentence(errno, &text);
        let replacement = if joined { sentence } else { text.clone() };
        out.replace_range(start..end, &replacement);
        hint = hint.or(h);
    }
    (out, hint)
}

/// What an errno means in a sentence (joined after a path), and what to do about it.
fn errno_sentence(errno: i32, text: &str) -> (String, Option<String>) {
    let (s, h): (String, Option<&str>) = match errno {
        libc::ENOENT => (": it does not exist".into(), Some("check the path (a typo, or a disk that is not attached or mounted?)")),
        libc::EACCES | libc::EPERM => (": permission denied".into(), Some("run offdisk as root, or check the file's owner and mode")),
        libc::ENOTDIR => (": a part of this path is not a directory".into(), Some("check the path")),
        libc::EISDIR => (": it is a directory, not a file".into(), Some("give a file")),
        libc::EEXIST => (": it already exists".into(), None),
        libc::ENOSPC => (": no space left on the disk".into(), Some("free some space (`df -h` shows where)")),
        libc::EROFS => (": the filesystem is read-only".into(), Some("mount it read-write")),
        libc::EBUSY => (": it is busy".into(), Some("close what uses it first")),
        libc::ENXIO | libc::ENODEV => (": no such device".into(), Some("the device vanished or does not exist: re-plug it and check `offdisk list`")),
        libc::EIO => (": input/output error".into(), Some("the disk reports I/O errors: check its cable and `dmesg`")),
        libc::ELOOP => (": a symbolic link is in the way".into(), Some("offdisk does not follow links here: give the real path")),
        _ => (format!(": {}", text.to_lowercase()), None),
    };
    (s, h.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::plain_os_errors;

    #[test]
    fn raw_os_errors_become_sentences_with_a_hint() {
        let (m, h) = plain_os_errors("source /nonexist: No such file or directory (os error 2)");
        assert_eq!(m, "source /nonexist: it does not exist");
        assert!(h.unwrap().contains("check the path"));
        let (m, h) = plain_os_errors("reading x: Permission denied (os error 13)");
        assert_eq!(m, "reading x: permission denied");
        assert!(h.unwrap().contains("root"));
        let (m, h) = plain_os_errors("No such file or directory (os error 2)");
        assert_eq!(m, "No such file or directory");
        assert!(h.is_some());
        let (m, h) = plain_os_errors("label too long");
        assert_eq!((m.as_str(), h), ("label too long", None));
        let (m, _) = plain_os_errors("a: Broken pipe (os error 32)");
        assert_eq!(m, "a: broken pipe");
    }
}
