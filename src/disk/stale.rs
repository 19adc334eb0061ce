//! Stale mappings: an offdisk mapping (`luks-<uuid>`) left behind when its disk was pulled out
//! (or its process killed) while open. The kernel keeps such a mapping on the vanished device;
//! when the disk comes back, the name is taken and nothing can open it until the leftover goes.
//!
//! Decide, then do: [`facts`] reads what the kernel says about each mapping, [`plan`] (pure)
//! decides what each one is, [`apply`] unmounts (lazily: the device is gone) and removes the
//! stale ones. A mapping someone still uses is reported, never torn down.

use super::{busy, mount, sysfs};
use crate::dm::{self, DmError};
use std::fmt;
use std::path::PathBuf;

/// One device a mapping is built on, as the kernel sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    pub dev: (u32, u32),
    /// The kernel name at that (major, minor) now, if any device has it.
    pub now: Option<String>,
    /// Whether that device lists the mapping among its holders: false when the number was
    /// reused by a device that appeared after the mapping's own one vanished.
    pub holds_mapping: bool,
}

/// What the kernel says about one device-mapper device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingFacts {
    pub name: String,
    /// The LUKS UUID from the DM UUID (`CRYPT-LUKS2-<uuid>-<name>`), for crypt mappings.
    pub luks_uuid: Option<String>,
    pub dev: (u32, u32),
    pub backing: Vec<Backing>,
    /// Where it is mounted in this mount namespace.
    pub mounts: Vec<PathBuf>,
    /// Who uses it: processes with files on it or its node open, devices stacked on it.
    pub users: Vec<String>,
}

/// The disk about to be opened: its LUKS UUID and the device holding the header.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub luks_uuid: &'a str,
    pub dev: (u32, u32),
}

/// Why a mapping is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// No device has the number it is built on any more.
    Gone { dev: (u32, u32) },
    /// A different device has that number now (the disk came back, or another took its place).
    Replaced { dev: (u32, u32), now: String },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Gone { dev } => write!(f, "its disk ({}:{}) is gone", dev.0, dev.1),
            Why::Replaced { dev, now } => {
                write!(f, "its disk ({}:{}) is gone; /dev/{now} is a new device with that number", dev.0, dev.1)
            }
        }
    }
}

/// The decision for one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stale and unused: unmount these (lazily) and remove it.
    Remove { name: String, why: Why, unmount: Vec<PathBuf> },
    /// Stale but still in use: report, leave it.
    InUse { name: String, why: Why, users: Vec<String> },
    /// The wanted disk's UUID, open from another device that is present (a copy of the disk?).
    OtherDevice { name: String, device: String },
}

/// Whether `m` is a mapping offdisk (or udisks) makes: `luks-<uuid>` with a matching DM UUID.
fn is_offdisk_mapping(m: &MappingFacts) -> bool {
    m.luks_uuid.as_deref().is_some_and(|u| m.name.eq_ignore_ascii_case(&format!("luks-{u}")))
}

/// Why `m` is stale, or `None` when every device under it is present and holds it.
pub fn staleness(m: &MappingFacts) -> Option<Why> {
    m.backing.iter().find_map(|b| match (&b.now, b.holds_mapping) {
        (None, _) => Some(Why::Gone { dev: b.dev }),
        (Some(now), false) => Some(Why::Replaced { dev: b.dev, now: now.clone() }),
        (Some(_), true) => None,
    })
}

/// Decides what to do with each mapping. Only offdisk's own mappings are touched; a mapping of
/// another tool, and a live one, is left out of the plan.
pub fn plan(mappings: &[MappingFacts], wanted: Option<Wanted<'_>>) -> Vec<Verdict> {
    let mut out = Vec::new();
    for m in mappings.iter().filter(|m| is_offdisk_mapping(m)) {
        match staleness(m) {
            Some(why) if m.users.is_empty() => out.push(Verdict::Remove { name: m.name.clone(), why, unmount: m.mounts.clone() }),
            Some(why) => out.push(Verdict::InUse { name: m.name.clone(), why, users: m.users.clone() }),
            None => {
                let Some(w) = wanted else { continue };
                let same_disk = m.luks_uuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(w.luks_uuid));
                if same_disk && !m.backing.iter().any(|b| b.dev == w.dev) {
                    let device = m.backing.iter().filter_map(|b| b.now.clone()).next().unwrap_or_default();
                    out.push(Verdict::OtherDevice { name: m.name.clone(), device });
                }
            }
        }
    }
    out
}

/// What [`apply`] did with one verdict: one line for the user each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    Removed { name: String, why: Why, unmounted: Vec<PathBuf> },
    /// Left in place: who uses it (empty: held where we cannot see, e.g. another namespace).
    Kept { name: String, why: Why, users: Vec<String> },
    OtherDevice { name: String, device: String },
    Failed { name: String, why: Why, error: String },
}

impl Cleaned {
    /// Whether the mapping is gone now.
    pub fn removed(&self) -> bool {
        matches!(self, Cleaned::Removed { .. })
    }
    pub fn name(&self) -> &str {
        match self {
            Cleaned::Removed { name, .. } | Cleaned::Kept { name, .. } | Cleaned::OtherDevice { name, .. } | Cleaned::Failed { name, .. } => name,
        }
    }
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cleaned::Removed { name, why, unmounted } => {
                write!(f, "removed stale mapping {name} ({why})")?;
                if !unmounted.is_empty() {
                    let dirs: Vec<String> = unmounted.iter().map(|d| d.display().to_string()).collect();
                    write!(f, ", lazily unmounted {}", dirs.join(", "))?;
                }
                Ok(())
            }
            Cleaned::Kept { name, why, users } if users.is_empty() => write!(
                f,
                "stale mapping {name} ({why}) is still held (by a mount in another namespace or the kernel): left in place; \
                 once that ends, `offdisk close {name}` removes it"
            ),
            Cleaned::Kept { name, why, users } => write!(
                f,
                "stale mapping {name} ({why}) is still in use by {}: left in place; close those, then `offdisk close {name}`",
                users.join(", ")
            ),
            Cleaned::OtherDevice { name, device } => {
                write!(f, "{name} is open from another device (/dev/{device}) with the same LUKS UUID: left in place")
            }
            Cleaned::Failed { name, why, error } => write!(f, "stale mapping {name} ({why}) could not be removed: {error}"),
        }
    }
}

/// Carries out the plan: lazy unmounts, then removal. Never fails as a whole: each mapping's
/// outcome is reported.
pub fn apply(verdicts: Vec<Verdict>) -> Vec<Cleaned> {
    let ctl = dm::Control::open().ok();
    verdicts
        .into_iter()
        .map(|v| match v {
            Verdict::InUse { name, why, users } => Cleaned::Kept { name, why, users },
            Verdict::OtherDevice { name, device } => Cleaned::OtherDevice { name, device },
            Verdict::Remove { name, why, unmount } => {
                let mut unmounted = Vec::new();
                for dir in unmount {
                    // The device is gone: a normal unmount may fail on the dead journal, and
                    // nothing on it can be saved any more. Detach it.
                    match nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
                        Ok(()) => {
                            super::mount::remove_default_mount_dir(&dir);
                            unmounted.push(dir);
                        }
                        Err(e) => return Cleaned::Failed { name, why, error: format!("unmounting {}: {e}", dir.display()) },
                    }
                }
                let Some(ctl) = &ctl else {
                    return Cleaned::Failed { name, why, error: "device-mapper is not available".into() };
                };
                match ctl.remove(&name) {
                    Ok(()) | Err(DmError::NotFound(_)) => Cleaned::Removed { name, why, unmounted },
                    Err(DmError::Busy(_)) => Cleaned::Kept { name, why, users: Vec::new() },
                    Err(e) => Cleaned::Failed { name, why, error: e.to_string() },
                }
            }
        })
        .collect()
}

/// The kernel's view of every device-mapper device (empty without device-mapper or root).
pub fn facts() -> Vec<MappingFacts> {
    let Ok(ctl) = dm::Control::open() else { return Vec::new() };
    let Ok(list) = ctl.list() else { return Vec::new() };
    let mounts = mount::mounts().unwrap_or_default();
    list.into_iter()
        .map(|m| {
            let kernel_name = format!("dm-{}", m.dev.1);
            let backing = ctl
                .deps(&m.name)
                .unwrap_or_default()
                .into_iter()
                .map(|dev| {
                    let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
                    let now = std::fs::canonicalize(&sys).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
                    let holds_mapping = sys.join("holders").join(&kernel_name).exists();
                    Backing { dev, now, holds_mapping }
                })
                .collect();
            let own_mounts: Vec<PathBuf> = mounts.iter().filter(|e| e.dev == m.dev).map(|e| e.mount_point.clone()).collect();
            let mut f = MappingFacts { luks_uuid: m.luks().map(|(_, u)| u), name: m.name, dev: m.dev, backing, mounts: own_mounts, users: Vec::new() };
            // Who uses it matters only for a stale one (a scan of /proc per mapping).
            if staleness(&f).is_some() {
                f.users = users_of(m.dev, &kernel_name);
            }
            f
        })
        .collect()
}

/// Processes with files on the mapping or its node open, and devices stacked on it.
fn users_of(dev: (u32, u32), kernel_name: &str) -> Vec<String> {
    let mut users: Vec<String> = busy::holders_of(dev).iter().chain(busy::openers_of_node(dev).iter()).map(|h| h.to_string()).collect();
    users.dedup();
    for h in sysfs::device(kernel_name).map(|d| d.holders).unwrap_or_default() {
        users.push(format!("/dev/{h} (stacked on it)"));
    }
    users
}

/// Finds and cleans stale offdisk mappings (see [`plan`]); returns one outcome per mapping
/// that was stale (or, for `wanted`, open from another device).
pub fn clean(wanted: Option<Wanted<'_>>) -> Vec<Cleaned> {
    apply(plan(&facts(), wanted))
}

/// The facts of the mapping named `name`, if there is one.
pub fn facts_of(name: &str) -> Option<MappingFacts> {
    facts().into_iter().find(|m| m.name == name)
}

/// Whether the mapping `name` is stale, with the reason.
pub fn why_stale(name: &str) -> Option<Why> {
    facts_of(name).as_ref().and_then(staleness)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn mapping(name: &str, uuid: Option<&str>, backing: Vec<Backing>) -> MappingFacts {
        MappingFacts { name: name.into(), luks_uuid: uuid.map(str::to_string), dev: (253, 0), backing, mounts: Vec::new(), users: Vec::new() }
    }
    fn present(dev: (u32, u32), now: &str) -> Backing {
        Backing { dev, now: Some(now.into()), holds_mapping: true }
    }
    fn gone(dev: (u32, u32)) -> Backing {
        Backing { dev, now: None, holds_mapping: false }
    }
    fn reused(dev: (u32, u32), now: &str) -> Backing {
        Backing { dev, now: Some(now.into()), holds_mapping: false }
    }

    #[test]
    fn a_live_mapping_is_left_alone() {
        let m = mapping(&format!("luks-{U}"), Some(U), vec![present((8, 17), "sdb1")]);
        assert_eq!(plan(std::slice::from_ref(&m), None), vec![]);
        // Docking the same disk again: it is simply open.
        assert_eq!(plan(&[m], Some(Wanted { luks_uuid: U, dev: (8, 17) })), vec![]);
    }

    #[test]
    fn a_mapping_on_a_vanished_device_is_removed_with_its_mounts() {
        let mut m = mapping(&format!("luks-{U}"), Some(U), vec![gone((8, 17))]);
        m.mounts = vec![PathBuf::from("/media/OFFSITE1")];
        assert_eq!(
            plan(&[m], None),
            vec![Verdict::Remove { name: format!("luks-{U}"), why: Why::Gone { dev: (8, 17) }, unmount: vec![PathBuf::from("/media/OFFSITE1")] }]
        );
    }

    #[test]
    fn a_number_reused_by_the_returning_disk_is_stale() {
        // The disk came back as sdb1 again (8:17), but the old mapping holds the dead device:
        // the new sdb1 does not list it as a holder.
        let m = mapping(&format!("luks-{U}"), Some(U), vec![reused((8, 17), "sdb1")]);
        let v = plan(&[m], Some(Wanted { luks_uuid: U, dev: (8, 17) }));
        assert_eq!(v, vec![Verdict::Remove { name: format!("luks-{U}"), why: Why::Replaced { dev: (8, 17), now: "sdb1".into() }, unmount: vec![] }]);
    }

    #[test]
    fn a_stale_mapping_in_use_is_reported_not_removed() {
        let mut m = mapping(&format!("luks-{U}"), Some(U), vec![gone((8, 17))]);
        m.mounts = vec![PathBuf::from("/media/OFFSITE1")];
        m.users = vec!["bash (pid 42, working directory)".into()];
        assert_eq!(
            plan(&[m], None),
            vec![Verdict::InUse { name: format!("luks-{U}"), why: Why::Gone { dev: (8, 17) }, users: vec!["bash (pid 42, working directory)".into()] }]
        );
    }

    #[test]
    fn mappings_of_other_tools_are_never_touched() {
        let other = [
            mapping("cryptroot", Some(U), vec![gone((8, 2))]),     // cryptsetup, its own name
            mapping("vg-home", None, vec![gone((8, 3))]),          // LVM
            mapping(&format!("luks-{U}"), None, vec![gone((8, 4))]), // our name, not a LUKS DM UUID
        ];
        assert_eq!(plan(&other, Some(Wanted { luks_uuid: U, dev: (8, 17) })), vec![]);
    }

    #[test]
    fn the_same_uuid_open_from_another_present_device_is_reported() {
        let m = mapping(&format!("luks-{U}"), Some(U), vec![present((8, 33), "sdc1")]);
        assert_eq!(
            plan(&[m], Some(Wanted { luks_uuid: U, dev: (8, 17) })),
            vec![Verdict::OtherDevice { name: format!("luks-{U}"), device: "sdc1".into() }]
        );
    }

    #[test]
    fn any_stale_offdisk_mapping_is_cleaned_not_only_the_wanted_disk() {
        let u2 = "11111111-2222-3333-4444-555555555555";
        let ms = [mapping(&format!("luks-{U}"), Some(U), vec![present((8, 17), "sdb1")]), mapping(&format!("luks-{u2}"), Some(u2), vec![gone((8, 49))])];
        let v = plan(&ms, Some(Wanted { luks_uuid: U, dev: (8, 17) }));
        assert_eq!(v.len(), 1);
        assert!(matches!(&v[0], Verdict::Remove { name, .. } if name == &format!("luks-{u2}")));
    }

    #[test]
    fn outcomes_read_as_one_line() {
        let r = Cleaned::Removed { name: "luks-x".into(), why: Why::Gone { dev: (8, 17) }, unmounted: vec![PathBuf::from("/media/A")] };
        assert_eq!(r.to_string(), "removed stale mapping luks-x (its disk (8:17) is gone), lazily unmounted /media/A");
        let k = Cleaned::Kept { name: "luks-x".into(), why: Why::Gone { dev: (8, 17) }, users: vec!["vim (pid 7, open file)".into()] };
        assert!(k.to_string().contains("still in use by vim (pid 7, open file)"));
        assert!(!k.to_string().contains('\n'));
    }

    #[test]
    fn applying_an_in_use_verdict_changes_nothing() {
        // No kernel needed: in-use and other-device verdicts are only reported.
        let out = apply(vec![
            Verdict::InUse { name: "luks-x".into(), why: Why::Gone { dev: (8, 1) }, users: vec!["a".into()] },
            Verdict::OtherDevice { name: "luks-y".into(), device: "sdc1".into() },
        ]);
        assert!(matches!(&out[0], Cleaned::Kept { .. }));
        assert!(matches!(&out[1], Cleaned::OtherDevice { .. }));
        assert!(out.iter().all(|c| !c.removed()));
    }
}
