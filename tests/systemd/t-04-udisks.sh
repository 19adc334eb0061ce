# udisks and the desktop: with udisks2 running, offdisk's mapping of a LUKS partition is what
# udisks shows as that partition's cleartext device (as for a cryptsetup-made mapping), so file
# managers show the unlocked disk instead of offering to unlock it again.
. /mnt/repo/tests/systemd/lib.sh
udisksctl status >/dev/null 2>&1 || systemctl start udisks2.service
d=$(new_disk ud 64 ODUD1 OFFSITE5) || notok sysd-udisks-init "could not make the disk"
p=$(part "$d")
cleartext() { udisksctl info -b "$p" 2>/dev/null | sed -n "s/^ *CleartextDevice: *//p" | tr -d "'"; }
mapped() { [ -n "$(cleartext)" ] && [ "$(cleartext)" != / ]; }
echo "# udisks before dock: $(udisksctl info -b "$p" | grep -E 'HintAuto|HintIgnore' | tr -s ' ' | tr '\n' ' ')"
out=$(offdisk open "$p" --key-file "$PW" 2>&1) || notok sysd-udisks-open "$out"
if wait_until 120 mapped; then
  ok sysd-udisks-cleartext-device
  dm=$(udisksctl info -p "$(cleartext | sed 's|.*/block_devices/||')" 2>/dev/null | sed -n "s/^ *PreferredDevice: *//p")
  echo "# udisks: CleartextDevice of $p is $(cleartext) ($dm)"
else
  notok sysd-udisks-cleartext-device "CleartextDevice '$(cleartext)': $(udisksctl info -b "$p" 2>&1 | grep -E 'Cleartext|IdType')"
fi
offdisk close "$p" >/dev/null 2>&1 || offdisk close "luks-$(cryptsetup luksUUID "$p")" >/dev/null 2>&1
udevadm settle
no_mapping && ok sysd-udisks-closed || notok sysd-udisks-closed "$(luks_mappings)"
unplug ud ODUD1
