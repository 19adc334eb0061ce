//! Fuzzes the LUKS header parser: any bytes as a device image. Must never panic, hang or
//! allocate without bound. Run: `cargo +nightly fuzz run luks_header fuzz/corpus/luks_header`
//! (seed the corpus with fixtures/luks/*.img cut to their first 64 KiB).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    offdisk::luks::exercise_parser(data);
});
