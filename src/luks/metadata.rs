//! The LUKS2 JSON area: a typed view of keyslots, segments, digests, tokens and config,
//! over the original document (kept whole, so unknown tokens, config entries and fields
//! survive rewrites).
//!
//! Two questions are kept apart, as cryptsetup keeps them:
//! - **Is the metadata valid?** Layout, references, sizes and types, by the LUKS2
//!   specification and cryptsetup's validation rules only (`Metadata::parse` refuses
//!   anything else, naming the fault). A header cryptsetup accepts, offdisk accepts.
//! - **Is a keyslot usable?** A valid keyslot may name a KDF, cipher or hash offdisk does
//!   not know, or carry parameters it cannot run; it is then listed with the reason
//!   (`Keyslot::unusable`) and skipped when unlocking. Digests likewise
//!   (`DigestEntry::unusable`); segments are checked when activated or read.
//!
//! Before validating, leftover parameters of a changed KDF (`time` in a pbkdf2 object,
//! `hash` in an argon2 one) are dropped in memory, as cryptsetup's repair does; the next
//! write stores the cleaned document.

use super::codec::base64_decode;
use super::hash::HashAlg;
use super::kdf::{Argon2Kind, Kdf, MAX_ARGON2_LANES, MAX_ARGON2_MEMORY_KIB};
use super::LuksError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Size of the binary part of each header copy.
pub const BINARY_SIZE: usize = 4096;
/// Allowed metadata sizes of one copy (binary header + JSON area), 16 KiB to 4 MiB.
pub const HDR_SIZES: [u64; 9] = [16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20];
/// Keyslot ids cryptsetup can address ("0".."31"); higher ids are valid but unusable.
pub const MAX_ID: u32 = 31;
/// Largest keyslots area cryptsetup allows.
pub const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;
/// Largest key (volume or keyslot-area) used: bounds the AF material we allocate.
pub const MAX_KEY_BYTES: usize = 512;
/// The only salt length cryptsetup uses for keyslot KDFs and digests.
pub const SALT_LEN: usize = 32;
/// Shortest digest cryptsetup checks a key against (LUKS1's 20 bytes).
pub const MIN_DIGEST_LEN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// "raw" for keyslot material.
    pub kind: String,
    pub offset: u64,
    pub size: u64,
    /// Cipher of the keyslot material ("" when the area has none).
    pub encryption: String,
    /// Length of the key the KDF derives for the area cipher.
    pub key_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyslot {
    /// "luks2" for passphrase keyslots; others (e.g. "reencrypt") are kept but not used.
    pub kind: String,
    /// Length of the key the keyslot holds (the volume key).
    pub key_size: usize,
    /// 0 ignore, 1 normal (also when absent), 2 prefer; anything else is never tried
    /// automatically (as cryptsetup).
    pub priority: Option<i64>,
    pub area: Area,
    /// The KDF type as written ("argon2id", or a name offdisk does not know).
    pub kdf_type: String,
    /// The KDF, when it is one offdisk runs with parameters it can run.
    pub kdf: Option<Kdf>,
    pub af_hash: Option<HashAlg>,
    /// Why this keyslot cannot be used to unlock; `None`: usable.
    pub unusable: Option<String>,
}

impl Keyslot {
    pub fn is_usable(&self) -> bool {
        self.unusable.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub kind: String,
    pub offset: u64,
    /// `None` = "dynamic" (to the end of the device).
    pub size: Option<u64>,
    pub iv_tweak: u64,
    pub encryption: String,
    pub sector_size: u32,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub kind: String,
    pub keyslots: Vec<u32>,
    pub segments: Vec<u32>,
    /// The hash as written.
    pub hash_name: String,
    pub hash: Option<HashAlg>,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
    /// Why no key can be checked against this digest; `None`: usable.
    pub unusable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: String,
    pub keyslots: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The document as read (repaired in memory) or as we will write it.
    pub doc: Map<String, Value>,
    pub keyslots: BTreeMap<u32, Keyslot>,
    pub segments: BTreeMap<u32, Segment>,
    pub digests: BTreeMap<u32, DigestEntry>,
    pub tokens: BTreeMap<u32, Token>,
    pub json_size: u64,
    pub keyslots_size: u64,
    pub flags: Vec<String>,
    pub requirements: Vec<String>,
    /// What was repaired in memory while loading (written back by the next update).
    pub repaired: Vec<String>,
}

fn bad(msg: impl Into<String>) -> LuksError {
    LuksError::Metadata(msg.into())
}

type Obj = Map<String, Value>;

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Obj, LuksError> {
    v.as_object().ok_or_else(|| bad(format!("{path} must be an object")))
}

fn field<'a>(m: &'a Obj, key: &str, path: &str) -> Result<&'a Value, LuksError> {
    m.get(key).ok_or_else(|| bad(format!("{path}.{key} is missing")))
}

fn sub_object<'a>(m: &'a Obj, key: &str, path: &str) -> Result<&'a Obj, LuksError> {
    object(field(m, key, path)?, &format!("{path}.{key}"))
}

/// A non-empty string (cryptsetup's `json_contains_string`).
fn string<'a>(m: &'a Obj, key: &str, path: &str) -> Result<&'a str, LuksError> {
    match field(m, key, path)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::String(_) => Err(bad(format!("{path}.{key} is empty"))),
        _ => Err(bad(format!("{path}.{key} must be a string"))),
    }
}

/// A JSON integer (json-c's int type: no fraction, no exponent), as i64.
fn integer(m: &Obj, key: &str, path: &str) -> Result<i64, LuksError> {
    match field(m, key, path)? {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(i),
            (None, Some(_)) => Err(bad(format!("{path}.{key} = {n} is out of range"))),
            _ => Err(bad(format!("{path}.{key} = {n} is not a whole number"))),
        },
        _ => Err(bad(format!("{path}.{key} must be a number"))),
    }
}

/// An integer within the 32-bit unsigned range (cryptsetup's `validate_json_uint32`).
fn uint32(m: &Obj, key: &str, path: &str) -> Result<u32, LuksError> {
    let i = integer(m, key, path)?;
    u32::try_from(i).map_err(|_| bad(format!("{path}.{key} = {i} is out of range 0..={}", u32::MAX)))
}

/// Digits only (cryptsetup's `numbered`).
fn numbered(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// A 64-bit quantity stored as a decimal string of digits (any number of leading zeros),
/// at most u64::MAX: the rule for offsets, sizes and iv_tweak.
pub fn parse_u64_str(s: &str, what: &str) -> Result<u64, LuksError> {
    if s.starts_with('-') {
        return Err(bad(format!("{what} is negative ({s:?})")));
    }
    if s.is_empty() || !numbered(s) {
        return Err(bad(format!("{what} is not a decimal number ({s:?})")));
    }
    s.parse::<u64>().map_err(|_| bad(format!("{what} overflows ({s:?})")))
}

/// C's strtoull as cryptsetup applies it to config sizes: optional leading white space and
/// sign, digits, nothing after; "-n" wraps modulo 2^64; overflow is an error.
fn strtoull(s: &str, what: &str) -> Result<u64, LuksError> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !numbered(digits) {
        return Err(bad(format!("{what} is not a decimal number ({s:?})")));
    }
    let v = digits.parse::<u64>().map_err(|_| bad(format!("{what} overflows ({s:?})")))?;
    Ok(if neg { v.wrapping_neg() } else { v })
}

fn u64_str(m: &Obj, key: &str, path: &str) -> Result<u64, LuksError> {
    parse_u64_str(string(m, key, path)?, &format!("{path}.{key}"))
}

/// An object id ("0", "12"): digits only, as cryptsetup requires.
pub fn parse_id(s: &str, what: &str) -> Result<u32, LuksError> {
    if !numbered(s) {
        return Err(bad(format!("{what} id {s:?} is not a decimal id")));
    }
    // cryptsetup reads ids with atoi: "" is 0.
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<u32>().map_err(|_| bad(format!("{what} id {s:?} is out of range")))
}

/// The objects of a top-level section by id; two spellings of one id ("1", "01") are refused.
fn numbered_objects<'a>(top: &'a Obj, name: &str) -> Result<Vec<(u32, &'a str, &'a Value)>, LuksError> {
    let sect = top.get(name).ok_or_else(|| bad(format!("top-level object {name:?} is missing")))?;
    let sect = object(sect, name)?;
    let mut out = Vec::with_capacity(sect.len());
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in sect {
        let id = parse_id(k, name.trim_end_matches('s'))?;
        if !seen.insert(id) {
            return Err(bad(format!("{name}: id {id} is spelled twice")));
        }
        out.push((id, k.as_str(), v));
    }
    Ok(out)
}

/// A list of references to objects of `section` (by their exact key, as cryptsetup looks
/// them up), returned as ids.
fn references(m: &Obj, key: &str, path: &str, section: &Obj, what: &str) -> Result<Vec<u32>, LuksError> {
    let arr = field(m, key, path)?.as_array().ok_or_else(|| bad(format!("{path}.{key} must be an array")))?;
    let mut out = Vec::new();
    for v in arr {
        let s = v.as_str().ok_or_else(|| bad(format!("{path}.{key} must hold id strings")))?;
        if !section.get(s).is_some_and(Value::is_object) {
            return Err(bad(format!("{path} refers to {what} {s}, which does not exist")));
        }
        let id = parse_id(s, what)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn string_array(v: &Value, path: &str) -> Result<Vec<String>, LuksError> {
    let arr = v.as_array().ok_or_else(|| bad(format!("{path} must be an array")))?;
    arr.iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(|| bad(format!("{path} must hold strings")))).collect()
}

/// Drops leftover parameters of a changed KDF type (cryptsetup's keyslot repair).
fn repair_kdf_leftovers(doc: &mut Obj) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(Value::Object(keyslots)) = doc.get_mut("keyslots") else { return notes };
    for (id, ks) in keyslots.iter_mut() {
        let Some(ks) = ks.as_object_mut() else { continue };
        if ks.get("type").and_then(Value::as_str) != Some("luks2") {
            continue;
        }
        let Some(Value::Object(kdf)) = ks.get_mut("kdf") else { continue };
        let keep: &[&str] = match kdf.get("type").and_then(Value::as_str) {
            Some("pbkdf2") => &["type", "salt", "hash", "iterations"],
            Some("argon2i" | "argon2id") => &["type", "salt", "time", "memory", "cpus"],
            _ => continue,
        };
        let extra: Vec<String> = kdf.keys().filter(|k| !keep.contains(&k.as_str())).cloned().collect();
        if !extra.is_empty() {
            for k in &extra {
                kdf.remove(k);
            }
            notes.push(format!("keyslot {id}: leftover KDF parameters {} dropped", extra.join(", ")));
        }
    }
    notes
}

impl Metadata {
    /// Parses the JSON area of a copy whose binary header says `hdr_size`.
    pub fn parse(area: &[u8], hdr_size: u64) -> Result<Metadata, LuksError> {
        if area.first() != Some(&b'{') {
            return Err(bad("JSON area does not start with '{'"));
        }
        let end = area.iter().position(|&b| b == 0).ok_or_else(|| bad("JSON area is not NUL-terminated"))?;
        let text = &area[..end];
        let value: Value = serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        // The object ends the text; only white space may follow it before the NUL.
        if text.iter().rev().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'}') {
            return Err(bad("junk after the JSON object"));
        }
        if area[end..].iter().any(|&b| b != 0) {
            return Err(bad("junk after the JSON text (non-zero bytes after its terminating NUL)"));
        }
        let Value::Object(doc) = value else { return Err(bad("JSON is not an object")) };
        Self::from_doc(doc, hdr_size)
    }

    /// Validates a document (read, or built for writing) for a copy of `hdr_size` bytes.
    pub fn from_doc(mut doc: Obj, hdr_size: u64) -> Result<Metadata, LuksError> {
        let repaired = repair_kdf_leftovers(&mut doc);
        let top = &doc;

        // config (requirements first, as cryptsetup checks them first)
        let cfg = sub_object(top, "config", "")?;
        let mut requirements = Vec::new();
        if let Some(r) = cfg.get("requirements") {
            let rm = object(r, "config.requirements")?;
            if let Some(mand) = rm.get("mandatory") {
                requirements = string_array(mand, "config.requirements.mandatory")?;
            }
            let online = requirements.iter().filter(|r| is_reencrypt_flag(r)).count();
            if online > 1 {
                return Err(bad("config.requirements.mandatory lists more than one online-reencrypt flag"));
            }
        }
        let keyslots_obj = sub_object(top, "keyslots", "")?;
        let segments_obj = sub_object(top, "segments", "")?;

        // tokens
        let mut tokens = BTreeMap::new();
        for (id, _, v) in numbered_objects(top, "tokens")? {
            let path = format!("tokens.{id}");
            let m = object(v, &path)?;
            let kind = string(m, "type", &path)?.to_owned();
            let ks = references(m, "keyslots", &path, keyslots_obj, "keyslot")?;
            tokens.insert(id, Token { kind, keyslots: ks });
        }

        // digests
        let mut digests = BTreeMap::new();
        for (id, _, v) in numbered_objects(top, "digests")? {
            let path = format!("digests.{id}");
            let m = object(v, &path)?;
            let kind = string(m, "type", &path)?.to_owned();
            let keyslots = references(m, "keyslots", &path, keyslots_obj, "keyslot")?;
            let segments = references(m, "segments", &path, segments_obj, "segment")?;
            digests.insert(id, parse_digest(m, &path, kind, keyslots, segments));
        }

        // segments
        let segments = parse_segments(top, &digests)?;

        // keyslots (generic part)
        let mut keyslots = BTreeMap::new();
        for (id, _, v) in numbered_objects(top, "keyslots")? {
            let path = format!("keyslots.{id}");
            let m = object(v, &path)?;
            string(m, "type", &path)?;
            uint32(m, "key_size", &path)?;
            keyslots.insert(id, m);
        }

        // config sizes
        let json_size = strtoull(string(cfg, "json_size", "config")?, "config.json_size")?;
        let keyslots_size = strtoull(string(cfg, "keyslots_size", "config")?, "config.keyslots_size")?;
        let metadata_size = json_size.checked_add(BINARY_SIZE as u64).filter(|s| HDR_SIZES.contains(s)).ok_or_else(|| {
            bad(format!("config.json_size {json_size} does not give an allowed metadata size (16 KiB to 4 MiB)"))
        })?;
        if keyslots_size % 4096 != 0 {
            return Err(bad(format!("config.keyslots_size {keyslots_size} is not a multiple of 4096")));
        }
        if keyslots_size > MAX_KEYSLOTS_SIZE {
            return Err(bad(format!("config.keyslots_size {keyslots_size} exceeds 128 MiB")));
        }
        let min_offset = segments.values().filter(|s| !is_backup(s)).map(|s| s.offset).min().unwrap_or(0);
        if min_offset != 0 && (min_offset < keyslots_size || min_offset - keyslots_size < 2 * metadata_size) {
            return Err(bad(format!(
                "config.keyslots_size {keyslots_size} is too large: the data starts at {min_offset}, the keyslots at {}",
                2 * metadata_size
            )));
        }
        let flags = match cfg.get("flags") {
            Some(f) => string_array(f, "config.flags")?,
            None => Vec::new(),
        };

        // keyslot areas
        let area_end = 2 * metadata_size + keyslots_size;
        let mut spans = Vec::new();
        for (&id, m) in &keyslots {
            let apath = format!("keyslots.{id}.area");
            let am = sub_object(m, "area", &format!("keyslots.{id}"))?;
            string(am, "type", &apath)?;
            let offset = u64_str(am, "offset", &apath)?;
            let size = u64_str(am, "size", &apath)?;
            if offset < 2 * metadata_size {
                return Err(bad(format!("{apath}.offset {offset} lies inside the header (keyslots start at {})", 2 * metadata_size)));
            }
            if size == 0 {
                return Err(bad(format!("{apath}.size is zero")));
            }
            let end = offset.checked_add(size).ok_or_else(|| bad(format!("{apath}: offset + size overflows")))?;
            if end > area_end {
                return Err(bad(format!("{apath} [{offset}, {end}) runs past the keyslots area (ends at {area_end})")));
            }
            spans.push((offset, end, id));
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(bad(format!("keyslot areas {} and {} overlap", w[0].2, w[1].2)));
            }
        }

        if json_size != hdr_size.wrapping_sub(BINARY_SIZE as u64) {
            return Err(bad(format!(
                "config.json_size {json_size} does not match the header size {hdr_size} (expected {})",
                hdr_size.wrapping_sub(BINARY_SIZE as u64)
            )));
        }

        // keyslot types: structure of the ones cryptsetup implements, then usability
        let mut parsed = BTreeMap::new();
        let mut reencrypt = 0;
        for (id, m) in keyslots {
            let path = format!("keyslots.{id}");
            let ks = parse_keyslot(m, &path)?;
            if ks.kind == "luks2" {
                let n = digests.values().filter(|d| d.keyslots.contains(&id)).count();
                if n != 1 {
                    return Err(bad(format!("keyslot {id} belongs to {n} digests (a luks2 keyslot belongs to exactly one)")));
                }
            }
            if ks.kind == "reencrypt" {
                reencrypt += 1;
            }
            let mut ks = ks;
            if id > MAX_ID && ks.unusable.is_none() {
                ks.unusable = Some(format!("keyslot id {id} is beyond {MAX_ID}, the highest cryptsetup addresses"));
            }
            parsed.insert(id, ks);
        }
        let online = requirements.iter().any(|r| r == "online-reencrypt" || r.starts_with("online-reencrypt-v"));
        if online && reencrypt == 0 {
            return Err(bad("an online-reencrypt requirement without its reencrypt keyslot"));
        }
        if reencrypt > 0 && !requirements.iter().any(|r| is_reencrypt_flag(r)) {
            return Err(bad("a reencrypt keyslot without the online-reencrypt requirement"));
        }
        if reencrypt > 1 {
            return Err(bad("more than one reencrypt keyslot"));
        }
        for (id, ks) in parsed.iter_mut() {
            if ks.unusable.is_none() {
                ks.unusable = digest_problem(*id, &digests);
            }
        }

        let meta = Metadata {
            doc,
            keyslots: parsed,
            segments,
            digests,
            tokens,
            json_size,
            keyslots_size,
            flags,
            requirements,
            repaired,
        };
        // The document as it will be written must fit its area.
        meta.compact_len().and_then(|n| {
            if n as u64 > json_size {
                Err(bad(format!("metadata ({n} bytes) does not fit the {json_size}-byte JSON area")))
            } else {
                Ok(())
            }
        })?;
        Ok(meta)
    }

    fn compact_len(&self) -> Result<usize, LuksError> {
        serde_json::to_vec(&self.doc).map(|v| v.len()).map_err(|e| bad(format!("serialising: {e}")))
    }

    /// The JSON area bytes for writing: compact JSON, NUL, zero padding to json_size.
    pub fn to_area(&self) -> Result<Vec<u8>, LuksError> {
        let mut text = serde_json::to_vec(&Value::Object(self.doc.clone())).map_err(|e| bad(format!("serialising: {e}")))?;
        let size = usize::try_from(self.json_size).map_err(|_| bad("json_size"))?;
        if text.len() >= size {
            return Err(LuksError::Unsupported(format!("metadata ({} bytes) does not fit the {size}-byte JSON area", text.len())));
        }
        text.resize(size, 0);
        Ok(text)
    }

    /// Bytes from the start of the device to the end of the keyslots area.
    pub fn header_and_areas_len(&self) -> u64 {
        2 * (self.json_size + BINARY_SIZE as u64) + self.keyslots_size
    }

    /// Digest id that keyslot `slot` belongs to.
    pub fn digest_of(&self, slot: u32) -> Option<u32> {
        self.digests.iter().find(|(_, d)| d.keyslots.contains(&slot)).map(|(id, _)| *id)
    }

    /// The data segment: the crypt segment with the lowest id.
    pub fn data_segment(&self) -> Option<(u32, &Segment)> {
        self.segments.iter().find(|(_, s)| s.kind == "crypt").map(|(id, s)| (*id, s))
    }

    fn section_mut(&mut self, name: &str) -> &mut Obj {
        self.doc.get_mut(name).and_then(Value::as_object_mut).expect("validated section")
    }

    /// A copy with keyslot `id` (given as JSON) added and bound to digest `digest`.
    pub fn with_keyslot(&self, id: u32, keyslot: Value, digest: u32, hdr_size: u64) -> Result<Metadata, LuksError> {
        let mut m = self.clone();
        m.section_mut("keyslots").insert(id.to_string(), keyslot);
        let d = m.section_mut("digests").get_mut(&digest.to_string()).and_then(Value::as_object_mut).ok_or_else(|| bad("digest vanished"))?;
        if let Some(Value::Array(a)) = d.get_mut("keyslots") {
            a.push(Value::String(id.to_string()));
        }
        Metadata::from_doc(m.doc, hdr_size)
    }

    /// A copy without keyslot `id` (also dropped from digests and tokens).
    pub fn without_keyslot(&self, id: u32, hdr_size: u64) -> Result<Metadata, LuksError> {
        let mut m = self.clone();
        let key = id.to_string();
        m.section_mut("keyslots").remove(&key);
        for sect in ["digests", "tokens"] {
            for (_, v) in m.section_mut(sect).iter_mut() {
                if let Some(Value::Array(a)) = v.get_mut("keyslots") {
                    a.retain(|x| x.as_str() != Some(key.as_str()));
                }
            }
        }
        Metadata::from_doc(m.doc, hdr_size)
    }
}

fn is_reencrypt_flag(r: &str) -> bool {
    r == "online-reencrypt" || r.strip_prefix("online-reencrypt-v").is_some_and(|v| !v.is_empty() && numbered(v))
}

fn is_backup(s: &Segment) -> bool {
    s.flags.iter().any(|f| f.starts_with("backup-"))
}

fn parse_segments(top: &Obj, digests: &BTreeMap<u32, DigestEntry>) -> Result<BTreeMap<u32, Segment>, LuksError> {
    let list = numbered_objects(top, "segments")?;
    if list.is_empty() {
        return Err(bad("the segments section is empty"));
    }
    let mut segments = BTreeMap::new();
    let mut first_backup: Option<u32> = None;
    for (id, _, v) in &list {
        let id = *id;
        let path = format!("segments.{id}");
        let m = object(v, &path)?;
        let kind = string(m, "type", &path)?.to_owned();
        let offset = u64_str(m, "offset", &path)?;
        let size_s = string(m, "size", &path)?;
        let size = if size_s == "dynamic" {
            None
        } else {
            match parse_u64_str(size_s, &format!("{path}.size"))? {
                0 => return Err(bad(format!("{path}.size is zero"))),
                s => Some(s),
            }
        };
        if offset % 512 != 0 {
            return Err(bad(format!("{path}.offset {offset} is not a multiple of 512")));
        }
        if size.is_some_and(|s| s % 512 != 0) {
            return Err(bad(format!("{path}.size {} is not a multiple of 512", size.unwrap_or(0))));
        }
        let flags = match m.get("flags") {
            Some(f) => string_array(f, &format!("{path}.flags"))?,
            None => Vec::new(),
        };
        let mut seg = Segment { kind, offset, size, iv_tweak: 0, encryption: String::new(), sector_size: 512, flags };
        if is_backup(&seg) {
            first_backup = Some(first_backup.map_or(id, |b| b.min(id)));
        } else if first_backup.is_some_and(|b| id >= b) {
            return Err(bad(format!("regular segment {id} comes after a backup segment")));
        }
        let crypt = seg.kind == "crypt" || seg.kind == "hw-opal-crypt";
        if seg.kind.starts_with("hw-opal") {
            if size.is_none() {
                return Err(bad(format!("{path}: an OPAL segment cannot have a dynamic size")));
            }
            uint32(m, "opal_segment_number", &path)?;
            uint32(m, "opal_key_size", &path)?;
            let opal = u64_str(m, "opal_segment_size", &path)?;
            if opal == 0 || size.is_some_and(|s| s > opal) {
                return Err(bad(format!("{path}: size overflows the OPAL locking range")));
            }
        }
        if crypt {
            seg.iv_tweak = u64_str(m, "iv_tweak", &path)?;
            seg.encryption = string(m, "encryption", &path)?.to_owned();
            let ss = uint32(m, "sector_size", &path)?;
            if ss == 0 || ss % 512 != 0 {
                return Err(bad(format!("{path}.sector_size {ss} is not a multiple of 512")));
            }
            seg.sector_size = ss;
            if let Some(i) = m.get("integrity") {
                let ip = format!("{path}.integrity");
                let im = object(i, &ip)?;
                for k in ["type", "journal_encryption", "journal_integrity"] {
                    string(im, k, &ip)?;
                }
            }
            if size.is_some_and(|s| s % u64::from(ss) != 0) {
                return Err(bad(format!("{path}.size is not a multiple of the sector size {ss}")));
            }
            if !digests.values().any(|d| d.segments.contains(&id)) {
                return Err(bad(format!("crypt segment {id} is not assigned to a digest")));
            }
        }
        segments.insert(id, seg);
    }
    let count = list.len() as u64;
    if first_backup == Some(0) {
        return Err(bad("no regular segment (segment 0 is a backup)"));
    }
    let regular = first_backup.map_or(count, u64::from);
    if regular >= count && first_backup.is_some() {
        return Err(bad(format!("a gap before backup segment {}", first_backup.unwrap_or(0))));
    }
    for i in 0..count {
        if !segments.contains_key(&(i as u32)) {
            return Err(bad(format!("segments are not numbered 0..{}: {i} is missing", count - 1)));
        }
    }
    // Regular segments: only the last may be dynamic, and none may overlap another.
    let regs: Vec<&Segment> = (0..regular).map(|i| &segments[&(i as u32)]).collect();
    for (i, a) in regs.iter().enumerate() {
        if a.size.is_none() && i + 1 != regs.len() {
            return Err(bad(format!("segment {i} is dynamic but not the last regular segment")));
        }
        for (j, b) in regs.iter().enumerate() {
            if i == j {
                continue;
            }
            let b_end = match b.size {
                None => None,
                Some(s) => Some(b.offset.checked_add(s).ok_or_else(|| bad(format!("segment {j}: offset + size overflows")))?),
            };
            if a.offset >= b.offset && b_end.is_none_or(|e| a.offset < e) {
                return Err(bad(format!("segments {i} and {j} overlap")));
            }
        }
    }
    Ok(segments)
}

fn parse_digest(m: &Obj, path: &str, kind: String, keyslots: Vec<u32>, segments: Vec<u32>) -> DigestEntry {
    let mut d = DigestEntry {
        kind,
        keyslots,
        segments,
        hash_name: m.get("hash").and_then(Value::as_str).unwrap_or("").to_owned(),
        hash: None,
        iterations: 0,
        salt: Vec::new(),
        digest: Vec::new(),
        unusable: None,
    };
    d.unusable = (|| -> Result<(), String> {
        if d.kind != "pbkdf2" {
            return Err(format!("digest type {:?} not supported", d.kind));
        }
        let hash = HashAlg::parse(&d.hash_name).map_err(|_| format!("digest hash {:?} not supported", d.hash_name))?;
        d.iterations = uint32(m, "iterations", path).map_err(|e| e.to_string()).and_then(|i| {
            if i == 0 {
                Err(format!("{path}.iterations is zero"))
            } else {
                Ok(i)
            }
        })?;
        d.salt = b64(m, "salt", path)?;
        if d.salt.len() != SALT_LEN {
            return Err(format!("{path}.salt is {} bytes, not {SALT_LEN}", d.salt.len()));
        }
        d.digest = b64(m, "digest", path)?;
        let n = d.digest.len();
        if !(MIN_DIGEST_LEN..=64).contains(&n) || (n != MIN_DIGEST_LEN && n != hash.output_len()) {
            return Err(format!(
                "{path}.digest is {n} bytes long: a key digest is {MIN_DIGEST_LEN} bytes or the {}-byte {} output (a short digest would let wrong passphrases pass)",
                hash.output_len(),
                hash.name()
            ));
        }
        d.hash = Some(hash);
        Ok(())
    })()
    .err();
    d
}

/// Why keyslot `id` cannot be checked: its digest is unusable.
fn digest_problem(id: u32, digests: &BTreeMap<u32, DigestEntry>) -> Option<String> {
    let (did, d) = digests.iter().find(|(_, d)| d.keyslots.contains(&id))?;
    d.unusable.as_ref().map(|why| format!("its digest {did} is unusable: {why}"))
}

fn b64(m: &Obj, key: &str, path: &str) -> Result<Vec<u8>, String> {
    let s = m.get(key).and_then(Value::as_str).ok_or_else(|| format!("{path}.{key} is missing"))?;
    if s.len() > 4096 {
        return Err(format!("{path}.{key} is too long"));
    }
    base64_decode(s).ok_or_else(|| format!("{path}.{key} is not valid base64"))
}

/// Structure as cryptsetup's luks2 keyslot handler checks it (errors), then what offdisk
/// needs to use the keyslot (`unusable`).
fn parse_keyslot(m: &Obj, path: &str) -> Result<Keyslot, LuksError> {
    let kind = string(m, "type", path)?.to_owned();
    let key_size = uint32(m, "key_size", path)? as usize;
    let am = sub_object(m, "area", path)?;
    let apath = format!("{path}.area");
    let mut area = Area {
        kind: string(am, "type", &apath)?.to_owned(),
        offset: u64_str(am, "offset", &apath)?,
        size: u64_str(am, "size", &apath)?,
        encryption: am.get("encryption").and_then(Value::as_str).unwrap_or("").to_owned(),
        key_size: 0,
    };
    let priority = m.get("priority").and_then(Value::as_i64);
    let mut ks = Keyslot { kind, key_size, priority, area: area.clone(), kdf_type: String::new(), kdf: None, af_hash: None, unusable: None };
    if ks.kind != "luks2" {
        ks.unusable = Some(format!("keyslot type {:?} is not a passphrase keyslot", ks.kind));
        return Ok(ks);
    }
    let kdf = sub_object(m, "kdf", path)?;
    let af = sub_object(m, "af", path)?;
    let kpath = format!("{path}.kdf");
    ks.kdf_type = string(kdf, "type", &kpath)?.to_owned();
    match ks.kdf_type.as_str() {
        // (Extra fields were dropped by the repair step, as cryptsetup drops them.)
        "pbkdf2" => {
            string(kdf, "hash", &kpath)?;
            integer(kdf, "iterations", &kpath)?;
            string(kdf, "salt", &kpath)?;
        }
        "argon2i" | "argon2id" => {
            for k in ["time", "memory", "cpus"] {
                integer(kdf, k, &kpath)?;
            }
            string(kdf, "salt", &kpath)?;
        }
        _ => {}
    }
    let afpath = format!("{path}.af");
    let af_type = string(af, "type", &afpath)?;
    if af_type != "luks1" {
        return Err(bad(format!("{afpath}.type {af_type:?} is not luks1")));
    }
    string(af, "hash", &afpath)?;
    integer(af, "stripes", &afpath)?;
    if area.kind != "raw" {
        return Err(bad(format!("{apath}.type {:?} is not raw", area.kind)));
    }
    area.encryption = string(am, "encryption", &apath)?.to_owned();
    let area_key = integer(am, "key_size", &apath)?;
    ks.area = area;

    // Usability: everything the unlock path will rely on.
    ks.unusable = (|| -> Result<(), String> {
        let kdf_parsed = parse_kdf(kdf, &kpath, &ks.kdf_type)?;
        let af_hash_name = af.get("hash").and_then(Value::as_str).unwrap_or("");
        let af_hash = HashAlg::parse(af_hash_name).map_err(|_| format!("AF hash {af_hash_name:?} not supported"))?;
        if !(1..=MAX_KEY_BYTES).contains(&ks.key_size) {
            return Err(format!("key size {} bytes is out of range 1..={MAX_KEY_BYTES}", ks.key_size));
        }
        let area_key = usize::try_from(area_key)
            .ok()
            .filter(|k| (1..=MAX_KEY_BYTES).contains(k))
            .ok_or_else(|| format!("area key size {area_key} is out of range 1..={MAX_KEY_BYTES}"))?;
        super::cipher::check_spec(&ks.area.encryption, area_key).map_err(|e| match e {
            LuksError::Unsupported(m) => format!("{m} not supported"),
            e => e.to_string(),
        })?;
        let material = super::af::material_len(ks.key_size) as u64;
        if material > ks.area.size {
            return Err(format!("key material ({material} bytes) does not fit its area ({} bytes)", ks.area.size));
        }
        ks.area.key_size = area_key;
        ks.kdf = Some(kdf_parsed);
        ks.af_hash = Some(af_hash);
        Ok(())
    })()
    .err();
    if ks.unusable.is_some() {
        ks.area.key_size = usize::try_from(area_key).unwrap_or(0).min(MAX_KEY_BYTES);
    }
    Ok(ks)
}

fn parse_kdf(m: &Obj, path: &str, ty: &str) -> Result<Kdf, String> {
    let num = |k: &str, min: u64, max: u64| -> Result<u32, String> {
        let v = integer(m, k, path).map_err(|e| e.to_string())?;
        u64::try_from(v)
            .ok()
            .filter(|v| (min..=max).contains(v))
            .map(|v| v as u32)
            .ok_or_else(|| format!("{path}.{k} = {v} is out of range {min}..={max}"))
    };
    let salt = || -> Result<Vec<u8>, String> {
        let s = b64(m, "salt", path)?;
        if s.len() != SALT_LEN {
            return Err(format!("{path}.salt is {} bytes, not {SALT_LEN}", s.len()));
        }
        Ok(s)
    };
    match ty {
        "pbkdf2" => {
            let h = m.get("hash").and_then(Value::as_str).unwrap_or("");
            let hash = HashAlg::parse(h).map_err(|_| format!("PBKDF2 hash {h:?} not supported"))?;
            Ok(Kdf::Pbkdf2 { hash, iterations: num("iterations", 1, u64::from(u32::MAX))?, salt: salt()? })
        }
        "argon2i" | "argon2id" => {
            let lanes = num("cpus", 1, u64::from(MAX_ARGON2_LANES))?;
            let memory_kib = num("memory", 1, u64::from(MAX_ARGON2_MEMORY_KIB))?;
            if u64::from(memory_kib) < 8 * u64::from(lanes) {
                return Err(format!("{path}.memory {memory_kib} KiB is below 8 KiB per lane"));
            }
            Ok(Kdf::Argon2 {
                kind: if ty == "argon2i" { Argon2Kind::Argon2i } else { Argon2Kind::Argon2id },
                time: num("time", 1, u64::from(u32::MAX))?,
                memory_kib,
                lanes,
                salt: salt()?,
            })
        }
        other => Err(format!("KDF {other:?} not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_follow_cryptsetup() {
        assert_eq!(parse_u64_str("0", "x").unwrap(), 0);
        assert_eq!(parse_u64_str("16777216", "x").unwrap(), 16 << 20);
        assert_eq!(parse_u64_str("012", "x").unwrap(), 12, "leading zeros are digits");
        assert_eq!(parse_u64_str("18446744073709551104", "x").unwrap(), u64::MAX - 511);
        assert!(parse_u64_str("-1", "x").unwrap_err().to_string().contains("negative"));
        assert!(parse_u64_str("18446744073709551616", "x").unwrap_err().to_string().contains("overflows"));
        assert!(parse_u64_str("+1", "x").is_err());
        assert!(parse_u64_str("", "x").is_err());
        assert!(parse_u64_str("1e3", "x").is_err());
        assert_eq!(strtoull(" +4096", "x").unwrap(), 4096);
        assert_eq!(strtoull("-1", "x").unwrap(), u64::MAX);
        assert!(strtoull("4096 ", "x").is_err());
    }

    #[test]
    fn ids_are_digits() {
        assert_eq!(parse_id("31", "k").unwrap(), 31);
        assert_eq!(parse_id("32", "k").unwrap(), 32);
        assert_eq!(parse_id("01", "k").unwrap(), 1);
        assert!(parse_id("a", "k").is_err());
        assert!(parse_id("-1", "k").is_err());
    }
}
