# Hot-plug: the udev rule tags a LUKS device with SYSTEMD_WANTS=offdisk-dock@<kernel>.service
# on a real add event; what the unit's ExecStart runs then unlocks (answered by a scripted
# systemd password agent), backs up, verifies and closes a registered disk; leaves an
# unregistered one untouched; refuses one whose identity does not match; re-asks a wrong
# passphrase and gives up after 3; runs once when docked twice.
# systemd is not PID 1 in the VM, so this script plays systemd's part: it reads
# SYSTEMD_WANTS from udev's database and runs the unit file's ExecStart for that instance.
. "$VMDIR/lib.sh"
REPO=$(cd "$VMDIR/../.." && pwd)
HP="$WORK/hp"; mkdir -p "$HP/src/sub" "$HP/etc" m
echo hello > "$HP/src/a.txt"; head -c 200000 /dev/urandom > "$HP/src/sub/b.bin"
P=(--config "$HP/etc/config.toml" --host-key "$HP/etc/host.key" --run-dir "$HP/run" --state "$HP/state.json")
ASKDIR=/run/systemd/ask-password; mkdir -p "$ASKDIR"
AGENT="python3 $VMDIR/hotplug/ask-agent.py"

mkdir -p /run/udev/rules.d
cp "$REPO/contrib/99-offdisk.rules" /run/udev/rules.d/
udevadm control --reload

exec_start=$(sed -n 's/^ExecStart=//p' "$REPO/contrib/offdisk-dock@.service")
# run_unit INSTANCE: what systemd runs for offdisk-dock@INSTANCE.service (test paths added).
run_unit() { local cmd=${exec_start//%i/$1}; cmd=${cmd/\/usr\/bin\/offdisk/$OFFDISK}; $cmd "${P[@]}" --timeout 60; }
# attach IMG: attaches a loop device (a real udev add event) while `udevadm monitor` records
# the events udev sends on to systemd; sets $loop.
attach() {
  udevadm monitor --udev --property --subsystem-match=block > "$HP/monitor.log" 2>/dev/null & local mpid=$!
  # Listening once it printed its banner (a fixed sleep loses the event on a loaded host).
  for i in $(seq 100); do grep -q '^UDEV' "$HP/monitor.log" 2>/dev/null && break; sleep 0.1; done
  loop=$(losetup -P -f --show "$1"); udevadm settle; sleep 0.5
  kill $mpid; wait $mpid 2>/dev/null
}
# wants_of /dev/NAME: SYSTEMD_WANTS of NAME's add event, as systemd received it.
wants_of() {
  awk -v dev="DEVNAME=$1" 'BEGIN { RS = "" } {
    n = split($0, l, "\n"); add = 0; hit = 0; w = ""
    for (i = 1; i <= n; i++) { if (l[i] == "ACTION=add") add = 1; if (l[i] == dev) hit = 1; if (l[i] ~ /^SYSTEMD_WANTS=/) w = substr(l[i], 15) }
    if (add && hit) print w }' "$HP/monitor.log"
}
instance_of() { echo "$1" | sed -n 's/.*offdisk-dock@\([^ ]*\)\.service.*/\1/p'; }
no_mapping() { ! dmsetup ls 2>/dev/null | grep -q "luks-$1"; }
gen_count() { ls "$1/generations" 2>/dev/null | grep -vc '^\.'; }

# --- a registered disk ----------------------------------------------------------------
img=$(new_image hp-reg 64)
"$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label HPDISK --no-register "$img" >/dev/null 2>&1
loop=$(losetup -P -f --show "$img"); udevadm settle
out=$("$OFFDISK" register "${loop}p1" --source "$HP/src" --passphrase-file "$PW" --mount-point "$HP/mnt" "${P[@]}" 2>&1); rc=$?
expect_eq hotplug-register-exit "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out"
grep -q 'identity = ' "$HP/etc/config.toml" && ok hotplug-register-config || notok hotplug-register-config "$(cat "$HP/etc/config.toml")"
uuid=$(cryptsetup luksUUID "${loop}p1")
no_mapping "$uuid" && ok hotplug-register-closes || notok hotplug-register-closes "$(dmsetup ls)"
losetup -d "$loop"; udevadm settle

printf '+correct horse\n' > "$HP/ans1"
$AGENT "$ASKDIR" "$HP/ans1" "$HP/agent1.log" & apid=$!
attach "$img"   # the real udev add event
dev=$(basename "$loop")p1
wants=$(wants_of "/dev/$dev")
case "$wants" in *"offdisk-dock@$dev.service"*) ok hotplug-udev-wants-unit ;; *) notok hotplug-udev-wants-unit "SYSTEMD_WANTS='$wants'" ;; esac
awk 'BEGIN { RS = "" } /ACTION=add/ && /DEVNAME=\/dev\/'"$dev"'\n/' "$HP/monitor.log" | grep -q '^TAGS=.*:systemd:' && ok hotplug-udev-systemd-tag || notok hotplug-udev-systemd-tag "no systemd tag"
# Unregistered or not, only LUKS devices get the unit: the whole loop disk (GPT) does not.
[ -z "$(wants_of "$loop")" ] && ok hotplug-udev-only-luks || notok hotplug-udev-only-luks "$(wants_of "$loop")"
inst=$(instance_of "$wants")
out=$(run_unit "$inst" 2>&1); rc=$?
kill $apid 2>/dev/null; wait $apid 2>/dev/null
expect_eq hotplug-dock-exit "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | head -5
case "$out" in *"safe to unplug"*) ok hotplug-dock-reports-safe ;; *) notok hotplug-dock-reports-safe "$out" ;; esac
expect_eq hotplug-dock-asked-once "$(grep -c '^offdisk-dock:' "$HP/agent1.log" 2>/dev/null)" 1
grep -q "HPDISK" "$HP/agent1.log" && ok hotplug-ask-names-disk || notok hotplug-ask-names-disk "$(cat "$HP/agent1.log")"
expect_eq hotplug-ask-file-removed "$(ls "$ASKDIR" | grep -c '^ask\.')" 0
no_mapping "$uuid" && ok hotplug-dock-closed || notok hotplug-dock-closed "$(dmsetup ls)"
findmnt "$HP/mnt" >/dev/null && notok hotplug-dock-unmounted "still mounted" || ok hotplug-dock-unmounted
grep -q "\"last_success\": [0-9]" "$HP/state.json" && ok hotplug-dock-state || notok hotplug-dock-state "$(cat "$HP/state.json")"
if cryptsetup open -d "$PW" "/dev/$dev" hpchk 2>/dev/null; then
  mount -o ro /dev/mapper/hpchk m
  expect_eq hotplug-new-generation "$(gen_count m)" 1
  expect_eq hotplug-generation-content "$(cat m/generations/*/tree"$HP"/src/a.txt 2>&1)" hello
  ls m/.offdisk/identity/*.json >/dev/null 2>&1 && ok hotplug-identity-on-disk || notok hotplug-identity-on-disk "$(ls -R m/.offdisk)"
  umount m; cryptsetup close hpchk
else
  notok hotplug-new-generation "cannot open the disk to look"
fi

# --- docked twice while the first waits; wrong passphrase 3 times ------------------------
printf '+wrong one\n+wrong two\n+wrong three\n+correct horse\n' > "$HP/ans2"
$AGENT "$ASKDIR" "$HP/ans2" "$HP/agent2.log" 2 & apid=$!
run_unit "$inst" > "$HP/dock2.out" 2>&1 & d1=$!
for i in $(seq 100); do ls "$ASKDIR" | grep -q '^ask\.' && break; sleep 0.2; done
out=$(run_unit "$inst" 2>&1); rc=$?
expect_eq hotplug-second-dock-exit "$rc" 0
case "$out" in *"already running"*) ok hotplug-second-dock-steps-aside ;; *) notok hotplug-second-dock-steps-aside "$out" ;; esac
wait $d1; rc=$?
kill $apid 2>/dev/null; wait $apid 2>/dev/null
expect_eq hotplug-wrong-passphrase-exit "$rc" 2
expect_eq hotplug-wrong-passphrase-asked-3 "$(grep -c '^offdisk-dock:' "$HP/agent2.log")" 3
expect_eq hotplug-wrong-passphrase-reasked "$(grep -c 'Wrong passphrase' "$HP/agent2.log")" 2
grep -q "wrong passphrase" "$HP/dock2.out" && ok hotplug-wrong-passphrase-says-so || notok hotplug-wrong-passphrase-says-so "$(tail -3 "$HP/dock2.out")"
no_mapping "$uuid" && ok hotplug-wrong-passphrase-nothing-open || notok hotplug-wrong-passphrase-nothing-open "$(dmsetup ls)"
expect_eq hotplug-wrong-passphrase-ask-removed "$(ls "$ASKDIR" | grep -c '^ask\.')" 0

# --- the console agent answers instead (a machine without a desktop) -------------------
echo 'correct horse' | "$OFFDISK" agent --console --once > "$HP/console.out" 2>&1 & cpid=$!
out=$(run_unit "$inst" 2>&1); rc=$?
expect_eq hotplug-console-agent-dock-exit "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -3
wait $cpid; expect_eq hotplug-console-agent-exit "$?" 0
if cryptsetup open -d "$PW" "/dev/$dev" hpchk 2>/dev/null; then
  mount -o ro /dev/mapper/hpchk m
  expect_eq hotplug-console-agent-second-generation "$(gen_count m)" 2
  umount m; cryptsetup close hpchk
fi
losetup -d "$loop"; udevadm settle

# --- an unregistered LUKS disk ----------------------------------------------------------
img2=$(new_image hp-unreg 64)
"$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label STRANGER --no-register "$img2" >/dev/null 2>&1
sum_before=$(sha256sum < "$img2")
printf '+correct horse\n' > "$HP/ans3"
$AGENT "$ASKDIR" "$HP/ans3" "$HP/agent3.log" & apid=$!
attach "$img2"; loop2=$loop
dev2=$(basename "$loop2")p1
wants=$(wants_of "/dev/$dev2")
out=$(run_unit "$(instance_of "$wants")" 2>&1); rc=$?
sleep 0.5; kill $apid 2>/dev/null; wait $apid 2>/dev/null
expect_eq hotplug-unregistered-exit "$rc" 0
case "$out" in *"not a registered backup disk"*) ok hotplug-unregistered-ignored ;; *) notok hotplug-unregistered-ignored "$out" ;; esac
expect_eq hotplug-unregistered-not-asked "$(cat "$HP/agent3.log" 2>/dev/null | wc -l)" 0
losetup -d "$loop2"; udevadm settle
expect_eq hotplug-unregistered-untouched "$(sha256sum < "$img2")" "$sum_before"

# --- same LUKS header, other contents (a clone with a new filesystem) --------------------
clone="$WORK/hp-clone.img"; cp --sparse=always "$img" "$clone"
attach "$clone"; loop3=$loop
dev3=$(basename "$loop3")p1
wants3=$(wants_of "/dev/$dev3")
cryptsetup open -d "$PW" "/dev/$dev3" hpclone && mkfs.ext4 -q /dev/mapper/hpclone && cryptsetup close hpclone
printf '+correct horse\n' > "$HP/ans4"
$AGENT "$ASKDIR" "$HP/ans4" "$HP/agent4.log" & apid=$!
out=$(run_unit "$(instance_of "$wants3")" 2>&1); rc=$?
kill $apid 2>/dev/null; wait $apid 2>/dev/null
expect_eq hotplug-identity-mismatch-exit "$rc" 4
case "$out" in *"not the registered disk"*) ok hotplug-identity-mismatch-says-so ;; *) notok hotplug-identity-mismatch-says-so "$out" ;; esac
no_mapping "$uuid" && ok hotplug-identity-mismatch-closed || notok hotplug-identity-mismatch-closed "$(dmsetup ls)"
if cryptsetup open -d "$PW" "/dev/$dev3" hpchk 2>/dev/null; then
  mount -o ro /dev/mapper/hpchk m
  expect_eq hotplug-identity-mismatch-no-backup "$(gen_count m)" 0
  umount m; cryptsetup close hpchk
fi
losetup -d "$loop3"; udevadm settle
rm -f /run/udev/rules.d/99-offdisk.rules; udevadm control --reload
