//! Synchronising with udev as device-mapper's own tools do, so that udev treats offdisk's
//! mappings exactly like cryptsetup's: `SYSTEMD_READY=1`, blkid's `ID_FS_*`, the
//! `/dev/disk/by-label/...` links, a cleartext device udisks recognises.
//!
//! The protocol (device-mapper's documented udev synchronisation): the ioctls that generate a
//! uevent (resume, remove, rename) carry a 32-bit cookie in `event_nr`. Its high 16 bits are
//! flags telling the dm udev rules what to do (`dmsetup udevflags` turns them into
//! `DM_UDEV_*_FLAG=1` properties); a change event *without* `DM_UDEV_PRIMARY_SOURCE_FLAG`
//! makes the rules import the flags of the add event, which disable the disk and other rules
//! (so systemd sees the device as not ready). Its low 16 bits name a System V semaphore
//! (key `0x0D4D << 16 | low bits`) that the caller creates with value 1 and raises by one
//! before the ioctl; the rule `95-dm-notify.rules` runs `dmsetup udevcomplete COOKIE` when udev
//! has finished the event, lowering it by one. The caller lowers it by one too and waits for
//! zero: then udev's database and links are complete. No polling.

use super::ioctl;
use std::io;
use std::path::Path;
use std::time::Duration;

/// The constant high half of every cookie's semaphore key.
pub const COOKIE_MAGIC: u32 = 0x0D4D;
const FLAGS_SHIFT: u32 = 16;

/// Flags for the dm udev rules (the high 16 bits of the cookie).
pub mod flags {
    pub const DISABLE_DM_RULES: u16 = 0x0001;
    pub const DISABLE_SUBSYSTEM_RULES: u16 = 0x0002;
    pub const DISABLE_DISK_RULES: u16 = 0x0004;
    pub const DISABLE_OTHER_RULES: u16 = 0x0008;
    pub const LOW_PRIORITY: u16 = 0x0010;
    /// udev makes the /dev/mapper nodes; the caller does not.
    pub const DISABLE_LIBRARY_FALLBACK: u16 = 0x0020;
    /// This event comes from the tool that made the device: trust its flags, not the db's.
    pub const PRIMARY_SOURCE: u16 = 0x0040;
}

/// What offdisk's resume and remove carry: what cryptsetup's do for a public mapping while
/// udev runs (libdevmapper adds the primary-source flag to the events it causes).
pub const MAPPING_FLAGS: u16 = flags::PRIMARY_SOURCE | flags::DISABLE_LIBRARY_FALLBACK;

/// How long to wait for udev at most (its own event timeout is 180 s; a wedged udev must not
/// hang a dock forever: the node is then made or found as without udev).
pub const WAIT_LIMIT: Duration = Duration::from_secs(90);

const RULES_DIRS: &[&str] = &["/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d"];

/// Whether udev runs here.
pub fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// Whether a udev rule completes dm cookies (Debian's dmsetup ships `95-dm-notify.rules`).
pub fn notify_rules_installed() -> bool {
    RULES_DIRS.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with("dm-notify.rules")))
    })
}

/// The `event_nr` value for `flags` and the semaphore `base` (0: flags only, nobody waits).
pub fn cookie_value(flags: u16, base: u16) -> u32 {
    ((flags as u32) << FLAGS_SHIFT) | base as u32
}

/// The semaphore key of a cookie with base `base`.
pub fn semaphore_key(base: u16) -> i32 {
    ((COOKIE_MAGIC << FLAGS_SHIFT) | base as u32) as i32
}

/// One cookie for one uevent-generating ioctl.
#[derive(Debug)]
pub struct Cookie {
    flags: u16,
    /// (semaphore id, base) when udev will complete it; `None`: flags only.
    sem: Option<(i32, u16)>,
}

impl Cookie {
    /// A cookie for an ioctl about to run: with a semaphore when udev runs and the notify rule
    /// is installed, else flags only (nothing to wait for). `None` without udev at all.
    pub fn new(flags: u16) -> Option<Cookie> {
        if !udev_running() {
            return None;
        }
        if !notify_rules_installed() {
            return Some(Cookie { flags, sem: None });
        }
        for _ in 0..64 {
            let mut b = [0u8; 2];
            if getrandom::fill(&mut b).is_err() {
                break;
            }
            let base = u16::from_ne_bytes(b);
            if base == 0 {
                continue;
            }
            match ioctl::sem_create(semaphore_key(base), 1) {
                Ok(id) => {
                    // One for this ioctl's uevent: udev's `udevcomplete` takes it back.
                    if ioctl::sem_add(id, 1).is_err() {
                        let _ = ioctl::sem_remove(id);
                        break;
                    }
                    return Some(Cookie { flags, sem: Some((id, base)) });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(_) => break,
            }
        }
        // No semaphores (e.g. a restricted IPC namespace): the flags still matter.
        Some(Cookie { flags, sem: None })
    }

    /// The value for the ioctl's `event_nr`.
    pub fn event_nr(&self) -> u32 {
        cookie_value(self.flags, self.sem.map(|(_, b)| b).unwrap_or(0))
    }

    /// After the ioctl: waits until udev has processed its uevent (when there was one).
    pub fn wait(mut self, ioctl_flags: u32) -> io::Result<()> {
        let Some((id, _)) = self.sem.take() else { return Ok(()) };
        let r = (|| {
            if ioctl_flags & ioctl::DM_UEVENT_GENERATED_FLAG == 0 {
                return Ok(()); // no uevent: udev will never complete it
            }
            // Our own share; udev's `udevcomplete` brings it to zero.
            ioctl::sem_add(id, -1)?;
            match ioctl::sem_wait_zero(id, WAIT_LIMIT) {
                Err(e) if e.raw_os_error() == Some(libc::EIDRM) => Ok(()),
                r => r,
            }
        })();
        let _ = ioctl::sem_remove(id);
        r
    }

    /// The semaphore's current value (tests).
    pub fn value(&self) -> Option<i32> {
        self.sem.and_then(|(id, _)| ioctl::sem_value(id).ok())
    }
}

impl Drop for Cookie {
    fn drop(&mut self) {
        // An ioctl that failed (or a wait never called): leave no semaphore behind.
        if let Some((id, _)) = self.sem.take() {
            let _ = ioctl::sem_remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_layout_matches_dmsetup() {
        // `dmsetup udevflags 0x00600123` reports PRIMARY_SOURCE and DISABLE_LIBRARY_FALLBACK;
        // the semaphore for base 0x0123 has key 0x0D4D0123.
        assert_eq!(cookie_value(MAPPING_FLAGS, 0x0123), 0x0060_0123);
        assert_eq!(semaphore_key(0x0123), 0x0D4D_0123);
        assert_eq!(cookie_value(flags::PRIMARY_SOURCE, 0), 0x0040_0000);
    }

    #[test]
    fn the_semaphore_protocol_completes_when_udev_decrements() {
        // Play both sides on a private key: create (1) + ours (2), udev's udevcomplete (1),
        // the waiter's own decrement (0), then the wait returns at once.
        let mut created = None;
        for base in 0xF000u16..0xF100 {
            if let Ok(id) = ioctl::sem_create(semaphore_key(base), 1) {
                created = Some(id);
                break;
            }
        }
        let Some(id) = created else { return }; // no SysV IPC in this sandbox
        let c = Cookie { flags: MAPPING_FLAGS, sem: Some((id, 0xF000)) };
        ioctl::sem_add(id, 1).unwrap();
        assert_eq!(c.value(), Some(2));
        ioctl::sem_add(id, -1).unwrap(); // what `dmsetup udevcomplete` does
        c.wait(ioctl::DM_UEVENT_GENERATED_FLAG).unwrap();
        assert!(ioctl::sem_value(id).is_err(), "the semaphore is removed after the wait");
    }

    #[test]
    fn no_uevent_means_no_wait_and_no_leftover() {
        let Ok(id) = (0xF100u16..0xF200).find_map(|b| ioctl::sem_create(semaphore_key(b), 1).ok()).ok_or(()) else { return };
        ioctl::sem_add(id, 1).unwrap();
        let c = Cookie { flags: MAPPING_FLAGS, sem: Some((id, 0xF100)) };
        // Nobody will decrement: without the generated flag the wait must not block.
        c.wait(0).unwrap();
        assert!(ioctl::sem_value(id).is_err());
    }

    #[test]
    fn a_wait_that_udev_never_completes_times_out_rather_than_hangs() {
        let Ok(id) = (0xF200u16..0xF300).find_map(|b| ioctl::sem_create(semaphore_key(b), 1).ok()).ok_or(()) else { return };
        // Value 1 and nobody to bring it to 0: a short timed wait fails with EAGAIN.
        let e = ioctl::sem_wait_zero(id, Duration::from_millis(10)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        ioctl::sem_remove(id).unwrap();
    }
}
