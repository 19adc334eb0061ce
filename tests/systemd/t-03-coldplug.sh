# Coldplug: a registered disk attached when the machine boots. udev's coldplug starts the unit
# during boot; the default (offdisk-dock(8), BOOT) is to dock once the system is up -- after
# multi-user.target (and graphical.target where that is the default), when password agents and
# sessions can answer -- not in early boot. Phase 1 makes and registers the disk and leaves it
# attached; host.py boots the VM again with it plugged in from power-on; phase 2 checks.
. /mnt/repo/tests/systemd/lib.sh
if [ "${PHASE:-1}" = 1 ]; then
  mkdir -p /srv/cold; echo "cold boot" > /srv/cold/a.txt
  d=$(new_disk cold 96 ODCOLD1 OFFSITE4) || notok sysd-coldplug-init "could not make the disk"
  # Registered while attached: no dock starts now (t-07 checks that), only at the next boot.
  out=$(offdisk register "$(part "$d")" --source /srv/cold --passphrase-file "$PW" 2>&1) || notok sysd-coldplug-register "$out"
  echo cold > /mnt/out/reboot; echo t-03-coldplug.sh > /mnt/out/after-boot
  exit 0
fi
printf '+correct horse\n' > "$WORK/ans"; $AGENT "$ASKDIR" "$WORK/ans" "$WORK/agent.log" & apid=$!
d=$(disk_of ODCOLD1); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
[ -n "$d" ] && ok sysd-coldplug-disk-present || notok sysd-coldplug-disk-present "$(lsblk -dno NAME,SERIAL)"
ended() { journalctl -b -q -u "$unit" -o cat | grep -Eq "Deactivated successfully|Failed with result"; }
if wait_until 600 ended; then
  log=$(journalctl -b -q -u "$unit" -o cat)
  echo "$log" | grep -q 'closed, safe to unplug' && ok sysd-coldplug-docks || notok sysd-coldplug-docks "$(echo "$log" | tail -5)"
else
  notok sysd-coldplug-docks "$unit never ran or never ended: $(systemctl status "$unit" 2>&1 | tail -5)"
fi
kill $apid; wait $apid 2>/dev/null
# Not in early boot: the unit left "inactive" only once multi-user.target was reached.
started=$(systemctl show -p InactiveExitTimestampMonotonic --value "$unit")
target=$(systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target)
[ "${started:-0}" -gt 0 ] && [ "${target:-0}" -gt 0 ] && [ "$started" -ge "$target" ] && ok sysd-coldplug-after-boot \
  || notok sysd-coldplug-after-boot "unit started at ${started} us, multi-user.target reached at ${target} us"
expect_eq sysd-coldplug-asked-once "$(grep -c '^offdisk-dock:' "$WORK/agent.log" 2>/dev/null)" 1
no_mapping && ok sysd-coldplug-closed || notok sysd-coldplug-closed "$(luks_mappings)"
expect_eq sysd-coldplug-generation "$(generations_of "$p")" 1
