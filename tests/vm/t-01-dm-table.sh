# The dm-crypt table, DM UUID and flags offdisk loads equal cryptsetup's for the same volume;
# cryptsetup recognises offdisk's mappings; no volume key stays in the keyring.
. "$VMDIR/lib.sh"

# compare NAME DEV [offdisk open options...]: open with cryptsetup, then offdisk, same name.
compare() {
  local n=$1 dev=$2; shift 2
  local ro=(); [ "${1:-}" = "--read-only" ] && ro=(--readonly)
  cryptsetup open "${ro[@]}" -d "$PW" "$dev" cmp || { notok "$n" "cryptsetup open failed"; return; }
  local want wuuid wattr
  want=$(table_of cmp); wuuid=$(dm_uuid_of cmp); wattr=$(dmsetup info -c --noheadings -o attr cmp)
  cryptsetup close cmp
  if ! "$OFFDISK" open --key-file "$PW" --name cmp "$@" "$dev" >/dev/null; then notok "$n" "offdisk open failed"; return; fi
  local got guuid gattr
  got=$(table_of cmp); guuid=$(dm_uuid_of cmp); gattr=$(dmsetup info -c --noheadings -o attr cmp)
  expect_eq "$n-table" "$got" "$want"
  expect_eq "$n-dm-uuid" "$guuid" "$wuuid"
  expect_eq "$n-attributes" "$gattr" "$wattr"
  if cryptsetup status cmp | grep -q "type:    LUKS"; then ok "$n-cryptsetup-status-recognises"; else notok "$n-cryptsetup-status-recognises" "$(cryptsetup status cmp)"; fi
  if grep -q "logon.*cryptsetup:" /proc/keys; then notok "$n-no-key-left-in-keyring" "$(grep logon /proc/keys)"; else ok "$n-no-key-left-in-keyring"; fi
  "$OFFDISK" close cmp >/dev/null || notok "$n-close" "offdisk close failed"
}

d1=$(new_loop t1a 64)
cryptsetup luksFormat -q --type luks2 "${FAST_CS[@]}" "$d1" "$PW"
compare luks2-xts "$d1"
compare luks2-xts-readonly "$d1" --read-only

d2=$(new_loop t1b 64)
cryptsetup luksFormat -q --type luks2 --sector-size 4096 "${FAST_CS[@]}" "$d2" "$PW"
compare luks2-4k-sectors "$d2"

d3=$(new_loop t1c 64)
cryptsetup luksFormat -q --type luks1 --cipher aes-cbc-essiv:sha256 --hash sha1 --key-size 256 \
  --pbkdf-force-iterations 1000 "$d3" "$PW"
compare luks1-cbc-essiv "$d3"

# The dm layer on its own (no LUKS code): the volume key from cryptsetup's dump.
key=$(cryptsetup luksDump -q --dump-volume-key -d "$PW" "$d1" | sed -n '/MK dump:/,$p' | sed 's/MK dump://' | tr -d ' \t\n')
uuid=$(cryptsetup luksUUID "$d1")
cryptsetup open -d "$PW" "$d1" cmp; want=$(table_of cmp); cryptsetup close cmp
echo "$key" | "$DM_TOOL" open cmp "$d1" luks2 "$uuid" aes-xts-plain64 64 16777216 512 >/dev/null
expect_eq dm-layer-table-from-dumped-key "$(table_of cmp)" "$want"
"$DM_TOOL" close cmp
expect_eq dm-layer-removed "$(mapping_count)" 0
