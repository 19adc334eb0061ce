#!/usr/bin/env bash
# Builds the Debian package offdisk_<version>_<arch>.deb from a staged tree: the binary, then
# contrib/install.sh with DESTDIR (udev rule, systemd units, agent autostart, tmpfiles, man pages,
# completions), the conffile /etc/offdisk/config.toml and the maintainer scripts in
# contrib/debian/. Depends: the shared libraries (dpkg-shlibdeps) and the runtime tools.
#
#   bash scripts/build-deb.sh [--binary PATH] [--out DIR]
#
# --binary: package this offdisk binary (default: build target/release/offdisk, ~7 min);
# --out: where the .deb goes (default target/deb). Prints the .deb's path as its last line.
# Needs dpkg-dev and binutils (no root: dpkg-deb --root-owner-group).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary= out=$repo/target/deb
while (($#)); do
  case $1 in
    --binary) binary=$(realpath "$2"); shift 2 ;;
    --out) mkdir -p "$2"; out=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-deb: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done
cd "$repo"
for tool in dpkg-deb dpkg-shlibdeps strip; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing: apt-get install dpkg-dev binutils" >&2; exit 1; }
done
if [ -z "$binary" ]; then
  bash scripts/check-rust.sh
  . "$HOME/.cargo/env" 2>/dev/null || true
  cargo build --release --locked --bin offdisk
  binary=$repo/target/release/offdisk
fi
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable" >&2; exit 1; }
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
# Reproducible: every date and mtime is the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
maintainer="offdisk developers <offdisk@users.noreply.github.com>"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
install -Dm755 "$binary" "$root/usr/bin/offdisk"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/offdisk"
DESTDIR=$root sh contrib/install.sh >/dev/null
install -d -m700 "$root/etc/offdisk"
install -m600 contrib/debian/config.toml "$root/etc/offdisk/config.toml"
doc=$root/usr/share/doc/offdisk
install -Dm644 contrib/debian/copyright "$doc/copyright"
{
  echo "offdisk ($version) unstable; urgency=medium"
  echo
  echo "  * Built from the offdisk sources$(git -C "$repo" describe --always --dirty 2>/dev/null | sed 's/^/ at /')."
  echo
  echo " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.gz"   # a native package: changelog.gz, not changelog.Debian.gz
# The config names key files: root only, on purpose.
install -Dm644 contrib/debian/lintian-overrides "$root/usr/share/lintian/overrides/offdisk"
find "$root/usr/share/man" -type f -exec gzip -9n {} +

deb=$root/DEBIAN
install -d "$deb"
install -m755 contrib/debian/postinst contrib/debian/postrm "$deb/"
# Every file under /etc is a conffile: dpkg keeps local changes and asks on upgrade.
(cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$deb/conffiles"
# dpkg-shlibdeps wants a source package layout around the binary.
mkdir -p "$work/src/debian"
printf 'Source: offdisk\n\nPackage: offdisk\nArchitecture: any\n' > "$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/bin/offdisk" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no library dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
    -e "s|@SIZE@|$size|" -e "s/@SHLIBS@/$shlibs/" contrib/debian/control.in > "$deb/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs -d '\n' md5sum) > "$deb/md5sums"
chmod 644 "$deb/control" "$deb/conffiles" "$deb/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
file=$out/offdisk_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$file" >/dev/null
echo "$file"
