# Runs inside the VM as root: prepares the kernel, then each test script, then the summary.
set -u
modprobe -a loop dm_mod dm_crypt virtio_scsi sd_mod 2>/dev/null
udevadm settle
# The host root is shared read-only; default mount points live under /media.
mount -t tmpfs -o mode=755 tmpfs /media
export OFFDISK DM_TOOL VMDIR
export WORK=/tmp/offdisk-vm
rm -rf "$WORK"; mkdir -p "$WORK"
results="$WORK/results"
: > "$results"
echo "# guest up after $(cut -d' ' -f1 /proc/uptime) s"
# ONLY: one or more globs separated by spaces ('t-03* t-hotplug-desktop*').
for t in $(for pat in $ONLY; do printf '%s\n' "$VMDIR"/$pat; done | sort -u); do
  [ -f "$t" ] || continue
  echo "# $(basename "$t")"
  t0=$(date +%s)
  ( cd "$WORK" && bash "$t" ) 2>"$WORK/stderr-$(basename "$t")" | tee -a "$results"
  # Leave no state behind for the next script.
  bash "$VMDIR/cleanup.sh" >/dev/null 2>&1
  # Wall time of the script and its cleanup (guest clock), for the CI log.
  echo "time $(basename "$t" .sh): $(( $(date +%s) - t0 )) s"
done
# Benchmarks print "# bench ..." lines only (ratios against cryptsetup in the same VM).
if [ -z "${OFFDISK_VM_NO_BENCH:-}" ]; then
  for b in "$VMDIR"/b-*.sh; do
    [ -f "$b" ] || continue
    ( cd "$WORK" && bash "$b" ) 2>/dev/null | grep '^# bench'
    bash "$VMDIR/cleanup.sh" >/dev/null 2>&1
  done
fi
pass=$(grep -c '^ok ' "$results")
fail=$(grep -c '^not ok ' "$results")
if [ "$fail" -gt 0 ]; then
  echo "# stderr of failing scripts:"
  for f in "$WORK"/stderr-*; do echo "## $f"; tail -n 30 "$f"; done
fi
echo "vm-summary: $pass passed, $fail failed"
