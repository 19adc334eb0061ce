#!/usr/bin/env bash
# Kernel tier of the offdisk tests: boots ONE throwaway Linux VM (virtme-ng, TCG emulation, no
# KVM) and runs every tests/vm/t-*.sh inside it as root, with real dm-crypt, loop devices,
# mounts and udev, against the offdisk binary built on the host.
# Each script prints `ok NAME` or `not ok NAME: WHY`; this harness ends with the line
# `N passed, M failed` and exits non-zero when anything failed or the VM did not finish.
#
# Environment: OFFDISK_BIN (default target/debug/offdisk, built if missing),
#              OFFDISK_VM_KERNEL (default: newest /boot/vmlinuz-*), OFFDISK_VM_ONLY (globs of
#              scripts to run, e.g. 't-03*' or 't-03* t-hotplug-desktop*'), OFFDISK_VM_TIMEOUT (seconds, default 1800),
#              OFFDISK_VNG / OFFDISK_VENV (virtme-ng: see scripts/vng.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

if [ -z "${OFFDISK_BIN:-}" ]; then
  cargo build --quiet --bin offdisk --example dm_activate || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
  OFFDISK_BIN="$repo/target/debug/offdisk"
fi
dm_tool="$(dirname "$OFFDISK_BIN")/examples/dm_activate"
[ -x "$dm_tool" ] || dm_tool="$repo/target/debug/examples/dm_activate"
kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
. "$repo/scripts/vng.sh"
vng=$(offdisk_vng) || vng=
if [ -z "$kernel" ] || [ -z "$vng" ]; then
  echo "not ok vm-boot: need virtme-ng (bash scripts/virtme-venv.sh) and a kernel in /boot (linux-image-amd64)"
  echo "0 passed, 1 failed"
  exit 1
fi

log=$(mktemp)
# A blank virtio-scsi disk: a "real" disk for init, model/serial listing and power-off.
scratch=$(mktemp -d)
truncate -s 160M "$scratch/scsi-disk.img"
timeout "${OFFDISK_VM_TIMEOUT:-1800}" "$vng" --disable-kvm --run "$kernel" --memory 2G --cpus 2 \
  --qemu-opts="-device virtio-scsi-pci,id=odscsi -drive file=$scratch/scsi-disk.img,format=raw,if=none,id=oddisk -device scsi-hd,drive=oddisk,bus=odscsi.0,serial=OD-TEST-0001" \
  --exec "OFFDISK_VM_NO_BENCH=${OFFDISK_VM_NO_BENCH:-} OFFDISK=$OFFDISK_BIN DM_TOOL=$dm_tool VMDIR=$here ONLY='${OFFDISK_VM_ONLY:-t-*.sh}' bash $here/guest.sh" \
  2>&1 </dev/null | tee "$log"
summary=$(grep -E '^vm-summary: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
rm -f "$log"
rm -rf "$scratch"
if [ -z "$summary" ]; then
  echo "not ok vm-finished: the VM stopped before the suite ended"
  echo "0 passed, 1 failed"
  exit 1
fi
line=${summary#vm-summary: }
echo "$line"
failed=$(echo "$line" | awk '{print $3}')
[ "$failed" -eq 0 ]
