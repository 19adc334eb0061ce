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

# Installing one package can remove another that was already there: on a machine with
# qemu-utils from bookworm-backports, installing bookworm's qemu-system-x86 removes qemu-utils
# (their versions must match), and the systemd tier then had no qemu-img. So check every package
# asked for, not only the missing ones, and install again what is gone (apt now picks versions
# that fit together); fail, naming them, if that still leaves any out.
gone() {
  local p out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]}"
}
read -r -a removed <<<"$(gone "$@")"
((${#removed[@]})) || exit 0
echo "apt-missing: installing removed ${removed[*]} again (another package's install took it away)" >&2
apt-get -o DPkg::Lock::Timeout="$timeout" install -y -q "${removed[@]}"
read -r -a still <<<"$(gone "$@")"
if ((${#still[@]})); then
  echo "apt-missing: ${still[*]} could not be installed together with the others" >&2
  exit 1
fi
