//! Crash-safe LUKS2 updates and keyslot management.
//!
//! A commit writes both header copies with seqid + 1, one after the other with a sync
//! between, starting with the copy that is *not* the one currently trusted — so at every
//! instant at least one whole, valid copy exists (a torn write can only hit the copy being
//! written). New keyslot material goes to a free area before the header that refers to it;
//! a removed keyslot's area is wiped only after the header no longer refers to it.
//! Loading a volume with one damaged copy and committing anything repairs it.

use super::format::{keyslot_json, PbkdfOptions};
use super::header::{BinaryHeader, Copy as HdrCopy};
use super::io::BlockIo;
use super::layout::{find_area, free_slot};
use super::metadata::{Metadata, MAX_ID};
use super::{keyslot, Luks2State, LuksError, Volume};
use crate::secret::{Passphrase, SecretBytes};

fn werr(what: &'static str) -> impl Fn(std::io::Error) -> LuksError {
    move |e| LuksError::io(format!("writing {what}"), e)
}

/// Refuses modifications of volumes we may only inspect.
pub fn check_writable(vol: &Volume) -> Result<&Luks2State, LuksError> {
    let st = vol.luks2("modifying the header")?;
    if let Some(r) = st.meta.requirements.first() {
        return Err(LuksError::Requirement(r.clone()));
    }
    Ok(st)
}

/// Writes `meta` (and `bin`'s label/subsystem/uuid) as the new header, both copies.
pub fn commit(io: &dyn BlockIo, st: &Luks2State, meta: &Metadata) -> Result<(), LuksError> {
    let json_area = meta.to_area()?;
    let seqid = st.max_seqid.checked_add(1).ok_or_else(|| LuksError::Header("seqid overflow".into()))?;
    let seal = |copy: HdrCopy| -> Result<Vec<u8>, LuksError> {
        let mut salt = [0u8; 64];
        getrandom::fill(&mut salt).map_err(|e| LuksError::io("random bytes".into(), std::io::Error::other(e)))?;
        let bin = BinaryHeader {
            copy,
            seqid,
            salt,
            hdr_offset: if copy == HdrCopy::Primary { 0 } else { st.bin.hdr_size },
            ..st.bin.clone()
        };
        bin.seal(&json_area)
    };
    let primary = seal(HdrCopy::Primary)?;
    let secondary = seal(HdrCopy::Secondary)?;
    // Write first the copy we do not depend on.
    let order = if st.secondary_ok && !st.primary_ok {
        [(&primary, 0, "primary header"), (&secondary, st.bin.hdr_size, "secondary header")]
    } else {
        [(&secondary, st.bin.hdr_size, "secondary header"), (&primary, 0, "primary header")]
    };
    for (bytes, off, what) in order {
        io.write_at(bytes, off).map_err(werr(what))?;
        io.sync().map_err(werr(what))?;
    }
    Ok(())
}

/// Rewrites both copies from the trusted one (repairs a damaged or stale copy).
pub fn repair(io: &dyn BlockIo, vol: &Volume) -> Result<Volume, LuksError> {
    let st = check_writable(vol)?;
    commit(io, st, &st.meta)?;
    Volume::load_io(io)
}

fn wipe_area(io: &dyn BlockIo, offset: u64, size: u64) -> Result<(), LuksError> {
    // Bounded by validation (keyslots area ≤ 128 MiB); write in 1 MiB pieces.
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(1 << 20) as usize;
        let noise = SecretBytes::random(n).map_err(|e| LuksError::io("random bytes".into(), e))?;
        io.write_at(noise.expose(), offset + off).map_err(werr("keyslot area wipe"))?;
        off += n as u64;
    }
    io.sync().map_err(werr("keyslot area wipe"))
}

/// Adds a keyslot for `new`, authorised by `existing`. Returns the new slot number.
pub fn add_key(
    io: &dyn BlockIo,
    vol: &Volume,
    existing: &Passphrase,
    new: &Passphrase,
    slot: Option<usize>,
    pbkdf: &PbkdfOptions,
) -> Result<usize, LuksError> {
    let st = check_writable(vol)?;
    let id = match slot {
        Some(s) if s > MAX_ID as usize => return Err(LuksError::SlotRange(s)),
        Some(s) if st.meta.keyslots.contains_key(&(s as u32)) => return Err(LuksError::SlotInUse(s)),
        Some(s) => s as u32,
        None => free_slot(&st.meta).ok_or(LuksError::NoFreeSlot)?,
    };
    let unlocked = vol.unlock_io(io, existing, None)?;
    write_slot(io, vol, st, id, unlocked.keyslot as u32, &unlocked.key, new, pbkdf, None)?;
    Ok(id as usize)
}

/// Puts a keyslot `id` holding `key` under `pass` into a fresh area and commits.
/// `replacing`: an existing slot whose area must stay intact until the commit.
#[allow(clippy::too_many_arguments)]
fn write_slot(
    io: &dyn BlockIo,
    _vol: &Volume,
    st: &Luks2State,
    id: u32,
    template_slot: u32,
    key: &crate::secret::VolumeKey,
    pass: &Passphrase,
    pbkdf: &PbkdfOptions,
    replacing: Option<u32>,
) -> Result<Option<(u64, u64)>, LuksError> {
    let digest = st.meta.digest_of(template_slot).ok_or_else(|| LuksError::Metadata("keyslot without digest".into()))?;
    let template = &st.meta.keyslots[&template_slot];
    let cipher = template.area.encryption.clone();
    let len = keyslot::area_len(key.len());
    let old_area = replacing.map(|r| {
        let a = &st.meta.keyslots[&r].area;
        (a.offset, a.offset + a.size)
    });
    let base = match replacing {
        Some(r) => st.meta.without_keyslot(r, st.bin.hdr_size)?,
        None => st.meta.clone(),
    };
    let offset = find_area(&base, st.bin.hdr_size, len, old_area).ok_or(LuksError::NoSpace)?;
    let kdf = pbkdf.plan(key.len())?;
    let af_hash = pbkdf.hash()?;
    let material = keyslot::seal_material(key.expose(), pass.expose(), &kdf, &cipher, af_hash)?;
    let mut ks_json = keyslot_json(key.len(), &cipher, af_hash, &kdf, offset);
    // A changed passphrase keeps its keyslot's priority.
    if let Some(p) = replacing.and_then(|r| st.meta.keyslots[&r].priority) {
        ks_json["priority"] = serde_json::json!(p);
    }
    let new_meta = base.with_keyslot(id, ks_json, digest, st.bin.hdr_size)?;
    // Material first (unreferenced area), then the header that points at it.
    io.write_at(material.expose(), offset).map_err(werr("keyslot material"))?;
    io.sync().map_err(werr("keyslot material"))?;
    commit(io, st, &new_meta)?;
    Ok(old_area.map(|(s, e)| (s, e - s)))
}

/// Disables keyslot `slot` and wipes its area.
pub fn kill_slot(io: &dyn BlockIo, vol: &Volume, slot: usize) -> Result<(), LuksError> {
    let st = check_writable(vol)?;
    if slot > MAX_ID as usize {
        return Err(LuksError::SlotRange(slot));
    }
    let ks = st.meta.keyslots.get(&(slot as u32)).ok_or(LuksError::SlotInactive(slot))?;
    let (off, size) = (ks.area.offset, ks.area.size);
    let new_meta = st.meta.without_keyslot(slot as u32, st.bin.hdr_size)?;
    commit(io, st, &new_meta)?;
    wipe_area(io, off, size)
}

/// Removes the keyslot `pass` opens. Returns its number.
pub fn remove_key(io: &dyn BlockIo, vol: &Volume, pass: &Passphrase) -> Result<usize, LuksError> {
    check_writable(vol)?;
    let u = vol.unlock_io(io, pass, None)?;
    kill_slot(io, vol, u.keyslot)?;
    Ok(u.keyslot)
}

/// Replaces the passphrase of the keyslot `old` opens (or `slot`) with `new`. The new
/// material goes to another area first, so an interrupted change keeps the old key.
pub fn change_key(
    io: &dyn BlockIo,
    vol: &Volume,
    old: &Passphrase,
    new: &Passphrase,
    slot: Option<usize>,
    pbkdf: &PbkdfOptions,
) -> Result<usize, LuksError> {
    let st = check_writable(vol)?;
    let u = vol.unlock_io(io, old, slot)?;
    let id = u.keyslot as u32;
    if let Some((off, size)) = write_slot(io, vol, st, id, id, &u.key, new, pbkdf, Some(id))? {
        wipe_area(io, off, size)?;
    }
    Ok(u.keyslot)
}
