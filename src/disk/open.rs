//! Opening a backup disk: map the unlocked volume (dm-crypt) and mount it where udisks would.

use super::error::io_at;
use super::volume::{default_mapping_name, LuksDevice, MappingGuard};
use super::{mount, probe, sysfs, DiskError};
use crate::dm;
use crate::luks;
use crate::secret::VolumeKey;
use std::fs::File;
use std::path::{Path, PathBuf};

/// What `open` did.
#[derive(Debug)]
pub struct Opened {
    pub mapping: String,
    pub mapper_path: PathBuf,
    pub mount_point: Option<PathBuf>,
    pub already_open: bool,
    pub key_delivery: Option<dm::KeyDelivery>,
}

/// Where and how to open.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub name: Option<String>,
    /// None: do not mount; Some(None): default mount point; Some(Some(dir)): there.
    pub mount: Option<Option<PathBuf>>,
    pub read_only: bool,
}

/// Unlocks with the volume key already obtained and maps (and mounts) the volume.
pub fn activate_and_mount(luks: &LuksDevice, volume: &luks::Volume, key: &VolumeKey, o: &OpenRequest) -> Result<Opened, DiskError> {
    let segment = volume.crypt_segment()?;
    let name = o.name.clone().unwrap_or_else(|| default_mapping_name(&luks.uuid));
    let mapped = dm::activate(
        &dm::CryptActivation {
            name: &name,
            version: volume.version(),
            luks_uuid: volume.uuid(),
            segment: &segment,
            device: &luks.path,
            read_only: o.read_only,
            flags: dm::CryptFlags::default(),
        },
        key,
    )?;
    let mut guard = MappingGuard { name: Some(name.clone()) };
    let mount_point = match &o.mount {
        None => None,
        Some(dir) => Some(mount_mapping(&mapped.path, mapped.dev, dir.as_deref(), luks.label.as_deref(), &name, o.read_only)?),
    };
    guard.disarm();
    Ok(Opened { mapping: name, mapper_path: mapped.path, mount_point, already_open: false, key_delivery: Some(mapped.key_delivery) })
}

/// Mounts an open mapping (nosuid,nodev,noexec) on `dir` or the default mount point for its label.
pub fn mount_mapping(device: &Path, dev: (u32, u32), dir: Option<&Path>, luks_label: Option<&str>, name: &str, read_only: bool) -> Result<PathBuf, DiskError> {
    if let Some(existing) = mount::mount_points_of(dev).map_err(io_at(device))?.into_iter().next() {
        return Ok(existing);
    }
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            // The filesystem label (what mkfs.ext4 -L set) names the directory, as udisks does.
            let fs_label = sysfs::name_of_dev(dev).and_then(|n| sysfs::device(&n)).and_then(|d| d.fs_label).or_else(|| ext4_label(device));
            mount::default_mount_point(fs_label.as_deref().or(luks_label).unwrap_or(""), name)
        }
    };
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    if let Err(err) = mount::mount_ext4(device, &dir, read_only) {
        if created {
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(DiskError::Mount { device: device.into(), dir, err });
    }
    Ok(dir)
}

fn ext4_label(device: &Path) -> Option<String> {
    let mut f = File::open(device).ok()?;
    probe::identify(&probe::read_head(&mut f).ok()?).into_iter().find_map(|s| match s {
        probe::Signature::Ext { label } if !label.is_empty() => Some(label),
        _ => None,
    })
}
