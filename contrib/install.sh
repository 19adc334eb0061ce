#!/bin/sh
# Installs offdisk's hot-plug pieces, man pages and shell completions.
#   sudo contrib/install.sh            # after installing the binary as $BINDIR/offdisk
#   DESTDIR=/tmp/pkg contrib/install.sh  (packaging: no reloads)
# Variables: DESTDIR, PREFIX (/usr), BINDIR ($PREFIX/bin), UDEVDIR ($PREFIX/lib/udev),
#            UNITDIR ($PREFIX/lib/systemd/system), USERUNITDIR ($PREFIX/lib/systemd/user).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
PREFIX=${PREFIX:-/usr}
BINDIR=${BINDIR:-$PREFIX/bin}
UDEVDIR=${UDEVDIR:-$PREFIX/lib/udev}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
USERUNITDIR=${USERUNITDIR:-$PREFIX/lib/systemd/user}
TMPFILESDIR=${TMPFILESDIR:-$PREFIX/lib/tmpfiles.d}
MANDIR=${MANDIR:-$PREFIX/share/man}
D=${DESTDIR:-}
offdisk="$D$BINDIR/offdisk"
[ -x "$offdisk" ] || { echo "install the binary first: install -Dm755 target/release/offdisk $offdisk" >&2; exit 1; }

# The units name /usr/bin/offdisk; follow BINDIR.
sub() { sed "s|/usr/bin/offdisk|$BINDIR/offdisk|g" "$1"; }
install -d "$D$UDEVDIR/rules.d" "$D$UNITDIR" "$D$USERUNITDIR" "$D$TMPFILESDIR" "$D/etc/xdg/autostart" \
  "$D$MANDIR/man1" "$D$MANDIR/man5" "$D$MANDIR/man8"
install -m644 "$here/99-offdisk.rules" "$D$UDEVDIR/rules.d/99-offdisk.rules"
sub "$here/offdisk-dock@.service" > "$D$UNITDIR/offdisk-dock@.service"
sub "$here/offdisk-agent.service" > "$D$USERUNITDIR/offdisk-agent.service"
sub "$here/offdisk-agent.desktop" > "$D/etc/xdg/autostart/offdisk-agent.desktop"
chmod 644 "$D$UNITDIR/offdisk-dock@.service" "$D$USERUNITDIR/offdisk-agent.service" "$D/etc/xdg/autostart/offdisk-agent.desktop"
install -m644 "$here/offdisk.tmpfiles" "$D$TMPFILESDIR/offdisk.conf"

# Man pages: hand-written ones from man/, the rest generated from the command line.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$offdisk" generate-man "$tmp"
cp "$repo"/man/*.[158] "$tmp"/ 2>/dev/null || true
# The agent has its own page in section 1.
rm -f "$tmp/offdisk-agent.8"
for p in "$tmp"/*.[158]; do
  s=${p##*.}; install -m644 "$p" "$D$MANDIR/man$s/"
done

# Shell completions.
install -d "$D$PREFIX/share/bash-completion/completions" "$D$PREFIX/share/zsh/vendor-completions" "$D$PREFIX/share/fish/vendor_completions.d"
"$offdisk" completions bash > "$D$PREFIX/share/bash-completion/completions/offdisk"
"$offdisk" completions zsh > "$D$PREFIX/share/zsh/vendor-completions/_offdisk"
"$offdisk" completions fish > "$D$PREFIX/share/fish/vendor_completions.d/offdisk.fish"

if [ -z "$D" ]; then
  systemd-tmpfiles --create "$TMPFILESDIR/offdisk.conf" 2>/dev/null || true
  systemctl daemon-reload 2>/dev/null || true
  udevadm control --reload 2>/dev/null || true
  echo "Installed. Each desktop user: systemctl --user enable --now offdisk-agent.service"
  echo "(or log in again: the XDG autostart entry starts the agent)."
fi
