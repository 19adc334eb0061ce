# Failures leave a clean state and say what to do: wrong key, busy close, not root, no device.
. "$VMDIR/lib.sh"

d=$(new_loop t4 64)
cryptsetup luksFormat -q --type luks2 "${FAST_CS[@]}" --label FAILDISK "$d" "$PW"
cryptsetup open -d "$PW" "$d" cs && mkfs.ext4 -q -L FAILFS /dev/mapper/cs && cryptsetup close cs

out=$("$OFFDISK" open --key-file "$WORK/badpw" FAILDISK --mount 2>&1); rc=$?
expect_eq wrong-key-exit-2 "$rc" 2
expect_eq wrong-key-no-mapping "$(mapping_count)" 0
[ -e /media/FAILFS ] && notok wrong-key-no-mount-dir "exists" || ok wrong-key-no-mount-dir

img=$(new_image t4img 64)
cryptsetup luksFormat -q --type luks2 "${FAST_CS[@]}" "$img" "$PW"
"$OFFDISK" open --key-file "$WORK/badpw" "$img" >/dev/null 2>&1
expect_eq wrong-key-image-no-loop-left "$(losetup -j "$img")" ""

# Busy close: refuses, names the process, changes nothing.
mkdir -p "$WORK/b4"
"$OFFDISK" open --key-file "$PW" --mount "$WORK/b4" FAILDISK >/dev/null
(cd "$WORK/b4" && exec sleep 600) &
holder=$!
sleep 1
out=$("$OFFDISK" close FAILDISK 2>&1); rc=$?
expect_eq busy-close-exit-5 "$rc" 5
case "$out" in *"sleep (pid $holder"*) ok busy-close-names-process ;; *) notok busy-close-names-process "$out" ;; esac
findmnt "$WORK/b4" >/dev/null && ok busy-close-still-mounted || notok busy-close-still-mounted "unmounted"
expect_eq busy-close-still-mapped "$(mapping_count)" 1
kill "$holder"; wait "$holder" 2>/dev/null
check busy-close-then-succeeds "$OFFDISK" close FAILDISK
expect_eq busy-close-clean-afterwards "$(mapping_count)" 0

# Name clash: exit 5, nothing else created.
cryptsetup open -d "$PW" "$d" taken
out=$("$OFFDISK" open --key-file "$PW" --name taken "$img" 2>&1); rc=$?
[ "$rc" -eq 0 ] && notok name-clash-refused "opened" || ok name-clash-refused
cryptsetup close taken

# Not root.
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$OFFDISK" open --key-file "$PW" FAILDISK 2>&1); rc=$?
[ "$rc" -ne 0 ] && ok not-root-refused || notok not-root-refused "exit 0"
case "$out" in *root*) ok not-root-says-root ;; *) notok not-root-says-root "$out" ;; esac

# A device that is not there.
out=$("$OFFDISK" open --key-file "$PW" /dev/sdz9 2>&1); rc=$?
expect_eq vanished-exit-4 "$rc" 4
case "$out" in *"re-plug"*) ok vanished-says-what-to-do ;; *) notok vanished-says-what-to-do "$out" ;; esac

# Closing what is not open.
out=$("$OFFDISK" close NOSUCHDISK 2>&1); rc=$?
expect_eq close-unknown-exit-4 "$rc" 4

# An image opened by path closes by path, and its loop device goes away.
"$OFFDISK" open --key-file "$PW" "$img" >/dev/null
expect_eq image-open-one-mapping "$(mapping_count)" 1
check image-close-by-path "$OFFDISK" close "$img"
udevadm settle
expect_eq image-close-detaches-loop "$(losetup -j "$img")" ""

# No device-mapper in the kernel: a clear error that says which modules to load.
if modprobe -r dm_crypt dm_mod 2>/dev/null && [ ! -e /sys/module/dm_mod ]; then
  out=$("$OFFDISK" open --key-file "$PW" "$img" 2>&1); rc=$?
  expect_eq no-dm-exit-4 "$rc" 4
  case "$out" in *"device-mapper"*"modprobe"*) ok no-dm-says-what-to-do ;; *) notok no-dm-says-what-to-do "$out" ;; esac
  udevadm settle
  expect_eq no-dm-no-loop-left "$(losetup -j "$img")" ""
  modprobe -a dm_mod dm_crypt
else
  notok no-dm-setup "could not unload dm_mod in the VM"
fi
