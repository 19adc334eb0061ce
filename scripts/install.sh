#!/usr/bin/env bash
# Installs offdisk on Debian: its system dependencies, the binary (built from this checkout),
# the udev rule, systemd units, desktop agent autostart, man pages and shell completions.
#
#   sudo bash scripts/install.sh           # install
#   sudo bash scripts/install.sh --demo    # install, then run offdisk's main job end to end
#                                          # on a disk image in a throwaway VM (no spare disk needed)
#
# Needs Rust >= 1.85 (cargo) on the PATH; everything else comes from Debian's packages.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
demo=0
[ "${1:-}" = "--demo" ] && demo=1

runtime=(e2fsprogs util-linux udev kmod keyutils pinentry-gnome3 pinentry-curses)
vm=(qemu-system-x86 linux-image-amd64 busybox-static cryptsetup-bin dmsetup python3)
want=("${runtime[@]}")
((demo)) && want+=("${vm[@]}")
bash scripts/apt-missing.sh "${want[@]}"
. "$HOME/.cargo/env" 2>/dev/null || true
command -v cargo >/dev/null || { echo "offdisk needs Rust >= 1.85: install it with rustup first" >&2; exit 1; }

cargo build --release --locked --bin offdisk
install -Dm755 target/release/offdisk /usr/bin/offdisk
sh contrib/install.sh
echo "offdisk $(/usr/bin/offdisk --version | awk '{print $2}') installed as /usr/bin/offdisk"

if ((demo)); then
  command -v vng >/dev/null || python3 -m pip install -q virtme-ng
  OFFDISK=/usr/bin/offdisk bash tests/vm/demo.sh
fi
