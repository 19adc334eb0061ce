//! What `list` and `status` show: every disk present, its LUKS volumes and whether each is open
//! and mounted, and what else uses the disk. Works without root where sysfs and udev suffice.

use super::volume::luks_at;
use super::{busy, mount, probe, sysfs};
use std::fs::File;
use std::path::PathBuf;

/// Open state of a LUKS volume, for status and list.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeState {
    pub device: PathBuf,
    pub luks_version: u16,
    pub uuid: String,
    pub label: Option<String>,
    pub mapping: Option<String>,
    pub mount_points: Vec<PathBuf>,
}

/// A disk as `list`/`status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskReport {
    pub name: String,
    pub path: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size: u64,
    pub removable: bool,
    pub transport: Option<String>,
    pub image: Option<PathBuf>,
    pub volumes: Vec<VolumeState>,
    /// Signatures other than LUKS (filesystems, partition tables) on the whole disk.
    pub contents: Vec<String>,
    /// How the disk or its partitions are in use outside LUKS: "/dev/sda2 mounted on /",
    /// "held by dm-0", "swap". Empty for a disk nothing uses.
    pub in_use: Vec<String>,
}

/// LUKS identity of a device: from its header when readable, else from udev's database.
fn identity_of(d: &sysfs::BlockDevice) -> Option<(u16, String, Option<String>)> {
    if let Some(i) = luks_at(&d.path) {
        return Some(i);
    }
    if d.fs_type.as_deref() == Some("crypto_LUKS") {
        return Some((0, d.fs_uuid.clone().unwrap_or_default(), d.fs_label.clone()));
    }
    None
}

/// The mapping held on a device, from sysfs (works without root).
fn holder_mapping(d: &sysfs::BlockDevice) -> Option<(String, (u32, u32))> {
    // The first holder that is a device-mapper mapping (has a dm name).
    d.holders.iter().find_map(|h| {
        let name = std::fs::read_to_string(format!("/sys/class/block/{h}/dm/name")).ok()?;
        let dev = sysfs::parse_dev(&std::fs::read_to_string(format!("/sys/class/block/{h}/dev")).ok()?)?;
        Some((name.trim().to_string(), dev))
    })
}

/// Every disk present with its LUKS volumes and their open/mounted state.
pub fn report() -> Vec<DiskReport> {
    let mounts = mount::mounts().unwrap_or_default();
    sysfs::disks()
        .into_iter()
        .map(|d| {
            let mut members = vec![d.clone()];
            members.extend(d.partitions.iter().filter_map(|p| sysfs::device(p)));
            let volumes = members
                .iter()
                .filter_map(|m| {
                    let (v, uuid, label) = identity_of(m)?;
                    let mapping = holder_mapping(m);
                    let mount_points = mapping
                        .as_ref()
                        .map(|(_, dev)| mounts.iter().filter(|e| e.dev == *dev).map(|e| e.mount_point.clone()).collect())
                        .unwrap_or_default();
                    Some(VolumeState { device: m.path.clone(), luks_version: v, uuid, label, mapping: mapping.map(|m| m.0), mount_points })
                })
                .collect::<Vec<_>>();
            let in_use = members.iter().flat_map(|m| uses_of(m, &mounts)).collect();
            let contents = if volumes.is_empty() {
                File::open(&d.path)
                    .ok()
                    .and_then(|mut f| probe::read_head(&mut f).ok())
                    .map(|h| probe::identify(&h).iter().map(|s| s.to_string()).collect())
                    .or_else(|| d.fs_type.clone().map(|t| vec![t]))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            DiskReport {
                name: d.name.clone(),
                path: d.path.clone(),
                model: d.model.clone(),
                serial: d.serial.clone(),
                size: d.size,
                removable: d.removable,
                transport: d.transport.clone(),
                image: d.loop_backing.clone(),
                volumes,
                contents,
                in_use,
            }
        })
        .collect()
}

/// What uses a disk or partition directly: mounts of it, swap on it, devices stacked on it
/// (a LUKS volume's own mapping is reported with the volume instead).
fn uses_of(m: &sysfs::BlockDevice, mounts: &[mount::MountEntry]) -> Vec<String> {
    let mut uses: Vec<String> = mounts.iter().filter(|e| e.dev == m.dev).map(|e| format!("{} mounted on {}", m.path.display(), e.mount_point.display())).collect();
    if busy::swap_active(&m.path) {
        uses.push(format!("{} is swap", m.path.display()));
    }
    if identity_of(m).is_none() {
        uses.extend(m.holders.iter().map(|h| format!("{} held by {}", m.path.display(), busy::holder_description(h))));
    }
    uses
}
