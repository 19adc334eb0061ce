# Registering a disk that is attached starts no backup (offdisk-register(8)). `offdisk init`
# registers the disk it makes, and closing the whole disk after writing its partition table makes
# udev re-read it: the partition comes back, now with its LUKS header, and systemd starts the dock
# unit. That dock, and any other of the same attachment (here a partition rescan, as fdisk or
# parted cause; or the dock a plug-in started that reads the config only once the registration is
# in it), leaves the disk alone: it says so and exits 0, nothing is asked or opened. `offdisk dock
# NAME`, as register's output says, backs it up now; plugged in again, it docks as usual.
. /mnt/repo/tests/systemd/lib.sh
mkdir -p /srv/attached; echo "registered while attached" > /srv/attached/a.txt
# An agent that would answer: if a dock asked, it would go on and back up (and be counted).
printf '+correct horse\n+correct horse\n+correct horse\n+correct horse\n' > "$WORK/ans"
$AGENT "$ASKDIR" "$WORK/ans" "$WORK/agent.log" & apid=$!
asks() { cat "$WORK/agent.log" 2>/dev/null | grep -c '^offdisk-dock:'; }
# quiet UNIT: udev's queue is empty and UNIT is neither running nor waiting to start.
quiet() { udevadm settle; [ "$(systemctl show -p ActiveState --value "$1")" != active ] && [ "$(systemctl show -p ActiveState --value "$1")" != activating ] && [ -z "$(systemctl list-jobs --no-legend "$1" 2>/dev/null)" ]; }
# ran_and_quiet UNIT CURSOR: UNIT ran and ended since CURSOR, and nothing more is under way.
ran_and_quiet() { unit_ended "$2" "$1" && quiet "$1"; }
# left_alone TAG CURSOR: the dock unit ran for this attachment, said so, and asked nothing.
left_alone() {
  if wait_until 300 ran_and_quiet "$unit" "$2"; then
    local log; log=$(unit_log "$2" "$unit")
    echo "$log" | grep -q "registered while attached, so not backed up now" && ! echo "$log" | grep -q "asking for the passphrase" \
      && ok "sysd-attached-$1-no-dock" || notok "sysd-attached-$1-no-dock" "$(echo "$log" | tail -4 | tr '\n' '|')"
    echo "$log" | grep -q "Deactivated successfully" && ok "sysd-attached-$1-unit-ok" || notok "sysd-attached-$1-unit-ok" "$(echo "$log" | tail -3 | tr '\n' '|')"
  else
    notok "sysd-attached-$1-no-dock" "$unit did not run for the rescan: $(systemctl status "$unit" 2>&1 | tail -4 | tr '\n' '|')"
  fi
  expect_eq "sysd-attached-$1-not-asked" "$(asks)" 0
  expect_eq "sysd-attached-$1-no-ask-file" "$(ls "$ASKDIR" | grep -c '^ask\.')" 0
  no_mapping && ok "sysd-attached-$1-nothing-mapped" || notok "sysd-attached-$1-nothing-mapped" "$(luks_mappings)"
}

# --- init (which registers) on the attached disk ---------------------------------------------------
d=$(plug att 96 ODATT1) || notok sysd-attached-plug "could not plug the disk"
p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
c=$(cursor)
out=$(offdisk init --batch --key-file "$PW" "${FAST[@]}" --label OFFSITE7 --source /srv/attached "$d" 2>&1) \
  || notok sysd-attached-init "$(echo "$out" | tail -3)"
echo "$out" | grep -q "registering does not start a backup.*offdisk dock ${p#/dev/}" && ok sysd-attached-init-says-how \
  || notok sysd-attached-init-says-how "$(echo "$out" | tail -3 | tr '\n' '|')"
left_alone init "$c"

# --- register (again) while attached, then a partition rescan -----------------------------------------
offdisk unregister OFFSITE7 >/dev/null 2>&1 || notok sysd-attached-unregister "unregister failed"
c=$(cursor)
out=$(offdisk register "$p" --source /srv/attached --passphrase-file "$PW" 2>&1) || notok sysd-attached-register "$out"
echo "$out" | grep -q "registering does not start a backup.*offdisk dock ${p#/dev/}" && ok sysd-attached-register-says-how \
  || notok sysd-attached-register-says-how "$(echo "$out" | tail -3 | tr '\n' '|')"
blockdev --rereadpt "$d" || notok sysd-attached-rescan "blockdev --rereadpt $d failed"
left_alone register "$c"

# --- what register said: `offdisk dock NAME` backs it up now ---------------------------------------
out=$(offdisk dock "${p#/dev/}" 2>&1); rc=$?
expect_eq sysd-attached-by-hand-exit "$rc" 0
echo "$out" | grep -q 'closed, safe to unplug' && ok sysd-attached-by-hand-docks || notok sysd-attached-by-hand-docks "$(echo "$out" | tail -3 | tr '\n' '|')"
expect_eq sysd-attached-by-hand-asked "$(asks)" 1

# --- plugged in again: a new attachment, docked as usual ----------------------------------------------
unplug att ODATT1
c=$(cursor); d=$(plug att 96 ODATT1); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
if wait_until 600 unit_ended "$c" "$unit"; then
  unit_log "$c" "$unit" | grep -q 'closed, safe to unplug' && ok sysd-attached-replug-docks \
    || notok sysd-attached-replug-docks "$(unit_log "$c" "$unit" | tail -4 | tr '\n' '|')"
else
  notok sysd-attached-replug-docks "$unit never ended"
fi
expect_eq sysd-attached-replug-asked "$(asks)" 2
expect_eq sysd-attached-generations "$(generations_of "$p")" 2
kill $apid; wait $apid 2>/dev/null
unplug att ODATT1
