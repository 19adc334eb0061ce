#!/usr/bin/env bash
# Runs every offdisk test: installs what the tests need, then the host tiers
# (unit, vector corpus, CLI snapshots, interop with cryptsetup/b3sum/rsync) with
# `cargo test`, then the kernel tier (dm-crypt, loop, mount, udev) in a throwaway VM.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash tests/deps.sh || { echo "installing test dependencies failed"; exit 1; }
. "$HOME/.cargo/env" 2>/dev/null || true

log=$(mktemp)
status=0
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# dm-crypt and offdisk's ciphers reading each other's data sectors (boots its own VM).
cargo test --test luks_vm_data -- --ignored 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
passed=$(awk '/^test result:/ {for (i=1;i<=NF;i++) if ($(i+1) ~ /^passed;?$/) s+=$i} END {print s+0}' "$log")
failed=$(awk '/^test result:/ {for (i=1;i<=NF;i++) if ($(i+1) ~ /^failed;?$/) s+=$i} END {print s+0}' "$log")

if [ -x tests/vm/run.sh ] || [ -f tests/vm/run.sh ]; then
  OFFDISK_VM_NO_BENCH=1 bash tests/vm/run.sh 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  vm_line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$vm_line" ]; then
    passed=$((passed + $(echo "$vm_line" | awk '{print $1}')))
    failed=$((failed + $(echo "$vm_line" | awk '{print $3}')))
  else
    echo "VM suite printed no result line"; status=1
  fi
fi
rm -f "$log"
[ "$failed" -eq 0 ] || status=1
echo "total: $passed passed, $failed failed"
exit "$status"
