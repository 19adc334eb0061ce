# The disk pulled out at the other moments of a dock (t-02 pulls it during the copy):
#   (a) while the passphrase is asked (no answer given yet),
#   (b) during verify (the quick verify of the new generation),
#   (c) during prune (retention removing an old generation).
# Each time: the unit ends within its stop timeout (no SIGKILL), nothing stays mapped or mounted,
# no ask file is left behind, the journal says what happened, and the next plug-in docks and
# completes; at the end every generation verifies. One disk for all three, plugged in as a slow
# disk (200 and 500 kB/s) for (b) and (c). The moments are read from what the system shows: the ask file
# in /run/systemd/ask-password, dock's journal lines ("verifying", "pruning old generations").
# (b) needs verify to read from the disk, as it does for a generation larger than memory: the
# test drops the page cache after the new generation was made durable (as memory pressure
# would), so the verify walk reads its directories and inodes from the slow disk.
. /mnt/repo/tests/systemd/lib.sh
src=/srv/moments
mkdir -p "$src/keep"; echo keep > "$src/keep/a.txt"
# 1000 small files in 100 directories: cheap to back up at full speed, seconds to walk or
# delete at 500 kB/s from a cold cache.
python3 - "$src/many" <<'EOF'
import os, sys
for d in range(100):
    p = os.path.join(sys.argv[1], "d%03d" % d); os.makedirs(p)
    for f in range(10):
        with open(os.path.join(p, "f%d" % f), "w") as fh: fh.write("%d-%d\n" % (d, f))
EOF
d=$(new_disk mom 128 ODMOM1 OFFSITE5) || notok sysd-moments-init "could not make the disk"
p=$(part "$d")
out=$(offdisk register "$p" --source "$src" --keep-last 2 --passphrase-file "$PW" 2>&1) || notok sysd-moments-register "$out"
uuid=$(cryptsetup luksUUID "$p")
unplug mom ODMOM1
SLOW=500000   # bytes a second: a slow USB disk
SLOWER=200000 # for (b) and (c): verify and prune must outlast the journal line's way to the test and the pull's to dock

unit_of() { echo "offdisk-dock@$(basename "$(part "$1")").service"; }
# ended_cleanly TAG CURSOR UNIT: after a pull, UNIT stopped within its stop timeout, said that it
# was stopped and that the dock failed, and left nothing mapped, mounted or asked.
ended_cleanly() {
  local tag=$1 c=$2 unit=$3 log
  if wait_until 400 unit_ended "$c" "$unit"; then
    log=$(unit_log "$c" "$unit")
    echo "$log" | grep -Eq "timed out|SIGKILL|Killing process" && notok "sysd-$tag-within-stop-timeout" "$(echo "$log" | grep -E 'timed out|SIGKILL|Killing' | head -2)" \
      || ok "sysd-$tag-within-stop-timeout"
    # systemd's stop ("received: ...") may come after dock found the disk gone by itself (a
    # verify read failing at once): either way the run ends as the pull.
    echo "$log" | grep -q "OFFSITE5: failed: stopped before the end" \
      && echo "$log" | grep -q "the disk was removed; nothing lost" \
      && ok "sysd-$tag-dock-says-so" || notok "sysd-$tag-dock-says-so" "$(echo "$log" | tail -4 | tr '\n' '|')"
    # Handled cleanly (everything closed, exit 143): the unit is not left failed.
    echo "$log" | grep -q "Deactivated successfully" && ! echo "$log" | grep -q "Failed with result" \
      && ok "sysd-$tag-unit-not-failed" || notok "sysd-$tag-unit-not-failed" "$(echo "$log" | grep -E 'status=|result' | tail -3 | tr '\n' '|')"
    echo "# journal after the pull ($tag): $(echo "$log" | grep -v '^$' | grep 'offdisk dock' | tail -n 3 | tr '\n' '|')"
  else
    notok "sysd-$tag-unit-stopped" "$unit still running after the pull: $(systemctl status "$unit" 2>&1 | tail -4)"
  fi
  no_mapping && ok "sysd-$tag-nothing-mapped" || notok "sysd-$tag-nothing-mapped" "$(luks_mappings)"
  grep -l "luks-$uuid" /proc/[0-9]*/mountinfo 2>/dev/null | grep -q . && notok "sysd-$tag-nothing-mounted" "$(grep -h "luks-$uuid" /proc/[0-9]*/mountinfo | head -2)" \
    || ok "sysd-$tag-nothing-mounted"
  expect_eq "sysd-$tag-no-ask-file-left" "$(grep -lsi "$uuid" "$ASKDIR"/ask.* 2>/dev/null | wc -l)" 0
}
# next_dock_completes TAG: plugged in again at full speed (a scripted agent answers), it docks
# and completes.
next_dock_completes() {
  local tag=$1 c d unit log apid
  printf '+correct horse\n' > "$WORK/ans-$tag"; $AGENT "$ASKDIR" "$WORK/ans-$tag" "$WORK/agent-$tag.log" & apid=$!
  c=$(cursor); d=$(plug mom 128 ODMOM1); unit=$(unit_of "$d")
  if wait_until 600 unit_ended "$c" "$unit"; then
    log=$(unit_log "$c" "$unit")
    echo "$log" | grep -q 'Deactivated successfully' && echo "$log" | grep -q ': done: .*quick verify passed' \
      && ok "sysd-$tag-next-dock-completes" || notok "sysd-$tag-next-dock-completes" "$(echo "$log" | tail -5 | tr '\n' '|')"
    echo "# next dock ($tag): $(echo "$log" | grep -E 'stale|leftover|pruned|safe to unplug' | tr '\n' '|')"
  else
    notok "sysd-$tag-next-dock-completes" "$unit never ended"
  fi
  kill $apid; wait $apid 2>/dev/null
  no_mapping || notok "sysd-$tag-next-dock-closed" "$(luks_mappings)"
  unplug mom ODMOM1
}

# --- (a) pulled while the passphrase is asked: nobody answers ------------------------------------
asked() { grep -qsi "$uuid" "$ASKDIR"/ask.*; }
c=$(cursor); d=$(plug mom 128 ODMOM1); unit=$(unit_of "$d")
if wait_until 300 asked; then
  ok sysd-asking-asked
  unplug mom ODMOM1
  ended_cleanly asking "$c" "$unit"
else
  notok sysd-asking-asked "no ask file for $uuid: $(unit_log "$c" "$unit" | tail -4 | tr '\n' '|')"
  unplug mom ODMOM1
fi
next_dock_completes asking

# --- (b) pulled during verify ---------------------------------------------------------------------
# Something new, so the generation differs; the 1000 files are hard links of the first one.
echo again > "$src/keep/b.txt"
printf '+correct horse\n' > "$WORK/ans-v"; $AGENT "$ASKDIR" "$WORK/ans-v" "$WORK/agent-v.log" & apid=$!
c=$(cursor); d=$(plug mom 128 ODMOM1 $SLOWER); unit=$(unit_of "$d")
durable() { unit_log "$c" "$unit" | grep -q 'making the new generation durable'; }
verifying() { unit_log "$c" "$unit" | grep -q ': verifying$'; }
drop_until_verifying() { while ! verifying; do echo 3 > /proc/sys/vm/drop_caches; unit_ended "$c" "$unit" && return 1; sleep 0.2; done; }
if wait_until 600 durable && drop_until_verifying; then
  ok sysd-verify-started
  unplug mom ODMOM1
  ended_cleanly verify "$c" "$unit"
  unit_log "$c" "$unit" | grep -q 'quick verify passed' && notok sysd-verify-pulled-in-time "verify had ended before the pull" || ok sysd-verify-pulled-in-time
  # The reads the pull failed are no verdict: the disk went away, nothing on it was judged.
  log=$(unit_log "$c" "$unit")
  echo "$log" | grep -q "the disk stopped answering during verify (removed, or failing); nothing on it was judged" && ! echo "$log" | grep -q "does not match its manifest" \
    && ok sysd-verify-pull-is-no-verdict || notok sysd-verify-pull-is-no-verdict "$(echo "$log" | grep -E 'verify|failed' | tail -3 | tr '\n' '|')"
else
  notok sysd-verify-started "verify never started: $(unit_log "$c" "$unit" | tail -4 | tr '\n' '|')"
  unplug mom ODMOM1
fi
kill $apid; wait $apid 2>/dev/null
# The next dock also prunes the first generation (keep-last 2); the 1000 files get new contents,
# so the generation holding the old ones (the second) is then the only one that has them.
python3 - "$src/many" <<'EOF'
import os, sys
for d in sorted(os.listdir(sys.argv[1])):
    for f in sorted(os.listdir(os.path.join(sys.argv[1], d))):
        with open(os.path.join(sys.argv[1], d, f), "w") as fh: fh.write("%s-%s v2\n" % (d, f))
EOF
next_dock_completes verify

# --- (c) pulled during prune: the second generation (1000 files only it has) is removed ----------
echo third > "$src/keep/c.txt"
printf '+correct horse\n' > "$WORK/ans-p"; $AGENT "$ASKDIR" "$WORK/ans-p" "$WORK/agent-p.log" & apid=$!
# At the slower rate too: on an idle machine, removing 1000 files' links at $SLOW could end
# before the pull reached dock.
c=$(cursor); d=$(plug mom 128 ODMOM1 $SLOWER); unit=$(unit_of "$d")
pruning() { unit_log "$c" "$unit" | grep -q 'pruning old generations'; }
if wait_until 600 pruning; then
  ok sysd-prune-started
  unplug mom ODMOM1
  ended_cleanly prune "$c" "$unit"
  unit_log "$c" "$unit" | grep -q 'pruned generation' && notok sysd-prune-pulled-in-time "prune had ended before the pull" || ok sysd-prune-pulled-in-time
else
  notok sysd-prune-started "prune never started: $(unit_log "$c" "$unit" | tail -4 | tr '\n' '|')"
  unplug mom ODMOM1
fi
kill $apid; wait $apid 2>/dev/null
next_dock_completes prune

# --- every generation verifies (offdisk verify --from reads them all, contents included) ----------
d=$(plug mom 128 ODMOM1); p=$(part "$d")
echo "# generations at the end: $(generations_of "$p")"
out=$(offdisk verify --from "$p" --key-file "$PW" 2>&1); rc=$?
expect_eq sysd-moments-generations-verify "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -3
unplug mom ODMOM1
