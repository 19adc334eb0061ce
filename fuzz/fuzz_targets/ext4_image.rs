//! Fuzzes the ext4 reader: any bytes as a filesystem image (what a hostile backup disk
//! decrypts to). Must never panic, hang or allocate without bound. Odd first bytes skip the
//! metadata checksum comparisons, so mutations reach the structures behind them.
//! Run: `cargo +nightly fuzz run ext4_image fuzz/corpus/ext4_image` (seed the corpus with
//! small `mkfs.ext4 -d` images: `bash fuzz/seed-ext4.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    offdisk::ext4::exercise_reader(data, data.first().is_none_or(|b| b & 1 == 0));
});
