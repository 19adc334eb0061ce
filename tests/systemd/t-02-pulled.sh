# A disk pulled out in the middle of the copy (qemu device_del of the USB disk: a surprise
# removal): BindsTo= stops the unit, dock tears down within the unit's stop timeout (no SIGKILL),
# nothing stays mapped or mounted, and the next plug-in docks, completes, and every generation
# verifies.
. /mnt/repo/tests/systemd/lib.sh
mkdir -p /srv/big
for i in 1 2 3 4 5 6; do head -c 2000000 /dev/urandom > /srv/big/f$i.bin; done
d=$(new_disk pull 128 ODPULL1 OFFSITE3) || notok sysd-pull-init "could not make the disk"
p=$(part "$d")
offdisk register "$p" --source /srv/big --passphrase-file "$PW" >/dev/null 2>&1 || notok sysd-pull-register "register failed"
uuid=$(cryptsetup luksUUID "$p")
unplug pull ODPULL1

# Plugged in as a slow disk (1 MB/s) so the copy is still going when it is pulled.
printf '+correct horse\n+correct horse\n' > "$WORK/ans"; $AGENT "$ASKDIR" "$WORK/ans" "$WORK/agent.log" & apid=$!
c=$(cursor)
d=$(plug pull 128 ODPULL1 1000000); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
main_pid() { local x; x=$(systemctl show -p MainPID --value "$unit"); [ "${x:-0}" -gt 0 ] && echo "$x"; }
# copying: a file of the source is being written into the new generation (seen from inside the
# unit's mount namespace, where dock mounted the disk).
copying() {
  local pid m; pid=$(main_pid) || return 1
  m=$(nsenter -t "$pid" -m findmnt -rn -o TARGET -S "/dev/mapper/luks-$uuid" 2>/dev/null | head -n 1)
  [ -n "$m" ] && nsenter -t "$pid" -m find "$m/generations" -name 'f*.bin' 2>/dev/null | grep -q .
}
if wait_until 600 copying; then
  ok sysd-pull-copy-started
  unplug pull ODPULL1
  if wait_until 400 unit_ended "$c" "$unit"; then
    log=$(unit_log "$c" "$unit")
    # Stopped by systemd (BindsTo=), or ended by itself first: dock finds the disk gone when a
    # read fails, often before systemd's stop arrives; either way the pull ends the unit.
    echo "$log" | grep -Eq "^Stopp(ing|ed) offdisk-dock@|Deactivated successfully" && ok sysd-pull-unit-stopped || notok sysd-pull-unit-stopped "$(echo "$log" | tail -4)"
    echo "$log" | grep -Eq "timed out|SIGKILL|Killing process" && notok sysd-pull-within-stop-timeout "$(echo "$log" | grep -E 'timed out|SIGKILL|Killing' | head -2)" \
      || ok sysd-pull-within-stop-timeout
    echo "$log" | grep -q "stopped before the end" && echo "$log" | grep -q "the disk was removed; nothing lost" \
      && ok sysd-pull-dock-says-so || notok sysd-pull-dock-says-so "$(echo "$log" | tail -4)"
    # Handled cleanly (everything closed, exit 143): the unit is not left failed.
    echo "$log" | grep -q "Deactivated successfully" && ! echo "$log" | grep -q "Failed with result" \
      && ok sysd-pull-unit-not-failed || notok sysd-pull-unit-not-failed "$(echo "$log" | grep -E 'status=|result' | tail -3 | tr '\n' '|')"
    echo "# journal after the pull: $(echo "$log" | grep -v '^$' | tail -n 3 | tr '\n' '|')"
  else
    notok sysd-pull-unit-stopped "$unit still running after the pull: $(systemctl status "$unit" 2>&1 | tail -4)"
  fi
else
  notok sysd-pull-copy-started "the copy never started: $(unit_log "$c" "$unit" | tail -4)"
  unplug pull ODPULL1
fi
no_mapping && ok sysd-pull-nothing-mapped || notok sysd-pull-nothing-mapped "$(luks_mappings)"
grep -l "luks-$uuid" /proc/[0-9]*/mountinfo 2>/dev/null | grep -q . && notok sysd-pull-nothing-mounted "$(grep -h "luks-$uuid" /proc/[0-9]*/mountinfo | head -2)" \
  || ok sysd-pull-nothing-mounted

# Plugged in again (full speed): docks and completes; every generation verifies.
c=$(cursor)
d=$(plug pull 128 ODPULL1); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
if wait_until 600 unit_ended "$c" "$unit"; then
  log=$(unit_log "$c" "$unit")
  echo "$log" | grep -q 'closed, safe to unplug' && ok sysd-pull-next-dock-completes || notok sysd-pull-next-dock-completes "$(echo "$log" | tail -5)"
  echo "# journal of the next dock: $(echo "$log" | grep -E 'stale|left|safe to unplug|partial' | tr '\n' '|')"
else
  notok sysd-pull-next-dock-completes "$unit never ended"
fi
kill $apid; wait $apid 2>/dev/null
no_mapping && ok sysd-pull-next-dock-closed || notok sysd-pull-next-dock-closed "$(luks_mappings)"
n=$(generations_of "$p")
[ "$n" -ge 1 ] 2>/dev/null && ok sysd-pull-generation-made || notok sysd-pull-generation-made "generations: $n"
out=$(offdisk verify --from "$p" --key-file "$PW" 2>&1); rc=$?
expect_eq sysd-pull-generations-verify "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -3
unplug pull ODPULL1
