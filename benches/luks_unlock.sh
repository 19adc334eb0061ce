#!/bin/bash
# Unlock speed against cryptsetup, measured in the same run on the same volume.
#
# Formats a volume with stock cryptsetup using argon2id t=4, m=1 GiB, p=4 (cryptsetup
# stores min(4, online CPUs) lanes), then times
#   cryptsetup open --test-passphrase --key-file K IMG      (the reference)
#   offdisk luks dump IMG --dump-volume-key --key-file K     (derives and checks the key)
# with hyperfine, and prints the ratio offdisk / cryptsetup (below 1.0 = offdisk faster).
#
# Usage: benches/luks_unlock.sh [RUNS]     (OFFDISK=path/to/binary to skip the build)
# COLD=SECONDS pauses that long before every run, so freed memory has settled (under a
# hypervisor with free page reporting, huge pages freed by the previous run go back to
# the host) and each run sees what a single unlock after idle sees.
set -euo pipefail
runs=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${OFFDISK:-}" ]; then
    cargo build --release --bin offdisk --manifest-path "$root/Cargo.toml" >&2
    OFFDISK="$root/target/release/offdisk"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'benchmark passphrase' > "$work/key"
truncate -s 20M "$work/vol.img"
cryptsetup luksFormat -q --type luks2 --key-file "$work/key" --pbkdf argon2id \
    --pbkdf-memory 1048576 --pbkdf-parallel 4 --pbkdf-force-iterations 4 "$work/vol.img"
cryptsetup luksDump "$work/vol.img" | grep -E 'PBKDF|Time cost|Memory|Threads' >&2
# Both must agree on the key before timing anything.
out=$("$OFFDISK" luks dump "$work/vol.img" --json --dump-volume-key --key-file "$work/key")
grep -q '"volume_key"' <<< "$out"
prepare=()
[ -n "${COLD:-}" ] && prepare=(--prepare "sleep $COLD")
hyperfine --warmup 1 --runs "$runs" "${prepare[@]}" --export-json "$work/result.json" \
    -n cryptsetup "cryptsetup open --test-passphrase --key-file $work/key $work/vol.img" \
    -n offdisk "$OFFDISK luks dump $work/vol.img --dump-volume-key --key-file $work/key --json" >&2
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
c, o = r["cryptsetup"], r["offdisk"]
print(f"cryptsetup mean {c['mean']:.3f} s (user {c['user']:.2f} s, system {c['system']:.2f} s)")
print(f"offdisk    mean {o['mean']:.3f} s (user {o['user']:.2f} s, system {o['system']:.2f} s)")
print(f"ratio offdisk/cryptsetup: {o['mean'] / c['mean']:.2f} (wall), "
      f"{(o['user'] + o['system']) / (c['user'] + c['system']):.2f} (CPU)")
PY
