#!/usr/bin/env bash
# Runs inside the systemd test VM (started by the image's offdisk-vmtest.service once the
# system is up): installs offdisk's Debian package, runs each tests/systemd/t-*.sh selected by
# /mnt/out/only, writes their ok/not ok lines to /mnt/out/results, ends with
# `sysd-summary: N passed, M failed` and powers the VM off.
# A script that needs a second boot (with disks attached from power-on) writes the disk IDs to
# /mnt/out/reboot (host.py boots again with them) and its own name to /mnt/out/after-boot: the
# second boot runs only that script, with PHASE=2.
SYSD=/mnt/repo/tests/systemd
OUT=/mnt/out
exec > >(tee -a "$OUT/guest.log") 2>&1
echo "guest: system up after $(cut -d' ' -f1 /proc/uptime) s: $(systemctl is-system-running)"
results=$OUT/results
if [ -s "$OUT/after-boot" ]; then
  t=$(cat "$OUT/after-boot"); rm -f "$OUT/after-boot"
  echo "guest: --- $t (second boot)"
  t0=$(date +%s)
  PHASE=2 WORK=$(mktemp -d) bash "$SYSD/$t" 2>&1 | tee -a "$results.raw" | grep -E '^(ok|not ok|#) ' >> "$results"
  echo "time ${t%.sh} (second boot): $(( $(date +%s) - t0 )) s" >> "$results"
  p=$(grep -c '^ok ' "$results"); f=$(grep -c '^not ok ' "$results")
  echo "sysd-summary: $p passed, $f failed" >> "$results"; cat "$results"; systemctl poweroff; exit 0
fi
: > "$results"
finish() { if [ -s "$OUT/after-boot" ]; then systemctl poweroff; exit 0; fi
  p=$(grep -c '^ok ' "$results"); f=$(grep -c '^not ok ' "$results")
  echo "sysd-summary: $p passed, $f failed" >> "$results"; cat "$results"; systemctl poweroff; exit 0; }
if ! dpkg -i "$OUT/offdisk.deb" > "$OUT/dpkg.log" 2>&1; then
  echo "not ok sysd-install: dpkg -i offdisk.deb failed: $(tail -3 "$OUT/dpkg.log")" >> "$results"; finish
fi
echo "ok sysd-install-package" >> "$results"
for t in $(cd "$SYSD" && ls $(cat "$OUT/only") 2>/dev/null); do
  echo "guest: --- $t"
  t0=$(date +%s)
  WORK=$(mktemp -d) bash "$SYSD/$t" 2>&1 | tee -a "$results.raw" | grep -E '^(ok|not ok|#) ' >> "$results"
  # Wall time of each script (guest clock), for the CI log.
  echo "time ${t%.sh}: $(( $(date +%s) - t0 )) s" >> "$results"
done
# For the report: the exposure score of the unit as shipped.
score=$(systemd-analyze security offdisk-dock@x.service 2>/dev/null | sed -n 's/.*Overall exposure level for offdisk-dock@x.service: *//p')
echo "# systemd-analyze security offdisk-dock@x.service: ${score:-unavailable}" >> "$results"
systemd-analyze security --no-pager offdisk-dock@x.service > "$OUT/security.txt" 2>&1
finish
