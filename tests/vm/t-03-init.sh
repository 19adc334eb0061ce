# offdisk init makes GPT + LUKS2 + ext4 that stock tools read, and registers the new disk
# (config entry + identity record) unless --no-register; refuses disks in use or not blank.
. "$VMDIR/lib.sh"

# Registration goes to a config and host key of the test's own.
CONF="$WORK/t3-config.toml"; HOSTKEY="$WORK/t3-host.key"
REG=(--config "$CONF" --host-key "$HOSTKEY")
mkdir -p "$WORK/t3-src"; rm -f "$CONF" "$HOSTKEY"
img=$(new_image t3 96)
out=$("$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label OFFSITE1 --source "$WORK/t3-src" "${REG[@]}" "$img" 2>&1); rc=$?
expect_eq init-image-exit "$rc" 0
[ "$rc" -eq 0 ] || echo "# $out"
udevadm settle
expect_eq init-image-detaches-loop "$(losetup -j "$img")" ""
loop=$(losetup -P -f --show "$img"); udevadm settle
pt=$(sfdisk --dump "$loop" 2>/dev/null)
case "$pt" in *"label: gpt"*) ok init-gpt ;; *) notok init-gpt "$pt" ;; esac
case "$pt" in *"start=        2048"*"type=CA7D7CCB-63ED-4C53-861C-1742536059CC"*) ok init-partition-luks-type-1mib ;; *) notok init-partition-luks-type-1mib "$pt" ;; esac
check init-gpt-verifies sfdisk --verify "$loop"
dump=$(cryptsetup luksDump "${loop}p1" 2>&1)
case "$dump" in *"Version:       	2"*) ok init-luks2 ;; *) notok init-luks2 "$dump" ;; esac
case "$dump" in *"Label:         	OFFSITE1"*) ok init-luks2-label ;; *) notok init-luks2-label "$(echo "$dump" | grep Label)" ;; esac
if cryptsetup open -d "$PW" "${loop}p1" ci; then
  ok init-cryptsetup-opens
  expect_eq init-blkid-ext4 "$(blkid -p -o value -s TYPE /dev/mapper/ci)" ext4
  expect_eq init-blkid-label "$(blkid -p -o value -s LABEL /dev/mapper/ci)" OFFSITE1
  mkdir -p m && mount /dev/mapper/ci m
  expect_eq init-layout "$(ls -A m | grep -v lost+found | LC_ALL=C sort | tr '\n' ' ')" ".offdisk generations "
  # Registered: the config names the disk by its LUKS UUID with the disk id of the identity
  # record now inside the filesystem.
  uuid=$(cryptsetup luksUUID "${loop}p1")
  conf=$(cat "$CONF" 2>&1)
  case "$conf" in *"luks_uuid = \"$uuid\""*) ok init-registers-disk ;; *) notok init-registers-disk "$conf" ;; esac
  case "$conf" in *"$WORK/t3-src"*) ok init-registers-sources ;; *) notok init-registers-sources "$conf" ;; esac
  disk_id=$(sed -n 's/^identity = "\(.*\)"$/\1/p' "$CONF")
  rec=$(cat m/.offdisk/identity/*.json 2>&1)
  [ -n "$disk_id" ] && case "$rec" in *"\"disk_id\": \"$disk_id\""*"\"luks_uuid\": \"$uuid\""*) true ;; *) false ;; esac \
    && ok init-writes-identity-record || notok init-writes-identity-record "id '$disk_id', record: $rec"
  echo "via cryptsetup" > m/generations/marker
  umount m; cryptsetup close ci
else
  notok init-cryptsetup-opens "cryptsetup open failed"
fi
losetup -d "$loop"; udevadm settle

# offdisk opens its own image (attaching a loop device), and closing detaches it again.
mkdir -p "$WORK/o3"
check init-offdisk-opens-image "$OFFDISK" open --key-file "$PW" --mount "$WORK/o3" "$img"
expect_eq init-offdisk-reads-cryptsetup-data "$(cat "$WORK/o3/generations/marker" 2>&1)" "via cryptsetup"
check init-offdisk-close-power-off "$OFFDISK" close --power-off "$img"
udevadm settle
expect_eq init-image-loop-gone-after-close "$(losetup -j "$img")" ""

# Not blank: refused without --force, and nothing changes.
loop=$(losetup -P -f --show "$img"); udevadm settle
uuid_before=$(cryptsetup luksUUID "${loop}p1")
out=$("$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label AGAIN --no-register "$loop" 2>&1); rc=$?
[ "$rc" -ne 0 ] && ok init-refuses-non-blank || notok init-refuses-non-blank "exit $rc"
case "$out" in *"LUKS"*"--force"*|*"GPT"*"--force"*) ok init-refusal-says-what-and-how ;; *) notok init-refusal-says-what-and-how "$out" ;; esac
expect_eq init-refusal-changes-nothing "$(cryptsetup luksUUID "${loop}p1")" "$uuid_before"

# Open (held by a mapping): refused even with --force.
cryptsetup open -d "$PW" "${loop}p1" held
out=$("$OFFDISK" init --batch --force --key-file "$PW" "${FAST_OD[@]}" --label AGAIN --no-register "$loop" 2>&1); rc=$?
expect_eq init-refuses-open-disk "$rc" 5
cryptsetup close held

# --force on the loop device (a block device path) re-initialises it; --no-register leaves
# the config alone.
conf_before=$(cat "$CONF" 2>&1)
check init-force-reinitialises "$OFFDISK" init --batch --force --key-file "$PW" "${FAST_OD[@]}" --label AGAIN --no-register "${REG[@]}" "$loop"
udevadm settle
expect_eq init-no-register-leaves-config "$(cat "$CONF" 2>&1)" "$conf_before"
# Without --source (and without --no-register) init refuses before touching the disk.
out=$("$OFFDISK" init --batch --force --key-file "$PW" "${FAST_OD[@]}" --label AGAIN "${REG[@]}" "$loop" 2>&1); rc=$?
expect_eq init-without-source-refused "$rc" 1
case "$out" in *"--source"*"--no-register"*) ok init-without-source-advice ;; *) notok init-without-source-advice "$out" ;; esac
uuid_after=$(cryptsetup luksUUID "${loop}p1" 2>/dev/null)
[ -n "$uuid_after" ] && [ "$uuid_after" != "$uuid_before" ] && ok init-force-new-uuid || notok init-force-new-uuid "$uuid_before -> $uuid_after"
out=$("$OFFDISK" init --batch --force --key-file "$PW" --label X --no-register "${loop}p1" 2>&1); rc=$?
[ "$rc" -ne 0 ] && ok init-refuses-partition || notok init-refuses-partition "exit $rc"
case "$out" in *"whole disk"*) ok init-partition-advice ;; *) notok init-partition-advice "$out" ;; esac
losetup -d "$loop"

# Mounted: refused.
d=$(new_loop t3m 64); mkfs.ext4 -q "$d"; mkdir -p m; mount "$d" m
out=$("$OFFDISK" init --batch --force --key-file "$PW" "${FAST_OD[@]}" --label X --no-register "$d" 2>&1); rc=$?
expect_eq init-refuses-mounted "$rc" 5
case "$out" in *"mounted"*) ok init-mounted-message ;; *) notok init-mounted-message "$out" ;; esac
umount m


# A failure half way (mkfs.ext4 fails after the GPT and LUKS2 header are written) rolls back
# what init wrote: the image is byte for byte as it was, and the error names the image.
img=$(new_image t3-rollback 64)
head -c 2M /dev/urandom | dd of="$img" conv=notrunc status=none
before=$(sha256sum < "$img")
mkdir -p "$WORK/t3-fail-bin"
printf '#!/bin/sh\necho "mkfs.ext4: simulated failure" >&2\nexit 1\n' > "$WORK/t3-fail-bin/mkfs.ext4"
chmod +x "$WORK/t3-fail-bin/mkfs.ext4"
out=$(PATH="$WORK/t3-fail-bin:$PATH" "$OFFDISK" init --batch --force --key-file "$PW" "${FAST_OD[@]}" --label ROLLBACK --no-register "$img" 2>&1); rc=$?
[ "$rc" -ne 0 ] && ok init-failure-exits-nonzero || notok init-failure-exits-nonzero "exit 0"
expect_eq init-failure-rolls-back "$(sha256sum < "$img")" "$before"
case "$out" in *"$img"*"rolled back"*) ok init-failure-names-image ;; *) notok init-failure-names-image "$out" ;; esac
udevadm settle
expect_eq init-failure-detaches-loop "$(losetup -j "$img")" ""
dmsetup ls 2>/dev/null | grep -q offdisk-init && notok init-failure-no-mapping "$(dmsetup ls)" || ok init-failure-no-mapping
