# offdisk status / list show the disks, their LUKS identity and open/mounted state.
. "$VMDIR/lib.sh"

img=$(new_image t5 96)
"$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label LISTME --no-register "$img" >/dev/null 2>&1
"$OFFDISK" open --key-file "$PW" "$img" --mount >/dev/null
loop=$(losetup -j "$img" | cut -d: -f1)
uuid=$(cryptsetup luksUUID "${loop}p1")
json=$("$OFFDISK" list --json)
case "$json" in *"\"uuid\": \"$uuid\""*) ok list-json-has-uuid ;; *) notok list-json-has-uuid "$json" ;; esac
case "$json" in *"\"label\": \"LISTME\""*) ok list-json-has-label ;; *) notok list-json-has-label "no label" ;; esac
case "$json" in *"\"mapping\": \"luks-$uuid\""*) ok list-json-open ;; *) notok list-json-open "no mapping" ;; esac
case "$json" in *"/media/LISTME"*) ok list-json-mounted ;; *) notok list-json-mounted "no mount point" ;; esac
if echo "$json" | python3 -c 'import json,sys; json.load(sys.stdin)' 2>/dev/null; then ok list-json-valid; else notok list-json-valid "not JSON"; fi
st=$("$OFFDISK" status)
case "$st" in *"LISTME"*"open as /dev/mapper/luks-$uuid, mounted on /media/LISTME"*) ok status-shows-open-mounted ;; *) notok status-shows-open-mounted "$st" ;; esac
case "$st" in *"$img"*) ok status-shows-image ;; *) notok status-shows-image "$st" ;; esac
# A registered disk: status says it is present, open, mounted, and how current its ledger is.
printf '[[disk]]\nluks_uuid = "%s"\nlabel = "LISTME"\nsources = ["/etc"]\n' "$uuid" > "$WORK/c.toml"
mkdir -p "$WORK/ledger"
printf '{"format":1,"luks_uuid":"%s","last_refreshed":%d,"last_generation":"2026-11-30T120000Z"}' "$uuid" $(( $(date +%s) - 7200 )) > "$WORK/ledger/$uuid.json"
st=$(OFFDISK_LEDGER_DIR="$WORK/ledger" "$OFFDISK" status --config "$WORK/c.toml" 2>&1)
case "$st" in *"LISTME $uuid: present at ${loop}p1, open as /dev/mapper/luks-$uuid, mounted on /media/LISTME; refreshed 2 h ago (last generation 2026-11-30T120000Z)"*) ok status-registered-disk-freshness ;; *) notok status-registered-disk-freshness "$st" ;; esac
st=$(OFFDISK_LEDGER_DIR="$WORK/ledger" "$OFFDISK" status --config "$WORK/c.toml" --json 2>&1)
case "$st" in *'"known"'*"\"freshness\": \"refreshed 2 h ago\""*) ok status-json-known ;; *) notok status-json-known "$st" ;; esac
"$OFFDISK" close LISTME >/dev/null
st=$("$OFFDISK" status)
case "$st" in *"LISTME"*": closed"*|*"No LUKS disks present."*) ok status-after-close ;; *) notok status-after-close "$st" ;; esac
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$OFFDISK" list 2>&1); rc=$?
expect_eq list-works-without-root "$rc" 0
