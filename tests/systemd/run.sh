#!/usr/bin/env bash
# The systemd tier of the offdisk tests: boots ONE throwaway Debian VM with systemd as PID 1
# (udev, dbus, udisks2, logind) under qemu (TCG, no KVM), installs offdisk from the Debian package
# built from this checkout (scripts/build-deb.sh: the shipped rule, units and man pages, exactly as
# a user gets them), and runs tests/systemd/t-*.sh inside it. Disks are plugged in and pulled out
# as USB mass-storage devices through qemu's monitor (tests/systemd/host.py), so udev and systemd
# see real add and remove events and start offdisk-dock@<name>.service on their own.
# Each script prints `ok NAME` or `not ok NAME: WHY`; this harness ends with the line
# `N passed, M failed` and exits non-zero when anything failed or the VM did not finish.
# A missing qemu or mmdebstrap is a failure (tests/deps.sh installs them, and a tier that quietly
# ran nothing once hid that apt had removed qemu-img); OFFDISK_SYSD_ALLOW_SKIP=1 turns it into a
# skip (0 passed, 0 failed) for a machine that cannot run this tier.
#
# Environment: OFFDISK_BIN (default target/debug/offdisk, built if missing),
#              OFFDISK_VM_KERNEL (default: newest /boot/vmlinuz-*), OFFDISK_SYSD_ONLY (globs of
#              scripts to run, default 't-*.sh'), OFFDISK_SYSD_TIMEOUT (seconds, default 3600:
#              only catches a hung VM), OFFDISK_TEST_CACHE (image cache, /var/cache/offdisk-tests).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
start=$SECONDS
done_() { echo "systemd tier: $((SECONDS - start)) s"; echo "$1"; }

for tool in qemu-system-x86_64 qemu-img mmdebstrap; do
  if ! command -v "$tool" >/dev/null; then
    if [ "${OFFDISK_SYSD_ALLOW_SKIP:-}" = 1 ]; then
      echo "skip systemd tier: $tool is missing (bash tests/deps.sh installs it)"
      done_ "0 passed, 0 failed"; exit 0
    fi
    echo "not ok sysd-tools: $tool is missing (bash tests/deps.sh installs it; OFFDISK_SYSD_ALLOW_SKIP=1 skips this tier)"
    done_ "0 passed, 1 failed"; exit 1
  fi
done
kernel=${OFFDISK_VM_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
kver=${kernel##*/vmlinuz-}
initrd=/boot/initrd.img-$kver
if [ -z "$kernel" ] || [ ! -r "$initrd" ]; then
  echo "not ok sysd-kernel: need a kernel and its initrd in /boot (linux-image-amd64)"
  done_ "0 passed, 1 failed"; exit 1
fi

if [ -z "${OFFDISK_BIN:-}" ]; then
  # Built as the host, vm and powercut tiers build it (an example in the same build turns on the
  # dev-dependencies' features of shared crates, e.g. serde's alloc): the binary they already
  # made. `--bin offdisk` alone is a second offdisk build with other features, 60-110 s.
  cargo build --quiet --bin offdisk --example dm_activate || { echo "not ok sysd-build: cargo build failed"; done_ "0 passed, 1 failed"; exit 1; }
  OFFDISK_BIN="$repo/target/debug/offdisk"
fi
image=$(bash "$here/image.sh" "$kver" | tail -n 1)
if [ ! -s "$image" ]; then
  echo "not ok sysd-image: building the root image failed (tests/systemd/image.sh)"
  done_ "0 passed, 1 failed"; exit 1
fi
echo "systemd tier: image $image, kernel $kver ($((SECONDS - start)) s)"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
deb=$(bash scripts/build-deb.sh --binary "$OFFDISK_BIN" --out "$out" | tail -n 1)
[ -s "$deb" ] || { echo "not ok sysd-deb: scripts/build-deb.sh failed"; done_ "0 passed, 1 failed"; exit 1; }
mv "$deb" "$out/offdisk.deb"
echo "${OFFDISK_SYSD_ONLY:-t-*.sh}" > "$out/only"

/usr/bin/python3 "$here/host.py" --kernel "$kernel" --initrd "$initrd" --image "$image" \
  --repo "$repo" --out "$out" --timeout "${OFFDISK_SYSD_TIMEOUT:-3600}" 2>&1
summary=$(grep -E '^sysd-summary: [0-9]+ passed, [0-9]+ failed$' "$out/results" 2>/dev/null | tail -n 1)
if [ -z "$summary" ]; then
  echo "not ok sysd-finished: the VM stopped before the suite ended"
  done_ "0 passed, 1 failed"; exit 1
fi
echo "--- results"
grep -E '^(ok|not ok|#|time) ' "$out/results"
line=${summary#sysd-summary: }
done_ "$line"
[ "$(echo "$line" | awk '{print $3}')" -eq 0 ]
