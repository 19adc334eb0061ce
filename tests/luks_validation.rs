//! cryptsetup's own LUKS2 validation suite (tests/luks2-validation-test): the 85 images its
//! generator scripts make from a valid header, each with the verdict cryptsetup's test script
//! states (fixtures/luks2-validation/verdicts.tsv). `offdisk luks dump` must accept or refuse
//! each exactly as cryptsetup's luksDump does, with a message and an exit status, never a
//! panic; the parser under it must survive every image, also with its checksums resealed.

use offdisk::luks::io::MemDevice;
use offdisk::luks::Volume;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/luks2-validation")
}

/// The xz-compressed image `name`.
fn image(name: &str) -> Vec<u8> {
    let packed = std::fs::read(dir().join(format!("{name}.xz"))).unwrap();
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut &packed[..], &mut out).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    out
}

/// (image, verdict) from verdicts.tsv: R accept, F refuse, T accept (cryptsetup removes a
/// token first, then dumps).
fn cases() -> Vec<(String, char)> {
    std::fs::read_to_string(dir().join("verdicts.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            (f.next().unwrap().to_owned(), f.next().unwrap().chars().next().unwrap())
        })
        .collect()
}

#[test]
fn dump_accepts_and_refuses_exactly_as_cryptsetup() {
    let cases = cases();
    assert_eq!(cases.len(), 85, "cryptsetup's suite has 85 validation images");
    let tmp = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (name, verdict) in &cases {
        let path = tmp.path().join(name);
        let img = image(name);
        // With checksums made right, each mangled JSON reaches the validator directly.
        offdisk::luks::exercise_parser_resealed(&img);
        std::fs::write(&path, img).unwrap();
        for json in [false, true] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_offdisk"));
            cmd.args(["luks", "dump"]).arg(&path);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{name}: panic: {err}");
            let code = out.status.code().unwrap_or_else(|| panic!("{name}: killed by a signal: {err}"));
            let ok = match verdict {
                'R' | 'T' => code == 0 && !out.stdout.is_empty(),
                _ => (1..=5).contains(&code) && err.trim().len() > 10,
            };
            if !ok {
                wrong.push(format!("{name} (cryptsetup: {verdict}): exit {code}: {}", err.trim()));
            }
            if !json {
                if code == 0 {
                    accepted += 1
                } else {
                    refused += 1
                }
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert!(wrong.is_empty(), "offdisk disagrees with cryptsetup on:\n{}", wrong.join("\n"));
    assert_eq!((accepted, refused), (30, 55));
}

#[test]
fn accepted_images_say_what_cryptsetup_would_repair_or_skip() {
    // The base image's keyslots name the KDF "argon2", which neither tool runs: the header
    // is valid, its keyslots are listed and named unusable.
    let dev = MemDevice::new(image("luks2-invalid-checksum-hdr0.img"));
    let vol = Volume::load_io(&dev).unwrap();
    let st = vol.luks2("t").unwrap();
    assert!(!st.primary_ok && st.secondary_ok, "primary checksum broken, secondary used");
    assert_eq!(vol.active_slots().len(), 8);
    assert!(vol.slot_problem(0).unwrap().contains("KDF \"argon2\" not supported"));
    let text = offdisk::luks::dump::text(&vol);
    assert!(text.contains("PBKDF:      argon2") && text.contains("Unusable:   KDF \"argon2\" not supported"), "{text}");
    // Leftover KDF parameters are dropped in memory (cryptsetup repairs them the same way).
    let vol = Volume::load_io(&MemDevice::new(image("luks2-argon2-leftover-params.img"))).unwrap();
    let st = vol.luks2("t").unwrap();
    assert!(st.meta.repaired.iter().any(|r| r.contains("keyslot 1")), "{:?}", st.meta.repaired);
    assert!(vol.slot_problem(1).is_none(), "keyslot 1 is now a plain pbkdf2 keyslot");
    // A primary killed ("VACUUM" over its magic) with the secondary at each metadata size.
    for size in ["16k", "32k", "64k", "128k", "256k", "512k", "1m", "2m", "4m"] {
        let name = format!("luks2-metadata-size-{size}-secondary.img");
        let vol = Volume::load_io(&MemDevice::new(image(&name))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let st = vol.luks2("t").unwrap();
        assert!(!st.primary_ok && st.secondary_ok, "{name}");
    }
}

#[test]
fn repair_rewrites_a_primary_without_magic_from_the_secondary() {
    // cryptsetup's `repair` restores a wiped primary from the secondary; offdisk's does the
    // same, and what it writes cryptsetup reads as a whole header again (both copies).
    let tmp = tempfile::tempdir().unwrap();
    for size in ["16k", "32k", "64k", "128k", "256k", "512k", "1m", "2m", "4m"] {
        let name = format!("luks2-metadata-size-{size}-secondary.img");
        let dev = MemDevice::new(image(&name));
        let vol = Volume::load_io(&dev).unwrap();
        let before = vol.luks2("t").unwrap().clone();
        let vol = offdisk::luks::update::repair(&dev, &vol).unwrap_or_else(|e| panic!("{name}: {e}"));
        let st = vol.luks2("t").unwrap();
        assert!(st.primary_ok && st.secondary_ok, "{name}: {:?}", st.problems);
        assert_eq!((&st.meta.keyslots, &st.bin.uuid), (&before.meta.keyslots, &before.bin.uuid), "{name}");
        let img = dev.into_inner();
        assert_eq!(&img[..6], b"LUKS\xba\xbe", "{name}: primary magic");
        let path = tmp.path().join(&name);
        std::fs::write(&path, &img).unwrap();
        let out = Command::new("cryptsetup").args(["luksDump", "--debug"]).arg(&path).output().unwrap();
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name}: cryptsetup refuses the repaired header: {log}");
        assert!(!log.contains("requires recovery"), "{name}: cryptsetup still wants to recover a copy:\n{log}");
        std::fs::remove_file(&path).unwrap();
    }
}
