# The disk lifecycle end to end on a disk image, inside the throwaway VM (as root):
# blank image -> offdisk init -> open + mount -> write -> status -> close -> safe to unplug.
set -eu
modprobe -a loop dm_mod dm_crypt
mount -t tmpfs -o mode=755 tmpfs /media      # the VM shares the host's root read-only
cd /tmp
truncate -s 256M backup-disk.img
printf 'demo passphrase' > pw
set -x
"$OFFDISK" init --batch --key-file pw --pbkdf-memory 32768 --label OFFSITE1 backup-disk.img
"$OFFDISK" open --key-file pw backup-disk.img --mount
cp -r /usr/share/doc/cryptsetup* /media/OFFSITE1/backups/ 2>/dev/null || echo hello > /media/OFFSITE1/backups/hello
"$OFFDISK" status
"$OFFDISK" close OFFSITE1
blkid -p backup-disk.img || true
set +x
echo "demo finished"
