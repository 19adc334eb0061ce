# A real (virtio-scsi) disk: listed with its model and size, initialised after typing its label,
# opened by label, closed with --power-off, after which the kernel no longer has it.
. "$VMDIR/lib.sh"

disk=""
for s in /sys/block/sd*; do [ -e "$s" ] && disk=/dev/$(basename "$s") && break; done
if [ -z "$disk" ]; then notok scsi-disk-present "no /dev/sd* in the VM"; exit 0; fi
name=$(basename "$disk")
model=$(cat "/sys/block/$name/device/model" | sed 's/ *$//')

list=$("$OFFDISK" list)
case "$list" in *"$disk"*"$model"*) ok list-shows-disk-model ;; *) notok list-shows-disk-model "$list" ;; esac
case "$list" in *"$disk"*"serial OD-TEST-0001"*) ok list-shows-serial ;; *) notok list-shows-serial "$list" ;; esac
case "$list" in *"$disk"*"blank or unknown"*) ok list-shows-blank-disk ;; *) notok list-shows-blank-disk "$list" ;; esac

# Typing the wrong label cancels; nothing is written.
out=$(echo "WRONG" | "$OFFDISK" init --key-file "$PW" "${FAST_OD[@]}" --label REAL1 --no-register "$disk" 2>&1); rc=$?
[ "$rc" -ne 0 ] && ok init-wrong-confirmation-cancels || notok init-wrong-confirmation-cancels "exit 0"
case "$out" in *"167.8 MB"*"$model"*"OD-TEST-0001"*) ok init-shows-model-and-size ;; *) notok init-shows-model-and-size "$out" ;; esac
expect_eq init-cancel-writes-nothing "$(blkid -p -o value -s PTTYPE "$disk")" ""

# Typing the label goes ahead.
out=$(echo "REAL1" | "$OFFDISK" init --key-file "$PW" "${FAST_OD[@]}" --label REAL1 --no-register "$disk" 2>&1); rc=$?
expect_eq init-real-disk "$rc" 0
[ "$rc" -eq 0 ] || echo "# $out"
udevadm settle
check open-real-disk-by-label "$OFFDISK" open --key-file "$PW" REAL1 --mount
echo "on the real disk" > /media/REAL1/generations/f && sync
expect_eq read-back-real-disk "$(cat /media/REAL1/generations/f)" "on the real disk"
st=$("$OFFDISK" status --json)
case "$st" in *"\"model\": \"$model\""*"\"label\": \"REAL1\""*) ok status-json-model-label ;; *) notok status-json-model-label "$st" ;; esac
out=$("$OFFDISK" close REAL1 --power-off 2>&1); rc=$?
expect_eq close-power-off-exit "$rc" 0
case "$out" in *"Powered off $name"*"safe to unplug"*) ok close-power-off-says-safe ;; *) notok close-power-off-says-safe "$out" ;; esac
udevadm settle
[ -e "/sys/block/$name" ] && notok power-off-removed-disk "still present" || ok power-off-removed-disk

# Now the disk is gone: a clear "not found" with advice.
out=$("$OFFDISK" open --key-file "$PW" REAL1 2>&1); rc=$?
expect_eq vanished-disk-exit-4 "$rc" 4
case "$out" in *"offdisk list"*) ok vanished-disk-advice ;; *) notok vanished-disk-advice "$out" ;; esac
