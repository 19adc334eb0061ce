# offdisk's main job end to end on a disk image, inside the throwaway VM (as root):
#   blank image -> init (GPT, LUKS2, ext4, registered with its sources)
#   -> dock (what the udev rule's systemd unit runs when the disk is plugged in:
#      unlock, back up, quick verify, unmount, close)
#   -> open read-only, list and verify the generation, b3sum --check, read a file back -> close.
set -eu
modprobe -a loop dm_mod dm_crypt
mount -t tmpfs -o mode=755 tmpfs /media      # the VM shares the host's root read-only
D=/tmp/offdisk-demo
rm -rf "$D"; mkdir -p "$D/etc" "$D/run" "$D/check"
cd "$D"
# The host's /etc and /var are read-only in the VM: keep config, host key and state in $D.
P=(--config "$D/etc/config.toml" --host-key "$D/etc/host.key" --run-dir "$D/run" --state "$D/state.json")
truncate -s 256M backup-disk.img
printf 'demo passphrase' > pw
step() { printf '\n### %s\n' "$*"; }

step "offdisk init: GPT + LUKS2 + ext4 labelled OFFSITE1, registered to back up two directories"
"$OFFDISK" init --batch --key-file pw --pbkdf-memory 65536 --label OFFSITE1 \
  --source /usr/share/doc/cryptsetup-bin --source /usr/share/doc/rsync \
  --unlock-key-file "$D/pw" --keep-last 5 "${P[@]}" backup-disk.img
cat "$D/etc/config.toml"

step "dock: the disk is plugged in (a loop device here); the unit runs offdisk dock"
loop=$(losetup -P -f --show backup-disk.img); udevadm settle
"$OFFDISK" dock "$(basename "$loop")p1" "${P[@]}"

step "the disk is closed again; open it read-only and look at the backup"
"$OFFDISK" open --key-file pw --read-only OFFSITE1 --mount "$D/check"
"$OFFDISK" generations --target "$D/check"
"$OFFDISK" verify --target "$D/check"
gen=$(ls -d "$D"/check/generations/2* | tail -n 1)
( cd "$gen" && b3sum --check --quiet manifest.b3 && echo "b3sum --check: all files OK" )
cmp "$gen/tree/usr/share/doc/rsync/copyright" /usr/share/doc/rsync/copyright && echo "a file read back: identical"
"$OFFDISK" status --config "$D/etc/config.toml"
"$OFFDISK" close OFFSITE1
losetup -d "$loop"
echo "demo finished"
