#!/usr/bin/env bash
# apt-get installs those of the given Debian packages that are not installed yet (as root).
# Another apt or dpkg (unattended-upgrades, a second terminal) may hold the package locks:
# wait for them, up to OFFDISK_APT_LOCK_TIMEOUT seconds (default 900), instead of failing.
set -euo pipefail
timeout=${OFFDISK_APT_LOCK_TIMEOUT:-900}
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
export DEBIAN_FRONTEND=noninteractive
# apt-get waits for dpkg's locks itself with DPkg::Lock::Timeout; `apt-get update` does not
# for the package lists' lock, so retry it while that lock is what stops it.
deadline=$((SECONDS + timeout))
while :; do
  err=$(mktemp)
  rc=0
  apt-get -o DPkg::Lock::Timeout="$timeout" update -q 2>"$err" || rc=$?
  cat "$err" >&2
  locked=0
  grep -q 'Could not get lock' "$err" && locked=1
  rm -f "$err"
  ((rc == 0)) && break
  if ((locked && SECONDS < deadline)); then
    echo "apt-missing: another apt holds the package lists' lock; waiting for it" >&2
    sleep "${OFFDISK_APT_RETRY_SECONDS:-5}"
    continue
  fi
  echo "apt-missing: apt-get update failed" >&2
  exit 1
done
apt-get -o DPkg::Lock::Timeout="$timeout" install -y -q "${missing[@]}"
