//! Fuzzes keyslot unlocking: any bytes as a device image whose header loads; KDF and digest
//! costs are capped (so an input stays cheap), then every keyslot is tried: key derivation,
//! keyslot-area decryption with the named cipher, AF merge, digest check. Must never panic,
//! hang or allocate without bound.
//! Run: `scripts/fuzz.sh luks_unlock SECONDS` (seeds the corpus from fixtures/).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    offdisk::luks::exercise_unlock(data);
});
