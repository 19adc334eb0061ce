//! Who hears about a dock: which desktop agents dock tells what is happening and asks for
//! the passphrase.
//!
//! Being logged in is not enough: any local user runs an agent, and an agent that hears a
//! dock can see it, cancel it and answer its passphrase question with guesses. So dock
//! connects only to the agents of
//! - the user of the **active local session** on a seat (the person at the machine), read
//!   from logind's runtime state: `/run/systemd/seats/SEAT` names the active session
//!   (`ACTIVE=`), `/run/systemd/sessions/ID` its user (`UID=`), and that it is local
//!   (`REMOTE=0`), active and a user session (`CLASS=user`, not a greeter or lock screen).
//!   These are the files libsystemd's sd-login reads for `sd_seat_get_active`,
//!   `sd_session_get_uid` and `sd_session_is_remote`; reading them keeps a oneshot system
//!   unit off the D-Bus round trips. They are root's files on a root-only tmpfs, and are
//!   still read no-follow with a size bound;
//! - the user named in the disk's registration (`user = "NAME"` in its `[[disk]]` table,
//!   `offdisk register --user`), for a disk that belongs to someone who may not be at the
//!   seat when it is docked;
//! - root (console agents, `offdisk agent --console`): root holds the disk's keys anyway.
//!
//! The set is taken again before every event and while a question waits, so a user switch
//! moves the dock to the new active user and the old one hears nothing more.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where logind keeps its seats and sessions.
pub const SEATS_DIR: &str = "/run/systemd/seats";
pub const SESSIONS_DIR: &str = "/run/systemd/sessions";
/// Largest logind state file read (they are a few hundred bytes).
const MAX_STATE: u64 = 64 * 1024;

/// logind's runtime state, or a stand-in directory pair in tests.
#[derive(Debug, Clone)]
pub struct Logind {
    pub seats: PathBuf,
    pub sessions: PathBuf,
}

impl Logind {
    pub fn system() -> Logind {
        Logind { seats: PathBuf::from(SEATS_DIR), sessions: PathBuf::from(SESSIONS_DIR) }
    }

    /// The users of the active session of each seat, where that session is a local user
    /// session. No logind (no such directory): nobody.
    pub fn active_local_users(&self) -> BTreeSet<u32> {
        let mut users = BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(&self.seats) else { return users };
        for e in rd.flatten() {
            let Some(seat) = e.file_name().to_str().filter(|s| is_logind_id(s)).map(str::to_string) else { continue };
            let Some(seat_state) = read_state(&e.path()) else { continue };
            let Some(session) = value(&seat_state, "ACTIVE").filter(|s| is_logind_id(s)) else { continue };
            let Some(s) = read_state(&self.sessions.join(session)) else { continue };
            let local = value(&s, "REMOTE").is_none_or(|v| v == "0");
            let active = value(&s, "ACTIVE").is_none_or(|v| v == "1");
            let user_class = value(&s, "CLASS").is_none_or(|v| v == "user");
            let on_seat = value(&s, "SEAT").is_none_or(|v| v == seat);
            if let (true, true, true, true, Some(uid)) = (local, active, user_class, on_seat, value(&s, "UID").and_then(|u| u.parse().ok())) {
                users.insert(uid);
            }
        }
        users
    }
}

/// Seat and session names as logind makes them (`seat0`, `2`, `c1`); anything else never
/// becomes a path.
fn is_logind_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') && !s.starts_with('-')
}

/// A `KEY=VALUE` file, read no-follow (a regular file only) with a size bound.
fn read_state(path: &Path) -> Option<String> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(MAX_STATE).read_to_string(&mut text).ok()?;
    Some(text)
}

fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A registration's `user`: a user name, or a numeric UID.
pub fn resolve_user(user: &str) -> Option<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Some(uid);
    }
    nix::unistd::User::from_name(user).ok().flatten().map(|u| u.uid.as_raw())
}

/// Who may hear about the dock under way.
#[derive(Debug, Clone)]
pub struct Audience {
    /// Where desktop agents' runtime directories are: `<dir>/<uid>/offdisk/agent.sock`.
    pub agents_dir: PathBuf,
    pub logind: Logind,
    /// The disk's registered user, once dock knows the disk.
    pub registered: Option<u32>,
}

impl Audience {
    pub fn system() -> Audience {
        Audience { agents_dir: PathBuf::from("/run/user"), logind: Logind::system(), registered: None }
    }

    /// Root, the active local sessions' users and the registered user, as of now.
    pub fn admitted(&self) -> BTreeSet<u32> {
        let mut uids = self.logind.active_local_users();
        uids.insert(0);
        uids.extend(self.registered);
        uids
    }

    /// The agent socket of `uid`.
    pub fn socket_of(&self, uid: u32) -> PathBuf {
        self.agents_dir.join(uid.to_string()).join(super::agent_link::SOCKET_SUBPATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn only_the_active_local_user_session_counts() {
        let d = tempfile::tempdir().unwrap();
        let l = Logind { seats: d.path().join("seats"), sessions: d.path().join("sessions") };
        assert!(l.active_local_users().is_empty(), "no logind: nobody");
        std::fs::create_dir_all(&l.seats).unwrap();
        std::fs::create_dir_all(&l.sessions).unwrap();
        write(&l.seats.join("seat0"), "# This is private data. Do not parse.\nIS_SEAT0=1\nACTIVE=2\nACTIVE_UID=1000\nSESSIONS=2 c1\nUIDS=1000 1001\n");
        write(&l.sessions.join("2"), "UID=1000\nUSER=alice\nACTIVE=1\nIS_DISPLAY=1\nSTATE=active\nREMOTE=0\nTYPE=wayland\nCLASS=user\nSEAT=seat0\n");
        write(&l.sessions.join("c1"), "UID=1001\nACTIVE=0\nREMOTE=0\nCLASS=user\nSEAT=seat0\n");
        assert_eq!(l.active_local_users(), BTreeSet::from([1000]));
        // The greeter on the seat is not a user at the machine.
        write(&l.sessions.join("2"), "UID=120\nACTIVE=1\nREMOTE=0\nCLASS=greeter\nSEAT=seat0\n");
        assert!(l.active_local_users().is_empty());
        // A remote session (ssh with a seat claimed) is not local.
        write(&l.sessions.join("2"), "UID=1000\nACTIVE=1\nREMOTE=1\nCLASS=user\nSEAT=seat0\n");
        assert!(l.active_local_users().is_empty());
        // A session of another seat named active here is refused.
        write(&l.sessions.join("2"), "UID=1000\nACTIVE=1\nREMOTE=0\nCLASS=user\nSEAT=seat1\n");
        assert!(l.active_local_users().is_empty());
        // A session name that would walk out of the sessions directory is never opened.
        write(&d.path().join("outside"), "UID=1000\nACTIVE=1\nREMOTE=0\n");
        write(&l.seats.join("seat0"), "ACTIVE=../outside\n");
        assert!(l.active_local_users().is_empty());
        // Symlinked state is not followed.
        std::os::unix::fs::symlink(d.path().join("outside"), l.sessions.join("3")).unwrap();
        write(&l.seats.join("seat0"), "ACTIVE=3\n");
        assert!(l.active_local_users().is_empty());
    }

    #[test]
    fn audience_is_root_active_users_and_registered_user() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Audience { agents_dir: d.path().into(), logind: Logind { seats: d.path().join("none"), sessions: d.path().join("none") }, registered: None };
        assert_eq!(a.admitted(), BTreeSet::from([0]));
        a.registered = Some(1002);
        assert_eq!(a.admitted(), BTreeSet::from([0, 1002]));
        assert_eq!(a.socket_of(7), d.path().join("7/offdisk/agent.sock"));
        assert_eq!(resolve_user("1005"), Some(1005));
        assert_eq!(resolve_user("root"), Some(0));
        assert_eq!(resolve_user("no-such-user-offdisk"), None);
    }
}
