//! The real [`Backend`]: the LUKS core unlocks, the disk layer maps and mounts
//! (dm-crypt, ext4 with nosuid,nodev), and the backup runs as the same [`crate::job`] as
//! `offdisk backup --disk UUID --target MOUNT` (the disk's configured policy, ledgers
//! included), then a quick verify of the new generation.

use super::dock::{Backend, Probe};
use super::registry::Registration;
use super::HotplugError;
use crate::disk::open::{self, OpenRequest};
use crate::disk::volume::{self, LuksDevice};
use crate::error::{exit, Diagnose};
use crate::backup::human_bytes;
use crate::job::{BackupJob, Observer, Stop, VerifyJob};
use crate::luks::{Unlocked, Volume};
use crate::secret::Passphrase;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct SystemBackend {
    luks: Option<LuksDevice>,
    volume: Option<Volume>,
    unlocked: Option<Unlocked>,
    mapping: Option<String>,
    /// Configuration file handed to the backup engine.
    pub config: Option<PathBuf>,
}

impl SystemBackend {
    pub fn with_config(config: &Path) -> SystemBackend {
        SystemBackend { config: Some(config.to_path_buf()), ..Default::default() }
    }
}

fn step(step: &'static str, e: impl std::fmt::Display, code: i32) -> HotplugError {
    HotplugError::Step { step, why: e.to_string(), code }
}

fn diag<E: Diagnose>(what: &'static str) -> impl FnOnce(E) -> HotplugError {
    move |e| {
        let code = e.exit_code();
        step(what, e, code)
    }
}

impl Backend for SystemBackend {
    fn probe(&mut self, dev: &Path) -> Result<Probe, HotplugError> {
        let target = volume::resolve_device(dev, true).map_err(diag("finding the device"))?;
        let luks = volume::luks_on(target).map_err(diag("reading the LUKS header"))?;
        // Only the device udev named, never a partition found beside it.
        if luks.path != dev {
            return Err(step("reading the LUKS header", format!("{} has no LUKS header of its own", dev.display()), exit::DEVICE));
        }
        let f = File::open(dev).map_err(|e| HotplugError::io(dev.display().to_string(), e))?;
        let v = Volume::load(&f).map_err(diag("reading the LUKS header"))?;
        v.check_activatable().map_err(diag("reading the LUKS header"))?;
        let p = Probe { luks_uuid: v.uuid().to_string(), label: v.label().map(str::to_string) };
        self.volume = Some(v);
        self.luks = Some(luks);
        Ok(p)
    }

    fn unlock(&mut self, dev: &Path, pass: &Passphrase) -> Result<bool, HotplugError> {
        let v = self.volume.as_ref().ok_or_else(|| step("unlock", "header not read", exit::USAGE))?;
        let f = File::open(dev).map_err(|e| HotplugError::io(dev.display().to_string(), e))?;
        match v.unlock(&f, pass, None) {
            Ok(u) => {
                self.unlocked = Some(u);
                Ok(true)
            }
            Err(e) if e.is_wrong_passphrase() => Ok(false),
            Err(e) => Err(diag("unlock")(e)),
        }
    }

    fn open_and_mount(&mut self, _reg: &Registration, at: &Path) -> Result<(), HotplugError> {
        let (Some(luks), Some(v), Some(u)) = (&self.luks, &self.volume, &self.unlocked) else {
            return Err(step("open", "not unlocked", exit::USAGE));
        };
        // A mapping left behind when this (or another) disk was pulled out mid-backup would
        // take the name: remove it first, saying so in the journal.
        for c in volume::clean_stale(Some(luks)) {
            eprintln!("offdisk dock: {c}");
        }
        let name = volume::default_mapping_name(&luks.uuid);
        let req = OpenRequest { name: Some(name.clone()), mount: Some(Some(at.to_path_buf())), read_only: false };
        match open::activate_and_mount(luks, v, &u.key, &req) {
            Ok(opened) => {
                self.mapping = Some(opened.mapping);
                // The key now lives in the kernel; ours is wiped.
                self.unlocked = None;
                Ok(())
            }
            Err(e) => Err(diag("open")(e)),
        }
    }

    fn backup(&mut self, reg: &Registration, mount: &Path, obs: &mut dyn Observer, stop: &Stop) -> Result<String, HotplugError> {
        let config = self.config.clone().unwrap_or_else(|| PathBuf::from(super::registry::CONFIG_PATH));
        let job = BackupJob::for_registered_disk(&config, &reg.luks_uuid, mount).map_err(diag("backup"))?;
        let r = job.run(obs, stop).map_err(diag("backup"))?;
        let o = &r.outcome;
        let mut summary = format!("generation {}: {} files, {} ({} new)", o.generation, o.files, human_bytes(o.bytes), human_bytes(o.new_bytes));
        if let Some(inc) = &o.incomplete {
            summary.push_str(&format!(
                "; incomplete: {} not backed up, {} vanished while read (listed in its {})",
                inc.not_backed_up,
                inc.vanished,
                crate::backup::NOT_BACKED_UP_FILE
            ));
        }
        Ok(summary)
    }

    fn verify(&mut self, _reg: &Registration, mount: &Path, obs: &mut dyn Observer, stop: &Stop) -> Result<String, HotplugError> {
        let job = VerifyJob { root: mount.to_path_buf(), generation: Some("latest".into()), quick: true, threads: crate::job::threads(None) };
        let run = job.run(obs, stop).map_err(diag("verify"))?;
        match run.report.problems.len() {
            0 => Ok("quick verify passed".into()),
            n => Err(step("verify", format!("the new generation does not match its manifest ({n} problems; `offdisk verify` names them)"), exit::USAGE)),
        }
    }

    fn unmount(&mut self, at: &Path) -> Result<(), HotplugError> {
        nix::unistd::sync();
        match crate::disk::mount::unmount(at) {
            Ok(()) => Ok(()),
            // The disk vanished (pulled out; the unit is being stopped): nothing on it can be
            // saved any more, so detach the mount rather than leave it behind.
            Err(e) if self.mapping.as_deref().and_then(crate::disk::stale::why_stale).is_some() => {
                eprintln!("offdisk dock: the disk is gone ({e} unmounting {}): detaching the mount", at.display());
                nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| step("unmount", format!("{}: {e}", at.display()), exit::BUSY))
            }
            Err(e) => Err(step("unmount", format!("{}: {e}", at.display()), exit::BUSY)),
        }
    }

    fn close(&mut self) -> Result<(), HotplugError> {
        self.unlocked = None;
        if let Some(name) = self.mapping.take() {
            if let Err(e) = crate::dm::deactivate(&name) {
                self.mapping = Some(name);
                return Err(diag("close")(e));
            }
        }
        if let Some(l) = &self.luks {
            if l.path.exists() {
                volume::flush_disk(&l.path);
            }
        }
        Ok(())
    }
}
