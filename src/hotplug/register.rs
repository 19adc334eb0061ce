//! Registration: a LUKS disk becomes a known backup disk. The config gets a `[[disk]]`
//! entry (by LUKS UUID) with its sources, policy and unlock method, and the disk gets this
//! host's identity record, so a later dock can tell it from a copy of its header.

use super::dock::{Backend, DockOptions};
use super::identity::{self, HostKey};
use super::registry::{self, Registration, UnlockMethod};
use super::udisks_rule::{self, RuleChange, RuleDir};
use super::{attached, HotplugError};
use crate::secret::Passphrase;
use std::path::{Path, PathBuf};

/// What the user asked to register.
#[derive(Debug, Clone, Default)]
pub struct RegisterSpec {
    pub label: Option<String>,
    pub sources: Vec<PathBuf>,
    pub excludes: Vec<String>,
    /// `Some`: unattended unlock with this key file kept on the host.
    pub key_file: Option<PathBuf>,
    /// Where to mount the disk while open (default: the config's default, /run/offdisk/UUID).
    pub mount_point: Option<PathBuf>,
    /// Retention for this disk (unset: the config's defaults apply).
    pub retention: crate::backup::retention::Retention,
    /// The user whose desktop agent is told about docks besides the active session's user.
    pub user: Option<String>,
    pub replace: bool,
    /// Where the udisks rule goes ([`udisks_rule`]); `None` writes none (library callers
    /// that are not the system's offdisk, tests).
    pub udev_rules: Option<RuleDir>,
    /// Where to note that the disk was registered while attached ([`attached`]: dock's run
    /// directory), so registering starts no dock; `None` notes nothing.
    pub run_dir: Option<PathBuf>,
}

/// A registration made, with what the user should hear about the udev side.
#[derive(Debug, Clone)]
pub struct Registered {
    pub reg: Registration,
    /// One line each: the rule written, or why udev may not see it yet.
    pub notes: Vec<String>,
    /// The disk is attached now and registering started no backup: say how to back up now.
    pub attached: bool,
}

impl RegisterSpec {
    fn registration(&self, luks_uuid: &str, header_label: Option<&str>, disk_id: &str) -> Registration {
        Registration {
            luks_uuid: luks_uuid.to_ascii_lowercase(),
            label: self.label.clone().or_else(|| header_label.map(str::to_string)),
            sources: self.sources.clone(),
            excludes: self.excludes.clone(),
            unlock: if self.key_file.is_some() { UnlockMethod::KeyFile } else { UnlockMethod::Passphrase },
            key_file: self.key_file.clone(),
            identity: Some(disk_id.to_string()),
            mount_point: self.mount_point.clone(),
            retention: self.retention,
            user: self.user.clone(),
        }
    }
}

/// For `offdisk init`, which has the new filesystem mounted at `mount`: writes the identity
/// record and adds the registration.
pub fn register_mounted(config: &Path, host_key: &Path, luks_uuid: &str, header_label: Option<&str>, mount: &Path, spec: &RegisterSpec) -> Result<Registered, HotplugError> {
    check_not_registered(config, luks_uuid, spec)?;
    let key = HostKey::load_or_create(host_key).map_err(|e| HotplugError::io(format!("host key {}", host_key.display()), e))?;
    let disk_id = identity::new_disk_id();
    identity::write_record(mount, &key, luks_uuid, &disk_id).map_err(|e| HotplugError::io(format!("writing the identity record under {}", mount.display()), e))?;
    let reg = spec.registration(luks_uuid, header_label, &disk_id);
    let seq = crate::disk::sysfs::disk_seq_of_mount(mount);
    add_attached(config, reg, spec, seq)
}

/// Notes the attachment the disk is registered during ([`attached`]) before the registration
/// exists, so no dock of this attachment (one already started by its plug-in included) finds
/// it registered and starts a backup. Then adds the registration.
fn add_attached(config: &Path, reg: Registration, spec: &RegisterSpec, seq: Option<u64>) -> Result<Registered, HotplugError> {
    let noted = match (&spec.run_dir, seq) {
        (Some(run), Some(seq)) => Some(attached::note(run, &reg.luks_uuid, seq).map_err(|e| {
            format!("could not note in {} that the disk is attached ({e}): a dock may start now", run.display())
        })),
        _ => None,
    };
    let mut done = add_with_rule(config, reg, spec)?;
    match noted {
        Some(Ok(())) => done.attached = true,
        Some(Err(why)) => done.notes.push(why),
        None => {}
    }
    Ok(done)
}

/// Writes the udisks rule, then adds the registration; a rule that cannot be written
/// (something not a file at its name) means no registration, and a failed add takes a
/// newly written rule away again. Telling udev is best effort and only noted.
fn add_with_rule(config: &Path, reg: Registration, spec: &RegisterSpec) -> Result<Registered, HotplugError> {
    let Some(rules) = &spec.udev_rules else {
        registry::add(config, &reg, spec.replace)?;
        return Ok(Registered { reg, notes: Vec::new(), attached: false });
    };
    let change = udisks_rule::install(&rules.dir, &reg.luks_uuid).map_err(|e| match e {
        HotplugError::UdevRule { path, why } => HotplugError::UdevRule { path, why: format!("{why}; the disk was not registered") },
        e => e,
    })?;
    if let Err(e) = registry::add(config, &reg, spec.replace) {
        if let RuleChange::Written(_) = change {
            let _ = udisks_rule::remove(&rules.dir, &reg.luks_uuid);
        }
        return Err(e);
    }
    let mut notes = vec![change.describe()];
    if rules.reload && !matches!(change, RuleChange::NoRulesDir(_)) {
        if let Err(why) = udisks_rule::tell_udev(&reg.luks_uuid) {
            notes.push(format!("telling udev failed ({why}): the rule applies from the next plug-in or boot"));
        }
    }
    Ok(Registered { reg, notes, attached: false })
}

fn check_not_registered(config: &Path, luks_uuid: &str, spec: &RegisterSpec) -> Result<(), HotplugError> {
    let regs = registry::load(config)?;
    match registry::find(&regs, luks_uuid) {
        Some(r) if !spec.replace => Err(HotplugError::AlreadyRegistered(r.name().to_string())),
        _ => Ok(()),
    }
}

/// `offdisk register DEVICE`: unlock with `pass`, mount, write the identity record,
/// unmount, close, then add the registration (only once the record is on the disk).
pub fn register_device(dev: &Path, pass: &Passphrase, opts: &DockOptions, spec: &RegisterSpec, backend: &mut dyn Backend) -> Result<Registered, HotplugError> {
    let probe = backend.probe(dev)?;
    check_not_registered(&opts.config, &probe.luks_uuid, spec)?;
    let seq = backend.disk_seq(dev);
    let key = HostKey::load_or_create(&opts.host_key).map_err(|e| HotplugError::io(format!("host key {}", opts.host_key.display()), e))?;
    let name = spec.label.clone().or(probe.label.clone()).unwrap_or(probe.luks_uuid.clone());
    if !backend.unlock(dev, pass)? {
        return Err(HotplugError::WrongPassphrase { disk: name, tries: 1 });
    }
    let disk_id = identity::new_disk_id();
    let reg = spec.registration(&probe.luks_uuid, probe.label.as_deref(), &disk_id);
    let at = reg.mount_point.clone().unwrap_or_else(|| opts.mount_point(&probe.luks_uuid));
    std::fs::create_dir_all(&at).map_err(|e| HotplugError::io(format!("creating {}", at.display()), e))?;
    let written = backend.open_and_mount(&reg, &at).and_then(|()| {
        let r = identity::write_record(&at, &key, &probe.luks_uuid, &disk_id)
            .map_err(|e| HotplugError::io("writing the identity record", e));
        let u = backend.unmount(&at);
        r.and(u)
    });
    let closed = backend.close();
    let _ = std::fs::remove_dir(&at);
    written?;
    closed?;
    add_attached(&opts.config, reg, spec, seq)
}

/// What `offdisk unregister` did.
#[derive(Debug, Clone)]
pub struct Unregistered {
    /// The entry taken out of the config (`None`: there was none, only a leftover rule).
    pub reg: Option<Registration>,
    pub notes: Vec<String>,
}

/// `offdisk unregister DISK` (LUKS UUID or label): takes the disk's entry out of the config,
/// then its udisks rule out of the rules directory, so desktops treat it as any LUKS disk
/// again. The disk itself, its generations and the host's ledger of it are not touched.
pub fn unregister(config: &Path, disk: &str, rules: Option<&RuleDir>) -> Result<Unregistered, HotplugError> {
    let regs = registry::load(config)?;
    let found = registry::find(&regs, disk).or_else(|| regs.iter().find(|r| r.label.as_deref() == Some(disk))).cloned();
    let uuid = match &found {
        Some(r) => r.luks_uuid.clone(),
        // A UUID no longer in the config may still have a rule left from an older setup.
        None if udisks_rule::file_name(disk).is_some() && rules.is_some() => disk.to_ascii_lowercase(),
        None => return Err(HotplugError::NotRegistered(disk.to_string())),
    };
    // The rule first: one that cannot be removed leaves the registration as it was.
    let mut notes = Vec::new();
    let mut removed_rule = false;
    if let Some(rules) = rules {
        let change = udisks_rule::remove(&rules.dir, &uuid)?;
        removed_rule = matches!(change, RuleChange::Removed(_));
        if found.is_none() && !removed_rule {
            return Err(HotplugError::NotRegistered(disk.to_string()));
        }
        notes.push(change.describe());
    }
    if found.is_some() {
        registry::remove(config, &uuid)?;
    }
    if let (Some(rules), true) = (rules, removed_rule) {
        if rules.reload {
            if let Err(why) = udisks_rule::tell_udev(&uuid) {
                notes.push(format!("telling udev failed ({why}): desktops see the change from the next plug-in or boot"));
            }
        }
    }
    Ok(Unregistered { reg: found, notes })
}
