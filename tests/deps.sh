#!/usr/bin/env bash
# Installs every system package offdisk's tests (and its main job) need on Debian, and
# virtme-ng in its virtual environment (scripts/virtme-venv.sh). Idempotent; needs root (CI and
# the throwaway VMs run as root). Names packages only, never versions: whatever Debian ships.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
packages=(
  # reference tools the tests compare against
  cryptsetup-bin dmsetup e2fsprogs fdisk rsync b3sum util-linux keyutils psmisc python3
  # JSON output read by the power-cut tier
  jq
  # the throwaway VM for kernel tests (dm-crypt, loop, mount, udev); virtme-ng's venv
  qemu-system-x86 linux-image-amd64 busybox-static udev kmod python3-venv
  # the systemd tier: its root image (tests/systemd/image.sh) and the VM's root overlay
  mmdebstrap qemu-utils
  # the desktop agent's test: X server, session bus, notification daemon, screenshots
  xvfb dbus-x11 dunst libnotify-bin imagemagick
  # the Debian package and its checks (scripts/build-deb.sh, tests/packaging.rs)
  dpkg-dev binutils lintian
  # benchmarks
  hyperfine linux-perf
)
bash "$here/../scripts/apt-missing.sh" "${packages[@]}"
bash "$here/../scripts/virtme-venv.sh"
