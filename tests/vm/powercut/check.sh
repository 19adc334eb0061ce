# One crash state, rebuilt by log_replay on the host (PC_* describe it; see
# examples/log_replay): $RIMG is the disk, $PLAIN the plaintext of its LUKS data segment.
# Is the disk what the step may leave after a power cut?
# Every state: the GPT; which passphrases open the LUKS header, by offdisk and by cryptsetup
# (the same volume key from both) — an old or a new passphrase set, never another; the
# filesystem mounted (the kernel replays the journal): the generations offdisk lists (none
# lost, none that never completed, each manifest the one written), a quick verify, the
# ledger parses; `e2fsck -fn` clean. Deep states also: full `offdisk verify` and
# `b3sum --check` of every generation, `offdisk status`, and a new backup on that disk that
# completes and verifies. The mount and its writes go to a copy ($W/work.img).
set -u
. "$PCDIR/common.sh"
name="powercut-state-$PC_STATE"
desc="$PC_KIND in $PC_STEP ($PC_PHASE), kept $PC_KEPT lost $PC_DROPPED"
CM=$W/cm
WORK=$W/work.img
problems=()
bad() { problems+=("$*"); }
# Time per phase of the check (microseconds), summarised by run.sh.
last=${EPOCHREALTIME/./}
lap() { local now=${EPOCHREALTIME/./}; echo "$1 $((now - last))" >> "$W/times"; last=$now; }
# Bounds a command: a hang is a failure, not a stuck run.
T() { timeout 300 "$@"; }
finish() {
  mountpoint -q "$CM" && umount "$CM"
  if [ ${#problems[@]} -eq 0 ]; then echo "ok $name $desc"; exit 0; fi
  echo "not ok $name: $desc: ${problems[*]}"
  exit 1
}
# cryptsetup's luksDump --dump-volume-key, as lower-case hex.
mk_hex() { sed -n '/^MK dump:/,$p' | sed 's/^MK dump://' | tr -d ' \t\n'; }

prev=$(step_before "$PC_STEP")
case $PC_PHASE in
  before) allowed=$prev ;;
  after) allowed=$PC_STEP ;;
  *) allowed="$prev $PC_STEP" ;;
esac
[ "$PC_STEP" = start ] && allowed=blank
# While init runs nothing is promised yet, except that both tools agree and only its
# passphrase opens whatever header there is.
lax=0
case " $allowed " in *" blank "*) lax=1 ;; esac

if [ -z "$PC_PART_START" ]; then
  [ $lax = 1 ] || bad "no valid GPT"
  finish
fi
[ "$PC_GPT" = primary ] || [ $lax = 1 ] || bad "the primary GPT is damaged"

# LUKS: the same header bytes give the same answer, so it is kept per PC_WATCH_KEY.
cache=$W/luks-cache/$PC_WATCH_KEY
if [ -f "$cache" ]; then
  opened=$(cat "$cache")
else
  hdr=$W/header.img
  dd if="$RIMG" of="$hdr" bs=512 skip="$PC_PART_START" count=$((17 * 2048)) status=none
  opened="" agree=1
  for k in $ALL_KEYS; do
    a=$(T "$OFFDISK" luks dump --json --dump-volume-key --key-file "$KEYS/$k" "$hdr" 2>/dev/null | jq -r '.volume_key // empty' 2>/dev/null)
    b=$(T cryptsetup luksDump --dump-volume-key --batch-mode --key-file "$KEYS/$k" "$hdr" 2>/dev/null | mk_hex)
    [ "$a" = "$b" ] || { agree=0; bad "passphrase $k: offdisk gives key '${a:0:12}', cryptsetup '${b:0:12}'"; }
    [ -n "$a" ] && opened="$opened $k"
  done
  opened=${opened# }
  [ $agree = 1 ] && { mkdir -p "$W/luks-cache"; echo "$opened" > "$cache"; }
fi
want=""; match=0
for s in $allowed; do
  want="$want '$(keys_after "$s")'"
  [ "$opened" = "$(keys_after "$s")" ] && match=1
done
[ $lax = 1 ] && case "$opened" in ""|A) match=1 ;; esac
[ $match = 1 ] || bad "opens with '$opened', want one of:$want"
lap luks
if [ $lax = 1 ] || [ -z "$opened" ]; then finish; fi

# The filesystem: a copy of the plaintext, mounted (the kernel replays the journal).
cp --sparse=always "$PLAIN" "$WORK"
if ! T mount -o loop,nosuid,nodev "$WORK" "$CM" 2>"$W/mount.err"; then
  bad "mount: $(head -c 200 "$W/mount.err")"
  finish
fi
lap mount
listed=$(T "$OFFDISK" generations --target "$CM" --json 2>"$W/gens.err" | jq -r '.[].name') || bad "offdisk generations: $(head -c 200 "$W/gens.err")"
# Generations every allowed outcome has must be there; listed ones must have completed.
nallowed=$(echo $allowed | wc -w)
must=$(for s in $allowed; do gens_after "$s" | cut -d' ' -f1 | sort -u; done | sort | uniq -c | awk -v n="$nallowed" '$1 == n { print $2 }')
for g in $must; do echo "$listed" | grep -qx "$g" || bad "generation $g is lost"; done
for g in $listed; do
  b3=$(for s in $allowed; do gens_after "$s"; done | awk -v g="$g" '$1 == g { print $2; exit }')
  if [ -z "$b3" ]; then bad "generation $g is listed but never completed"; continue; fi
  [ "$(b3sum --no-names "$CM/generations/$g/manifest.b3" 2>&1)" = "$b3" ] || bad "generation $g: manifest.b3 is not the one written"
done
# A step that has finished leaves no partial or half-deleted generation behind.
if [ "$PC_PHASE" != during ]; then
  left=$(ls -A "$CM/generations" 2>/dev/null | grep -E '^\.(partial|deleting)-' | tr '\n' ' ')
  [ -z "$left" ] || bad "leftovers after the step finished: $left"
fi
# init registered the disk: this host's identity record is on it (dock checks it).
for r in "$CM"/.offdisk/identity/*.json; do
  jq -e '.disk_id' "$r" >/dev/null 2>&1 || bad "identity record ${r#$CM/}: $(head -c 100 "$r" 2>&1 | tr '\n' ' ')"
done
if [ -e "$CM/offdisk-ledger.json" ]; then
  jq -e '.generations' "$CM/offdisk-ledger.json" >/dev/null 2>&1 || bad "the disk's ledger does not parse: $(head -c 120 "$CM/offdisk-ledger.json" | tr '\n' ' ')"
fi
lap generations
if [ -n "$listed" ]; then
  T "$OFFDISK" verify --target "$CM" --quick > "$W/verify.log" 2>&1 || bad "quick verify: $(tail -n 3 "$W/verify.log" | tr '\n' ' ')"
fi
lap quick-verify
if [ "$PC_DEEP" = 1 ]; then
  if [ -n "$listed" ]; then
    T "$OFFDISK" verify --target "$CM" > "$W/verify.log" 2>&1 || bad "verify: $(tail -n 3 "$W/verify.log" | tr '\n' ' ')"
    for g in $listed; do
      (cd "$CM/generations/$g" && T b3sum --check --quiet manifest.b3) > "$W/b3.log" 2>&1 || bad "b3sum --check $g: $(head -n 2 "$W/b3.log" | tr '\n' ' ')"
    done
  fi
  T "$OFFDISK" status --config "$CONF" > "$W/status.log" 2>&1 || bad "offdisk status: $(tail -n 2 "$W/status.log" | tr '\n' ' ')"
  lap deep-verify
fi
umount "$CM" || bad "umount"
T e2fsck -fn "$WORK" > "$W/fsck.log" 2>&1 || bad "e2fsck -fn: $(grep -v '^Pass\|^e2fsck\|^PCUT' "$W/fsck.log" | head -n 4 | tr '\n' ' ')"
lap e2fsck
if [ "$PC_DEEP" = 1 ]; then
  if T mount -o loop,nosuid,nodev "$WORK" "$CM"; then
    T "$OFFDISK" backup --target "$CM" --no-progress "$SRC" > "$W/next.log" 2>&1 || bad "the next backup: $(tail -n 3 "$W/next.log" | tr '\n' ' ')"
    T "$OFFDISK" verify --target "$CM" --generation latest > "$W/verify.log" 2>&1 || bad "verify after the next backup: $(tail -n 3 "$W/verify.log" | tr '\n' ' ')"
    umount "$CM"
  else
    bad "cannot mount again after e2fsck"
  fi
  lap next-backup
fi
finish
