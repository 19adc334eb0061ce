//! `luks dump`: describe a header as JSON (for scripts) or text (like `cryptsetup luksDump`).

use super::kdf::Kdf;
use super::{Header, Volume};
use serde_json::{json, Map, Value};
use std::fmt::Write;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn kdf_json(k: &Kdf) -> Value {
    match k {
        Kdf::Pbkdf2 { hash, iterations, salt } => json!({"type": "pbkdf2", "hash": hash.name(), "iterations": iterations, "salt": hex(salt)}),
        Kdf::Argon2 { kind, time, memory_kib, lanes, salt } => {
            json!({"type": kind.name(), "time": time, "memory": memory_kib, "cpus": lanes, "salt": hex(salt)})
        }
    }
}

/// A JSON object describing the header (no secrets).
pub fn describe(vol: &Volume) -> Value {
    match &vol.header {
        Header::Luks1(h) => {
            let slots: Map<String, Value> = h
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (
                        i.to_string(),
                        json!({"active": s.active, "state": format!("{:#010x}", s.state), "iterations": s.iterations, "salt": hex(&s.salt),
                               "key_material_offset": s.key_material_offset, "stripes": s.stripes}),
                    )
                })
                .collect();
            json!({
                "version": 1,
                "uuid": h.uuid,
                "cipher": h.cipher_spec(),
                "hash": h.hash_spec,
                "key_size": h.key_bytes,
                "data_offset": u64::from(h.payload_offset) * 512,
                "mk_digest": hex(&h.mk_digest),
                "mk_digest_iterations": h.mk_digest_iterations,
                "keyslots": slots,
                "usable": h.problem().is_none(),
                "unusable_reason": h.problem(),
            })
        }
        Header::Luks2(s) => {
            let raw_keyslots = s.meta.doc.get("keyslots").and_then(Value::as_object);
            let keyslots: Map<String, Value> = s
                .meta
                .keyslots
                .iter()
                .map(|(id, k)| {
                    let raw = raw_keyslots.and_then(|r| r.get(&id.to_string())).and_then(Value::as_object);
                    let mut o = json!({
                        "type": k.kind, "key_size": k.key_size, "priority": k.priority.unwrap_or(1),
                        "area": {"type": k.area.kind, "offset": k.area.offset, "size": k.area.size, "encryption": k.area.encryption, "key_size": k.area.key_size},
                        "digest": s.meta.digest_of(*id),
                        "usable": k.is_usable(),
                        "unusable_reason": k.unusable,
                    });
                    match (&k.kdf, raw.and_then(|r| r.get("kdf"))) {
                        (Some(kdf), _) => o["kdf"] = kdf_json(kdf),
                        (None, Some(kdf)) => o["kdf"] = kdf.clone(),
                        _ => {}
                    }
                    if let Some(af) = raw.and_then(|r| r.get("af")) {
                        o["af"] = af.clone();
                    }
                    (id.to_string(), o)
                })
                .collect();
            let segments: Map<String, Value> = s
                .meta
                .segments
                .iter()
                .map(|(id, g)| {
                    (id.to_string(), json!({"type": g.kind, "offset": g.offset, "size": g.size, "iv_tweak": g.iv_tweak,
                        "encryption": g.encryption, "sector_size": g.sector_size}))
                })
                .collect();
            let digests: Map<String, Value> = s
                .meta
                .digests
                .iter()
                .map(|(id, d)| {
                    (id.to_string(), json!({"type": d.kind, "keyslots": d.keyslots, "segments": d.segments,
                        "hash": d.hash_name, "iterations": d.iterations, "salt": hex(&d.salt), "digest": hex(&d.digest),
                        "usable": d.unusable.is_none(), "unusable_reason": d.unusable}))
                })
                .collect();
            json!({
                "version": 2,
                "uuid": s.bin.uuid,
                "label": vol.label(),
                "subsystem": vol.subsystem(),
                "seqid": s.bin.seqid,
                "metadata_size": s.bin.hdr_size,
                "keyslots_size": s.meta.keyslots_size,
                "header_copies": {"primary": s.primary_ok, "secondary": s.secondary_ok},
                "problems": s.problems.iter().chain(&s.meta.repaired).collect::<Vec<_>>(),
                "flags": s.meta.flags,
                "requirements": s.meta.requirements,
                "keyslots": keyslots,
                "segments": segments,
                "digests": digests,
                "tokens": s.meta.doc.get("tokens").cloned().unwrap_or(json!({})),
                "metadata": Value::Object(s.meta.doc.clone()),
            })
        }
    }
}

/// Human-readable dump in the spirit of `cryptsetup luksDump`.
pub fn text(vol: &Volume) -> String {
    let mut o = String::new();
    let d = describe(vol);
    match &vol.header {
        Header::Luks1(h) => {
            let _ = writeln!(o, "LUKS header information\nVersion:       \t1\nCipher name:   \t{}\nCipher mode:   \t{}\nHash spec:     \t{}", h.cipher_name, h.cipher_mode, h.hash_spec);
            let _ = writeln!(o, "Payload offset:\t{}\nMK bits:       \t{}\nMK iterations: \t{}\nUUID:          \t{}\n", h.payload_offset, h.key_bytes * 8, h.mk_digest_iterations, h.uuid);
            if let Some(p) = h.problem() {
                let _ = writeln!(o, "Unusable:      \t{p}");
            }
            for (i, s) in h.slots.iter().enumerate() {
                if s.state != super::luks1::ACTIVE && s.state != super::luks1::INACTIVE {
                    let _ = writeln!(o, "Key Slot {i}: DISABLED (invalid state {:#010x})", s.state);
                } else if s.active {
                    let _ = writeln!(o, "Key Slot {i}: ENABLED\n\tIterations:         \t{}\n\tKey material offset:\t{}\n\tAF stripes:         \t{}", s.iterations, s.key_material_offset, s.stripes);
                } else {
                    let _ = writeln!(o, "Key Slot {i}: DISABLED");
                }
            }
        }
        Header::Luks2(s) => {
            let _ = writeln!(o, "LUKS header information\nVersion:       \t2\nEpoch:         \t{}\nMetadata area: \t{} [bytes]\nKeyslots area: \t{} [bytes]", s.bin.seqid, s.bin.hdr_size, s.meta.keyslots_size);
            let _ = writeln!(o, "UUID:          \t{}\nLabel:         \t{}\nSubsystem:     \t{}", s.bin.uuid, vol.label().unwrap_or("(no label)"), vol.subsystem().unwrap_or("(no subsystem)"));
            for p in s.problems.iter().chain(&s.meta.repaired) {
                let _ = writeln!(o, "Warning:       \t{p}");
            }
            for r in &s.meta.requirements {
                let _ = writeln!(o, "Requirement:   \t{r} (unknown: activation and changes refused)");
            }
            let _ = writeln!(o, "\nData segments:");
            for (id, g) in &s.meta.segments {
                let len = g.size.map_or("(whole device)".to_string(), |v| format!("{v} [bytes]"));
                let _ = writeln!(o, "  {id}: {}\n\toffset: {} [bytes]\n\tlength: {len}\n\tcipher: {}\n\tsector: {} [bytes]", g.kind, g.offset, g.encryption, g.sector_size);
            }
            let _ = writeln!(o, "\nKeyslots:");
            for (id, k) in &s.meta.keyslots {
                let _ = writeln!(o, "  {id}: {}\n\tKey:        {} bits\n\tCipher:     {}", k.kind, k.key_size * 8, k.area.encryption);
                if let Some(why) = &k.unusable {
                    let _ = writeln!(o, "\tUnusable:   {why}");
                }
                match &k.kdf {
                    Some(Kdf::Pbkdf2 { hash, iterations, .. }) => {
                        let _ = writeln!(o, "\tPBKDF:      pbkdf2\n\tHash:       {}\n\tIterations: {iterations}", hash.name());
                    }
                    Some(Kdf::Argon2 { kind, time, memory_kib, lanes, .. }) => {
                        let _ = writeln!(o, "\tPBKDF:      {}\n\tTime cost:  {time}\n\tMemory:     {memory_kib}\n\tThreads:    {lanes}", kind.name());
                    }
                    None if !k.kdf_type.is_empty() => {
                        let _ = writeln!(o, "\tPBKDF:      {}", k.kdf_type);
                    }
                    None => {}
                }
                let _ = writeln!(o, "\tArea offset:{} [bytes]\n\tArea length:{} [bytes]\n\tDigest ID:  {}", k.area.offset, k.area.size,
                    s.meta.digest_of(*id).map_or("-".into(), |d| d.to_string()));
            }
            let _ = writeln!(o, "Tokens:");
            if let Some(Value::Object(t)) = d.get("tokens") {
                for (id, v) in t {
                    let _ = writeln!(o, "  {id}: {}", v.get("type").and_then(Value::as_str).unwrap_or("?"));
                }
            }
            let _ = writeln!(o, "Digests:");
            for (id, dg) in &s.meta.digests {
                let _ = writeln!(o, "  {id}: {}\n\tHash:       {}\n\tIterations: {}", dg.kind, dg.hash_name, dg.iterations);
                if let Some(why) = &dg.unusable {
                    let _ = writeln!(o, "\tUnusable:   {why}");
                }
            }
        }
    }
    o
}
