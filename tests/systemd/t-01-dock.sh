# Docking on a real systemd machine: a disk plugged in (USB, hot-added through qemu's monitor)
# -> udev's rule -> systemd starts offdisk-dock@<name>.service exactly as shipped -> the passphrase
# is asked over systemd's ask-password protocol (answered by a scripted agent) -> a new generation
# that verifies -> the mapping is gone -> the journal has the summary. Unregistered LUKS disks and
# non-LUKS disks are left alone. Two registered disks at once dock side by side.
. /mnt/repo/tests/systemd/lib.sh
mkdir -p /srv/photos/sub
echo hello > /srv/photos/a.txt; head -c 300000 /dev/urandom > /srv/photos/sub/b.bin

# --- a non-LUKS disk: no unit at all ---------------------------------------------------------
d=$(plug plain 32 ODPLAIN1) && mkfs.ext4 -q -L PLAIN "$d" && unplug plain ODPLAIN1
c=$(cursor)
d=$(plug plain 32 ODPLAIN1)
expect_eq sysd-plain-no-wants "$(udevadm info -q property "$d" | grep -c '^SYSTEMD_WANTS=.*offdisk')" 0
n=$(journalctl -q --after-cursor="$c" -o cat | grep -c 'offdisk-dock@')
expect_eq sysd-plain-no-unit "$n" 0
no_mapping && ok sysd-plain-nothing-mapped || notok sysd-plain-nothing-mapped "$(luks_mappings)"
unplug plain ODPLAIN1

# --- an unregistered LUKS disk: the unit runs, exits 0, nothing opened, nothing asked ------------
d=$(new_disk reg 96 ODREG1 OFFSITE1) || notok sysd-init "could not make the disk"
unplug reg ODREG1
: > "$WORK/ans0"; $AGENT "$ASKDIR" "$WORK/ans0" "$WORK/agent0.log" & apid=$!
c=$(cursor)
d=$(plug reg 96 ODREG1); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
if wait_until 300 unit_ended "$c" "$unit"; then
  unit_log "$c" "$unit" | grep -q 'Deactivated successfully' && ok sysd-unregistered-exit-0 \
    || notok sysd-unregistered-exit-0 "$(unit_log "$c" "$unit" | tail -3)"
  unit_log "$c" "$unit" | grep -q 'not a registered backup disk; left alone' && ok sysd-unregistered-says-so \
    || notok sysd-unregistered-says-so "$(unit_log "$c" "$unit" | tail -3)"
else
  notok sysd-unregistered-exit-0 "$unit never ran or never ended: $(systemctl status "$unit" 2>&1 | tail -5)"
fi
kill $apid; wait $apid 2>/dev/null
expect_eq sysd-unregistered-not-asked "$(wc -l < "$WORK/agent0.log" 2>/dev/null || echo 0)" 0
no_mapping && ok sysd-unregistered-nothing-mapped || notok sysd-unregistered-nothing-mapped "$(luks_mappings)"

# --- register it; plug it in: one prompt, a verified generation, closed -------------------------
out=$(offdisk register "$p" --source /srv/photos --passphrase-file "$PW" 2>&1); rc=$?
expect_eq sysd-register "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out"
uuid=$(cryptsetup luksUUID "$p")
unplug reg ODREG1
printf '+correct horse\n' > "$WORK/ans1"; $AGENT "$ASKDIR" "$WORK/ans1" "$WORK/agent1.log" & apid=$!
c=$(cursor)
d=$(plug reg 96 ODREG1); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
if wait_until 600 unit_ended "$c" "$unit"; then
  log=$(unit_log "$c" "$unit")
  echo "$log" | grep -q 'Deactivated successfully' && ok sysd-dock-succeeds || notok sysd-dock-succeeds "$(echo "$log" | tail -5)"
  summary=$(echo "$log" | grep 'closed, safe to unplug')
  [ -n "$summary" ] && ok sysd-journal-summary || notok sysd-journal-summary "$(echo "$log" | tail -5)"
  echo "# journal: $summary"
  expect_eq sysd-unit-exit-status "$(systemctl show -p ExecMainStatus --value "$unit")" 0
else
  notok sysd-dock-succeeds "$unit never ended: $(systemctl status "$unit" 2>&1 | tail -5)"
fi
kill $apid; wait $apid 2>/dev/null
expect_eq sysd-dock-asked-once "$(grep -c '^offdisk-dock:' "$WORK/agent1.log" 2>/dev/null)" 1
expect_eq sysd-ask-file-removed "$(ls "$ASKDIR" | grep -c '^ask\.')" 0
no_mapping && ok sysd-dock-mapping-removed || notok sysd-dock-mapping-removed "$(luks_mappings)"
findmnt -rn -o SOURCE | grep -q '^/dev/mapper/luks-' && notok sysd-dock-unmounted "$(findmnt -rn | grep mapper)" || ok sysd-dock-unmounted
expect_eq sysd-dock-new-generation "$(generations_of "$p")" 1
out=$(offdisk verify --from "$p" --key-file "$PW" 2>&1); rc=$?
expect_eq sysd-generation-verifies "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -3

# --- two registered disks at once: two units, two generations ----------------------------------
unplug reg ODREG1
d2=$(new_disk reg2 96 ODREG2 OFFSITE2) || notok sysd-init-2 "could not make the second disk"
p2=$(part "$d2")
offdisk register "$p2" --source /srv/photos --passphrase-file "$PW" >/dev/null 2>&1 || notok sysd-register-2 "register failed"
unplug reg2 ODREG2
echo more > /srv/photos/c.txt
printf '+correct horse\n+correct horse\n' > "$WORK/ans2"; $AGENT "$ASKDIR" "$WORK/ans2" "$WORK/agent2.log" & apid=$!
c=$(cursor)
host plug reg 96 ODREG1 && host plug reg2 96 ODREG2
wait_until 180 has_disk ODREG1; wait_until 180 has_disk ODREG2; udevadm settle
pa=$(part "$(disk_of ODREG1)"); pb=$(part "$(disk_of ODREG2)")
ua=offdisk-dock@${pa#/dev/}.service; ub=offdisk-dock@${pb#/dev/}.service
wait_until 600 unit_ended "$c" "$ua"; wait_until 600 unit_ended "$c" "$ub"
for u in "$ua" "$ub"; do
  unit_log "$c" "$u" | grep -q 'closed, safe to unplug' && ok "sysd-two-disks-$u" || notok "sysd-two-disks-$u" "$(unit_log "$c" "$u" | tail -4)"
done
kill $apid; wait $apid 2>/dev/null
expect_eq sysd-two-disks-asked-twice "$(grep -c '^offdisk-dock:' "$WORK/agent2.log" 2>/dev/null)" 2
no_mapping && ok sysd-two-disks-closed || notok sysd-two-disks-closed "$(luks_mappings)"
expect_eq sysd-two-disks-first-has-2 "$(generations_of "$pa")" 2
expect_eq sysd-two-disks-second-has-1 "$(generations_of "$pb")" 1
unplug reg ODREG1; unplug reg2 ODREG2
