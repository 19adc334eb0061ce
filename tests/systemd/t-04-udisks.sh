# udisks and the desktop: with udisks2 running, a registered disk is left to offdisk (udisks'
# HintAuto false on the LUKS partition and on its cleartext device: no automount, no unlock
# prompt, so the desktop prompts once, offdisk's), while an unregistered LUKS disk keeps the
# desktop's normal behaviour (HintAuto true); neither is hidden. offdisk's mapping of the
# partition is what udisks shows as its cleartext device (as for a cryptsetup-made mapping).
. /mnt/repo/tests/systemd/lib.sh
udisksctl status >/dev/null 2>&1 || systemctl start udisks2.service
d=$(new_disk ud 64 ODUD1 OFFSITE5) || notok sysd-udisks-init "could not make the disk"
p=$(part "$d")
uuid=$(cryptsetup luksUUID "$p")
hint() { udisksctl info -b "$1" 2>/dev/null | sed -n "s/^ *$2: *//p"; }
auto_is() { [ "$(hint "$1" HintAuto)" = "$2" ]; }
cleartext() { udisksctl info -b "$p" 2>/dev/null | sed -n "s/^ *CleartextDevice: *//p" | tr -d "'"; }
mapped() { [ -n "$(cleartext)" ] && [ "$(cleartext)" != / ]; }
echo "# udisks unregistered: $(udisksctl info -b "$p" | grep -E 'HintAuto|HintIgnore' | tr -s ' ' | tr '\n' ' ')"
expect_eq sysd-udisks-unregistered-auto "$(hint "$p" HintAuto)" true

mkdir -p /srv/ud; echo x > /srv/ud/x
out=$(offdisk register "$p" --source /srv/ud --passphrase-file "$PW" 2>&1) || notok sysd-udisks-register "$out"
rule=/etc/udev/rules.d/90-offdisk-$uuid.rules
[ -f "$rule" ] && ok sysd-udisks-rule-written || notok sysd-udisks-rule-written "no $rule: $out"
if wait_until 60 auto_is "$p" false; then ok sysd-udisks-registered-no-auto
else notok sysd-udisks-registered-no-auto "HintAuto $(hint "$p" HintAuto) after register: $out"; fi
expect_eq sysd-udisks-registered-shown "$(hint "$p" HintIgnore)" false
echo "# udisks registered: $(udisksctl info -b "$p" | grep -E 'HintAuto|HintIgnore' | tr -s ' ' | tr '\n' ' ')"

out=$(offdisk open "$p" --key-file "$PW" 2>&1) || notok sysd-udisks-open "$out"
if wait_until 120 mapped; then
  ok sysd-udisks-cleartext-device
  # The mapping's own node (/dev/dm-N), which `udisksctl info -b` knows it by.
  dm=$(readlink -f "/dev/mapper/luks-$uuid")
  echo "# udisks: CleartextDevice of $p is $(cleartext) ($dm)"
  expect_eq sysd-udisks-cleartext-no-auto "$(hint "$dm" HintAuto)" false
  expect_eq sysd-udisks-cleartext-shown "$(hint "$dm" HintIgnore)" false
else
  notok sysd-udisks-cleartext-device "CleartextDevice '$(cleartext)': $(udisksctl info -b "$p" 2>&1 | grep -E 'Cleartext|IdType')"
fi
offdisk close "$p" >/dev/null 2>&1 || offdisk close "luks-$uuid" >/dev/null 2>&1
udevadm settle
no_mapping && ok sysd-udisks-closed || notok sysd-udisks-closed "$(luks_mappings)"

# Unregistered again: the rule is gone and the desktop's normal behaviour is back.
out=$(offdisk unregister "$uuid" 2>&1) || notok sysd-udisks-unregister "$out"
[ ! -e "$rule" ] && ok sysd-udisks-rule-removed || notok sysd-udisks-rule-removed "$rule is still there: $out"
if wait_until 60 auto_is "$p" true; then ok sysd-udisks-unregistered-auto-again
else notok sysd-udisks-unregistered-auto-again "HintAuto $(hint "$p" HintAuto) after unregister: $out"; fi
unplug ud ODUD1
