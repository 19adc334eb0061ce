#!/usr/bin/env bash
# Power-cut tier (issue 11). A VM records offdisk's scenario — init (registered), a full
# backup of a tree of thousands of files, an incremental, a run whose retention prunes,
# luks add-key / change-key / remove-key, header-restore, a dock — on a disk under the
# kernel's dm-log-writes target, with a mark before and after each step (record.sh). Then,
# on the host and natively, examples/log_replay rebuilds crash states of that disk from the
# log (every mark and flush while the budget lasts, plus random ones that lose a subset of
# the writes after the last flush) and check.sh judges each.
# Ends with `N passed, M failed` (each crash state and each scenario step is one test).
#
# CRASH_STATES=N   crash states to check (default 48; a long run: 2000 or more)
# CRASH_RANDOM=N   of which random (default: a quarter of them, at least 10)
# CRASH_DEEP=N     states besides the post-step marks that also get the expensive checks
#                  (default: a tenth)
# CRASH_SEED=N     seed of the random states (default 1)
# PC_FILES=N       files in the source tree (default 2000); PC_SCENARIO=minimal: init + one backup
# OFFDISK_VM_KERNEL (default: the newest /boot/vmlinuz-*), OFFDISK_VM_TIMEOUT (default 2400 s),
# OFFDISK_VNG / OFFDISK_VENV (scripts/vng.sh)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cd "$repo"
started=$(date +%s)
states=${CRASH_STATES:-48}
random=${CRASH_RANDOM:-$(( states / 4 > 10 ? states / 4 : 10 ))}
deep=${CRASH_DEEP:-$(( states / 10 ))}
seed=${CRASH_SEED:-1}
fail_run() { echo "not ok powercut-$1: $2"; echo "# powercut tier: $(( $(date +%s) - started )) s"; echo "0 passed, 1 failed"; exit 1; }

cargo build --quiet --bin offdisk --example log_replay || fail_run build "cargo build failed"
bin=${CARGO_TARGET_DIR:-$repo/target}/debug
kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
. "$repo/scripts/vng.sh"
vng=$(offdisk_vng) || vng=
[ -n "$kernel" ] && [ -n "$vng" ] || fail_run vm-boot "need virtme-ng (vng; see scripts/vng.sh) and a kernel in /boot"
for t in cryptsetup e2fsck b3sum jq losetup; do command -v $t >/dev/null || fail_run tools "$t is missing"; done

scratch=$(mktemp -d "$repo/target/powercut.XXXXXX")
W=$scratch/w
cleanup() {
  mountpoint -q "$W/cm" 2>/dev/null && umount "$W/cm"
  mountpoint -q "$W" 2>/dev/null && umount "$W"
  rm -rf "$scratch"
}
trap cleanup EXIT
OUT=$scratch/out
mkdir -p "$OUT" "$W"
# The source tree, made on the host (fast) and handed to the VM as one tar file.
python3 "$here/make-tree.py" "$scratch/tree" "${PC_FILES:-2000}"
tar -cf "$scratch/tree.tar" -C "$scratch/tree" .
truncate -s "${PC_DISK_MB:-128}M" "$scratch/disk.img"
truncate -s 4G "$scratch/log.img"
echo "# powercut: recording the scenario in a VM"
vmlog=$scratch/vm.log
t=$(date +%s)
timeout "${OFFDISK_VM_TIMEOUT:-2400}" "$vng" --disable-kvm --run "$kernel" --memory 2G --cpus 2 --rwdir="$OUT" \
  --qemu-opts="-device virtio-scsi-pci,id=pcscsi -drive file=$scratch/disk.img,format=raw,if=none,id=pcdisk -device scsi-hd,drive=pcdisk,bus=pcscsi.0,serial=PC-DISK -drive file=$scratch/log.img,format=raw,if=none,id=pclog -device scsi-hd,drive=pclog,bus=pcscsi.0,serial=PC-LOG" \
  --exec "OFFDISK=$bin/offdisk OUT=$OUT PC_TREE=$scratch/tree.tar PC_SCENARIO=${PC_SCENARIO:-full} bash $here/record.sh" \
  2>&1 | tee "$vmlog"
vm_rc=${PIPESTATUS[0]}
grep -qx 'powercut-recorded' "$vmlog" || {
  echo "# the VM exited with status $vm_rc" cat "$OUT"/step-*.log 2>/dev/null | tail -n 20; fail_run recorded "the VM stopped before the scenario was recorded"; }
echo "# powercut: VM boot and recording took $(( $(date +%s) - t )) s"

# Native replay: every file the states need lives in a private tmpfs.
mount -t tmpfs -o size=3G,mode=700 tmpfs "$W" || fail_run tmpfs "cannot mount a tmpfs for the replay"
mkdir -p "$W/cm"
bytes=$(stat -c %s "$scratch/disk.img")
"$bin/examples/log_replay" info "$scratch/log.img" --device-bytes "$bytes" | sed 's/^/# log: /'
# The replayer rebuilds the final disk exactly from the log alone.
truncate -s "$bytes" "$W/replay.img"
if "$bin/examples/log_replay" replay "$scratch/log.img" "$W/replay.img" && cmp -s "$scratch/disk.img" "$W/replay.img"; then
  echo "ok powercut-replay-rebuilds-disk"
else
  echo "not ok powercut-replay-rebuilds-disk: the full replay differs from the disk"
fi
rm -f "$W/replay.img"
truncate -s "$bytes" "$W/replay.img"
echo "# powercut: $states crash states ($random random, $deep deep besides the post-step marks), seed $seed"
t=$(date +%s)
# Watched for the LUKS verdict cache: the GPT and the LUKS2 header area (the first 17 MiB).
OUT=$OUT W=$W PCDIR=$here OFFDISK=$bin/offdisk RIMG=$W/replay.img PLAIN=$W/plain.img SRC=$scratch/tree \
  "$bin/examples/log_replay" run "$scratch/log.img" "$W/replay.img" --states "$states" --random "$random" \
  --deep "$deep" --seed "$seed" --watch 0:$((17 << 20)) \
  --decrypt "$W/plain.img" --final "$scratch/disk.img" --passphrase-file "$OUT/keys/A" \
  -- bash "$here/check.sh" 2>&1 | tee "$scratch/states.log"
echo "# powercut: checked the crash states in $(( $(date +%s) - t )) s"
# Where the check time goes: mean per phase over the states that ran it.
awk '{ s[$1] += $2; n[$1]++ } END { for (p in s) printf "# check phase %-13s %8.1f ms mean over %d states\n", p, s[p] / n[p] / 1000, n[p] }' "$W/times" 2>/dev/null | sort
cat "$vmlog" "$scratch/states.log" > "$scratch/all.log"
pass=$(grep -c '^ok ' "$scratch/all.log")
fail=$(grep -c '^not ok ' "$scratch/all.log")
grep -qE '^powercut: [0-9]+ states checked, [0-9]+ failed$' "$scratch/states.log" || { echo "not ok powercut-finished: the replay stopped early"; fail=$((fail + 1)); }
echo "# powercut tier: $(( $(date +%s) - started )) s"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
