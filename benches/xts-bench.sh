#!/bin/bash
# One-core AES-256-XTS throughput of offdisk's userspace sector cipher against OpenSSL,
# measured in the same run, rounds interleaved so both see the same machine load:
#   offdisk luks benchmark --json --cipher aes-xts-plain64 --key-size 512   (4 KiB sectors)
#   openssl speed -evp aes-256-xts -bytes 4096 [-decrypt]                   (4 KiB buffers)
# Both count MB (10^6 bytes) per CPU-second of the measuring thread. Prints the median of
# ROUNDS rounds for each and the ratio offdisk / openssl (target >= 0.9), for the kernel
# offdisk picks on this CPU ("auto") and for each other one it runs (OFFDISK_XTS_KERNEL).
# Usage: benches/xts-bench.sh [ROUNDS] [SECONDS]   (OFFDISK=path/to/binary to skip the build)
set -euo pipefail
rounds=${1:-3} secs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${OFFDISK:-}" ]; then
    cargo build --release --bin offdisk --manifest-path "$root/Cargo.toml" >&2
    OFFDISK="$root/target/release/offdisk"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ossl() { # -> MB/s for 4096-byte buffers
    openssl speed -mr -evp aes-256-xts -bytes 4096 -seconds "$secs" "$@" 2>/dev/null |
        awk -F: '/^\+F:/ { printf "%.1f\n", $NF / 1e6 }'
}
kernels="auto crate vaes256 aes-ni"
for i in $(seq "$rounds"); do
    for k in $kernels; do
        [ "$k" = auto ] && kv= || kv=$k
        OFFDISK_XTS_KERNEL=$kv "$OFFDISK" luks benchmark --json --cipher aes-xts-plain64 --key-size 512 --seconds "$secs" |
            python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print(r["encrypt_mb_s"], r["decrypt_mb_s"])' >> "$work/offdisk-$k"
    done
    echo "$(ossl) $(ossl -decrypt)" >> "$work/openssl"
done
python3 - "$work" "$(openssl version)" $kernels <<'PY'
import statistics, sys
def med(path):
    rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
    return [statistics.median(r[i] for r in rows) for i in (0, 1)], rows
work, ver, kernels = sys.argv[1], sys.argv[2].split()[1], sys.argv[3:]
(se, sd), srows = med(f"{work}/openssl")
print(f"rounds: openssl {srows}")
print(f"AES-256-XTS, one core, 4 KiB, MB/s (median)   encrypt    decrypt   ratio to openssl")
print(f"openssl speed -evp aes-256-xts ({ver})  {se:9.1f}  {sd:9.1f}")
for k in kernels:
    (oe, od), orows = med(f"{work}/offdisk-{k}")
    # A kernel this CPU cannot run falls back to the automatic choice (OFFDISK_XTS_KERNEL).
    print(f"offdisk luks benchmark, kernel {k:<8}    {oe:9.1f}  {od:9.1f}   {oe/se:.2f} / {od/sd:.2f}")
PY
