#!/usr/bin/env bash
# Installs offdisk on Debian as the Debian package it builds (offdisk_<version>_<arch>.deb):
# apt installs its runtime dependencies with it, `dpkg -L offdisk` lists every file, and
# `apt-get remove offdisk` (or purge) takes them away again.
#
#   bash scripts/install.sh           # as root (or: sudo bash scripts/install.sh)
#   bash scripts/install.sh --demo    # install, then run offdisk's main job end to end
#                                     # on a disk image in a throwaway VM (no spare disk needed)
#
# Needs Rust >= Cargo.toml's rust-version (from rustup; scripts/check-rust.sh says how);
# everything else comes from Debian's packages.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
demo=0
case "${1:-}" in
  "") ;;
  --demo) demo=1 ;;
  *) echo "usage: bash scripts/install.sh [--demo]" >&2; exit 1 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/install.sh installs system packages: run it as root (su -, or sudo bash scripts/install.sh)" >&2
  exit 1
fi

bash scripts/check-rust.sh
. "$HOME/.cargo/env" 2>/dev/null || true
# To build the package: dpkg-shlibdeps (dpkg-dev) and strip (binutils); gcc links Rust programs.
bash scripts/apt-missing.sh dpkg-dev binutils gcc

start=$SECONDS
cargo build --release --locked --bin offdisk
echo "built target/release/offdisk in $((SECONDS - start)) s"
deb=$(bash scripts/build-deb.sh --binary target/release/offdisk --out target/deb | tail -n 1)
echo "built $deb"
# The package's Depends, so apt's lists are fresh if anything is missing (apt-missing.sh updates
# them then); apt-get then installs the local .deb (a path, not a name) with what it needs.
bash scripts/apt-missing.sh e2fsprogs udev kmod keyutils
export DEBIAN_FRONTEND=noninteractive
# --reinstall: a rebuilt package keeps its version number.
apt-get -o DPkg::Lock::Timeout="${OFFDISK_APT_LOCK_TIMEOUT:-900}" install -y -q --reinstall "$deb"
echo "offdisk $(/usr/bin/offdisk --version | awk '{print $2}') installed from $(basename "$deb") ($(dpkg -L offdisk | wc -l) paths: dpkg -L offdisk)"
echo "Each desktop user: systemctl --user enable --now offdisk-agent.service (or log in again)."

if ((demo)); then
  bash scripts/apt-missing.sh qemu-system-x86 linux-image-amd64 busybox-static cryptsetup-bin dmsetup b3sum rsync
  bash scripts/virtme-venv.sh
  OFFDISK=/usr/bin/offdisk bash tests/vm/demo.sh
fi
