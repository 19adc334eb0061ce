#!/usr/bin/env bash
# Restore speed from a backup-disk image without root (offdisk restore --from) against the
# kernel route (cryptsetup open + mount + cp -a), in the same VM run. Not part of CI.
#
#   bash benches/anywhere-bench.sh            # a 1 GiB generation
#   SIZE_MIB=256 RUNS=3 bash benches/anywhere-bench.sh
#
# Environment: SIZE_MIB (default 1024), RUNS (timed rounds per route, interleaved, default 2),
# BENCH_DIR (host scratch, default /var/tmp; needs ~4.5x SIZE_MIB), BENCH_TIMEOUT (seconds for
# the VM, default 7200), OFFDISK_VM_KERNEL (default: newest /boot/vmlinuz-*), NO_VM=1 (host
# rounds only).
#
# The image is built on the host, where it takes seconds: `offdisk backup` of a generated tree
# into a directory, `mkfs.ext4 -d` of it, `cryptsetup luksFormat` of a file and the filesystem
# encrypted into it by examples/luks_fill.rs. (Building it inside the VM, as this script did
# before, never finished: the VM is emulated (TCG, no KVM here) and spawns a process in about
# half a second under load, and the tree took two processes per file for 16k files.)
# The VM (virtme-ng, TCG) gets the image as a read-only virtio disk and times both routes
# from a cold guest page cache into a tmpfs. Emulation slows each route by its own factor
# (the kernel's AES-NI XTS and offdisk's VAES code are emulated differently), so the host
# rounds are printed too: restore --from against `cp -a` of the same tree in plain files,
# both from the host page cache, a lower bound for the kernel route (no decryption at all).
#
# Prints "# bench anywhere ..." lines: seconds for each route and their ratio.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
secs() { date +%s.%N; }
ratio() { echo "scale=2; $1 / $2" | bc; }
diffs() { echo "scale=2; ($2 - $1) / 1" | bc; }

if [ "${1:-}" = "--guest" ]; then
  # --- in the VM, as root ---
  modprobe -a loop dm_mod dm_crypt 2>/dev/null || true
  dev=
  for s in /sys/block/vd*; do
    [ "$(cat "$s/serial" 2>/dev/null)" = odbench ] && dev=/dev/${s##*/}
  done
  [ -n "$dev" ] || { echo "error: no bench disk in the VM"; exit 1; }
  # An ordinary user who can read the disk (as a member of the disk group would).
  chmod 644 "$dev"
  w=/run/ab; mkdir -p "$w/m" "$w/out"
  mount -t tmpfs -o size=$((SIZE_MIB * 3 / 2 + 256))M tmpfs "$w/out"
  printf '%s' "$PASS" > "$w/pw"; chmod 644 "$w/pw"
  tally() { find "$1" -type f -printf '%s\n' | awk '{n++; b+=$1} END {printf "%d files, %d bytes", n, b}'; }
  drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
  echo "# bench anywhere vm: $(nproc) vCPUs (TCG), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, disk $dev"
  for run in $(seq 1 "$RUNS"); do
    rm -rf "$w/out/k"; mkdir "$w/out/k"
    drop
    t0=$(secs)
    cryptsetup open --readonly --key-file "$w/pw" "$dev" ab
    mount -o ro /dev/mapper/ab "$w/m"
    cp -a "$w/m/generations/$GEN/tree" "$w/out/k/"
    t1=$(secs)
    kt=$(tally "$w/out/k")
    umount "$w/m"; cryptsetup close ab
    rm -rf "$w/out/k" "$w/out/o"; mkdir "$w/out/o"; chown 65534:65534 "$w/out/o"
    drop
    t2=$(secs)
    setpriv --reuid=65534 --regid=65534 --clear-groups "$OFFDISK" restore --from "$dev" --key-file "$w/pw" \
      --generation "$GEN" / --to "$w/out/o" >/dev/null
    t3=$(secs)
    ot=$(tally "$w/out/o")
    rm -rf "$w/out/o"
    k=$(diffs "$t0" "$t1"); o=$(diffs "$t2" "$t3")
    echo "# bench anywhere vm run $run: ${SIZE_MIB} MiB generation: cryptsetup open + mount + cp -a ${k} s ($kt), offdisk restore --from (no root) ${o} s ($ot), ratio $(ratio "$o" "$k")"
  done
  openssl speed -evp aes-256-xts -bytes 4096 -seconds 2 2>/dev/null | awk '/^AES-256-XTS|^aes-256-xts/ {print "# bench anywhere vm openssl aes-256-xts 4 KiB: " $2 " (1000s of bytes/s)"}'
  cryptsetup benchmark -c aes-xts-plain64 -s 512 2>/dev/null | awk '/aes-xts/ {print "# bench anywhere vm cryptsetup benchmark aes-xts 512b: encrypt " $3 " " $4 ", decrypt " $5 " " $6}'
  "$OFFDISK" luks benchmark --json --cipher aes-xts-plain64 --key-size 512 --seconds 2 |
    python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print("# bench anywhere vm offdisk luks benchmark aes-xts 512b: encrypt %.1f MB/s, decrypt %.1f MB/s" % (r["encrypt_mb_s"], r["decrypt_mb_s"]))'
  exit 0
fi

# --- on the host ---
cd "$repo"
size=${SIZE_MIB:-1024} runs=${RUNS:-2}
cargo build --release --bin offdisk --example luks_fill >&2
bin=$repo/target/release/offdisk fill=$repo/target/release/examples/luks_fill
w=$(mktemp -d "${BENCH_DIR:-/var/tmp}/anywhere-bench.XXXXXX")
trap 'rm -rf "$w"' EXIT
chmod 755 "$w"
pass="bench passphrase"; printf '%s' "$pass" > "$w/pw"; chmod 644 "$w/pw"
echo "# bench anywhere: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"

# Three quarters of the bytes in 4 MiB files, the rest in 16 KiB files (a home directory's mix).
t=$(secs)
python3 - "$w/src" "$size" <<'PY'
import os, sys
root, size = sys.argv[1], int(sys.argv[2])
seed = os.urandom(4 << 20)
os.makedirs(f"{root}/big"); os.makedirs(f"{root}/small")
for i in range(1, size * 3 // 4 // 4 + 1):
    with open(f"{root}/big/f{i}", "wb") as f:
        f.write(seed); f.write(str(i).encode())
small = size // 4 * 64
for d in range(1, small // 500 + 2):
    os.makedirs(f"{root}/small/d{d}")
    for i in range(1, 501):
        with open(f"{root}/small/d{d}/f{i}", "wb") as f:
            f.write(seed[(d * 7919 + i) * 64 % (3 << 20):][:16 << 10]); f.write(str(i).encode())
PY
mkdir "$w/root"
"$bin" backup --no-progress --target "$w/root" "$w/src" >/dev/null
rm -rf "$w/src"
gen=$(ls "$w/root/generations" | grep -v '^\.' | tail -n 1)
# Regular files and their bytes under a directory: what both routes must agree on.
tally() { find "$1" -type f -printf '%s\n' | awk '{n++; b+=$1} END {printf "%d files, %d bytes", n, b}'; }
fs_bytes=$(( ($(du -sb --apparent-size "$w/root" | cut -f1) * 11 / 10 + (64 << 20)) >> 20 << 20 ))
truncate -s "$fs_bytes" "$w/fs.img"
mkfs.ext4 -q -F -L backups01 -b 4096 -d "$w/root" "$w/fs.img"
truncate -s $((fs_bytes + (16 << 20))) "$w/disk.img"
cryptsetup luksFormat --batch-mode --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
  --key-file "$w/pw" "$w/disk.img"
"$fill" "$w/disk.img" "$w/fs.img" "$w/pw"
rm -f "$w/fs.img"; chmod 644 "$w/disk.img"
echo "# bench anywhere host: image of a ${size} MiB generation ($gen, $(($(stat -c %s "$w/disk.img") >> 20)) MiB disk) built in $(diffs "$t" "$(secs)") s"

# Host rounds, page cache warm for both (one untimed pass each first).
mkdir "$w/out"; chmod 777 "$w/out"
host_round() {
  rm -rf "$w/out/k" "$w/out/o"; mkdir "$w/out/k" "$w/out/o"; chown 65534:65534 "$w/out/o"
  local t0 t1 t2 t3
  t0=$(secs); cp -a "$w/root/generations/$gen/tree" "$w/out/k/"; t1=$(secs); t2=$(secs)
  setpriv --reuid=65534 --regid=65534 --clear-groups "$bin" restore --from "$w/disk.img" --key-file "$w/pw" \
    --generation "$gen" / --to "$w/out/o" >/dev/null
  t3=$(secs)
  [ "$(tally "$w/out/k")" = "$(tally "$w/out/o")" ] || echo "error: host routes restored $(tally "$w/out/k") and $(tally "$w/out/o")"
  rm -rf "$w/out/k" "$w/out/o"
  local k o; k=$(diffs "$t0" "$t1"); o=$(diffs "$t2" "$t3")
  [ "$1" = warm ] || echo "# bench anywhere host run $1: cp -a of the plain tree ${k} s, offdisk restore --from (no root) ${o} s, ratio $(ratio "$o" "$k")"
}
host_round warm
for run in $(seq 1 "$runs"); do host_round "$run"; done

if [ -z "${NO_VM:-}" ]; then
  . "$repo/scripts/vng.sh"
  vng=$(offdisk_vng) || { echo "error: virtme-ng is not installed: run scripts/virtme-venv.sh"; exit 1; }
  kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -n 1)}
  timeout "${BENCH_TIMEOUT:-7200}" "$vng" --disable-kvm --run "$kernel" --memory $((size * 2 + 1536))M --cpus 2 \
    --qemu-opts="-drive file=$w/disk.img,format=raw,if=none,id=odbench,readonly=on -device virtio-blk-pci,drive=odbench,serial=odbench" \
    --exec "OFFDISK=$bin SIZE_MIB=$size RUNS=$runs GEN=$gen PASS='$pass' bash $here/anywhere-bench.sh --guest" 2>&1 </dev/null |
    grep -E '^# bench|^error' || { echo "error: the VM run gave no results"; exit 1; }
fi
