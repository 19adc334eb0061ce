#!/usr/bin/env bash
# Runs offdisk's main disk job end to end where there is no spare disk: builds offdisk, boots a
# throwaway VM (virtme-ng, no KVM needed) and inits, opens, fills and closes a disk image there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
cargo build --quiet --release --bin offdisk
kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -n 1)}
vng --disable-kvm --run "$kernel" --memory 2G --cpus 2 \
  --exec "OFFDISK=$repo/target/release/offdisk bash $here/demo-guest.sh"
