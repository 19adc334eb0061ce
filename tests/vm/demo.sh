#!/usr/bin/env bash
# Runs offdisk's main disk job end to end where there is no spare disk: builds offdisk, boots a
# throwaway VM (virtme-ng, no KVM needed) and there: init a disk image (GPT, LUKS2, ext4), register
# it, dock it (unlock, back up, quick verify, close), then open it again and check the backup.
#
# The VM's output goes through a pipe: the VM console reopens its standard output, which on a
# redirected file (`install.sh --demo > log 2>&1`) would overwrite the log from its start.
# Exits 0 only when the guest got to its last step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
. "$repo/scripts/vng.sh"
if [ -z "${OFFDISK:-}" ]; then
  cargo build --quiet --release --bin offdisk
  OFFDISK=$repo/target/release/offdisk
fi
vng=$(offdisk_vng) || { echo "demo: virtme-ng is not installed: run scripts/virtme-venv.sh" >&2; exit 1; }
kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -n "$kernel" ] || { echo "demo: no kernel in /boot: apt-get install linux-image-amd64" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$vng" --disable-kvm --run "$kernel" --memory 2G --cpus 2 \
  --exec "OFFDISK=$OFFDISK bash $here/demo-guest.sh" 2>&1 </dev/null | tee "$log" || true
if ! grep -q '^demo finished' "$log"; then
  echo "demo: the VM stopped before the demo finished (see above)" >&2
  exit 1
fi
