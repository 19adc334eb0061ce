# Stale mappings: a disk pulled out while open (a real SCSI remove through sysfs, then a rescan
# that brings it back with real udev events) leaves `luks-<uuid>` behind on the vanished device.
# `offdisk close` on the vanished disk (by mapping name or registered label), the next
# `offdisk open`, `offdisk status` and the next dock detect it, detach its mount and remove it,
# saying so in one line; one still in use is reported and left alone. A dock killed mid-backup
# then pulled docks again and completes.
. "$VMDIR/lib.sh"

# rescan: brings the disk back by scanning its own address (run.sh's scsi-hd: channel 0, target 0,
# LUN 0 of the virtio-scsi host). A wildcard scan ('- - -') probes every target of every host
# and took 9-11 s each time under TCG, a minute of this script.
rescan() {
  local h
  for h in /sys/class/scsi_host/host*; do
    [ "$(cat "$h/proc_name" 2>/dev/null)" = virtio_scsi ] && echo '0 0 0' > "$h/scan"
  done
  udevadm settle
}
scsi_disk() { for s in /sys/block/sd*; do [ -e "$s/device/delete" ] && { basename "$s"; return; }; done; }
pull() { echo 1 > "/sys/block/$1/device/delete"; udevadm settle; }
has_mapping() { dmsetup info "luks-$uuid" >/dev/null 2>&1; }
mounted() { findmnt "$1" >/dev/null 2>&1; }
# wait_for CMD...: up to ~60 s for a state, not a fixed sleep.
wait_for() { local i; for i in $(seq 600); do "$@" && return 0; sleep 0.1; done; return 1; }
# plug: the disk back (a rescan), its name in $d.
plug() { rescan; d=$(scsi_disk); wait_for test -b "/dev/${d}1"; }

[ -n "$(scsi_disk)" ] || rescan   # t-06 powers the disk off
d=$(scsi_disk)
if [ -z "$d" ]; then notok stale-scsi-disk "no SCSI disk in the VM"; exit 0; fi
ST="$WORK/st"; mkdir -p "$ST/src" "$ST/etc"
echo small > "$ST/src/a.txt"
P=(--config "$ST/etc/config.toml" --host-key "$ST/etc/host.key")
D=(--run-dir "$ST/run" --state "$ST/state.json")
out=$("$OFFDISK" init --batch --force --unlock-key-file "$PW" "${FAST_OD[@]}" --label STALE1 --source "$ST/src" --mount-point "$ST/mnt" "${P[@]}" "/dev/$d" 2>&1); rc=$?
expect_eq stale-init "$rc" 0; [ "$rc" -eq 0 ] || { echo "# $out"; exit 0; }
udevadm settle
uuid=$(cryptsetup luksUUID "/dev/${d}1")

# --- close after the disk vanished ------------------------------------------------------
"$OFFDISK" open --key-file "$PW" STALE1 --mount >/dev/null 2>&1
pull "$d"
has_mapping && mounted /media/STALE1 && ok stale-left-behind-by-pull || notok stale-left-behind-by-pull "$(dmsetup ls; findmnt /media/STALE1)"
out=$("$OFFDISK" close "luks-$uuid" 2>&1); rc=$?
expect_eq stale-close-vanished-exit "$rc" 0
case "$out" in *"removed stale mapping luks-$uuid ("*"gone"*"), lazily unmounted /media/STALE1"*) ok stale-close-says-so ;; *) notok stale-close-says-so "$out" ;; esac
has_mapping && notok stale-close-removed-mapping "$(dmsetup ls)" || ok stale-close-removed-mapping
mounted /media/STALE1 && notok stale-close-unmounted "still mounted" || ok stale-close-unmounted

# --- close by the registered label after the disk vanished ---------------------------------
# Nothing present carries the label any more: the registration (LUKS UUID) finds the mapping.
plug
"$OFFDISK" open --key-file "$PW" STALE1 --mount >/dev/null 2>&1
pull "$d"
out=$(OFFDISK_CONFIG="$ST/etc/config.toml" "$OFFDISK" close STALE1 2>&1); rc=$?
expect_eq stale-close-label-vanished-exit "$rc" 0
case "$out" in *"removed stale mapping luks-$uuid ("*"gone"*"), lazily unmounted /media/STALE1"*) ok stale-close-label-says-so ;; *) notok stale-close-label-says-so "$out" ;; esac
has_mapping && notok stale-close-label-removed-mapping "$(dmsetup ls)" || ok stale-close-label-removed-mapping
mounted /media/STALE1 && notok stale-close-label-unmounted "still mounted" || ok stale-close-label-unmounted

# --- the disk comes back: open cleans up and opens -----------------------------------------
plug
"$OFFDISK" open --key-file "$PW" STALE1 --mount >/dev/null 2>&1
echo kept > /media/STALE1/.offdisk/stale-probe; sync
pull "$d"; plug
out=$("$OFFDISK" open --key-file "$PW" STALE1 --mount 2>&1); rc=$?
expect_eq stale-open-after-replug-exit "$rc" 0
case "$out" in *"removed stale mapping luks-$uuid"*"Opened /dev/${d}1 as /dev/mapper/luks-$uuid, mounted on /media/STALE1"*) ok stale-open-cleans-then-opens ;; *) notok stale-open-cleans-then-opens "$out" ;; esac
expect_eq stale-open-reads-disk "$(cat /media/STALE1/.offdisk/stale-probe 2>&1)" kept
rm -f /media/STALE1/.offdisk/stale-probe
check stale-open-closes-normally "$OFFDISK" close STALE1

# --- still in use: reported, not torn down -------------------------------------------------
"$OFFDISK" open --key-file "$PW" STALE1 --mount >/dev/null 2>&1
( cd /media/STALE1 && exec sleep 600 ) & spid=$!
wait_for test "$(readlink /proc/$spid/cwd)" = /media/STALE1
pull "$d"
out=$("$OFFDISK" status 2>&1)
case "$out" in *"stale mapping luks-$uuid"*"still in use by sleep (pid $spid, working directory)"*) ok stale-in-use-reported ;; *) notok stale-in-use-reported "$out" ;; esac
has_mapping && mounted /media/STALE1 && ok stale-in-use-left-alone || notok stale-in-use-left-alone "torn down"
out=$("$OFFDISK" close "luks-$uuid" 2>&1); rc=$?
expect_eq stale-close-in-use-exit-5 "$rc" 5
case "$out" in *"still in use by sleep"*) ok stale-close-in-use-names-process ;; *) notok stale-close-in-use-names-process "$out" ;; esac
out=$("$OFFDISK" close --config "$ST/etc/config.toml" STALE1 2>&1); rc=$?
expect_eq stale-close-label-in-use-exit-5 "$rc" 5
case "$out" in *"still in use by sleep"*) ok stale-close-label-in-use-names-process ;; *) notok stale-close-label-in-use-names-process "$out" ;; esac
has_mapping && mounted /media/STALE1 && ok stale-close-label-in-use-left-alone || notok stale-close-label-in-use-left-alone "torn down"
kill "$spid"; wait "$spid" 2>/dev/null
out=$("$OFFDISK" status 2>&1)
case "$out" in *"removed stale mapping luks-$uuid"*) ok stale-status-cleans-once-free ;; *) notok stale-status-cleans-once-free "$out" ;; esac
has_mapping || mounted /media/STALE1 && notok stale-status-removed "$(dmsetup ls)" || ok stale-status-removed

# --- a dock killed mid-backup, the disk pulled and plugged back: the next dock completes ----
plug
head -c 48M /dev/urandom > "$ST/src/big.bin"
"$OFFDISK" dock "${d}1" "${P[@]}" "${D[@]}" --timeout 60 > "$ST/dock1.out" 2>&1 & dpid=$!
partial() { ls -a "$ST/mnt/generations" 2>/dev/null | grep -q '^\.partial-'; }
if wait_for partial; then ok stale-dock-copying; else notok stale-dock-copying "$(cat "$ST/dock1.out")"; fi
kill -9 "$dpid"; wait "$dpid" 2>/dev/null
pull "$d"; plug
has_mapping && ok stale-dock-left-mapping || notok stale-dock-left-mapping "$(dmsetup ls)"
out=$("$OFFDISK" dock "${d}1" "${P[@]}" "${D[@]}" --timeout 60 2>&1); rc=$?
expect_eq stale-redock-exit "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -5
case "$out" in *"removed stale mapping luks-$uuid"*"safe to unplug"*) ok stale-redock-cleans-and-completes ;; *) notok stale-redock-cleans-and-completes "$out" ;; esac
has_mapping && notok stale-redock-closed "$(dmsetup ls)" || ok stale-redock-closed
mkdir -p "$ST/m"
if cryptsetup open -d "$PW" --readonly "/dev/${d}1" stchk 2>/dev/null; then
  mount -o ro /dev/mapper/stchk "$ST/m"
  expect_eq stale-redock-one-generation "$(ls "$ST/m/generations" | wc -l)" 1
  expect_eq stale-redock-no-partial "$(ls -a "$ST/m/generations" | grep -c '^\.partial-')" 0
  cmp -s "$ST/m/generations/"*/tree"$ST/src/big.bin" "$ST/src/big.bin" && ok stale-redock-content || notok stale-redock-content "big.bin differs"
  umount "$ST/m"; cryptsetup close stchk
else
  notok stale-redock-one-generation "cannot open the disk to look"
fi

# --- pulled out mid-backup: systemd's BindsTo= stops the unit with SIGTERM -----------------
head -c 48M /dev/urandom > "$ST/src/big2.bin"   # new data: this backup copies, not only links
"$OFFDISK" dock "${d}1" "${P[@]}" "${D[@]}" --timeout 60 > "$ST/dock2.out" 2>&1 & dpid=$!
if wait_for partial; then ok stale-term-dock-copying; else notok stale-term-dock-copying "$(cat "$ST/dock2.out")"; fi
# systemd sends SIGTERM as the device goes; the pull follows at once, while dock tears down.
kill -TERM "$dpid"; pull "$d"
wait "$dpid"; rc=$?
expect_eq stale-term-exit-143 "$rc" 143
out=$(cat "$ST/dock2.out")
case "$out" in *"SIGTERM received: stopping"*"stopped before the end"*) ok stale-term-says-so ;; *) notok stale-term-says-so "$(echo "$out" | tail -5 | tr '\n' ' ')" ;; esac
has_mapping && notok stale-term-no-mapping-left "$(dmsetup ls)" || ok stale-term-no-mapping-left
mounted "$ST/mnt" && notok stale-term-not-mounted "$(findmnt "$ST/mnt")" || ok stale-term-not-mounted
plug
out=$("$OFFDISK" dock "${d}1" "${P[@]}" "${D[@]}" --timeout 60 2>&1); rc=$?
expect_eq stale-term-redock-exit "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -5
if cryptsetup open -d "$PW" --readonly "/dev/${d}1" stchk 2>/dev/null; then
  mount -o ro /dev/mapper/stchk "$ST/m"
  expect_eq stale-term-redock-generations "$(ls "$ST/m/generations" | wc -l)" 2
  expect_eq stale-term-redock-no-partial "$(ls -a "$ST/m/generations" | grep -c '^\.partial-')" 0
  umount "$ST/m"; cryptsetup close stchk
else
  notok stale-term-redock-generations "cannot open the disk to look"
fi
