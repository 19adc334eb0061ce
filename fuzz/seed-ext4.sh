#!/usr/bin/env bash
# Seeds fuzz/corpus/ext4_image with small mkfs.ext4 -d images: every feature set the reader
# handles (extents or block maps, 64-bit, checksums, inline data, meta_bg, 1K/4K blocks),
# a tree with an htree directory, long and short symlinks, xattrs, hard links.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/ext4_image
mkdir -p "$out"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
mkdir -p "$src/d/sub" "$src/big"
printf x > "$src/one"; head -c 61 /dev/zero | tr '\0' b > "$src/d/61"; head -c 5000 /dev/urandom > "$src/d/sub/5k"
for i in $(seq 1 300); do printf '%s' "$i" > "$src/big/name-$i"; done
ln -s one "$src/short"; ln -s "$(printf 'y/%.0s' $(seq 1 40))" "$src/long"; ln "$src/d/61" "$src/hard"
python3 -c "import os; os.setxattr('$src/one', 'user.a', b'v'); os.setxattr('$src/d/61', 'user.big', b'7'*300)"
n=0
for opts in "" "-O ^metadata_csum,^64bit" "-O inline_data" "-O ^extents,^64bit,^metadata_csum" "-O meta_bg,^resize_inode" "-b 4096"; do
  n=$((n + 1))
  img="$out/seed-$n.img"
  rm -f "$img"; truncate -s 2M "$img"
  # shellcheck disable=SC2086
  mkfs.ext4 -q -F -b 1024 -N 400 $opts -d "$src" "$img" 2>/dev/null || mkfs.ext4 -q -F -N 400 $opts -d "$src" "$img"
done
ls -l "$out"
