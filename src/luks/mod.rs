//! LUKS1 and LUKS2 in pure Rust: parse and validate headers, unlock keyslots,
//! format new volumes, manage keyslots and header backups — byte-compatible with cryptsetup.
//!
//! CONTRACT used by the rest of offdisk (dm, disk, hotplug). The LUKS work fills in the
//! bodies and may add to it, but keeps these names and meanings:
//!
//! - `Volume::load(&File) -> Result<Volume, LuksError>`: reads and validates the header(s).
//! - `Volume::version()`, `uuid()`, `label()`, `subsystem()`.
//! - `Volume::unlock(&File, &Passphrase, Option<usize>) -> Result<Unlocked, LuksError>`.
//! - `Volume::crypt_segment() -> Result<CryptSegment, LuksError>`: what dm-crypt needs.
//! - `Volume::check_activatable()`: refuses unknown mandatory requirements.
//! - `format(&File, &FormatOptions, &Passphrase) -> Result<Volume, LuksError>`.
//!
//! Layout by concern: `codec` (the one bounds-checked reader), `header` (LUKS2 binary
//! header copies), `metadata` (JSON model and validation), `luks1`, `hash`, `kdf`, `af`,
//! `cipher`, `keyslot`, `layout` + `calibrate` + `format` (writing new volumes), `update`
//! (crash-safe commits and keyslot management), `backup` (header backup/restore),
//! `io` (positioned I/O, with a memory device for crash tests), `dump` (JSON description).

pub mod af;
pub mod argon2_engine;
pub mod backup;
pub mod bench;
pub mod calibrate;
pub mod cipher;
pub mod codec;
pub mod dump;
pub mod format;
pub mod hash;
pub mod header;
pub mod io;
pub mod kdf;
pub mod keyslot;
pub mod layout;
pub mod luks1;
pub mod metadata;
pub mod update;

pub use format::{format, format_io, FormatOptions, PbkdfOptions, PbkdfType};

use crate::error::{exit, Diagnose};
use crate::secret::{Passphrase, VolumeKey};
use header::{BinaryHeader, Copy, HeaderCopy};
use io::BlockIo;
use luks1::Luks1Header;
use metadata::Metadata;
use std::fs::File;

/// Errors from the LUKS layer.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a LUKS device (no LUKS header found)")]
    NotLuks,
    #[error("ambiguous device: {0}")]
    Ambiguous(String),
    #[error("invalid LUKS header: {0}")]
    Header(String),
    #[error("invalid LUKS2 metadata: {0}")]
    Metadata(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the volume has unknown mandatory requirement {0:?}: it may be inspected but not activated or modified")]
    Requirement(String),
    #[error("no key available with this passphrase")]
    NoKey,
    #[error("no usable keyslot opens with this passphrase; skipped: {}", skipped.join("; "))]
    NoUsableKey { tried: usize, skipped: Vec<String> },
    #[error("keyslot {0} is not active")]
    SlotInactive(usize),
    #[error("keyslot {0} is already in use")]
    SlotInUse(usize),
    #[error("keyslot {0} is out of range")]
    SlotRange(usize),
    #[error("all keyslots are in use")]
    NoFreeSlot,
    #[error("no room left in the keyslots area for another keyslot")]
    NoSpace,
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("header backup does not fit this device: {0}")]
    BackupMismatch(String),
    #[error("device too small: {0}")]
    TooSmall(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("operation not supported on LUKS1 volumes: {0}")]
    Luks1ReadOnly(&'static str),
}

impl LuksError {
    pub fn io(context: String, source: std::io::Error) -> Self {
        LuksError::Io { context, source }
    }

    /// True when keyslots were tried and none accepted the passphrase (ask again), as
    /// opposed to a volume that cannot be unlocked here at all.
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, LuksError::NoKey) || matches!(self, LuksError::NoUsableKey { tried, .. } if *tried > 0)
    }
}

impl Diagnose for LuksError {
    fn exit_code(&self) -> i32 {
        match self {
            LuksError::Io { .. } | LuksError::TooSmall(_) => exit::DEVICE,
            LuksError::NoKey => exit::NO_KEY,
            // Keyslots were tried and refused the passphrase: a wrong passphrase as far as
            // anyone can tell. Nothing could be tried: the volume needs another tool.
            LuksError::NoUsableKey { tried, .. } if *tried > 0 => exit::NO_KEY,
            LuksError::OutOfMemory(_) => exit::NO_MEMORY,
            _ => exit::USAGE,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            LuksError::NoKey => Some("check the passphrase or key file (key files are used byte for byte, newline included)".into()),
            LuksError::NoUsableKey { .. } => Some("the skipped keyslots need a KDF, cipher or hash offdisk does not implement; a newer cryptsetup may open them".into()),
            LuksError::Ambiguous(_) => Some("inspect the device; if the LUKS header was overwritten by mistake, restore it with `offdisk luks header-restore`".into()),
            LuksError::NoFreeSlot => Some("remove an unused key first (`offdisk luks kill-slot`)".into()),
            LuksError::Requirement(_) => Some("use a cryptsetup version that knows this requirement".into()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Luks1,
    Luks2,
}

/// The data segment as dm-crypt needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptSegment {
    /// Cipher spec as dm-crypt takes it, e.g. "aes-xts-plain64", "aes-cbc-essiv:sha256".
    pub cipher: String,
    /// Volume key length in bytes.
    pub key_size: usize,
    /// Start of the encrypted data, in bytes from the start of the device.
    pub offset: u64,
    /// Length in bytes; `None` means "to the end of the device" (LUKS2 "dynamic", LUKS1 always).
    pub size: Option<u64>,
    /// IV offset in 512-byte units (LUKS2 `iv_tweak`; 0 for LUKS1).
    pub iv_tweak: u64,
    /// Encryption sector size in bytes (512 for LUKS1).
    pub sector_size: u32,
    /// LUKS2 digest id bound to the segment (cryptsetup's keyring description uses it:
    /// `cryptsetup:<uuid>-d<id>`); `None` for LUKS1.
    pub digest_id: Option<u32>,
}

/// A successfully unlocked volume key and the keyslot that opened it.
#[derive(Debug)]
pub struct Unlocked {
    pub keyslot: usize,
    pub key: VolumeKey,
}

/// A LUKS2 header as loaded: the winning copy plus what was found about the other one.
#[derive(Debug, Clone)]
pub struct Luks2State {
    pub bin: BinaryHeader,
    pub meta: Metadata,
    /// Which copies were valid and current (same seqid as the winner).
    pub primary_ok: bool,
    pub secondary_ok: bool,
    /// Highest seqid seen on either copy (the next write uses one more).
    pub max_seqid: u64,
    /// Why a copy was not used, for `dump` and repair messages.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per loaded volume
pub enum Header {
    Luks1(Luks1Header),
    Luks2(Luks2State),
}

/// A parsed, validated LUKS header.
#[derive(Debug, Clone)]
pub struct Volume {
    pub header: Header,
}

impl Volume {
    pub fn load(dev: &File) -> Result<Volume, LuksError> {
        Self::load_io(dev)
    }

    /// `load` for any `BlockIo` (memory devices in tests).
    pub fn load_io(io: &dyn BlockIo) -> Result<Volume, LuksError> {
        let size = io.size().map_err(|e| LuksError::io("reading device size".into(), e))?;
        if size < luks1::HEADER_LEN as u64 {
            return Err(LuksError::NotLuks);
        }
        // Enough for the binary header and for other formats' signatures.
        let mut first = vec![0u8; (size.min(header::SIGNATURE_PROBE_LEN as u64)) as usize];
        io.read_at(&mut first, 0).map_err(|e| LuksError::io("reading header".into(), e))?;
        let primary_magic = first[..6] == header::MAGIC_PRIMARY;
        if primary_magic {
            match u16::from_be_bytes([first[6], first[7]]) {
                1 => {
                    let h = Luks1Header::parse(&first[..luks1::HEADER_LEN])?;
                    if size < h.header_and_areas_len() {
                        return Err(LuksError::TooSmall(format!(
                            "the LUKS1 header and keyslots need {} bytes but the device has {size}",
                            h.header_and_areas_len()
                        )));
                    }
                    return Ok(Volume { header: Header::Luks1(h) });
                }
                2 => {}
                v => return Err(LuksError::Unsupported(format!("LUKS version {v}"))),
            }
        }
        let primary = if primary_magic {
            header::read_copy(io, 0, Copy::Primary)
        } else {
            Err(LuksError::Header("no primary header (no LUKS magic at offset 0)".into()))
        };
        let secondary = header::read_secondary(io, &primary);
        if primary.is_err() {
            match &secondary {
                Err(_) if !primary_magic => return Err(LuksError::NotLuks),
                Err(_) => {}
                // Recovering from the secondary copy is only safe if nothing else has
                // taken the primary's place (e.g. mkfs run on the LUKS device).
                Ok(s) => {
                    if let Some(sig) = header::other_signature(&first) {
                        return Err(LuksError::Ambiguous(format!(
                            "the primary LUKS header area holds {sig}, but a LUKS2 secondary header exists at offset {}",
                            s.bin.hdr_offset
                        )));
                    }
                }
            }
        }
        let state = choose(primary, secondary)?;
        // As cryptsetup: the header and keyslots area must fit the device.
        let need = state.meta.header_and_areas_len();
        if size < need {
            return Err(LuksError::TooSmall(format!(
                "the LUKS2 header and keyslots need {need} bytes but the device has {size}"
            )));
        }
        Ok(Volume { header: Header::Luks2(state) })
    }

    pub fn version(&self) -> Version {
        match self.header {
            Header::Luks1(_) => Version::Luks1,
            Header::Luks2(_) => Version::Luks2,
        }
    }
    pub fn uuid(&self) -> &str {
        match &self.header {
            Header::Luks1(h) => &h.uuid,
            Header::Luks2(s) => &s.bin.uuid,
        }
    }
    pub fn label(&self) -> Option<&str> {
        match &self.header {
            Header::Luks2(s) if !s.bin.label.is_empty() => Some(&s.bin.label),
            _ => None,
        }
    }
    pub fn subsystem(&self) -> Option<&str> {
        match &self.header {
            Header::Luks2(s) if !s.bin.subsystem.is_empty() => Some(&s.bin.subsystem),
            _ => None,
        }
    }

    /// The LUKS2 state, or the LUKS1 refusal for `what`.
    pub fn luks2(&self, what: &'static str) -> Result<&Luks2State, LuksError> {
        match &self.header {
            Header::Luks2(s) => Ok(s),
            Header::Luks1(_) => Err(LuksError::Luks1ReadOnly(what)),
        }
    }

    /// Active keyslot numbers.
    pub fn active_slots(&self) -> Vec<usize> {
        match &self.header {
            Header::Luks1(h) => h.slots.iter().enumerate().filter(|(_, s)| s.active).map(|(i, _)| i).collect(),
            Header::Luks2(s) => s.meta.keyslots.keys().map(|&k| k as usize).collect(),
        }
    }

    pub fn unlock(&self, dev: &File, pass: &Passphrase, slot: Option<usize>) -> Result<Unlocked, LuksError> {
        self.unlock_io(dev, pass, slot)
    }

    /// Why keyslot `slot` cannot be used to unlock (unknown KDF, cipher or hash, unusable
    /// digest); `None` when it can.
    pub fn slot_problem(&self, slot: usize) -> Option<String> {
        match &self.header {
            Header::Luks1(h) => h.problem(),
            Header::Luks2(st) => st.meta.keyslots.get(&(slot as u32)).and_then(|k| k.unusable.clone()),
        }
    }

    /// Tries the keyslots (or only `slot`) with `pass`. Keyslots offdisk cannot use are
    /// skipped; when no usable keyslot opens, the error names the skipped ones and why.
    pub fn unlock_io(&self, io: &dyn BlockIo, pass: &Passphrase, slot: Option<usize>) -> Result<Unlocked, LuksError> {
        let candidates = match slot {
            Some(s) => {
                let max = if self.version() == Version::Luks1 { luks1::SLOTS } else { metadata::MAX_ID as usize + 1 };
                if s >= max {
                    return Err(LuksError::SlotRange(s));
                }
                if !self.active_slots().contains(&s) {
                    return Err(LuksError::SlotInactive(s));
                }
                if let Some(why) = self.slot_problem(s) {
                    return Err(LuksError::Unsupported(format!("keyslot {s}: {why}")));
                }
                if let Header::Luks2(st) = &self.header {
                    if !self.slot_opens_data(st, s as u32) {
                        return Err(LuksError::Unsupported(format!(
                            "keyslot {s} holds a key that is not bound to the data segment (an unbound key)"
                        )));
                    }
                }
                vec![s]
            }
            None => self.slots_by_priority(),
        };
        let mut skipped = Vec::new();
        let mut tried = 0;
        for s in candidates {
            if let Some(why) = self.slot_problem(s) {
                skipped.push(format!("keyslot {s}: {why}"));
                continue;
            }
            let r = match &self.header {
                Header::Luks1(h) => h.try_slot(io, s, pass.expose()),
                Header::Luks2(st) => {
                    if !self.slot_opens_data(st, s as u32) {
                        continue;
                    }
                    keyslot::try_slot(io, &st.meta, s as u32, pass.expose())
                }
            };
            tried += 1;
            match r {
                Ok(Some(key)) => return Ok(Unlocked { keyslot: s, key: VolumeKey::new(key) }),
                Ok(None) => {}
                // Out of memory or I/O trouble is worth reporting over "wrong passphrase".
                Err(e @ (LuksError::OutOfMemory(_) | LuksError::Io { .. })) => return Err(e),
                Err(e) if slot.is_some() => return Err(e),
                Err(e) => skipped.push(format!("keyslot {s}: {e}")),
            }
        }
        if skipped.is_empty() {
            Err(LuksError::NoKey)
        } else {
            Err(LuksError::NoUsableKey { tried, skipped })
        }
    }

    /// Keyslots to try without `--key-slot`: priority prefer (2) first, then normal (1 or
    /// none); "ignore" (0) and any other value only when named explicitly, as cryptsetup.
    fn slots_by_priority(&self) -> Vec<usize> {
        match &self.header {
            Header::Luks1(_) => self.active_slots(),
            Header::Luks2(s) => {
                let mut v: Vec<(i64, u32)> = s
                    .meta
                    .keyslots
                    .iter()
                    .filter(|(_, k)| k.kind == "luks2")
                    .map(|(id, k)| (k.priority.unwrap_or(1), *id))
                    .filter(|(p, _)| *p == 1 || *p == 2)
                    .collect();
                v.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
                v.into_iter().map(|(_, id)| id as usize).collect()
            }
        }
    }

    fn slot_opens_data(&self, st: &Luks2State, slot: u32) -> bool {
        let Some((seg, _)) = st.meta.data_segment() else { return false };
        st.meta.digest_of(slot).is_some_and(|d| st.meta.digests[&d].segments.contains(&seg))
    }

    /// True when `key` is the key of the data segment (LUKS1: the volume key), checked
    /// against the stored digest as cryptsetup's `--volume-key-file` does; no keyslot needed.
    pub fn volume_key_matches(&self, key: &[u8]) -> Result<bool, LuksError> {
        match &self.header {
            Header::Luks1(h) => h.key_matches(key),
            Header::Luks2(st) => {
                let seg = self.crypt_segment()?;
                let d = seg.digest_id.and_then(|id| st.meta.digests.get(&id));
                Ok(key.len() == seg.key_size && d.is_some_and(|d| keyslot::digest_matches(d, key)))
            }
        }
    }

    pub fn crypt_segment(&self) -> Result<CryptSegment, LuksError> {
        match &self.header {
            Header::Luks1(h) => Ok(CryptSegment {
                cipher: h.cipher_spec(),
                key_size: h.key_bytes as usize,
                offset: u64::from(h.payload_offset) * 512,
                size: None,
                iv_tweak: 0,
                sector_size: 512,
                digest_id: None,
            }),
            Header::Luks2(s) => {
                let (id, seg) = s.meta.data_segment().ok_or_else(|| LuksError::Metadata("no crypt segment".into()))?;
                let (did, _) = s
                    .meta
                    .digests
                    .iter()
                    .find(|(_, d)| d.segments.contains(&id))
                    .ok_or_else(|| LuksError::Metadata(format!("segment {id} has no digest")))?;
                let key_size = s
                    .meta
                    .keyslots
                    .iter()
                    .find(|(ks, _)| s.meta.digest_of(**ks) == Some(*did))
                    .map(|(_, k)| k.key_size)
                    .ok_or_else(|| LuksError::Metadata("no keyslot for the data segment".into()))?;
                Ok(CryptSegment {
                    cipher: seg.encryption.clone(),
                    key_size,
                    offset: seg.offset,
                    size: seg.size,
                    iv_tweak: seg.iv_tweak,
                    sector_size: seg.sector_size,
                    digest_id: Some(*did),
                })
            }
        }
    }

    pub fn check_activatable(&self) -> Result<(), LuksError> {
        if let Header::Luks2(s) = &self.header {
            // offdisk implements no optional LUKS2 features, so every requirement is unknown.
            if let Some(r) = s.meta.requirements.first() {
                return Err(LuksError::Requirement(r.clone()));
            }
            let (_, seg) = s.meta.data_segment().ok_or_else(|| LuksError::Metadata("no crypt segment".into()))?;
            if s.meta.segments.len() != 1 {
                return Err(LuksError::Unsupported("more than one data segment (reencryption in progress?)".into()));
            }
            if !(512..=4096).contains(&seg.sector_size) || !seg.sector_size.is_power_of_two() {
                return Err(LuksError::Unsupported(format!(
                    "sector size {} (dm-crypt takes 512, 1024, 2048 or 4096)",
                    seg.sector_size
                )));
            }
            cipher::check_spec(&seg.encryption, self.crypt_segment()?.key_size)?;
        }
        Ok(())
    }
}

/// Picks the valid copy with the highest seqid; a damaged copy is noted for repair.
fn choose(primary: Result<HeaderCopy, LuksError>, secondary: Result<HeaderCopy, LuksError>) -> Result<Luks2State, LuksError> {
    if let (Err(a), Err(b)) = (&primary, &secondary) {
        // The same fault in both copies: report it once, keeping its type.
        if a.to_string() == b.to_string() {
            return Err(primary.unwrap_err());
        }
    }
    let mut problems = Vec::new();
    let seq = |c: &Result<HeaderCopy, LuksError>| c.as_ref().map(|c| c.bin.seqid).ok();
    let max_seqid = seq(&primary).max(seq(&secondary)).unwrap_or(0);
    if let Err(e) = &primary {
        problems.push(format!("primary header: {e}"));
    }
    if let Err(e) = &secondary {
        problems.push(format!("secondary header: {e}"));
    }
    let (p, s) = (primary.ok(), secondary.ok());
    let winner = match (&p, &s) {
        (Some(a), Some(b)) => {
            if b.bin.seqid > a.bin.seqid {
                problems.push(format!("primary header is older (seqid {}) than the secondary ({})", a.bin.seqid, b.bin.seqid));
                b.clone()
            } else {
                if a.bin.seqid > b.bin.seqid {
                    problems.push(format!("secondary header is older (seqid {}) than the primary ({})", b.bin.seqid, a.bin.seqid));
                } else if a.meta != b.meta || a.bin.uuid != b.bin.uuid || a.bin.label != b.bin.label || a.bin.subsystem != b.bin.subsystem {
                    problems.push("header copies have the same seqid but differ".into());
                }
                a.clone()
            }
        }
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => {
            return Err(LuksError::Header(problems.join("; ")));
        }
    };
    let same = |c: &Option<HeaderCopy>| {
        c.as_ref().is_some_and(|c| c.bin.seqid == winner.bin.seqid && c.meta == winner.meta && c.bin.uuid == winner.bin.uuid)
    };
    Ok(Luks2State {
        primary_ok: same(&p),
        secondary_ok: same(&s),
        bin: winner.bin,
        meta: winner.meta,
        max_seqid,
        problems,
    })
}

/// Like `exercise_parser`, but first gives every header copy found at an allowed offset a
/// correct checksum, so fuzzed JSON reaches the metadata validator instead of stopping at
/// the checksum.
#[doc(hidden)]
pub fn exercise_parser_resealed(data: &[u8]) {
    let mut img = data.to_vec();
    for off in std::iter::once(0u64).chain(header::HDR_SIZES) {
        let off = off as usize;
        let Some(raw) = img.get(off..off + header::BINARY_SIZE) else { break };
        let Ok(bin) = BinaryHeader::parse(raw) else { continue };
        let end = off + bin.hdr_size as usize;
        if let Some(json) = img.get(off + header::BINARY_SIZE..end) {
            if let Ok(csum) = bin.compute_csum(json) {
                img[off + 448..off + 512].copy_from_slice(&csum);
            }
        }
    }
    exercise_parser(&img);
}

/// Parser entry point for fuzzing (cargo-fuzz target `luks_header` and the smoke test):
/// treats `data` as a device image and runs everything that reads untrusted bytes.
#[doc(hidden)]
pub fn exercise_parser(data: &[u8]) {
    let dev = io::MemDevice::new(data.to_vec());
    if let Ok(vol) = Volume::load_io(&dev) {
        let _ = vol.crypt_segment();
        let _ = vol.check_activatable();
        let _ = dump::describe(&vol);
        let _ = dump::text(&vol);
        let _ = backup::header_area_len(&vol);
        if let Header::Luks2(st) = &vol.header {
            let _ = st.meta.to_area();
        }
    }
}

/// Keyslot-unlock entry point for fuzzing (cargo-fuzz target `luks_unlock` and the smoke
/// test): loads `data` as a device image, caps every KDF and digest cost so one input
/// stays cheap, then tries each keyslot (KDF, keyslot-area decryption, AF merge, digest)
/// with a fixed passphrase and with the last bytes of the input.
#[doc(hidden)]
pub fn exercise_unlock(data: &[u8]) {
    let dev = io::MemDevice::new(data.to_vec());
    let Ok(mut vol) = Volume::load_io(&dev) else { return };
    match &mut vol.header {
        Header::Luks1(h) => {
            h.mk_digest_iterations = h.mk_digest_iterations.min(4);
            for s in &mut h.slots {
                s.iterations = s.iterations.min(4);
            }
        }
        Header::Luks2(st) => {
            for k in st.meta.keyslots.values_mut() {
                match &mut k.kdf {
                    Some(kdf::Kdf::Pbkdf2 { iterations, .. }) => *iterations = (*iterations).min(4),
                    Some(kdf::Kdf::Argon2 { time, memory_kib, lanes, .. }) => {
                        *time = (*time).min(1);
                        *lanes = (*lanes).clamp(1, 2);
                        *memory_kib = (*memory_kib).min(64).max(8 * *lanes);
                    }
                    None => {}
                }
            }
            for d in st.meta.digests.values_mut() {
                d.iterations = d.iterations.min(4);
            }
        }
    }
    let tail = &data[data.len().saturating_sub(16)..];
    for pass in [&b"cipher fixture passphrase"[..], tail] {
        let pass = Passphrase::from_slice(pass);
        let _ = vol.unlock_io(&dev, &pass, None);
        for s in vol.active_slots() {
            let _ = vol.unlock_io(&dev, &pass, Some(s));
        }
    }
}
