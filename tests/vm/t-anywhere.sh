# Reading a backup disk anywhere (--from): disks made by `offdisk init` + `offdisk backup`
# and disks made without offdisk (cryptsetup luksFormat, mkfs.ext4 with features on and off,
# 512- and 4096-byte sectors, LUKS1 and LUKS2). For each, what the kernel's dm-crypt + ext4
# mount shows of the newest generation must equal, byte for byte and metadata for metadata,
# what `offdisk restore --from IMAGE` writes as the unprivileged user nobody (owners and
# set-id bits aside) and as root (everything). Verify and ls run as nobody too.
. "$VMDIR/lib.sh"
started=$(date +%s)

SNAP="python3 $VMDIR/anywhere-snap.py"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
chmod 644 "$PW"

# A source tree with what a restore must keep: ns mtimes, modes incl. setuid, xattrs, an
# ACL, hard links, short and long symlinks, a FIFO, a sparse file, an htree directory,
# names that are not UTF-8.
src="$WORK/ta-src"
rm -rf "$src"; mkdir -p "$src/dir/sub" "$src/big" "$src/empty"
printf 'hello\n' > "$src/plain.txt"
head -c 300000 /dev/urandom > "$src/dir/sub/random.bin"
printf 'x' > "$src/$(printf 'bad\377name')"
printf '#!/bin/sh\n' > "$src/setuid"; chmod 4750 "$src/setuid"
ln "$src/plain.txt" "$src/dir/hardlink"
ln -s ../plain.txt "$src/dir/symlink"
ln -s "$(printf 'long/%.0s' $(seq 1 30))" "$src/longlink"
mkfifo "$src/fifo"
truncate -s 8M "$src/sparse"; printf end >> "$src/sparse"
for i in $(seq 1 400); do printf '%s' "$i" > "$src/big/entry-with-a-longer-name-$i"; done
python3 -c "import os; os.setxattr('$src/plain.txt','user.comment',b'kept'); os.setxattr('$src/dir','user.d',b'1'); os.setxattr('$src/dir/sub/random.bin','user.big',b'7'*600)"
setfacl -m u:1234:r "$src/dir/sub/random.bin" 2>/dev/null || true
chown 1000:1000 "$src/dir/sub"; chown -h 99:98 "$src/dir/symlink"
touch -h -d '2021-03-04 05:06:07.123456789' "$src/plain.txt" "$src/dir/symlink" "$src/setuid"
touch -d '2019-01-02 03:04:05.987654321' "$src/dir/sub" "$src/empty"

# compare NAME IMAGE MOUNTED_GENERATION_TREE_SNAPSHOT_FILE GEN: restores as nobody and root.
compare() {
  local name=$1 img=$2 want=$3 gen=$4 dest="$WORK/ta-dest-$1"
  rm -rf "$dest" "$dest-root"; mkdir -p "$dest"; chown 65534:65534 "$dest"
  chmod 644 "$img"
  local out rc
  # The kernel's view holds the whole tree (so an empty restore cannot pass for a match).
  [ "$(wc -l < "$want")" -gt 400 ] && ok "$name-kernel-view-complete" || notok "$name-kernel-view-complete" "$(wc -l < "$want") entries"
  out=$("${NOBODY[@]}" "$OFFDISK" generations --from "$img" --key-file "$PW" 2>&1); rc=$?
  case "$out" in *"$gen"*) ok "$name-generations-as-nobody" ;; *) notok "$name-generations-as-nobody" "exit $rc: $out" ;; esac
  out=$("${NOBODY[@]}" "$OFFDISK" verify --from "$img" --key-file "$PW" 2>&1); rc=$?
  [ "$rc" -eq 0 ] && ok "$name-verify-as-nobody" || notok "$name-verify-as-nobody" "exit $rc: $out"
  out=$("${NOBODY[@]}" "$OFFDISK" ls --from "$img" --key-file "$PW" "$src/dir" 2>&1)
  case "$out" in *"$src/dir/symlink -> ../plain.txt"*) ok "$name-ls-as-nobody" ;; *) notok "$name-ls-as-nobody" "$out" ;; esac
  "${NOBODY[@]}" "$OFFDISK" restore --from "$img" --key-file "$PW" --generation "$gen" "$src" --to "$dest" >/dev/null 2>"$WORK/ta-restore.err"
  $SNAP "$dest$src" --no-owner --strip-setid > "$WORK/ta-got"
  local want_nobody="$WORK/ta-want-nobody"
  python3 -c "
for l in open('$want'):
    f = l.rstrip('\n').split(' ')
    f[2] = oct(int(f[2], 8) & ~0o6000); f[3] = '0'; f[4] = '0'
    print(' '.join(f))" > "$want_nobody"
  if cmp -s "$WORK/ta-got" "$want_nobody"; then ok "$name-restore-as-nobody-equals-kernel-mount"; else notok "$name-restore-as-nobody-equals-kernel-mount" "$(diff "$want_nobody" "$WORK/ta-got" | head -5; head -3 "$WORK/ta-restore.err")"; fi
  mkdir -p "$dest-root"
  "$OFFDISK" restore --from "$img" --key-file "$PW" --keep-setid --generation "$gen" "$src" --to "$dest-root" >/dev/null 2>"$WORK/ta-restore.err"
  $SNAP "$dest-root$src" > "$WORK/ta-got-root"
  if cmp -s "$WORK/ta-got-root" "$want"; then ok "$name-restore-as-root-equals-kernel-mount"; else notok "$name-restore-as-root-equals-kernel-mount" "$(diff "$want" "$WORK/ta-got-root" | head -5; head -3 "$WORK/ta-restore.err")"; fi
  rm -rf "$dest" "$dest-root"
}

# backup_and_snapshot MOUNT [TWICE]: one generation, or two (the second after a change, so
# files are shared between them); prints the newest generation's name; its tree's snapshot
# (the kernel's view) goes to $WORK/ta-want.
backup_and_snapshot() {
  local m=$1
  "$OFFDISK" backup --no-progress --target "$m" "$src" >/dev/null 2>>"$WORK/check.err" || return 1
  if [ -n "${2:-}" ]; then
    printf 'changed\n' > "$src/dir/changed.txt"
    "$OFFDISK" backup --no-progress --target "$m" "$src" >/dev/null 2>>"$WORK/check.err" || return 1
    rm -f "$src/dir/changed.txt"
  fi
  local gen
  gen=$(ls "$m/generations" | grep -v '^\.' | sort | tail -n 1)
  $SNAP "$m/generations/$gen/tree$src" > "$WORK/ta-want"
  echo "$gen"
}

# 1. A disk made by offdisk init, backed up by offdisk backup, closed by offdisk close.
img=$(new_image ta-init 200)
if "$OFFDISK" init --batch --key-file "$PW" "${FAST_OD[@]}" --label ANYWHERE --no-register "$img" >/dev/null 2>>"$WORK/check.err"; then
  mkdir -p "$WORK/ta-m"
  "$OFFDISK" open --key-file "$PW" --mount "$WORK/ta-m" "$img" >/dev/null 2>>"$WORK/check.err"
  gen=$(backup_and_snapshot "$WORK/ta-m" twice)
  "$OFFDISK" close "$img" >/dev/null 2>>"$WORK/check.err"
  udevadm settle
  if [ -n "$gen" ]; then compare init "$img" "$WORK/ta-want" "$gen"; else notok init-backup "backup failed"; fi
else
  notok init-disk "offdisk init failed"
fi

# 2. Disks made without offdisk: cryptsetup + mkfs.ext4 on the kernel's mapping.
# NAME LUKS CIPHER KEYBITS SECTOR MKFS-OPTIONS
while read -r name type cipher bits sector mkfs; do
  img=$(new_image "ta-$name" 120)
  opts=(--batch-mode --type "$type" --cipher "$cipher" --key-size "$bits" --pbkdf-force-iterations 1000)
  [ "$type" = luks2 ] && opts+=(--pbkdf pbkdf2 --sector-size "$sector")
  if ! cryptsetup luksFormat "${opts[@]}" --key-file "$PW" "$img" 2>>"$WORK/check.err" || ! cryptsetup open --key-file "$PW" "$img" "ta-$name" 2>>"$WORK/check.err"; then
    notok "$name-cryptsetup" "luksFormat/open failed"; continue
  fi
  # shellcheck disable=SC2086
  mkfs.ext4 -q -F $mkfs "/dev/mapper/ta-$name" >/dev/null 2>>"$WORK/check.err"
  mkdir -p "$WORK/ta-m-$name"
  mount "/dev/mapper/ta-$name" "$WORK/ta-m-$name"
  gen=$(backup_and_snapshot "$WORK/ta-m-$name")
  umount "$WORK/ta-m-$name"; cryptsetup close "ta-$name"
  if [ -n "$gen" ]; then compare "$name" "$img" "$WORK/ta-want" "$gen"; else notok "$name-backup" "backup failed"; fi
  rm -f "$img"
done <<'EOF'
luks1-essiv-inline luks1 aes-cbc-essiv:sha256 256 512 -b 1024 -O ^metadata_csum,^64bit,inline_data
luks2-xts-4k luks2 aes-xts-plain64 512 4096 -b 4096
luks2-xts256-ext3 luks2 aes-xts-plain64 256 512 -O ^extents,^64bit,^metadata_csum,^flex_bg,^huge_file
EOF
echo "# t-anywhere.sh took $(( $(date +%s) - started )) s"
