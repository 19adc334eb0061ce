//! systemd's password agent protocol, both sides.
//!
//! Asking (what `offdisk dock` does): a private datagram socket is bound in the ask
//! directory, an `ask.XXXX` ini file naming it is written there atomically (temp file +
//! rename, so an agent never sees half a file), and the answer arrives on the socket as
//! `+passphrase` or `-` (cancelled). Only answers sent by root or by our own user count
//! (checked with SCM_CREDENTIALS), as systemd itself does: the reply helpers of every
//! existing agent (tty, plymouth, wall, GNOME via `systemd-reply-password`) run as root.
//! The file and the socket are removed when the request is dropped, whatever happened.
//!
//! Answering (what `offdisk agent --console` and the tests do): [`scan`] the directory,
//! [`AskFile::parse`] each `ask.*` file, and [`AskFile::reply`] to its socket.

use super::HotplugError;
use crate::secret::{Passphrase, SecretBytes};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use std::fmt::Write as _;
use std::io::{IoSliceMut, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where systemd's agents look for requests.
pub const SYSTEM_DIR: &str = "/run/systemd/ask-password";

/// Every request offdisk posts has an `Id=` starting with this, so agents can tell ours.
pub const ID_PREFIX: &str = "offdisk-dock:";

/// Largest answer accepted; anything longer is refused rather than cut.
const MAX_ANSWER: usize = 8192;

/// What to ask.
#[derive(Debug, Clone)]
pub struct Request {
    /// Goes to `Id=`: `offdisk-dock:<luks uuid>`.
    pub id: String,
    /// One line shown by the agents (newlines and control characters are replaced).
    pub message: String,
    pub icon: Option<String>,
    /// How long agents may answer; becomes `NotAfter=` on CLOCK_MONOTONIC.
    pub timeout: Duration,
}

/// An answer from an agent.
#[derive(Debug)]
pub enum Reply {
    Passphrase(Passphrase),
    Cancelled,
}

/// A posted request: the ask file and the socket exist while this lives.
pub struct Pending {
    ask_path: PathBuf,
    socket_path: PathBuf,
    socket: UnixDatagram,
    not_after_usec: u64,
    allowed_uids: Vec<u32>,
}

/// Replaces control characters so a hostile label cannot add lines to the ini file.
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn monotonic_usec() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
}

fn random_hex(n: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    }))
}

impl Pending {
    /// Posts `req` in `dir` (normally [`SYSTEM_DIR`]).
    pub fn post(dir: &Path, req: &Request) -> Result<Pending, HotplugError> {
        let io = |what: &str| {
            let what = format!("{what} in {}", dir.display());
            move |e| HotplugError::io(what, e)
        };
        std::fs::create_dir_all(dir).map_err(io("creating the ask directory"))?;
        let tag = random_hex(8).map_err(io("random name"))?;
        let socket_path = dir.join(format!("sck.{tag}"));
        let socket = UnixDatagram::bind(&socket_path).map_err(io("binding the answer socket"))?;
        // Anyone may send (user-side reply helpers), but only allowed senders are believed.
        let _ = std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o622));
        setsockopt(&socket, sockopt::PassCred, &true).map_err(|e| HotplugError::Ask(format!("SO_PASSCRED: {e}")))?;
        socket.set_nonblocking(true).map_err(io("socket"))?;
        let not_after_usec = monotonic_usec() + req.timeout.as_micros() as u64;
        let mut text = String::from("[Ask]\n");
        let _ = writeln!(text, "PID={}", std::process::id());
        let _ = writeln!(text, "Socket={}", socket_path.display());
        text.push_str("AcceptCached=0\nEcho=0\n");
        let _ = writeln!(text, "NotAfter={not_after_usec}");
        let _ = writeln!(text, "Id={}", one_line(&req.id));
        let _ = writeln!(text, "Message={}", one_line(&req.message));
        if let Some(icon) = &req.icon {
            let _ = writeln!(text, "Icon={}", one_line(icon));
        }
        let ask_path = dir.join(format!("ask.{tag}"));
        let tmp = dir.join(format!(".tmp.{tag}"));
        let pending = Pending {
            ask_path: ask_path.clone(),
            socket_path,
            socket,
            not_after_usec,
            allowed_uids: vec![0, nix::unistd::geteuid().as_raw()],
        };
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode_0644().open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &ask_path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(HotplugError::io(format!("writing {}", ask_path.display()), e));
        }
        Ok(pending)
    }

    /// Raw descriptor, to wait on it together with other sources.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.socket.as_fd()
    }

    pub fn expired(&self) -> bool {
        monotonic_usec() >= self.not_after_usec
    }

    /// Takes an answer if one is waiting. Answers from other users, empty or oversized
    /// datagrams are dropped without a word: they are not agents we trust.
    pub fn try_recv(&self) -> Result<Option<Reply>, HotplugError> {
        loop {
            let mut buf = SecretBytes::zeroed(MAX_ANSWER + 1);
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let (len, uid) = {
                let mut iov = [IoSliceMut::new(buf.expose_mut())];
                let msg = match recvmsg::<UnixAddr>(self.socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC) {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(HotplugError::Ask(format!("receiving: {e}"))),
                };
                let mut uid = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmCredentials(cred) = c {
                            uid = Some(cred.uid());
                        }
                    }
                }
                (msg.bytes, uid)
            };
            let trusted = uid.is_some_and(|u| self.allowed_uids.contains(&u));
            if !trusted || len == 0 || len > MAX_ANSWER {
                continue;
            }
            let data = &buf.expose()[..len];
            return Ok(Some(match data[0] {
                b'+' => Reply::Passphrase(Passphrase::from_slice(&data[1..])),
                _ => Reply::Cancelled,
            }));
        }
    }

    /// Waits for an answer until the request expires (`None` then).
    pub fn wait(&self) -> Result<Option<Reply>, HotplugError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            if let Some(r) = self.try_recv()? {
                return Ok(Some(r));
            }
            let left = self.not_after_usec.saturating_sub(monotonic_usec());
            if left == 0 {
                return Ok(None);
            }
            let ms = (left / 1000).clamp(1, 1000) as u16;
            let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
    }

    pub fn ask_path(&self) -> &Path {
        &self.ask_path
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Ask file first: agents must not answer into a socket that is going away.
        let _ = std::fs::remove_file(&self.ask_path);
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

trait Mode0644 {
    fn mode_0644(&mut self) -> &mut Self;
}
impl Mode0644 for std::fs::OpenOptions {
    fn mode_0644(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o644)
    }
}

/// One request as an agent reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskFile {
    pub path: PathBuf,
    pub pid: u32,
    pub socket: PathBuf,
    pub not_after_usec: u64,
    pub id: String,
    pub message: String,
    pub icon: Option<String>,
    pub echo: bool,
}

impl AskFile {
    /// Parses the `[Ask]` section; unknown keys are ignored, a missing `Socket=` is an error.
    pub fn parse(path: &Path, text: &str) -> Option<AskFile> {
        let mut in_ask = false;
        let mut f = AskFile {
            path: path.to_path_buf(),
            pid: 0,
            socket: PathBuf::new(),
            not_after_usec: 0,
            id: String::new(),
            message: String::new(),
            icon: None,
            echo: false,
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_ask = line == "[Ask]";
                continue;
            }
            if !in_ask {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            match k.trim() {
                "PID" => f.pid = v.trim().parse().unwrap_or(0),
                "Socket" => f.socket = PathBuf::from(v.trim()),
                "NotAfter" => f.not_after_usec = v.trim().parse().unwrap_or(0),
                "Id" => f.id = v.to_string(),
                "Message" => f.message = v.to_string(),
                "Icon" => f.icon = Some(v.to_string()),
                "Echo" => f.echo = v.trim() == "1" || v.trim() == "yes",
                _ => {}
            }
        }
        (!f.socket.as_os_str().is_empty()).then_some(f)
    }

    pub fn expired(&self) -> bool {
        self.not_after_usec != 0 && monotonic_usec() >= self.not_after_usec
    }

    /// True when this request was posted by offdisk's service: our `Id=` prefix, the file
    /// owned by root (only root can write in the system directory anyway), and the asking
    /// process running the same offdisk executable as `expected_exe`.
    pub fn is_from_offdisk(&self, expected_exe: &Path, require_root: bool) -> bool {
        if !self.id.starts_with(ID_PREFIX) {
            return false;
        }
        if require_root {
            match std::fs::metadata(&self.path) {
                Ok(m) if m.uid() == 0 => {}
                _ => return false,
            }
        }
        match std::fs::read_link(format!("/proc/{}/exe", self.pid)) {
            Ok(exe) => same_executable(&exe, expected_exe),
            Err(_) => false,
        }
    }

    /// The LUKS UUID from an offdisk request's `Id=`.
    pub fn offdisk_uuid(&self) -> Option<&str> {
        self.id.strip_prefix(ID_PREFIX)
    }

    /// Sends `+passphrase`, or `-` for `None` (cancel).
    pub fn reply(&self, answer: Option<&Passphrase>) -> std::io::Result<()> {
        let mut msg = SecretBytes::zeroed(1 + answer.map_or(0, |p| p.len()));
        match answer {
            Some(p) => {
                msg.expose_mut()[0] = b'+';
                msg.expose_mut()[1..].copy_from_slice(p.expose());
            }
            None => msg.expose_mut()[0] = b'-',
        }
        let s = UnixDatagram::unbound()?;
        s.send_to(msg.expose(), &self.socket)?;
        Ok(())
    }
}

/// "(deleted)" suffixes appear when the binary was replaced by an upgrade; still ours.
fn same_executable(running: &Path, expected: &Path) -> bool {
    let running = running.to_string_lossy();
    let running = running.strip_suffix(" (deleted)").unwrap_or(&running);
    let expected = std::fs::canonicalize(expected).unwrap_or_else(|_| expected.to_path_buf());
    Path::new(running) == expected
}

/// All current, unexpired requests in `dir`.
pub fn scan(dir: &Path) -> Vec<AskFile> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("ask.") {
            continue;
        }
        let path = e.path();
        // Small files only: a request is a few lines.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_file() || meta.len() > 64 * 1024 {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        if let Some(a) = AskFile::parse(&path, &text) {
            if !a.expired() {
                out.push(a);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(timeout: Duration) -> Request {
        Request {
            id: format!("{ID_PREFIX}1234"),
            message: "Unlock backup disk \"x\"\nInjected=1".into(),
            icon: Some("drive-harddisk".into()),
            timeout,
        }
    }

    #[test]
    fn ask_file_is_written_and_parsed_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pending::post(dir.path(), &request(Duration::from_secs(30))).unwrap();
        let asks = scan(dir.path());
        assert_eq!(asks.len(), 1);
        let a = &asks[0];
        assert_eq!(a.pid, std::process::id());
        assert_eq!(a.offdisk_uuid(), Some("1234"));
        assert!(!a.message.contains('\n'));
        assert!(a.message.contains("Injected=1"), "kept as text, on the one line");
        let text = std::fs::read_to_string(p.ask_path()).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("Injected")).count(), 0);
        assert!(!a.echo);
        assert!(a.socket.starts_with(dir.path()));
        // Our own executable is the test binary: the exe check passes for it, not for others.
        let me = std::env::current_exe().unwrap();
        assert!(a.is_from_offdisk(&me, false));
        assert!(!a.is_from_offdisk(Path::new("/bin/sh"), false));
        drop(p);
        assert!(scan(dir.path()).is_empty(), "ask file removed on drop");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "socket removed too");
    }

    #[test]
    fn scripted_agent_answers_and_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pending::post(dir.path(), &request(Duration::from_secs(30))).unwrap();
        let d = dir.path().to_path_buf();
        let agent = std::thread::spawn(move || {
            let a = scan(&d).pop().unwrap();
            a.reply(Some(&Passphrase::from_slice(b"correct horse"))).unwrap();
        });
        match p.wait().unwrap() {
            Some(Reply::Passphrase(pw)) => assert_eq!(pw.expose(), b"correct horse"),
            other => panic!("unexpected {other:?}"),
        }
        agent.join().unwrap();
        scan(dir.path())[0].reply(None).unwrap();
        assert!(matches!(p.wait().unwrap(), Some(Reply::Cancelled)));
    }

    #[test]
    fn unanswered_request_expires() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pending::post(dir.path(), &request(Duration::from_millis(50))).unwrap();
        assert!(p.wait().unwrap().is_none());
        assert!(p.expired());
        assert!(scan(dir.path()).is_empty(), "expired requests are not offered");
    }

    #[test]
    fn foreign_requests_are_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ask.1");
        std::fs::write(&path, format!("[Ask]\nPID={}\nSocket=/nonexistent\nId=cryptsetup:/dev/sda\nMessage=x\n", std::process::id())).unwrap();
        let a = &scan(dir.path())[0];
        assert!(!a.is_from_offdisk(&std::env::current_exe().unwrap(), false));
        assert!(AskFile::parse(&path, "[Ask]\nPID=1\n").is_none(), "no socket, no request");
        assert!(AskFile::parse(&path, "[Other]\nSocket=/x\n").is_none());
    }
}
