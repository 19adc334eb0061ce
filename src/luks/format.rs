//! `luksFormat`: a new LUKS2 volume that cryptsetup opens and `cryptsetup repair` finds
//! clean. Plan first (layout, costs, keys, metadata), then write: wipe the header area,
//! keyslot material, secondary header, primary header, with syncs between.

use super::calibrate;
use super::codec::base64_encode;
use super::hash::HashAlg;
use super::header::{BinaryHeader, Copy as HdrCopy, LABEL_LEN, SUBSYSTEM_LEN};
use super::io::BlockIo;
use super::kdf::{Argon2Kind, Kdf};
use super::keyslot;
use super::layout::Layout;
use super::metadata::Metadata;
use super::{LuksError, Volume};
use crate::secret::{Passphrase, SecretBytes, VolumeKey};
use serde_json::{json, Map, Value};
use std::fs::File;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PbkdfType {
    #[default]
    Argon2id,
    Argon2i,
    Pbkdf2,
}

impl PbkdfType {
    pub fn parse(s: &str) -> Result<Self, LuksError> {
        match s {
            "argon2id" => Ok(PbkdfType::Argon2id),
            "argon2i" => Ok(PbkdfType::Argon2i),
            "pbkdf2" => Ok(PbkdfType::Pbkdf2),
            _ => Err(LuksError::InvalidOption(format!("unknown PBKDF {s:?} (argon2id, argon2i or pbkdf2)"))),
        }
    }
}

/// How a new keyslot's passphrase is stretched (cryptsetup's --pbkdf* options).
#[derive(Debug, Clone)]
pub struct PbkdfOptions {
    pub kind: PbkdfType,
    /// Hash for PBKDF2 and the AF splitter (`--hash`).
    pub hash: String,
    /// `--iter-time` in milliseconds (default 2000).
    pub iter_time_ms: u32,
    /// `--pbkdf-memory` in KiB (Argon2; default: calibrated, up to 1 GiB / half of RAM).
    pub memory_kib: Option<u32>,
    /// `--pbkdf-parallel` (Argon2 lanes; default min(4, CPUs)).
    pub parallel: Option<u32>,
    /// `--pbkdf-force-iterations`: skip calibration (Argon2 time cost or PBKDF2 iterations).
    pub force_iterations: Option<u32>,
}

impl Default for PbkdfOptions {
    fn default() -> Self {
        PbkdfOptions {
            kind: PbkdfType::Argon2id,
            hash: "sha256".into(),
            iter_time_ms: 2000,
            memory_kib: None,
            parallel: None,
            force_iterations: None,
        }
    }
}

impl PbkdfOptions {
    pub fn hash(&self) -> Result<HashAlg, LuksError> {
        HashAlg::parse(&self.hash).map_err(|_| LuksError::InvalidOption(format!("unsupported hash {:?}", self.hash)))
    }

    /// The KDF (with a fresh random salt) for a key of `key_len` bytes.
    pub fn plan(&self, key_len: usize) -> Result<Kdf, LuksError> {
        let salt = SecretBytes::random(32).map_err(|e| LuksError::io("random bytes".into(), e))?.expose().to_vec();
        if self.iter_time_ms == 0 && self.force_iterations.is_none() {
            return Err(LuksError::InvalidOption("--iter-time must be positive".into()));
        }
        match self.kind {
            PbkdfType::Pbkdf2 => {
                let hash = self.hash()?;
                let iterations = match self.force_iterations {
                    Some(n) if n < calibrate::MIN_PBKDF2_ITERATIONS => {
                        return Err(LuksError::InvalidOption(format!("PBKDF2 needs at least {} iterations", calibrate::MIN_PBKDF2_ITERATIONS)))
                    }
                    Some(n) => n,
                    None => calibrate::pbkdf2_iterations(hash, self.iter_time_ms, key_len),
                };
                Ok(Kdf::Pbkdf2 { hash, iterations, salt })
            }
            PbkdfType::Argon2i | PbkdfType::Argon2id => {
                let kind = if self.kind == PbkdfType::Argon2i { Argon2Kind::Argon2i } else { Argon2Kind::Argon2id };
                let lanes = self.parallel.unwrap_or_else(calibrate::default_lanes);
                if !(1..=super::kdf::MAX_ARGON2_LANES).contains(&lanes) {
                    return Err(LuksError::InvalidOption(format!("--pbkdf-parallel {lanes} is out of range")));
                }
                let max_mem = match self.memory_kib {
                    Some(m) if m < 8 * lanes || m > super::kdf::MAX_ARGON2_MEMORY_KIB => {
                        return Err(LuksError::InvalidOption(format!("--pbkdf-memory {m} KiB is out of range")))
                    }
                    Some(m) => m,
                    None => calibrate::default_max_memory_kib().max(8 * lanes),
                };
                let (time, memory_kib) = match self.force_iterations {
                    Some(0) => return Err(LuksError::InvalidOption("--pbkdf-force-iterations must be positive".into())),
                    Some(t) => (t, max_mem),
                    None => calibrate::argon2_cost(kind, self.iter_time_ms, max_mem, lanes, key_len),
                };
                Ok(Kdf::Argon2 { kind, time, memory_kib, lanes, salt })
            }
        }
    }
}

/// Options for `format`, mirroring `cryptsetup luksFormat`.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub pbkdf: PbkdfOptions,
    /// Data (and keyslot area) cipher, e.g. "aes-xts-plain64".
    pub cipher: String,
    /// Volume key size in bits (`--key-size`, 256 or 512 for XTS).
    pub key_size_bits: u32,
    /// Encryption sector size; `None`: 4096 for image files, 512 for block devices.
    pub sector_size: Option<u32>,
    pub label: Option<String>,
    pub subsystem: Option<String>,
    pub uuid: Option<String>,
    /// Use this volume key instead of a fresh random one (`--volume-key-file`).
    pub volume_key: Option<VolumeKey>,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            pbkdf: PbkdfOptions::default(),
            cipher: "aes-xts-plain64".into(),
            key_size_bits: 512,
            sector_size: None,
            label: None,
            subsystem: None,
            uuid: None,
            volume_key: None,
        }
    }
}

pub fn format(dev: &File, opts: &FormatOptions, pass: &Passphrase) -> Result<Volume, LuksError> {
    let mut opts = opts.clone();
    if opts.sector_size.is_none() {
        // cryptsetup 2.6 picks 4096-byte sectors for image files.
        let is_file = dev.metadata().map(|m| m.file_type().is_file()).unwrap_or(false);
        opts.sector_size = Some(if is_file { 4096 } else { 512 });
    }
    format_io(dev, &opts, pass)
}

/// Everything `format` will write, decided before touching the device.
struct Plan {
    layout: Layout,
    copies: [Vec<u8>; 2],
    material: SecretBytes,
    area_offset: u64,
}

fn text_field(v: &Option<String>, max: usize, what: &str) -> Result<String, LuksError> {
    let s = v.clone().unwrap_or_default();
    if s.len() >= max || s.contains('\0') {
        return Err(LuksError::InvalidOption(format!("{what} must be shorter than {max} bytes")));
    }
    Ok(s)
}

fn random<const N: usize>() -> Result<[u8; N], LuksError> {
    let mut a = [0u8; N];
    getrandom::fill(&mut a).map_err(|e| LuksError::io("random bytes".into(), std::io::Error::other(e)))?;
    Ok(a)
}

fn plan(io: &dyn BlockIo, opts: &FormatOptions, pass: &Passphrase) -> Result<Plan, LuksError> {
    let sector_size = opts.sector_size.unwrap_or(512);
    if !(512..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(LuksError::InvalidOption(format!("sector size {sector_size} (512, 1024, 2048 or 4096)")));
    }
    if opts.key_size_bits % 8 != 0 {
        return Err(LuksError::InvalidOption(format!("key size {} bits", opts.key_size_bits)));
    }
    let key_len = (opts.key_size_bits / 8) as usize;
    super::cipher::check_spec(&opts.cipher, key_len).map_err(|e| LuksError::InvalidOption(e.to_string()))?;
    let label = text_field(&opts.label, LABEL_LEN, "label")?;
    let subsystem = text_field(&opts.subsystem, SUBSYSTEM_LEN, "subsystem")?;
    let uuid = match &opts.uuid {
        Some(u) => uuid::Uuid::parse_str(u).map_err(|_| LuksError::InvalidOption(format!("{u:?} is not a UUID")))?,
        None => uuid::Uuid::new_v4(),
    }
    .hyphenated()
    .to_string();
    let size = io.size().map_err(|e| LuksError::io("reading device size".into(), e))?;
    let layout = Layout::default_for(size, sector_size)?;
    let hash = opts.pbkdf.hash()?;

    let vk = match &opts.volume_key {
        Some(k) if k.len() != key_len => {
            return Err(LuksError::InvalidOption(format!("volume key has {} bytes, not {key_len}", k.len())))
        }
        Some(k) => k.clone(),
        None => VolumeKey::random(key_len).map_err(|e| LuksError::io("random bytes".into(), e))?,
    };
    let kdf = opts.pbkdf.plan(key_len)?;
    let material = keyslot::seal_material(vk.expose(), pass.expose(), &kdf, &opts.cipher, hash)?;
    let area_offset = 2 * layout.hdr_size;

    let digest_salt = random::<32>()?;
    let digest_iterations = match opts.pbkdf.force_iterations {
        // Forced (test) costs keep the digest cheap too.
        Some(_) => calibrate::MIN_PBKDF2_ITERATIONS,
        None => calibrate::pbkdf2_iterations(hash, calibrate::DIGEST_ITER_TIME_MS, key_len),
    };
    let mut digest = vec![0u8; hash.output_len()];
    hash.pbkdf2(vk.expose(), &digest_salt, digest_iterations, &mut digest);

    let doc = json!({
        "keyslots": { "0": keyslot_json(key_len, &opts.cipher, hash, &kdf, area_offset) },
        "tokens": {},
        "segments": { "0": {
            "type": "crypt",
            "offset": layout.data_offset.to_string(),
            "size": "dynamic",
            "iv_tweak": "0",
            "encryption": opts.cipher,
            "sector_size": sector_size,
        }},
        "digests": { "0": {
            "type": "pbkdf2",
            "keyslots": ["0"],
            "segments": ["0"],
            "hash": hash.name(),
            "iterations": digest_iterations,
            "salt": base64_encode(&digest_salt),
            "digest": base64_encode(&digest),
        }},
        "config": {
            "json_size": (layout.hdr_size - 4096).to_string(),
            "keyslots_size": layout.keyslots_size.to_string(),
        },
    });
    let Value::Object(doc) = doc else { unreachable!() };
    let meta = Metadata::from_doc(doc, layout.hdr_size)?;
    let json_area = meta.to_area()?;
    let mut copies = [Vec::new(), Vec::new()];
    for (i, copy) in [HdrCopy::Primary, HdrCopy::Secondary].into_iter().enumerate() {
        let bin = BinaryHeader {
            copy,
            hdr_size: layout.hdr_size,
            seqid: 1,
            label: label.clone(),
            csum_alg: "sha256".into(),
            salt: random::<64>()?,
            uuid: uuid.clone(),
            subsystem: subsystem.clone(),
            hdr_offset: if copy == HdrCopy::Primary { 0 } else { layout.hdr_size },
            csum: [0; 64],
        };
        copies[i] = bin.seal(&json_area)?;
    }
    Ok(Plan { layout, copies, material, area_offset })
}

/// The JSON object of a luks2 keyslot.
pub fn keyslot_json(key_len: usize, cipher: &str, af_hash: HashAlg, kdf: &Kdf, area_offset: u64) -> Value {
    let kdf_json = match kdf {
        Kdf::Pbkdf2 { hash, iterations, salt } => json!({
            "type": "pbkdf2", "hash": hash.name(), "iterations": iterations, "salt": base64_encode(salt),
        }),
        Kdf::Argon2 { kind, time, memory_kib, lanes, salt } => json!({
            "type": kind.name(), "time": time, "memory": memory_kib, "cpus": lanes, "salt": base64_encode(salt),
        }),
    };
    let mut m = Map::new();
    m.insert("type".into(), json!("luks2"));
    m.insert("key_size".into(), json!(key_len));
    m.insert("af".into(), json!({ "type": "luks1", "stripes": super::af::STRIPES, "hash": af_hash.name() }));
    m.insert(
        "area".into(),
        json!({
            "type": "raw",
            "offset": area_offset.to_string(),
            "size": keyslot::area_len(key_len).to_string(),
            "encryption": cipher,
            "key_size": key_len,
        }),
    );
    m.insert("kdf".into(), kdf_json);
    Value::Object(m)
}

pub fn format_io(io: &dyn BlockIo, opts: &FormatOptions, pass: &Passphrase) -> Result<Volume, LuksError> {
    let p = plan(io, opts, pass)?;
    let werr = |what: &str| {
        let what = what.to_owned();
        move |e| LuksError::io(format!("writing {what}"), e)
    };
    // Wipe the whole header area first: no stale header or keyslot survives.
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < p.layout.data_offset {
        let n = (p.layout.data_offset - off).min(zeros.len() as u64) as usize;
        io.write_at(&zeros[..n], off).map_err(werr("header area"))?;
        off += n as u64;
    }
    io.write_at(p.material.expose(), p.area_offset).map_err(werr("keyslot 0"))?;
    io.sync().map_err(werr("keyslot 0"))?;
    io.write_at(&p.copies[1], p.layout.hdr_size).map_err(werr("secondary header"))?;
    io.sync().map_err(werr("secondary header"))?;
    io.write_at(&p.copies[0], 0).map_err(werr("primary header"))?;
    io.sync().map_err(werr("primary header"))?;
    Volume::load_io(io)
}
