#!/usr/bin/env bash
# Builds (once) the root image of the systemd test VM: Debian (the host's release) from Debian's
# packages with mmdebstrap, systemd as PID 1, udev, dbus, udisks2 and the reference tools, plus the
# modules of the kernel the VM boots (the newest /boot/vmlinuz-*: the host's kernel and initrd are
# booted, the image carries their modules).
#
#   bash tests/systemd/image.sh KERNEL_VERSION     # prints the image's path as its last line
#
# Cached under $OFFDISK_TEST_CACHE (/var/cache/offdisk-tests) as systemd-root-<key>.img, the key a
# hash of this script (its package list and hooks), the release and the kernel version: two
# engineers or two branches never share an image built from different inputs, and a missing one is
# rebuilt. offdisk itself is not in the image: each run installs the package it just built.
# Needs root and mmdebstrap (tests/deps.sh installs it).
set -euo pipefail
kver=${1:?usage: image.sh KERNEL_VERSION}
here=$(cd "$(dirname "$0")" && pwd)
cache=${OFFDISK_TEST_CACHE:-/var/cache/offdisk-tests}
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=${OFFDISK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(
  systemd systemd-sysv udev dbus udisks2 kmod
  # offdisk's Depends, and the reference tools the tests check with
  e2fsprogs keyutils pinentry-curses cryptsetup-bin dmsetup fdisk b3sum util-linux psmisc
  # the scripted password agent
  python3
  # a logged-in user session (pam_systemd registers logins with logind: a seat, /run/user/UID)
  libpam-systemd
)
key=$( { cat "$0"; echo "$suite $kver $mirror"; } | sha256sum | cut -c1-16)
img=$cache/systemd-root-$key.img
if [ -s "$img" ]; then echo "$img"; exit 0; fi

command -v mmdebstrap >/dev/null || { echo "image.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
[ -d "/lib/modules/$kver" ] || { echo "image.sh: /lib/modules/$kver is missing" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.systemd-root-$key.lock"
flock 9
if [ -s "$img" ]; then echo "$img"; exit 0; fi   # built by someone else while we waited

work=$(mktemp -d "$cache/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
start=$SECONDS
mmdebstrap --quiet --mode=root --variant=essential --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook='echo offdisk-test > "$1/etc/hostname"' \
  --customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
  --customize-hook='passwd --root "$1" -d root' \
  "$suite" "$root" "deb $mirror $suite main" >&2

# The booted kernel's modules (block, dm, usb, 9p, filesystems: not graphics, sound or network cards).
mkdir -p "$root/lib/modules/$kver"
(cd "/lib/modules/$kver" && tar -cf - --exclude=kernel/drivers/gpu --exclude=kernel/drivers/net \
  --exclude=kernel/drivers/media --exclude=kernel/drivers/infiniband --exclude=kernel/drivers/staging \
  --exclude=kernel/sound --exclude=kernel/drivers/iio --exclude=kernel/drivers/bluetooth \
  --exclude=kernel/net/wireless --exclude=kernel/net/mac80211 --exclude=kernel/drivers/hid .) \
  | tar -xf - -C "$root/lib/modules/$kver"
depmod -b "$root" "$kver"

# Boots quietly and fast: nothing periodic, no login prompt competing for the console.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer \
         systemd-timesyncd.service e2scrub_reap.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"

# The test runner: mounts the repository (read-only) and the run's output directory (9p), then
# runs the suite's guest script from the repository, so the tests are not part of the image.
cat > "$root/etc/systemd/system/offdisk-vmtest.service" <<'EOF'
[Unit]
Description=offdisk systemd-tier test runner
After=multi-user.target
[Service]
Type=oneshot
ExecStartPre=/bin/mkdir -p /mnt/repo /mnt/out
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,ro offdisk-repo /mnt/repo
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L offdisk-out /mnt/out
ExecStart=/bin/bash /mnt/repo/tests/systemd/guest.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../offdisk-vmtest.service "$root/etc/systemd/system/multi-user.target.wants/offdisk-vmtest.service"

size=$(( $(du -sm "$root" | cut -f1) + 600 ))
mke2fs -q -t ext4 -L odroot -d "$root" "$work/root.img" "${size}M"
mv "$work/root.img" "$img"
echo "image.sh: built $img in $((SECONDS - start)) s" >&2
echo "$img"
