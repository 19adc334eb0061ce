#!/usr/bin/env bash
# Installs every system package offdisk's tests (and its main job) need on Debian.
# Idempotent; needs root (CI and the throwaway VMs run as root).
set -euo pipefail
packages=(
  # reference tools the tests compare against
  cryptsetup-bin dmsetup e2fsprogs fdisk rsync b3sum util-linux keyutils psmisc python3
  # the throwaway VM for kernel tests (dm-crypt, loop, mount, udev)
  qemu-system-x86 linux-image-amd64 busybox-static udev kmod
  # the desktop agent's test: X server, session bus, notification daemon, screenshots
  xvfb dbus-x11 dunst libnotify-bin imagemagick
  # benchmarks
  hyperfine linux-perf
)
bash "$(dirname "$0")/../scripts/apt-missing.sh" "${packages[@]}"
if ! command -v vng >/dev/null 2>&1; then
  python3 -m pip install -q virtme-ng
fi
