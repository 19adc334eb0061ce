# udev readiness: the mapping `offdisk open` makes gets the same udev properties and links as
# the one `cryptsetup open` makes of the same partition under the same name (SYSTEMD_READY=1,
# ID_FS_*, DM_UDEV_PRIMARY_SOURCE_FLAG, /dev/disk/by-label/...), and they are complete when
# offdisk returns (it waits for udev through the dm cookie semaphore; no `udevadm settle` here).
# `offdisk close` returns only when udev has removed the mapping's links; no semaphore is left behind.
. "$VMDIR/lib.sh"

img=$(new_image udev 64)
"$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label UDEV1 --no-register "$img" >/dev/null 2>&1
loop=$(losetup -P -f --show "$img"); udevadm settle
part=${loop}p1
uuid=$(cryptsetup luksUUID "$part")
name=luks-$uuid
# Properties that name this one device instance (numbers, times) are left out of the comparison.
props() { udevadm info --query=property --name="/dev/mapper/$name" 2>&1 | grep -vE '^(DEVPATH|DEVNAME|MINOR|USEC_INITIALIZED|DISKSEQ|SEQNUM|DEVLINKS|TAGS|CURRENT_TAGS)=' | sort; }
links() { udevadm info --query=symlink --name="/dev/mapper/$name" 2>&1 | tr ' ' '\n' | sort; }
sems() { ipcs -s 2>/dev/null | grep -ci '^0x0d4d'; }
sems_before=$(sems)

cryptsetup open -d "$PW" "$part" "$name"
cs_props=$(props); cs_links=$(links)
cryptsetup close "$name"
udevadm settle

out=$("$OFFDISK" open --key-file "$PW" "$part" 2>&1); rc=$?
od_props=$(props); od_links=$(links)   # at once: offdisk has already waited for udev
label_link=no; [ "$(readlink -f /dev/disk/by-label/UDEV1)" == "$(readlink -f "/dev/mapper/$name")" ] && label_link=yes
expect_eq udev-open-exit "$rc" 0
[ "$od_props" == "$cs_props" ] && ok udev-properties-equal-cryptsetup || notok udev-properties-equal-cryptsetup "$(diff <(echo "$cs_props") <(echo "$od_props") | tr '\n' ' ')"
[ "$od_links" == "$cs_links" ] && ok udev-links-equal-cryptsetup || notok udev-links-equal-cryptsetup "$(diff <(echo "$cs_links") <(echo "$od_links") | tr '\n' ' ')"
case "$od_props" in *"SYSTEMD_READY=1"*) ok udev-systemd-ready ;; *) notok udev-systemd-ready "$od_props" ;; esac
case "$od_props" in *"ID_FS_LABEL=UDEV1"*"ID_FS_TYPE=ext4"*) ok udev-blkid-ran ;; *) notok udev-blkid-ran "$od_props" ;; esac
case "$od_props" in *"DM_UDEV_PRIMARY_SOURCE_FLAG=1"*) ok udev-primary-source ;; *) notok udev-primary-source "$od_props" ;; esac
case "$od_props" in *"DM_UDEV_DISABLE_OTHER_RULES_FLAG=1"*) notok udev-rules-not-disabled "$od_props" ;; *) ok udev-rules-not-disabled ;; esac
expect_eq udev-by-label-link-when-open-returns "$label_link" yes

out=$("$OFFDISK" close "$name" 2>&1); rc=$?
expect_eq udev-close-exit "$rc" 0
# (by-label/UDEV1 stays: the LUKS2 header carries the same label, so it points at the partition.)
gone=yes; { [ -e "/dev/mapper/$name" ] || [ -e "/dev/disk/by-id/dm-name-$name" ]; } && gone=no
expect_eq udev-links-gone-when-close-returns "$gone" yes
expect_eq udev-no-semaphore-left "$(sems)" "$sems_before"
losetup -d "$loop"
