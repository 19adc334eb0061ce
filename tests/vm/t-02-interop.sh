# Disks made by cryptsetup open, mount, read and close with offdisk; data written through one
# tool reads back through the other.
. "$VMDIR/lib.sh"

# LUKS2, found by its LUKS label, default name and mount point.
d=$(new_loop t2a 64)
cryptsetup luksFormat -q --type luks2 "${FAST_CS[@]}" --label CSDISK "$d" "$PW"
uuid=$(cryptsetup luksUUID "$d")
cryptsetup open -d "$PW" "$d" cs && mkfs.ext4 -q -L CSFS /dev/mapper/cs
mkdir -p m && mount /dev/mapper/cs m && echo "from cryptsetup" > m/file && umount m && cryptsetup close cs

out=$("$OFFDISK" open --key-file "$PW" CSDISK --mount 2>&1)
check luks2-open-by-label-default-name dmsetup info "luks-$uuid"
expect_eq luks2-default-mount-point "$(findmnt -n -o TARGET "/dev/mapper/luks-$uuid")" /media/CSFS
opts=$(findmnt -n -o OPTIONS /media/CSFS)
case ",$opts," in *,nosuid,*nodev,*|*,nodev,*nosuid,*) ok luks2-mounted-nosuid-nodev ;; *) notok luks2-mounted-nosuid-nodev "$opts" ;; esac
expect_eq luks2-reads-cryptsetup-data "$(cat /media/CSFS/file 2>&1)" "from cryptsetup"
echo "from offdisk" > /media/CSFS/new
out=$("$OFFDISK" close CSDISK 2>&1); rc=$?
expect_eq luks2-close-exit "$rc" 0
case "$out" in *"safe to unplug"*) ok luks2-close-says-safe ;; *) notok luks2-close-says-safe "$out" ;; esac
expect_eq luks2-close-removed-mapping "$(mapping_count)" 0
[ -e /media/CSFS ] && notok luks2-close-removed-mount-dir "still there" || ok luks2-close-removed-mount-dir
cryptsetup open -d "$PW" "$d" cs && mount /dev/mapper/cs m
expect_eq luks2-cryptsetup-reads-offdisk-data "$(cat m/new 2>&1)" "from offdisk"
umount m; cryptsetup close cs

# LUKS1 aes-cbc-essiv:sha256 / sha1, found by UUID, explicit mount point, then read-only.
d=$(new_loop t2b 64)
cryptsetup luksFormat -q --type luks1 --cipher aes-cbc-essiv:sha256 --hash sha1 --key-size 256 \
  --pbkdf-force-iterations 1000 "$d" "$PW"
uuid=$(cryptsetup luksUUID "$d")
cryptsetup open -d "$PW" "$d" cs && mkfs.ext4 -q -L L1FS /dev/mapper/cs
mount /dev/mapper/cs m && echo "luks1 data" > m/file && umount m && cryptsetup close cs
mkdir -p "$WORK/l1"
check luks1-open-by-uuid "$OFFDISK" open --key-file "$PW" "$uuid" --mount "$WORK/l1"
expect_eq luks1-reads-cryptsetup-data "$(cat "$WORK/l1/file" 2>&1)" "luks1 data"
echo "luks1 from offdisk" > "$WORK/l1/new"
check luks1-close-by-mount-point "$OFFDISK" close "$WORK/l1"
cryptsetup open -d "$PW" "$d" cs && mount /dev/mapper/cs m
expect_eq luks1-cryptsetup-reads-offdisk-data "$(cat m/new 2>&1)" "luks1 from offdisk"
umount m; cryptsetup close cs

check luks1-open-read-only "$OFFDISK" open --key-file "$PW" --read-only --mount "$WORK/l1" "$d"
if touch "$WORK/l1/x" 2>/dev/null; then notok luks1-read-only-refuses-writes "write succeeded"; else ok luks1-read-only-refuses-writes; fi
name=$(dmsetup ls | awk '{print $1}' | head -n1)
check luks1-close-by-name "$OFFDISK" close "$name"

# Already open: open again just reports it (and mounts when asked).
d=$(new_loop t2c 64)
cryptsetup luksFormat -q --type luks2 "${FAST_CS[@]}" "$d" "$PW"
cryptsetup open -d "$PW" "$d" cs && mkfs.ext4 -q /dev/mapper/cs
out=$("$OFFDISK" open --key-file "$PW" "$d" 2>&1)
case "$out" in *"already open as /dev/mapper/cs"*) ok open-twice-reports-existing ;; *) notok open-twice-reports-existing "$out" ;; esac
check close-cryptsetup-mapping-by-device "$OFFDISK" close "$d"
expect_eq close-cryptsetup-mapping-removed "$(mapping_count)" 0
