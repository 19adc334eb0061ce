#!/bin/bash
# Runs a cargo-fuzz target for a while with a corpus seeded from the fixtures, and prints
# libFuzzer's final statistics (executions, coverage, corpus). Installs cargo-fuzz from
# crates.io when it is missing (needs the nightly toolchain, which is installed beside stable).
#   luks_header  seeds: the first 64 KiB of every LUKS fixture and validation image
#   luks_unlock  seeds: the whole cipher/hash and compatibility volumes (KDF costs are capped
#                by the target)
#   ext4_image   seeds: fuzz/seed-ext4.sh
# Usage: scripts/fuzz.sh TARGET [SECONDS]   (default 60; findings land in fuzz/artifacts/TARGET)
set -euo pipefail
target=${1:?usage: $0 luks_header|luks_unlock|ext4_image [SECONDS]}
secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
corpus=corpus/$target
mkdir -p "$corpus"
unxz() { python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$1"; }
max_len=
# Seconds before libFuzzer calls an input a hang. A whole cipher volume (four keyslot-area
# decryptions per input through coverage-instrumented serpent/twofish) takes 2-3 s of CPU
# on its own and far more on a loaded machine; the parser targets stay at 10.
timeout=10
case $target in
    luks_header)
        for f in ../fixtures/luks/*.img; do head -c 65536 "$f" > "$corpus/seed-$(basename "$f")"; done
        for f in ../fixtures/luks2-validation/*.xz ../fixtures/luks-compat/*.xz ../fixtures/luks-ciphers/*.xz; do
            unxz "$f" | head -c 65536 > "$corpus/seed-$(basename "$f" .xz)"
        done
        max_len=65536 ;;
    luks_unlock)
        for f in ../fixtures/luks-ciphers/*.xz ../fixtures/luks-compat/*.xz; do
            n=$(basename "$f" .xz)
            unxz "$f" > "$corpus/seed-$n"
            # Images larger than the target needs are cut to their keyslots (the rest is data).
            [ "$(stat -c %s "$corpus/seed-$n")" -le 1200000 ] || rm -f "$corpus/seed-$n"
        done
        for f in ../fixtures/luks/*.img; do
            [ "$(stat -c %s "$f")" -le 1200000 ] && cp "$f" "$corpus/seed-$(basename "$f")"
        done
        max_len=1200000 timeout=120 ;;
    ext4_image)
        bash seed-ext4.sh >/dev/null ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
esac
log=$(mktemp)
trap 'rm -f "$log"' EXIT
args=(-max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout="$timeout")
[ -n "$max_len" ] && args+=(-max_len="$max_len")
cargo +nightly fuzz run "$target" "$corpus" -- "${args[@]}" 2>&1 | tee "$log" |
    grep -E '^(#[0-9]+[[:space:]]+(DONE|INITED)|stat::|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' || true
# A crash, hang, OOM or leak; "slow-unit" files are only reports of the slowest inputs.
grep -q 'Test unit written to .*/\(crash\|timeout\|oom\|leak\)-\|SUMMARY' "$log" && { echo "FINDING: see fuzz/artifacts/$target" >&2; exit 1; }
exit 0
