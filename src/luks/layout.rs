//! Where things go on a new or changing LUKS2 volume: a pure plan, no I/O.
//! Defaults follow cryptsetup: 16 KiB per header copy, data at 16 MiB, and the
//! keyslots area filling the space between.

use super::metadata::{Metadata, MAX_ID, MAX_KEYSLOTS_SIZE};
use super::LuksError;

pub const DEFAULT_HDR_SIZE: u64 = 16 << 10;
pub const DEFAULT_DATA_OFFSET: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub hdr_size: u64,
    pub keyslots_size: u64,
    pub data_offset: u64,
}

impl Layout {
    /// cryptsetup's default layout for a device of `device_size` bytes.
    pub fn default_for(device_size: u64, sector_size: u32) -> Result<Layout, LuksError> {
        let hdr_size = DEFAULT_HDR_SIZE;
        let data_offset = DEFAULT_DATA_OFFSET;
        let keyslots_size = (data_offset - 2 * hdr_size).min(MAX_KEYSLOTS_SIZE);
        if device_size <= data_offset {
            return Err(LuksError::TooSmall(format!(
                "{device_size} bytes leaves no room for data after the {} MiB LUKS2 header area",
                data_offset >> 20
            )));
        }
        if (device_size - data_offset) % u64::from(sector_size) != 0 {
            return Err(LuksError::InvalidOption(format!(
                "the data area ({} bytes) is not a whole number of {sector_size}-byte sectors",
                device_size - data_offset
            )));
        }
        Ok(Layout { hdr_size, keyslots_size, data_offset })
    }
}

/// Lowest keyslot id not in use.
pub fn free_slot(meta: &Metadata) -> Option<u32> {
    (0..=MAX_ID).find(|id| !meta.keyslots.contains_key(id))
}

/// First-fit 4096-aligned gap of `len` bytes in the keyslots area, avoiding `also_busy`
/// (an area that must stay intact until the update is committed).
pub fn find_area(meta: &Metadata, hdr_size: u64, len: u64, also_busy: Option<(u64, u64)>) -> Option<u64> {
    let start = 2 * hdr_size;
    let end = start + meta.keyslots_size;
    let mut busy: Vec<(u64, u64)> = meta.keyslots.values().map(|k| (k.area.offset, k.area.offset + k.area.size)).collect();
    busy.extend(also_busy);
    busy.sort();
    let mut cur = start;
    for (s, e) in busy {
        if s >= cur + len {
            break;
        }
        cur = cur.max(e.div_ceil(4096) * 4096);
    }
    (cur + len <= end).then_some(cur)
}
