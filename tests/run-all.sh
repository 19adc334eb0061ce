#!/usr/bin/env bash
# Runs every offdisk test: installs what the tests need, then each tier in turn, printing each
# tier's result and wall time, and ends with `total: N passed, M failed`.
#
# Adding a tier is one line at the bottom: `tier NAME command args...`. A tier's count is the
# sum of cargo's `test result:` lines if it prints any, else its last `N passed, M failed` line;
# a tier that exits non-zero without reporting a failed test counts as one failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

passed=0 failed=0 status=0 times=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

tier() {
  local name=$1; shift
  local start=$SECONDS rc p f
  echo "=== tier $name: $*"
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if grep -q '^test result:' "$log"; then
    p=$(awk '/^test result:/ {for (i=1;i<=NF;i++) if ($(i+1) ~ /^passed;?$/) s+=$i} END {print s+0}' "$log")
    f=$(awk '/^test result:/ {for (i=1;i<=NF;i++) if ($(i+1) ~ /^failed;?$/) s+=$i} END {print s+0}' "$log")
  else
    local line
    line=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 | sed -E 's/^[A-Za-z-]+: //')
    p=$(echo "$line" | awk '{print $1+0}')
    f=$(echo "$line" | awk '{print $3+0}')
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "tier $name exited $rc without reporting a failed test: counted as one failure"
    f=1
  fi
  [ "$rc" -eq 0 ] && [ "$f" -eq 0 ] || status=1
  passed=$((passed + p)); failed=$((failed + f))
  times+=("$(printf '%-10s %4d passed, %3d failed  %5d s' "$name" "$p" "$f" "$((SECONDS - start))")")
  echo "=== tier $name: $p passed, $f failed in $((SECONDS - start)) s"
}

start_all=$SECONDS
bash tests/deps.sh || { echo "installing test dependencies failed"; echo "total: 0 passed, 1 failed"; exit 1; }
bash scripts/check-rust.sh || { echo "total: 0 passed, 1 failed"; exit 1; }
. "$HOME/.cargo/env" 2>/dev/null || true
times+=("$(printf '%-10s %31d s' deps "$((SECONDS - start_all))")")

# Host tiers: unit, vector corpus, CLI snapshots, interop with cryptsetup/b3sum/rsync, packaging.
tier host cargo test --all-targets --no-fail-fast
# dm-crypt and offdisk's ciphers reading each other's data sectors (boots its own VM).
tier vm-data cargo test --test luks_vm_data -- --ignored
# The kernel tier: tests/vm/t-*.sh in one VM (dm-crypt, loop, mount, udev, hot-plug).
tier vm env OFFDISK_VM_NO_BENCH=1 bash tests/vm/run.sh
# systemd as PID 1: a Debian image (mmdebstrap, cached) booted under qemu; disks plugged and
# pulled through qemu's monitor start the shipped offdisk-dock@.service for real.
tier systemd bash tests/systemd/run.sh
# Power-cut replay: crash states of init/backup/prune/key changes from a dm-log-writes log
# (CRASH_STATES=N for long runs).
tier powercut bash tests/vm/powercut/run.sh

echo "=== wall time per tier (CI budget: 45 min)"
printf '  %s\n' "${times[@]}"
echo "  all        $((SECONDS - start_all)) s"
[ "$failed" -eq 0 ] || status=1
echo "total: $passed passed, $failed failed"
exit "$status"
