# Unmounts, closes every mapping and detaches every loop device the tests made.
for m in $(awk '$5 ~ "^/tmp/offdisk-vm|^/media/" {print $5}' /proc/self/mountinfo | sort -r); do umount "$m"; done
for n in $(dmsetup ls 2>/dev/null | awk '$1 != "No" {print $1}'); do dmsetup remove --retry "$n"; done
losetup -D
udevadm settle
