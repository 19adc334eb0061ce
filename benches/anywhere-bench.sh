#!/usr/bin/env bash
# Restore speed from a backup-disk image without root (offdisk restore --from) against the
# kernel route (cryptsetup open + mount + cp -a), in the same VM run. Not part of CI: it
# boots its own VM (virtme-ng, TCG) with room for a SIZE_MIB generation (default 1024).
#
#   bash benches/anywhere-bench.sh            # 1 GiB
#   SIZE_MIB=256 bash benches/anywhere-bench.sh
#
# Prints "# bench anywhere ..." lines: seconds for each route and their ratio.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
if [ "${1:-}" != "--guest" ]; then
  cd "$repo"
  bin=${OFFDISK_BIN:-$repo/target/release/offdisk}
  [ -x "$bin" ] || cargo build --release --bin offdisk
  kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -n 1)}
  size=${SIZE_MIB:-1024}
  exec vng --disable-kvm --run "$kernel" --memory $((size * 4 + 1024))M --cpus 2 \
    --exec "OFFDISK=$bin SIZE_MIB=$size bash $here/anywhere-bench.sh --guest" 2>&1 | grep -E '^# bench|^error'
fi

# --- in the VM, as root ---
modprobe -a loop dm_mod dm_crypt 2>/dev/null
size=$SIZE_MIB
w=/tmp/ab; rm -rf "$w"; mkdir -p "$w/src"
printf 'bench passphrase' > "$w/pw"; chmod 644 "$w/pw"
img="$w/disk.img"; truncate -s $((size * 13 / 10 + 64))M "$img"
cryptsetup luksFormat --batch-mode --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$w/pw" "$img"
cryptsetup open --key-file "$w/pw" "$img" ab
mkfs.ext4 -q -F /dev/mapper/ab
mkdir -p "$w/m"; mount /dev/mapper/ab "$w/m"
# Three quarters of the bytes in 4 MiB files, the rest in 16 KiB files (a home directory's mix).
big=$((size * 3 / 4 / 4)); small=$((size / 4 * 64))
mkdir -p "$w/src/big" "$w/src/small"
head -c 4M /dev/urandom > "$w/seed"
for i in $(seq 1 "$big"); do cp "$w/seed" "$w/src/big/f$i"; printf '%s' "$i" >> "$w/src/big/f$i"; done
for d in $(seq 1 $((small / 500 + 1))); do
  mkdir -p "$w/src/small/d$d"
  for i in $(seq 1 500); do head -c 16K "$w/seed" > "$w/src/small/d$d/f$i"; printf '%s' "$i" >> "$w/src/small/d$d/f$i"; done
done
"$OFFDISK" backup --no-progress --target "$w/m" "$w/src" >/dev/null
gen=$(ls "$w/m/generations" | grep -v '^\.' | tail -n 1)
rm -rf "$w/src" "$w/seed"
umount "$w/m"; cryptsetup close ab
chmod 644 "$img"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
for run in 1 2; do
  rm -rf "$w/d1" "$w/d2"; mkdir -p "$w/d1" "$w/d2"; chown 65534:65534 "$w/d2"
  drop
  t0=$(date +%s.%N)
  cryptsetup open --key-file "$w/pw" "$img" ab
  mount -o ro /dev/mapper/ab "$w/m"
  cp -a "$w/m/generations/$gen/tree" "$w/d1/"
  t1=$(date +%s.%N)
  umount "$w/m"; cryptsetup close ab
  drop
  t2=$(date +%s.%N)
  setpriv --reuid=65534 --regid=65534 --clear-groups "$OFFDISK" restore --from "$img" --key-file "$w/pw" / --to "$w/d2" >/dev/null
  t3=$(date +%s.%N)
  k=$(echo "$t1 - $t0" | bc); o=$(echo "$t3 - $t2" | bc)
  echo "# bench anywhere run $run: ${size} MiB generation: cryptsetup open + mount + cp -a ${k} s, offdisk restore --from (no root) ${o} s, ratio $(echo "scale=2; $o / $k" | bc)"
done
openssl speed -evp aes-256-xts -bytes 4096 -seconds 2 2>/dev/null | awk '/^aes-256-xts/ {print "# bench anywhere openssl aes-256-xts 4 KiB blocks: " $2 " (1000s of bytes/s)"}'
