//! The private line between `offdisk dock` (root, system service) and each desktop
//! `offdisk agent` (the user, in their session).
//!
//! The agent listens on `$XDG_RUNTIME_DIR/offdisk/agent.sock` (directory 0700, socket
//! 0600: only its user and root can connect). Both ends check the other with SO_PEERCRED
//! on the stream socket:
//! - the agent talks only to a peer running as root whose `/proc/PID/exe` is the offdisk
//!   executable, so no other program can make it show prompts or collect a passphrase;
//! - dock talks only to a socket under `/run/user/UID/` that is owned by UID and whose
//!   listening peer runs as UID, so no other user can pose as someone's agent; and only
//!   to the agents of the users [`super::audience`] admits (the active local session's
//!   user, the disk's registered user, root), so other users hear nothing.
//!
//! Dock sends one JSON [`Event`] per line. The only thing an agent ever sends back is the
//! answer to an `ask`: `+` and the passphrase (with `%`, CR and LF percent-escaped, as
//! Assuan does) or `-` to cancel, then a newline.

use super::ask_password::Reply;
use super::HotplugError;
use crate::secret::{Passphrase, SecretBytes};
use nix::sys::socket::{getsockopt, sockopt};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Socket name under the runtime directory.
pub const SOCKET_SUBPATH: &str = "offdisk/agent.sock";
const MAX_LINE: usize = 16 * 1024;

/// What dock tells the agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// A registered disk was docked and work starts.
    Started { disk: String, device: String },
    /// A passphrase is needed; `attempt` counts from 1; `error` says why it is asked again.
    Ask { id: String, disk: String, device: String, attempt: u32, max: u32, error: Option<String> },
    /// The request was answered elsewhere or given up.
    AskDone { id: String },
    /// How the job is going: `text` for people; `detail` (when the job gave numbers) for
    /// agents that draw their own.
    Progress {
        disk: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<ProgressDetail>,
    },
    Done { disk: String, summary: String },
    Failed { disk: String, reason: String },
    SafeToUnplug { disk: String },
}

/// A progress update in numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressDetail {
    pub files: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub bytes_per_second: u64,
    pub percent: Option<u8>,
    pub eta_seconds: Option<u64>,
}

/// Percent-escapes `%`, CR and LF so any passphrase fits on one line.
fn encode_reply(answer: Option<&Passphrase>) -> SecretBytes {
    let Some(p) = answer else { return SecretBytes::from_slice(b"-\n") };
    let mut out = SecretBytes::zeroed(2 + 3 * p.len());
    let buf = out.expose_mut();
    buf[0] = b'+';
    let mut n = 1;
    for &b in p.expose() {
        if matches!(b, b'%' | b'\r' | b'\n') {
            let hex = b"0123456789ABCDEF";
            buf[n..n + 3].copy_from_slice(&[b'%', hex[(b >> 4) as usize], hex[(b & 15) as usize]]);
            n += 3;
        } else {
            buf[n] = b;
            n += 1;
        }
    }
    buf[n] = b'\n';
    SecretBytes::from_slice(&out.expose()[..n + 1])
}

/// Decodes one reply line (without its newline).
fn decode_reply(line: &[u8]) -> Option<Reply> {
    match line.first()? {
        b'-' => Some(Reply::Cancelled),
        b'+' => {
            let src = &line[1..];
            let mut out = SecretBytes::zeroed(src.len());
            let (mut i, mut n) = (0, 0);
            while i < src.len() {
                if src[i] == b'%' {
                    let h = std::str::from_utf8(src.get(i + 1..i + 3)?).ok()?;
                    out.expose_mut()[n] = u8::from_str_radix(h, 16).ok()?;
                    i += 3;
                } else {
                    out.expose_mut()[n] = src[i];
                    i += 1;
                }
                n += 1;
            }
            Some(Reply::Passphrase(Passphrase::from_slice(&out.expose()[..n])))
        }
        _ => None,
    }
}

/// Reads bytes up to a newline into locked memory (no buffered reader keeping copies).
fn read_line(stream: &mut UnixStream) -> std::io::Result<Option<SecretBytes>> {
    let mut buf = SecretBytes::zeroed(MAX_LINE);
    let mut n = 0;
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if b[0] == b'\n' {
            return Ok(Some(SecretBytes::from_slice(&buf.expose()[..n])));
        }
        if n == MAX_LINE {
            return Err(std::io::Error::other("line too long"));
        }
        buf.expose_mut()[n] = b[0];
        zeroize::Zeroize::zeroize(&mut b);
        n += 1;
    }
}

/// One connected, checked agent, seen from dock.
pub struct Link {
    stream: UnixStream,
    pub uid: u32,
    /// The socket it was reached at (`None`: a stream checked some other way).
    pub path: Option<PathBuf>,
}

impl Link {
    /// Sends one event; `false` when the agent went away.
    pub fn send(&mut self, ev: &Event) -> bool {
        let mut line = serde_json::to_string(ev).unwrap_or_default();
        line.push('\n');
        self.stream.write_all(line.as_bytes()).is_ok()
    }
}

/// Dock's connections to every desktop agent it found.
#[derive(Default)]
pub struct AgentLinks {
    links: Vec<Link>,
}

impl AgentLinks {
    /// Connects to the console agents' sockets (`offdisk agent --console`, run by root):
    /// `<dir>/*.sock`, each owned by root with a root peer.
    pub fn connect_console(&mut self, dir: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.ends_with(".sock")) {
                if let Ok(l) = Self::connect_one(&e.path(), 0) {
                    self.links.push(l);
                }
            }
        }
    }

    /// Connects to one agent socket that must belong to `uid`.
    pub fn connect_one(path: &Path, uid: u32) -> std::io::Result<Link> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.file_type().is_socket() || meta.uid() != uid {
            return Err(std::io::Error::other("agent socket has the wrong type or owner"));
        }
        let stream = UnixStream::connect(path)?;
        let cred = getsockopt(&stream, sockopt::PeerCredentials).map_err(std::io::Error::from)?;
        if cred.uid() != uid {
            return Err(std::io::Error::other("agent runs as another user"));
        }
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Link { stream, uid, path: Some(path.to_path_buf()) })
    }

    /// Wraps a stream whose peer was checked some other way (socketpair, tests).
    pub fn connect_one_stream(stream: UnixStream, uid: u32) -> Link {
        Link { stream, uid, path: None }
    }

    /// Whether an agent reached at `path` is connected.
    pub fn has(&self, path: &Path) -> bool {
        self.links.iter().any(|l| l.path.as_deref() == Some(path))
    }

    /// Drops the agents of users not in `uids` (their connection is closed: they hear nothing more).
    pub fn retain_uids(&mut self, uids: &std::collections::BTreeSet<u32>) {
        self.links.retain(|l| uids.contains(&l.uid));
    }

    pub fn push(&mut self, link: Link) {
        self.links.push(link);
    }

    /// The users of the connected agents.
    pub fn uids(&self) -> Vec<u32> {
        self.links.iter().map(|l| l.uid).collect()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Sends an event to every agent; agents that went away are dropped.
    pub fn send(&mut self, ev: &Event) {
        self.links.retain_mut(|l| l.send(ev));
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.links.iter().map(|l| l.stream.as_fd()).collect()
    }

    /// Reads the reply of agent `i` (after poll said it is readable). A closed or
    /// misbehaving agent is dropped and gives `None`.
    pub fn read_reply(&mut self, i: usize) -> Option<Reply> {
        let l = self.links.get_mut(i)?;
        match read_line(&mut l.stream) {
            Ok(Some(line)) => decode_reply(line.expose()),
            _ => {
                self.links.remove(i);
                None
            }
        }
    }
}

/// Who an agent accepts as dock.
#[derive(Debug, Clone)]
pub struct TrustedPeer {
    pub uid: u32,
    /// The offdisk executable the peer must be running.
    pub exe: PathBuf,
}

impl TrustedPeer {
    /// Production: root, running the same offdisk executable as this agent.
    pub fn offdisk_service() -> TrustedPeer {
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/usr/bin/offdisk"));
        TrustedPeer { uid: 0, exe }
    }

    fn admits(&self, stream: &UnixStream) -> bool {
        let Ok(cred) = getsockopt(stream, sockopt::PeerCredentials) else { return false };
        if cred.uid() != self.uid {
            return false;
        }
        let want = std::fs::canonicalize(&self.exe).unwrap_or_else(|_| self.exe.clone());
        match std::fs::read_link(format!("/proc/{}/exe", cred.pid())) {
            Ok(exe) => Path::new(exe.to_string_lossy().trim_end_matches(" (deleted)")) == want,
            // A user's agent may not read the executable of a root process: the kernel shows
            // /proc/PID/exe only to those who may ptrace PID, so for the real dock (root, a
            // system unit) this is always EACCES. What anyone may read is the command name the
            // kernel set at exec from the executable's file name. A root process is trusted
            // with the passphrase anyway (it holds the disk's keys); the name still keeps
            // another root program, one tricked into connecting here, from passing for dock.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => comm_is(cred.pid(), &want),
            Err(_) => false,
        }
    }
}

/// Whether `/proc/PID/comm` is the file name of `exe` as the kernel records it at exec
/// (at most 15 bytes).
fn comm_is(pid: i32, exe: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = exe.file_name() else { return false };
    let name = &name.as_bytes()[..name.len().min(15)];
    match std::fs::read(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.strip_suffix(b"\n").unwrap_or(&comm) == name,
        Err(_) => false,
    }
}

/// The agent's listening socket.
pub struct AgentListener {
    listener: UnixListener,
    path: PathBuf,
}

impl AgentListener {
    /// Binds `<runtime_dir>/offdisk/agent.sock`, replacing a stale socket.
    pub fn bind(runtime_dir: &Path) -> Result<AgentListener, HotplugError> {
        let path = runtime_dir.join(SOCKET_SUBPATH);
        let dir = path.parent().expect("socket path has a parent");
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |e| HotplugError::io(what, e)
        };
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("securing"))?;
        if UnixStream::connect(&path).is_ok() {
            return Err(HotplugError::Step { step: "agent", why: "another offdisk agent already runs in this session".into(), code: crate::error::exit::BUSY });
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io("binding"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io("securing"))?;
        Ok(AgentListener { listener, path })
    }

    /// A console agent's socket: `<dir>/<pid>.sock`, the directory made root-only.
    pub fn bind_console(dir: &Path) -> Result<AgentListener, HotplugError> {
        let path = dir.join(format!("{}.sock", std::process::id()));
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |e| HotplugError::io(what, e)
        };
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("securing"))?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io("binding"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io("securing"))?;
        Ok(AgentListener { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection from a trusted peer; others are closed at once.
    pub fn accept(&self, trusted: &TrustedPeer) -> std::io::Result<DockConn> {
        loop {
            let (stream, _) = self.listener.accept()?;
            if trusted.admits(&stream) {
                return Ok(DockConn { stream });
            }
            eprintln!("offdisk agent: refused a connection from an untrusted process");
        }
    }
}

impl Drop for AgentListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One dock session, seen from the agent.
pub struct DockConn {
    stream: UnixStream,
}

impl DockConn {
    /// Wraps an already checked (or test) stream; [`AgentListener::accept`] is the checked way in.
    pub fn from_stream(stream: UnixStream) -> DockConn {
        DockConn { stream }
    }

    /// The next event; `None` when dock is finished.
    pub fn next_event(&mut self) -> std::io::Result<Option<Event>> {
        loop {
            let Some(line) = read_line(&mut self.stream)? else { return Ok(None) };
            if line.is_empty() {
                continue;
            }
            return serde_json::from_slice(line.expose()).map(Some).map_err(std::io::Error::other);
        }
    }

    pub fn reply(&mut self, answer: Option<&Passphrase>) -> std::io::Result<()> {
        self.stream.write_all(encode_reply(answer).expose())
    }

    pub fn try_clone(&self) -> std::io::Result<DockConn> {
        Ok(DockConn { stream: self.stream.try_clone()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_encoding_round_trips_any_bytes() {
        for p in [&b"simple"[..], b"with\nnewline", b"100%\r\n%41", b"", &[0xff, 0x00, b'%']] {
            let enc = encode_reply(Some(&Passphrase::from_slice(p)));
            let line = enc.expose();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            match decode_reply(&line[..line.len() - 1]) {
                Some(Reply::Passphrase(d)) => assert_eq!(d.expose(), p),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(decode_reply(b"-"), Some(Reply::Cancelled)));
        assert!(decode_reply(b"x").is_none());
        assert!(decode_reply(b"+%4").is_none(), "truncated escape");
    }

    #[test]
    fn a_peer_whose_executable_cannot_be_read_is_known_by_its_command_name() {
        let me = std::process::id() as i32;
        let exe = std::env::current_exe().unwrap();
        assert!(comm_is(me, &exe), "this test process is named after its executable");
        assert!(!comm_is(me, Path::new("/usr/bin/cat")));
        assert!(!comm_is(me, Path::new("/")));
    }

    #[test]
    fn dock_and_agent_talk_over_checked_socket() {
        let rt = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let listener = AgentListener::bind(rt.path()).unwrap();
        let mode = std::fs::metadata(listener.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let trusted = TrustedPeer { uid: me, exe: std::env::current_exe().unwrap() };
        let agent = std::thread::spawn(move || {
            let mut c = listener.accept(&trusted).unwrap();
            let ev = c.next_event().unwrap().unwrap();
            assert!(matches!(ev, Event::Ask { attempt: 1, .. }));
            c.reply(Some(&Passphrase::from_slice(b"pw\n2"))).unwrap();
            assert_eq!(c.next_event().unwrap(), Some(Event::SafeToUnplug { disk: "A".into() }));
            assert_eq!(c.next_event().unwrap(), None);
        });
        // Wait until the socket exists, then connect as dock would.
        let sock = rt.path().join(SOCKET_SUBPATH);
        let mut links = AgentLinks::default();
        links.push(AgentLinks::connect_one(&sock, me).unwrap());
        assert!(AgentLinks::connect_one(&sock, me + 1).is_err(), "socket of another owner is refused");
        links.send(&Event::Ask { id: "i".into(), disk: "A".into(), device: "d".into(), attempt: 1, max: 3, error: None });
        match links.read_reply(0) {
            Some(Reply::Passphrase(p)) => assert_eq!(p.expose(), b"pw\n2"),
            other => panic!("{other:?}"),
        }
        links.send(&Event::SafeToUnplug { disk: "A".into() });
        drop(links);
        agent.join().unwrap();
    }

    #[test]
    fn agent_refuses_untrusted_peers() {
        let rt = tempfile::tempdir().unwrap();
        let listener = AgentListener::bind(rt.path()).unwrap();
        let sock = listener.path().to_path_buf();
        // We are not running /bin/sh, so this peer is not trusted.
        let trusted = TrustedPeer { uid: nix::unistd::geteuid().as_raw(), exe: PathBuf::from("/bin/sh") };
        let mut s = UnixStream::connect(&sock).unwrap();
        listener.listener.set_nonblocking(true).unwrap();
        let r = listener.accept(&trusted);
        assert!(r.is_err(), "no trusted connection (WouldBlock after refusing ours)");
        // Our connection was closed by the agent.
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0);
        assert!(AgentListener::bind(rt.path()).is_err(), "a second agent in the same session is refused");
    }
}
