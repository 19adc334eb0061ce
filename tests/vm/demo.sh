#!/usr/bin/env bash
# Runs offdisk's main disk job end to end where there is no spare disk: builds offdisk, boots a
# throwaway VM (virtme-ng, no KVM needed) and there: init a disk image (GPT, LUKS2, ext4), register
# it, dock it (unlock, back up, quick verify, close), then open it again and check the backup.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
if [ -z "${OFFDISK:-}" ]; then
  cargo build --quiet --release --bin offdisk
  OFFDISK=$repo/target/release/offdisk
fi
kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -n 1)}
vng --disable-kvm --run "$kernel" --memory 2G --cpus 2 \
  --exec "OFFDISK=$OFFDISK bash $here/demo-guest.sh"
