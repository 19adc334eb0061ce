//! The real [`Backend`]: the LUKS core, device-mapper, mounts and the backup engine.

use super::dock::{Backend, Probe};
use super::registry::Registration;
use super::HotplugError;
use crate::error::exit;
use crate::luks::{Unlocked, Volume};
use crate::secret::Passphrase;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct SystemBackend {
    volume: Option<Volume>,
    unlocked: Option<Unlocked>,
    device: Option<PathBuf>,
}

fn step(step: &'static str, why: impl ToString, code: i32) -> HotplugError {
    HotplugError::Step { step, why: why.to_string(), code }
}

fn open_ro(dev: &Path) -> Result<File, HotplugError> {
    File::open(dev).map_err(|e| HotplugError::io(dev.display().to_string(), e))
}

impl Backend for SystemBackend {
    fn probe(&mut self, dev: &Path) -> Result<Probe, HotplugError> {
        let f = open_ro(dev)?;
        let v = Volume::load(&f).map_err(|e| step("reading the LUKS header", e, exit::DEVICE))?;
        let p = Probe { luks_uuid: v.uuid().to_string(), label: v.label().map(str::to_string) };
        self.volume = Some(v);
        self.device = Some(dev.to_path_buf());
        Ok(p)
    }

    fn unlock(&mut self, dev: &Path, pass: &Passphrase) -> Result<bool, HotplugError> {
        let v = self.volume.as_ref().ok_or_else(|| step("unlock", "header not read", exit::USAGE))?;
        let f = open_ro(dev)?;
        match v.unlock(&f, pass, None) {
            Ok(u) => {
                self.unlocked = Some(u);
                Ok(true)
            }
            // TODO(merge luks): match the LUKS "no keyslot opens" variant exactly.
            Err(e) if crate::error::Diagnose::exit_code(&e) == exit::NO_KEY => Ok(false),
            Err(e) => Err(step("unlock", e, exit::DEVICE)),
        }
    }

    fn open_and_mount(&mut self, _reg: &Registration, _at: &Path) -> Result<(), HotplugError> {
        Err(step("open", "device-mapper support is not wired in yet", exit::DEVICE))
    }

    fn backup(&mut self, _reg: &Registration, _mount: &Path, _progress: &mut dyn FnMut(&str)) -> Result<String, HotplugError> {
        Err(step("backup", "the backup engine is not wired in yet", exit::USAGE))
    }

    fn verify(&mut self, _reg: &Registration, _mount: &Path) -> Result<String, HotplugError> {
        Err(step("verify", "the backup engine is not wired in yet", exit::USAGE))
    }

    fn unmount(&mut self, _at: &Path) -> Result<(), HotplugError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), HotplugError> {
        self.unlocked = None;
        Ok(())
    }
}
