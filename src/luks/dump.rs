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
                        json!({"active": s.active, "iterations": s.iterations, "salt": hex(&s.salt),
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
            })
        }
        Header::Luks2(s) => {
            let keyslots: Map<String, Value> = s
                .meta
                .keyslots
                .iter()
                .map(|(id, k)| {
                    let mut o = json!({
                        "type": k.kind, "key_size": k.key_size, "priority": k.priority.unwrap_or(1),
                        "area": {"offset": k.area.offset, "size": k.area.size, "encryption": k.area.encryption, "key_size": k.area.key_size},
                        "digest": s.meta.digest_of(*id),
                    });
                    if let Some(kdf) = &k.kdf {
                        o["kdf"] = kdf_json(kdf);
                    }
                    if let Some(af) = &k.af {
                        o["af"] = json!({"type": "luks1", "stripes": af.stripes, "hash": af.hash.name()});
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
                    (id.to_string(), json!({"type": "pbkdf2", "keyslots": d.keyslots, "segments": d.segments,
                        "hash": d.hash.name(), "iterations": d.iterations, "salt": hex(&d.salt), "digest": hex(&d.digest)}))
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
                "problems": s.problems,
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
            for (i, s) in h.slots.iter().enumerate() {
                if s.active {
                    let _ = writeln!(o, "Key Slot {i}: ENABLED\n\tIterations:         \t{}\n\tKey material offset:\t{}\n\tAF stripes:         \t{}", s.iterations, s.key_material_offset, s.stripes);
                } else {
                    let _ = writeln!(o, "Key Slot {i}: DISABLED");
                }
            }
        }
        Header::Luks2(s) => {
            let _ = writeln!(o, "LUKS header information\nVersion:       \t2\nEpoch:         \t{}\nMetadata area: \t{} [bytes]\nKeyslots area: \t{} [bytes]", s.bin.seqid, s.bin.hdr_size, s.meta.keyslots_size);
            let _ = writeln!(o, "UUID:          \t{}\nLabel:         \t{}\nSubsystem:     \t{}", s.bin.uuid, vol.label().unwrap_or("(no label)"), vol.subsystem().unwrap_or("(no subsystem)"));
            for p in &s.problems {
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
                if let Some(kdf) = &k.kdf {
                    match kdf {
                        Kdf::Pbkdf2 { hash, iterations, .. } => {
                            let _ = writeln!(o, "\tPBKDF:      pbkdf2\n\tHash:       {}\n\tIterations: {iterations}", hash.name());
                        }
                        Kdf::Argon2 { kind, time, memory_kib, lanes, .. } => {
                            let _ = writeln!(o, "\tPBKDF:      {}\n\tTime cost:  {time}\n\tMemory:     {memory_kib}\n\tThreads:    {lanes}", kind.name());
                        }
                    }
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
                let _ = writeln!(o, "  {id}: pbkdf2\n\tHash:       {}\n\tIterations: {}", dg.hash.name(), dg.iterations);
            }
        }
    }
    o
}
