#!/usr/bin/env bash
# Benchmark of the backup engine against reference tools, in the same run:
#   full backup        offdisk backup            vs  rsync -a
#   incremental (1%)   offdisk backup            vs  rsync -a --link-dest
#   verify             offdisk verify            vs  b3sum --check
#   prune              offdisk generations --delete  vs  rm -rf   (of the same hard-link tree)
# Prints each ratio (offdisk time / reference time; below 1 is faster).
#
# Usage: benches/backup-bench.sh [FILES] [WORKDIR]   (defaults: 50000, a temp dir under /var/tmp)
# ONLY="full incr verify prune memory" picks parts (default all); RUNS=N runs each (default 5).
# OFFDISK_BIN_BEFORE=path adds that build to the full, incremental and verify rows, in the
# same hyperfine runs, to measure what a change costs ("before" vs "offdisk").
# Prints seconds per 1,000 files for each offdisk row and the peak RSS of a full backup,
# an incremental and a verify of the whole tree (scale: run with FILES=100000 ... 1000000;
# with OFFDISK_BIN_BEFORE, that build's verify of the same generations too).
# Needs: hyperfine, rsync, b3sum, python3. Builds target/release/offdisk if missing.
# As root the targets go on their own ext4 filesystem (a loop-mounted image), like a real
# backup disk, so syncing it does not also flush unrelated dirty data; BENCH_LOOP=0 disables.
# "+ sync" rows add a sync of the target filesystem to rsync, since offdisk always syncs
# before it calls a generation complete.
set -euo pipefail
FILES=${1:-50000}
WORK=${2:-$(mktemp -d /var/tmp/offdisk-bench.XXXXXX)}
RUNS=${RUNS:-5}
cd "$(dirname "$0")/.."
BIN=${OFFDISK_BIN:-$PWD/target/release/offdisk}
[ -x "$BIN" ] || cargo build --release --bin offdisk
for t in hyperfine rsync b3sum python3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
export OFFDISK_CONFIG=$WORK/empty.toml
mkdir -p "$WORK"; : > "$OFFDISK_CONFIG"
SRC=$WORK/src
TFS=$WORK/targetfs
mkdir -p "$TFS"
if [ "$(id -u)" = 0 ] && [ "${BENCH_LOOP:-1}" != 0 ]; then
  if ! mountpoint -q "$TFS"; then
    # Sized for the tree: several copies of it live there at once (the base generations of
    # offdisk, of the "before" build and of rsync, plus a timed copy), ~6 inodes a source file.
    # The image is sparse; inode tables are left uninitialized (no background zeroing).
    gib=$(( FILES * 32 / 1024 / 1024 + 1 )); [ "$gib" -ge 8 ] || gib=8
    truncate -s ${gib}G "$WORK/targetfs.img"
    mkfs.ext4 -q -F -N $(( FILES * 6 + 100000 )) -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$WORK/targetfs.img"
    mount -o loop,noinit_itable "$WORK/targetfs.img" "$TFS"
  fi
  trap 'umount "$TFS" 2>/dev/null || true' EXIT
fi
echo "# tree: $FILES files in $WORK, targets on $(df --output=source,fstype "$TFS" | tail -1) (runs: $RUNS)"
echo "# $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# Source tree: 100 files a directory, mostly small (0-4 KiB) with a 1 MiB file in every 1000.
if [ ! -d "$SRC" ]; then
python3 - "$SRC" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}", f"s{(i // 100) % 10}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    size = (1 << 20) if i % 1000 == 0 else rnd.randrange(0, 4096)
    with open(os.path.join(d, f"f{i:06d}.dat"), "wb") as f:
        f.write(rnd.randbytes(size))
PY
fi
du -sh "$SRC" | sed 's/^/# source size: /'

want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
# Fresh target for each timed full run (the preparation is not timed).
OD=$TFS/od; RS=$TFS/rs; SYNC="sync -f $TFS"
BEFORE=${OFFDISK_BIN_BEFORE:-}
before_full=(); before_incr=(); before_verify=(); BASE=""; BASEB=""; ODB=""
if [ -n "$BEFORE" ]; then
  before_full=(-n "before full" --prepare "rm -rf $OD; mkdir -p $OD; $SYNC" "$BEFORE backup --no-progress --target $OD $SRC")
fi
want full && hyperfine --runs "$RUNS" --export-json "$WORK/full.json" \
  -n "offdisk full" --prepare "rm -rf $OD; mkdir -p $OD; $SYNC" "$BIN backup --no-progress --target $OD $SRC" \
  "${before_full[@]}" \
  -n "rsync -a full" --prepare "rm -rf $RS; mkdir -p $RS; $SYNC" "rsync -a $SRC/ $RS/" \
  -n "rsync -a full + sync" --prepare "rm -rf $RS; mkdir -p $RS; $SYNC" "rsync -a $SRC/ $RS/ && $SYNC"

# Incremental: the base is the state before 1% of files change.
if want incr || want verify || want prune || { [ -n "$BEFORE" ] && want ab; }; then
rm -rf "$OD" "$RS" "$TFS/rs-base" "$TFS/rs-new"
mkdir -p "$OD"
"$BIN" backup --no-progress --target "$OD" "$SRC" >/dev/null
BASE=$(ls "$OD/generations" | head -1)
if [ -n "$BEFORE" ]; then
  # The old build links against a base it made itself, of the same tree.
  ODB=$TFS/odb
  rm -rf "$ODB"; mkdir -p "$ODB"
  "$BEFORE" backup --no-progress --target "$ODB" "$SRC" >/dev/null
  BASEB=$(ls "$ODB/generations" | head -1)
fi
rsync -a "$SRC/" "$TFS/rs-base/"
python3 - "$SRC" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in rnd.sample(range(n), n // 100):
    p = os.path.join(root, f"d{i // 1000:03d}", f"s{(i // 100) % 10}", f"f{i:06d}.dat")
    with open(p, "wb") as f:
        f.write(rnd.randbytes(rnd.randrange(0, 4096)))
PY
fi
CLEAN_OD="find $OD/generations -mindepth 1 -maxdepth 1 ! -name $BASE -exec rm -rf {} +; $SYNC"
if [ -n "$BEFORE" ]; then
  before_incr=(-n "before incremental" --prepare "find $ODB/generations -mindepth 1 -maxdepth 1 ! -name $BASEB -exec rm -rf {} +; $SYNC" "$BEFORE backup --no-progress --target $ODB $SRC")
fi
want incr && hyperfine --runs "$RUNS" --export-json "$WORK/incr.json" \
  -n "offdisk incremental" --prepare "$CLEAN_OD" "$BIN backup --no-progress --target $OD $SRC" \
  "${before_incr[@]}" \
  -n "rsync --link-dest" --prepare "rm -rf $TFS/rs-new; $SYNC" "rsync -a --link-dest=$TFS/rs-base/ $SRC/ $TFS/rs-new/" \
  -n "rsync --link-dest + sync" --prepare "rm -rf $TFS/rs-new; $SYNC" "rsync -a --link-dest=$TFS/rs-base/ $SRC/ $TFS/rs-new/ && $SYNC"

# Verify one generation: offdisk verify against b3sum --check of its manifest.
if want verify || want prune; then
"$BIN" backup --no-progress --target "$OD" "$SRC" >/dev/null
GEN=$(ls "$OD/generations" | grep -v "^$BASE\$" | tail -1)
fi
if [ -n "$BEFORE" ] && want verify; then
  # The old build verifies a generation it made (its own metadata format).
  find "$ODB/generations" -mindepth 1 -maxdepth 1 ! -name "$BASEB" -exec rm -rf {} +
  "$BEFORE" backup --no-progress --target "$ODB" "$SRC" >/dev/null
  GENB=$(ls "$ODB/generations" | grep -v "^$BASEB\$" | tail -1)
  before_verify=(-n "before verify" "$BEFORE verify --target $ODB --generation $GENB")
fi
want verify && hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/verify.json" \
  -n "offdisk verify" "$BIN verify --target $OD --generation $GEN" \
  "${before_verify[@]}" \
  -n "b3sum --check" "cd $OD/generations/$GEN && b3sum --check --quiet manifest.b3"

# Prune: delete a hard-linked copy of a generation both ways.
OLD=2000-01-01T000000Z
want prune && hyperfine --runs "$RUNS" --export-json "$WORK/prune.json" \
  -n "offdisk prune" --prepare "rm -rf $OD/generations/$OLD; cp -al $OD/generations/$GEN $OD/generations/$OLD; $SYNC" \
     "$BIN generations --target $OD --delete $OLD" \
  -n "rm -rf" --prepare "rm -rf $TFS/doomed; cp -al $OD/generations/$GEN $TFS/doomed; $SYNC" "rm -rf $TFS/doomed"

# Cost of a change, interleaved: on a loaded machine, hyperfine's blocks of runs (all of one
# command, then all of the other) drift with the load; alternating the two builds run by run,
# AB_RUNS times each, and taking medians of wall and CPU (user+sys) time does not.
# ONLY=ab, or by default whenever OFFDISK_BIN_BEFORE is set.
if [ -n "$BEFORE" ] && { [ -z "${ONLY:-}" ] || want ab; }; then
  AB_RUNS=${AB_RUNS:-9}
  ab_run() { # label, prepare, command...: appends "wall cpu" to $WORK/ab-<label>
    local label=$1 prep=$2; shift 2
    bash -c "$prep"
    local t0 t1; t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$WORK/ab.time" "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$(echo "$t1 - $t0" | bc -l) $(awk '{print $1 + $2}' "$WORK/ab.time")" >> "$WORK/ab-$label"
  }
  rm -f "$WORK"/ab-*
  for i in $(seq "$AB_RUNS"); do
    # Alternate which build goes first, so neither always follows the other.
    if [ $((i % 2)) = 1 ]; then order="after before"; else order="before after"; fi
    for who in $order; do
      if [ $who = after ]; then b=$BIN; d=$TFS/ab-od; g=$OD; base=$BASE; else b=$BEFORE; d=$TFS/ab-odb; g=$ODB; base=$BASEB; fi
      ab_run "full-$who" "rm -rf $d; mkdir -p $d; $SYNC" "$b" backup --no-progress --target "$d" "$SRC"
      ab_run "incr-$who" "find $g/generations -mindepth 1 -maxdepth 1 ! -name $base -exec rm -rf {} +; $SYNC" "$b" backup --no-progress --target "$g" "$SRC"
    done
  done
  rm -rf "$TFS/ab-od" "$TFS/ab-odb"
  echo "# interleaved cost of the change ($AB_RUNS runs each; medians; wall = elapsed, cpu = user+sys)"
  for part in full incr; do
    python3 - "$WORK/ab-$part-after" "$WORK/ab-$part-before" "$part" <<'PY'
import statistics, sys
def med(f, i):
    return statistics.median(float(l.split()[i]) for l in open(f) if l.strip())
a, b, part = sys.argv[1], sys.argv[2], sys.argv[3]
for i, what in ((0, "wall"), (1, "cpu")):
    print(f"{part:5s} {what:4s}  offdisk {med(a, i):7.3f} s  before {med(b, i):7.3f} s  ratio {med(a, i) / med(b, i):.3f}")
PY
  done
fi

# Memory stays bounded: peak RSS of a full backup, an incremental and a verify of the whole
# tree (compare across FILES to see it flat), and of a full backup of a tenth of it, with the
# elapsed time of each single run (ONLY=memory is a quick scale run: one of each, with
# rsync's full and incremental copies of the same tree for reference).
if want memory && [ -x /usr/bin/time ]; then
  for part in "$SRC/d000 $SRC/d001 $SRC/d002 $SRC/d003 $SRC/d004" "$SRC"; do
    rm -rf "$TFS/mem"; mkdir -p "$TFS/mem"
    n=$(find $part -type f | wc -l)
    /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: full backup of $n files" "$BIN" backup --no-progress --target "$TFS/mem" $part >/dev/null
  done
  /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: incremental of $FILES files" "$BIN" backup --no-progress --target "$TFS/mem" $SRC >/dev/null
  /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: verify of $FILES files (latest generation)" "$BIN" verify --target "$TFS/mem" --generation latest >/dev/null
  /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: verify of $FILES files (2 generations)" "$BIN" verify --target "$TFS/mem" >/dev/null
  if [ -n "$BEFORE" ]; then
    # The same two generations verified by the build under comparison (same metadata format).
    /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: before: verify of $FILES files (latest generation)" "$BEFORE" verify --target "$TFS/mem" --generation latest >/dev/null
    /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: before: verify of $FILES files (2 generations)" "$BEFORE" verify --target "$TFS/mem" >/dev/null
  fi
  # The references, for scale: what a tree of this size costs them.
  rm -rf "$TFS/mem-rs" "$TFS/mem-rs2"
  /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: rsync -a full + sync of $FILES files (largest process)" sh -c "rsync -a $SRC/ $TFS/mem-rs/ && $SYNC" >/dev/null
  # Its incremental, as offdisk's above (nothing changed since the full copy).
  /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: rsync -a --link-dest + sync of $FILES files (largest process)" sh -c "rsync -a --link-dest=$TFS/mem-rs/ $SRC/ $TFS/mem-rs2/ && $SYNC" >/dev/null
  (cd "$TFS/mem" && g=$(ls generations | tail -1) && cd "generations/$g" &&
    /usr/bin/time -f "# peak RSS %M KiB, %e s, cpu %U+%S s: b3sum --check of $FILES files" b3sum --check --quiet manifest.b3 >/dev/null)
  rm -rf "$TFS/mem" "$TFS/mem-rs" "$TFS/mem-rs2"
fi

python3 - "$WORK" "$FILES" <<'PY'
import json, sys, os
w, files = sys.argv[1], int(sys.argv[2])
def means(f):
    if not os.path.exists(os.path.join(w, f)):
        return None
    return {r["command"]: r["mean"] for r in json.load(open(os.path.join(w, f)))["results"]}
rows = [("full.json", "offdisk full", ["rsync -a full", "rsync -a full + sync"]),
        ("incr.json", "offdisk incremental", ["rsync --link-dest", "rsync --link-dest + sync"]),
        ("verify.json", "offdisk verify", ["b3sum --check"]),
        ("prune.json", "offdisk prune", ["rm -rf"])]
print("\n# ratios (offdisk / reference; < 1 means offdisk is faster)")
for f, ours, refs in rows:
    m = means(f)
    if m is None:
        continue
    for r in refs:
        print(f"{ours:22s} {m[ours]:8.3f} s  vs {r:26s} {m[r]:8.3f} s  ratio {m[ours] / m[r]:.2f}")
    before = ours.replace("offdisk", "before")
    if before in m:
        print(f"{ours:22s} {m[ours]:8.3f} s  vs {before:26s} {m[before]:8.3f} s  ratio {m[ours] / m[before]:.3f}  (cost of the change)")
    for name in [ours] + ([before] if before in m else []) + refs:
        print(f"{name:26s} {m[name] / files * 1000 * 1e3:8.2f} ms per 1,000 files")
PY
echo "# work dir kept: $WORK (remove with rm -rf)"
