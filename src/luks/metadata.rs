//! The LUKS2 JSON area: a typed, strictly validated view of keyslots, segments, digests,
//! tokens and config, over the original document (kept whole, so unknown tokens, config
//! entries and fields survive rewrites). Every rule failure names what is wrong.

use super::codec::base64_decode;
use super::hash::HashAlg;
use super::kdf::{Argon2Kind, Kdf, MAX_ARGON2_LANES, MAX_ARGON2_MEMORY_KIB};
use super::LuksError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Object ids are "0".."31".
pub const MAX_ID: u32 = 31;
/// Largest keyslots area cryptsetup allows.
pub const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;
/// Largest key (volume or keyslot-area) accepted: bounds the AF material we allocate.
pub const MAX_KEY_BYTES: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
    pub encryption: String,
    pub key_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Af {
    pub stripes: usize,
    pub hash: HashAlg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyslot {
    /// "luks2" for ordinary keyslots; others (e.g. "reencrypt") are kept but not used.
    pub kind: String,
    pub key_size: usize,
    pub priority: Option<u32>,
    pub area: Area,
    pub kdf: Option<Kdf>,
    pub af: Option<Af>,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub keyslots: Vec<u32>,
    pub segments: Vec<u32>,
    pub hash: HashAlg,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: String,
    pub keyslots: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The document as read (or as we will write it).
    pub doc: Map<String, Value>,
    pub keyslots: BTreeMap<u32, Keyslot>,
    pub segments: BTreeMap<u32, Segment>,
    pub digests: BTreeMap<u32, DigestEntry>,
    pub tokens: BTreeMap<u32, Token>,
    pub json_size: u64,
    pub keyslots_size: u64,
    pub flags: Vec<String>,
    pub requirements: Vec<String>,
}

fn bad(msg: impl Into<String>) -> LuksError {
    LuksError::Metadata(msg.into())
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, LuksError> {
    v.as_object().ok_or_else(|| bad(format!("{path} must be an object")))
}

fn field<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Value, LuksError> {
    m.get(key).ok_or_else(|| bad(format!("{path}.{key} is missing")))
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, LuksError> {
    field(m, key, path)?.as_str().ok_or_else(|| bad(format!("{path}.{key} must be a string")))
}

/// A 64-bit quantity stored as a decimal string: digits only, no sign, no leading zeros,
/// at most i64::MAX (cryptsetup's limit).
pub fn parse_u64_str(s: &str, what: &str) -> Result<u64, LuksError> {
    if s.starts_with('-') {
        return Err(bad(format!("{what} is negative ({s:?})")));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad(format!("{what} is not a decimal number ({s:?})")));
    }
    match s.parse::<u64>() {
        Ok(v) if v <= i64::MAX as u64 => Ok(v),
        _ => Err(bad(format!("{what} overflows ({s:?})"))),
    }
}

fn u64_str(m: &Map<String, Value>, key: &str, path: &str) -> Result<u64, LuksError> {
    parse_u64_str(string(m, key, path)?, &format!("{path}.{key}"))
}

/// A JSON number within [min, max].
fn number(m: &Map<String, Value>, key: &str, path: &str, min: u64, max: u64) -> Result<u64, LuksError> {
    let v = field(m, key, path)?;
    let n = match v {
        Value::Number(n) => n,
        _ => return Err(bad(format!("{path}.{key} must be a number"))),
    };
    if n.as_i64().is_some_and(|i| i < 0) || n.as_f64().is_some_and(|f| f < 0.0) {
        return Err(bad(format!("{path}.{key} is negative ({n})")));
    }
    let u = n.as_u64().ok_or_else(|| bad(format!("{path}.{key} is not a whole number in range ({n})")))?;
    if u < min || u > max {
        return Err(bad(format!("{path}.{key} = {u} is out of range {min}..={max}")));
    }
    Ok(u)
}

fn b64(m: &Map<String, Value>, key: &str, path: &str, max_len: usize) -> Result<Vec<u8>, LuksError> {
    let s = string(m, key, path)?;
    if s.len() > max_len.div_ceil(3) * 4 {
        return Err(bad(format!("{path}.{key} is too long")));
    }
    let v = base64_decode(s).ok_or_else(|| bad(format!("{path}.{key} is not valid base64")))?;
    if v.is_empty() {
        return Err(bad(format!("{path}.{key} is empty")));
    }
    Ok(v)
}

pub fn parse_id(s: &str, what: &str) -> Result<u32, LuksError> {
    if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad(format!("{what} id {s:?} is not a decimal id")));
    }
    let id: u32 = s.parse().map_err(|_| bad(format!("{what} id {s:?} is not a decimal id")))?;
    if id > MAX_ID {
        return Err(bad(format!("{what} id {id} is out of range 0..={MAX_ID}")));
    }
    Ok(id)
}

fn id_list(m: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<u32>, LuksError> {
    let arr = field(m, key, path)?.as_array().ok_or_else(|| bad(format!("{path}.{key} must be an array")))?;
    let mut out = Vec::new();
    for v in arr {
        let s = v.as_str().ok_or_else(|| bad(format!("{path}.{key} must hold id strings")))?;
        let id = parse_id(s, &format!("{path}.{key}"))?;
        if out.contains(&id) {
            return Err(bad(format!("{path}.{key} lists {id} twice")));
        }
        out.push(id);
    }
    Ok(out)
}

fn hash(m: &Map<String, Value>, key: &str, path: &str) -> Result<HashAlg, LuksError> {
    let s = string(m, key, path)?;
    HashAlg::parse(s).map_err(|_| bad(format!("{path}.{key}: unsupported hash {s:?}")))
}

fn parse_kdf(v: &Value, path: &str) -> Result<Kdf, LuksError> {
    let m = object(v, path)?;
    let ty = string(m, "type", path)?;
    let salt = b64(m, "salt", path, 1024)?;
    match ty {
        "pbkdf2" => Ok(Kdf::Pbkdf2 {
            hash: hash(m, "hash", path)?,
            iterations: number(m, "iterations", path, 1, u64::from(u32::MAX))? as u32,
            salt,
        }),
        "argon2i" | "argon2id" => {
            let lanes = number(m, "cpus", path, 1, u64::from(MAX_ARGON2_LANES))? as u32;
            let memory_kib = number(m, "memory", path, 1, u64::from(MAX_ARGON2_MEMORY_KIB))? as u32;
            if u64::from(memory_kib) < 8 * u64::from(lanes) {
                return Err(bad(format!("{path}.memory {memory_kib} KiB is below 8 KiB per lane")));
            }
            if salt.len() < 8 {
                return Err(bad(format!("{path}.salt is shorter than 8 bytes")));
            }
            Ok(Kdf::Argon2 {
                kind: if ty == "argon2i" { Argon2Kind::Argon2i } else { Argon2Kind::Argon2id },
                time: number(m, "time", path, 1, u64::from(u32::MAX))? as u32,
                memory_kib,
                lanes,
                salt,
            })
        }
        other => Err(LuksError::Unsupported(format!("{path}.type {other:?}"))),
    }
}

fn parse_keyslot(v: &Value, path: &str) -> Result<Keyslot, LuksError> {
    let m = object(v, path)?;
    let kind = string(m, "type", path)?.to_owned();
    let am = object(field(m, "area", path)?, &format!("{path}.area"))?;
    let apath = format!("{path}.area");
    let area_type = string(am, "type", &apath)?;
    if area_type != "raw" && kind == "luks2" {
        return Err(LuksError::Unsupported(format!("{apath}.type {area_type:?}")));
    }
    let area = Area {
        offset: u64_str(am, "offset", &apath)?,
        size: u64_str(am, "size", &apath)?,
        encryption: if kind == "luks2" { string(am, "encryption", &apath)?.to_owned() } else { String::new() },
        key_size: if kind == "luks2" { number(am, "key_size", &apath, 1, MAX_KEY_BYTES)? as usize } else { 0 },
    };
    if area.size == 0 {
        return Err(bad(format!("{apath}.size is zero")));
    }
    if kind != "luks2" {
        return Ok(Keyslot { kind, key_size: 0, priority: None, area, kdf: None, af: None });
    }
    let key_size = number(m, "key_size", path, 1, MAX_KEY_BYTES)? as usize;
    let priority = match m.get("priority") {
        None => None,
        Some(_) => Some(number(m, "priority", path, 0, 2)? as u32),
    };
    let kdf = parse_kdf(field(m, "kdf", path)?, &format!("{path}.kdf"))?;
    let afm = object(field(m, "af", path)?, &format!("{path}.af"))?;
    let afpath = format!("{path}.af");
    let af_type = string(afm, "type", &afpath)?;
    if af_type != "luks1" {
        return Err(LuksError::Unsupported(format!("{afpath}.type {af_type:?}")));
    }
    let stripes = number(afm, "stripes", &afpath, 1, u64::from(u32::MAX))? as usize;
    if stripes != super::af::STRIPES {
        return Err(bad(format!("{afpath}.stripes is {stripes}; only 4000 is valid")));
    }
    let af = Af { stripes, hash: hash(afm, "hash", &afpath)? };
    let material = (key_size * stripes) as u64;
    if material > area.size {
        return Err(bad(format!("{path}: key material ({material} bytes) does not fit its area ({} bytes)", area.size)));
    }
    Ok(Keyslot { kind, key_size, priority, area, kdf: Some(kdf), af: Some(af) })
}

fn parse_segment(v: &Value, path: &str) -> Result<Segment, LuksError> {
    let m = object(v, path)?;
    let kind = string(m, "type", path)?.to_owned();
    let offset = u64_str(m, "offset", path)?;
    let size_s = string(m, "size", path)?;
    let size = if size_s == "dynamic" { None } else { Some(parse_u64_str(size_s, &format!("{path}.size"))?) };
    if kind != "crypt" {
        return Ok(Segment { kind, offset, size, iv_tweak: 0, encryption: String::new(), sector_size: 512 });
    }
    let iv_tweak = u64_str(m, "iv_tweak", path)?;
    let encryption = string(m, "encryption", path)?.to_owned();
    let sector_size = number(m, "sector_size", path, 512, 4096)? as u32;
    if !sector_size.is_power_of_two() {
        return Err(bad(format!("{path}.sector_size {sector_size} is not a power of two")));
    }
    if let Some(s) = size {
        if s == 0 || s % u64::from(sector_size) != 0 {
            return Err(bad(format!("{path}.size {s} is not a positive multiple of the sector size {sector_size}")));
        }
        if offset.checked_add(s).is_none_or(|e| e > i64::MAX as u64) {
            return Err(bad(format!("{path}: offset + size overflows")));
        }
    }
    if offset % 512 != 0 {
        return Err(bad(format!("{path}.offset {offset} is not a multiple of 512")));
    }
    Ok(Segment { kind, offset, size, iv_tweak, encryption, sector_size })
}

fn parse_digest(v: &Value, path: &str) -> Result<DigestEntry, LuksError> {
    let m = object(v, path)?;
    let ty = string(m, "type", path)?;
    if ty != "pbkdf2" {
        return Err(LuksError::Unsupported(format!("{path}.type {ty:?}")));
    }
    Ok(DigestEntry {
        keyslots: id_list(m, "keyslots", path)?,
        segments: id_list(m, "segments", path)?,
        hash: hash(m, "hash", path)?,
        iterations: number(m, "iterations", path, 1, u64::from(u32::MAX))? as u32,
        salt: b64(m, "salt", path, 1024)?,
        digest: b64(m, "digest", path, 64)?,
    })
}

fn section<'a>(top: &'a Map<String, Value>, name: &str) -> Result<&'a Map<String, Value>, LuksError> {
    object(top.get(name).ok_or_else(|| bad(format!("top-level object {name:?} is missing")))?, name)
}

impl Metadata {
    /// Parses the JSON area of a copy whose hdr_size is `hdr_size`.
    pub fn parse(area: &[u8], hdr_size: u64) -> Result<Metadata, LuksError> {
        let end = area.iter().position(|&b| b == 0).ok_or_else(|| bad("JSON area is not NUL-terminated"))?;
        if area[end..].iter().any(|&b| b != 0) {
            return Err(bad("junk after the JSON text (non-zero bytes after its terminating NUL)"));
        }
        let text = &area[..end];
        if text.first() != Some(&b'{') {
            return Err(bad("JSON area does not start with '{'"));
        }
        let value: Value = serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let doc = match value {
            Value::Object(m) => m,
            _ => return Err(bad("JSON is not an object")),
        };
        Self::from_doc(doc, hdr_size)
    }

    /// Validates a document (read, or built for writing).
    pub fn from_doc(doc: Map<String, Value>, hdr_size: u64) -> Result<Metadata, LuksError> {
        let cfg = section(&doc, "config")?;
        let json_size = u64_str(cfg, "json_size", "config")?;
        if json_size != hdr_size - super::header::BINARY_SIZE as u64 {
            return Err(bad(format!(
                "config.json_size {json_size} does not match the header size {hdr_size} (expected {})",
                hdr_size - 4096
            )));
        }
        let keyslots_size = u64_str(cfg, "keyslots_size", "config")?;
        if keyslots_size % 4096 != 0 {
            return Err(bad(format!("config.keyslots_size {keyslots_size} is not a multiple of 4096")));
        }
        if keyslots_size > MAX_KEYSLOTS_SIZE {
            return Err(bad(format!("config.keyslots_size {keyslots_size} exceeds 128 MiB")));
        }
        let mut flags = Vec::new();
        if let Some(f) = cfg.get("flags") {
            for v in f.as_array().ok_or_else(|| bad("config.flags must be an array"))? {
                flags.push(v.as_str().ok_or_else(|| bad("config.flags must hold strings"))?.to_owned());
            }
        }
        let mut requirements = Vec::new();
        if let Some(r) = cfg.get("requirements") {
            let rm = object(r, "config.requirements")?;
            if let Some(mand) = rm.get("mandatory") {
                for v in mand.as_array().ok_or_else(|| bad("config.requirements.mandatory must be an array"))? {
                    requirements.push(
                        v.as_str().ok_or_else(|| bad("config.requirements.mandatory must hold strings"))?.to_owned(),
                    );
                }
            }
        }

        let area_start = 2 * hdr_size;
        let area_end = area_start + keyslots_size;

        let mut keyslots = BTreeMap::new();
        for (k, v) in section(&doc, "keyslots")? {
            let id = parse_id(k, "keyslot")?;
            let path = format!("keyslots.{id}");
            let ks = parse_keyslot(v, &path)?;
            let end = ks.area.offset.checked_add(ks.area.size).ok_or_else(|| bad(format!("{path}.area: offset + size overflows")))?;
            if ks.area.offset < area_start || end > area_end {
                return Err(bad(format!(
                    "{path}.area [{}, {end}) lies outside the keyslots area [{area_start}, {area_end})",
                    ks.area.offset
                )));
            }
            keyslots.insert(id, ks);
        }
        let mut spans: Vec<(u64, u64, u32)> = keyslots.iter().map(|(id, k)| (k.area.offset, k.area.offset + k.area.size, *id)).collect();
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(bad(format!("keyslot areas {} and {} overlap", w[0].2, w[1].2)));
            }
        }

        let mut segments = BTreeMap::new();
        for (k, v) in section(&doc, "segments")? {
            let id = parse_id(k, "segment")?;
            let seg = parse_segment(v, &format!("segments.{id}"))?;
            // Offset 0 would be a detached header; otherwise data must start after the keyslots area.
            if seg.offset != 0 && seg.offset < area_end {
                return Err(bad(format!(
                    "segments.{id}.offset {} lies inside the header and keyslots area (ends at {area_end})",
                    seg.offset
                )));
            }
            segments.insert(id, seg);
        }

        let mut digests = BTreeMap::new();
        let mut owner: BTreeMap<u32, u32> = BTreeMap::new();
        for (k, v) in section(&doc, "digests")? {
            let id = parse_id(k, "digest")?;
            let path = format!("digests.{id}");
            let d = parse_digest(v, &path)?;
            for ks in &d.keyslots {
                if !keyslots.contains_key(ks) {
                    return Err(bad(format!("{path} refers to keyslot {ks}, which does not exist")));
                }
                if let Some(prev) = owner.insert(*ks, id) {
                    return Err(bad(format!("keyslot {ks} belongs to both digest {prev} and digest {id}")));
                }
            }
            for s in &d.segments {
                if !segments.contains_key(s) {
                    return Err(bad(format!("{path} refers to segment {s}, which does not exist")));
                }
            }
            digests.insert(id, d);
        }

        let mut tokens = BTreeMap::new();
        for (k, v) in section(&doc, "tokens")? {
            let id = parse_id(k, "token")?;
            let path = format!("tokens.{id}");
            let m = object(v, &path)?;
            let kind = string(m, "type", &path)?.to_owned();
            let ks = id_list(m, "keyslots", &path)?;
            for s in &ks {
                if !keyslots.contains_key(s) {
                    return Err(bad(format!("{path} refers to keyslot {s}, which does not exist")));
                }
            }
            tokens.insert(id, Token { kind, keyslots: ks });
        }

        Ok(Metadata { doc, keyslots, segments, digests, tokens, json_size, keyslots_size, flags, requirements })
    }

    /// The JSON area bytes for writing: compact JSON, NUL, zero padding to json_size.
    pub fn to_area(&self) -> Result<Vec<u8>, LuksError> {
        let mut text = serde_json::to_vec(&Value::Object(self.doc.clone())).map_err(|e| bad(format!("serialising: {e}")))?;
        let size = self.json_size as usize;
        if text.len() >= size {
            return Err(LuksError::Unsupported(format!("metadata ({} bytes) does not fit the {size}-byte JSON area", text.len())));
        }
        text.resize(size, 0);
        Ok(text)
    }

    /// Digest id that keyslot `slot` belongs to.
    pub fn digest_of(&self, slot: u32) -> Option<u32> {
        self.digests.iter().find(|(_, d)| d.keyslots.contains(&slot)).map(|(id, _)| *id)
    }

    /// The data segment: the crypt segment with the lowest id.
    pub fn data_segment(&self) -> Option<(u32, &Segment)> {
        self.segments.iter().find(|(_, s)| s.kind == "crypt").map(|(id, s)| (*id, s))
    }

    fn section_mut(&mut self, name: &str) -> &mut Map<String, Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_are_strict() {
        assert_eq!(parse_u64_str("0", "x").unwrap(), 0);
        assert_eq!(parse_u64_str("16777216", "x").unwrap(), 16 << 20);
        assert!(parse_u64_str("-1", "x").unwrap_err().to_string().contains("negative"));
        assert!(parse_u64_str("9223372036854775808", "x").unwrap_err().to_string().contains("overflows"));
        assert!(parse_u64_str("99999999999999999999999", "x").unwrap_err().to_string().contains("overflows"));
        assert!(parse_u64_str("+1", "x").is_err());
        assert!(parse_u64_str("012", "x").is_err());
        assert!(parse_u64_str("", "x").is_err());
        assert!(parse_u64_str("1e3", "x").is_err());
    }

    #[test]
    fn ids_are_strict() {
        assert_eq!(parse_id("31", "k").unwrap(), 31);
        assert!(parse_id("32", "k").is_err());
        assert!(parse_id("01", "k").is_err());
        assert!(parse_id("a", "k").is_err());
    }
}
