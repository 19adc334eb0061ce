# Inside the VM (run by run.sh): runs the scenario on a disk under dm-log-writes, a mark
# before and after each step, and writes to $OUT what each step said it did (the oracle).
# The disk and the log device are virtio disks backed by host files (serials PC-DISK,
# PC-LOG), so the host replays the log natively once the VM is gone.
set -u
PCDIR=$(cd "$(dirname "$0")" && pwd)
. "$PCDIR/common.sh"
ok() { echo "ok $1"; }
notok() { echo "not ok $1: $2"; }
modprobe -a loop dm_mod dm_crypt dm_log_writes sd_mod virtio_scsi 2>/dev/null
udevadm settle
W=/tmp/powercut
mkdir -p "$W" && mount -t tmpfs -o mode=700 tmpfs "$W"
mkdir -p "$ORACLE" "$KEYS" "$OUT/etc" "$W/m" "$W/run"
printf 'correct horse' > "$KEYS/A"; printf 'battery staple' > "$KEYS/B"; printf 'tr0ub4dor&3' > "$KEYS/C"
cp "$KEYS/A" "$OUT/etc/unlock.key"
SRC=$W/src
t=$(date +%s); mkdir -p "$SRC" && tar -xf "$PC_TREE" -C "$SRC"; echo "# unpacked the source tree in $(( $(date +%s) - t )) s"

by_serial() { lsblk -ndo NAME,SERIAL | awk -v s="$1" '$2 == s { print "/dev/" $1 }'; }
base=$(by_serial PC-DISK); logdev=$(by_serial PC-LOG)
[ -b "$base" ] && [ -b "$logdev" ] || { notok powercut-disks "no PC-DISK/PC-LOG disks: $(lsblk -ndo NAME,SERIAL | tr '\n' ' ')"; exit 1; }
# image disk → log-writes (every write, with its flush/FUA flags, copied to the log device)
# → a loop device with partitions: what offdisk sees as the whole disk (direct I/O, so its
# writes and flushes reach log-writes as they are issued).
t0=$(date +%s)
dmsetup create pc-log --table "0 $(blockdev --getsz "$base") log-writes $base $logdev"
DISK=$(losetup -P --direct-io=on -f --show /dev/mapper/pc-log); udevadm settle
PART=${DISK}p1
mark() { dmsetup message pc-log 0 mark "$1"; }

# live_gens STEP MOUNT: the complete generations as offdisk lists them on the mounted disk,
# with their manifests' hashes: what the step said it made.
live_gens() {
  for g in $("$OFFDISK" generations --target "$2" --json | jq -r '.[].name'); do
    echo "$g $(b3sum --no-names "$2/generations/$g/manifest.b3")"
  done > "$ORACLE/$1.gens"
}
step_name=""
# step NAME KEYS_AFTER COMMAND...: one user action between marks. KEYS_AFTER: the
# passphrases that must open the disk afterwards. A step that changes no generations
# inherits the list (a backup step writes its own).
step() {
  local name=$1 keys=$2 prev=${step_name:-}; shift 2
  step_name=$name
  mark "pre-$name"
  local t=$(date +%s)
  if "$@" > "$OUT/step-$name.log" 2>&1; then ok "powercut-step-$name"; else notok "powercut-step-$name" "$(tail -n 3 "$OUT/step-$name.log" | tr '\n' ' ')"; fi
  mark "post-$name"
  echo "# step $name took $(( $(date +%s) - t )) s"
  echo "$name" >> "$ORACLE/steps"
  echo "$keys" > "$ORACLE/$name.keys"
  if [ ! -f "$ORACLE/$name.gens" ]; then
    if [ -n "$prev" ]; then cp "$ORACLE/$prev.gens" "$ORACLE/$name.gens"; else : > "$ORACLE/$name.gens"; fi
  fi
}

now=$(date +%s)
day=86400
do_init() {
  "$OFFDISK" init --batch --key-file "$KEYS/A" "${FAST[@]}" --label PCUT --source "$SRC" \
    --config "$CONF" --host-key "$HOSTKEY" --unlock-key-file "$OUT/etc/unlock.key" --mount-point "$W/m" "$DISK"
}
# do_backup AT [OPTIONS]: open, back up the configured sources dated AT; the generations
# are noted while the disk is still mounted. The close is a step of its own: once backup
# has said it is done, a power cut before the close must lose nothing either.
do_backup() {
  local at=$1; shift
  "$OFFDISK" open --key-file "$OUT/etc/unlock.key" --name pc-bk "$PART" --mount="$W/m" &&
    "$OFFDISK" backup --config "$CONF" --no-progress --at "$at" "$@" &&
    live_gens "$step_name" "$W/m"
}
backup_and_close() {
  local n=$1; shift
  step "backup$n" "A" do_backup "$@"
  step "close$n" "A" "$OFFDISK" close pc-bk
}
# The dock unlocks, backs up, verifies and closes by itself; its generation is noted from
# a read-only look afterwards (after the post mark; read-only writes nothing).
do_dock() {
  "$OFFDISK" dock "$(basename "$PART")" --config "$CONF" --host-key "$HOSTKEY" --run-dir "$W/run" --state "$W/state.json" --timeout 60
}
look_gens() {
  "$OFFDISK" open --read-only --key-file "$OUT/etc/unlock.key" --name pc-look "$PART" --mount="$W/m" >/dev/null &&
    live_gens "$1" "$W/m"
  umount "$W/m"; dmsetup remove pc-look
}
# Changes about 1% of the tree, adds and deletes a few files (between backups).
change_tree() {
  local i=0
  for f in $(find "$SRC" -name 'f*.dat' | sort | awk 'NR % 97 == 0'); do
    i=$((i + 1)); printf 'changed %d %d\n' "$1" "$i" >> "$f"
  done
  for f in $(find "$SRC" -name 'f*.dat' | sort | awk -v k="$1" 'NR % 211 == k'); do rm -f "$f"; done
  mkdir -p "$SRC/new-$1"; for j in 1 2 3 4 5; do head -c $((j * 1500)) /dev/urandom > "$SRC/new-$1/n$j"; done
}

step init "A" do_init
backup_and_close 1 $((now - 3 * day))
if [ "${PC_SCENARIO:-full}" = full ]; then
  change_tree 2
  backup_and_close 2 $((now - 2 * day))
  change_tree 3
  # Retention keeps the last two: the first generation is pruned.
  backup_and_close 3 $((now - day)) --keep-last 2
  step add-key "A B" "$OFFDISK" luks add-key "$PART" --key-file "$KEYS/A" --new-key-file "$KEYS/B" "${FAST[@]}"
  "$OFFDISK" luks header-backup "$PART" --header-backup-file "$OUT/header.bak" >/dev/null
  step change-key "B C" "$OFFDISK" luks change-key "$PART" --key-file "$KEYS/A" --new-key-file "$KEYS/C" "${FAST[@]}"
  step remove-key "C" "$OFFDISK" luks remove-key "$PART" --key-file "$KEYS/B"
  step header-restore "A B" "$OFFDISK" luks header-restore "$PART" --header-backup-file "$OUT/header.bak" --batch
  change_tree 4
  step dock "A B" do_dock
  rm -f "$ORACLE/dock.gens"; look_gens dock
fi
status=$(dmsetup status pc-log)
case "$status" in *logging_disabled*) notok powercut-log-complete "$status" ;; *) ok powercut-log-complete ;; esac
losetup -d "$DISK"; udevadm settle
dmsetup remove pc-log
echo "# recorded the scenario in $(( $(date +%s) - t0 )) s"
sync
echo "powercut-recorded"
