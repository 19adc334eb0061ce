//! Fuzzes the LUKS header parser: any bytes as a device image. Must never panic, hang or
//! allocate without bound. Odd first bytes get valid checksums first, so mutated JSON
//! reaches the metadata validator.
//! Run: `cargo +nightly fuzz run luks_header fuzz/corpus/luks_header` (seed the corpus with
//! the first 64 KiB of each fixtures/luks/*.img).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.first().is_some_and(|b| b & 1 == 1) {
        offdisk::luks::exercise_parser_resealed(data);
    } else {
        offdisk::luks::exercise_parser(data);
    }
});
