//! The real [`Backend`]: the LUKS core unlocks, the disk layer maps and mounts
//! (dm-crypt, ext4 with nosuid,nodev), and the backup engine runs through the same code
//! path as `offdisk backup --disk UUID --target MOUNT` (retention, excludes and ledger
//! included), then `offdisk verify --quick` on the new generation.

use super::dock::{Backend, Probe};
use super::registry::Registration;
use super::HotplugError;
use crate::disk::lifecycle::{self, LuksDevice, OpenRequest};
use crate::error::{exit, Diagnose};
use crate::luks::{LuksError, Unlocked, Volume};
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

impl SystemBackend {
    /// Runs an offdisk subcommand in this process (no shell, no new process), as the user
    /// would type it; returns its exit status.
    fn run_cli(&self, args: &[&std::ffi::OsStr]) -> Result<i32, HotplugError> {
        use clap::Parser;
        let mut argv: Vec<&std::ffi::OsStr> = vec!["offdisk".as_ref()];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).map_err(|e| step("internal command", e, exit::USAGE))?;
        crate::cli::run(cli).map_err(|f| HotplugError::Step { step: "backup", why: f.message, code: f.code })
    }

    fn target_args<'a>(&'a self, reg: &'a Registration, mount: &'a Path) -> Vec<&'a std::ffi::OsStr> {
        let mut v: Vec<&std::ffi::OsStr> = vec!["--disk".as_ref(), reg.luks_uuid.as_ref(), "--target".as_ref(), mount.as_os_str()];
        if let Some(c) = &self.config {
            v.push("--config".as_ref());
            v.push(c.as_os_str());
        }
        v
    }
}

impl Backend for SystemBackend {
    fn probe(&mut self, dev: &Path) -> Result<Probe, HotplugError> {
        let target = lifecycle::resolve_device(dev, true).map_err(diag("finding the device"))?;
        let luks = lifecycle::luks_on(target).map_err(diag("reading the LUKS header"))?;
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
            Err(LuksError::NoKey) => Ok(false),
            Err(e) => Err(diag("unlock")(e)),
        }
    }

    fn open_and_mount(&mut self, _reg: &Registration, at: &Path) -> Result<(), HotplugError> {
        let (Some(luks), Some(v), Some(u)) = (&self.luks, &self.volume, &self.unlocked) else {
            return Err(step("open", "not unlocked", exit::USAGE));
        };
        let name = lifecycle::default_mapping_name(&luks.uuid);
        let req = OpenRequest { name: Some(name.clone()), mount: Some(Some(at.to_path_buf())), read_only: false };
        match lifecycle::activate_and_mount(luks, v, &u.key, &req) {
            Ok(opened) => {
                self.mapping = Some(opened.mapping);
                // The key now lives in the kernel; ours is wiped.
                self.unlocked = None;
                Ok(())
            }
            Err(e) => Err(diag("open")(e)),
        }
    }

    fn backup(&mut self, reg: &Registration, mount: &Path, progress: &mut dyn FnMut(&str)) -> Result<String, HotplugError> {
        progress(&format!("backing up {} source(s)", reg.sources.len()));
        let mut args = vec!["backup".as_ref(), "--no-progress".as_ref()];
        args.extend(self.target_args(reg, mount));
        let code = self.run_cli(&args)?;
        if code != exit::OK {
            return Err(step("backup", format!("exit status {code}"), code));
        }
        let gens = crate::backup::list_generations(mount).map_err(diag("backup"))?;
        let (g, info) = gens.last().ok_or_else(|| step("backup", "no generation was made", exit::USAGE))?;
        Ok(match info {
            Some(i) => format!(
                "generation {}: {} files, {} ({} new)",
                g.name,
                i.files,
                crate::cli::backup::human_bytes(i.bytes),
                crate::cli::backup::human_bytes(i.new_bytes)
            ),
            None => format!("generation {}", g.name),
        })
    }

    fn verify(&mut self, reg: &Registration, mount: &Path) -> Result<String, HotplugError> {
        let mut args = vec!["verify".as_ref(), "--quick".as_ref(), "--generation".as_ref(), "latest".as_ref()];
        args.extend(self.target_args(reg, mount));
        match self.run_cli(&args)? {
            exit::OK => Ok("quick verify passed".into()),
            code => Err(step("verify", "the new generation does not match its manifest", code)),
        }
    }

    fn unmount(&mut self, at: &Path) -> Result<(), HotplugError> {
        nix::unistd::sync();
        crate::disk::mount::unmount(at).map_err(|e| step("unmount", format!("{}: {e}", at.display()), exit::BUSY))
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
            lifecycle::flush_disk(&l.path);
        }
        Ok(())
    }
}
