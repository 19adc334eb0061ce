#!/usr/bin/env bash
# Installs virtme-ng (PyPI) into a virtual environment at $OFFDISK_VENV (default
# /opt/offdisk-tests/venv), made with Debian's /usr/bin/python3 (`python3 -m venv`, package
# python3-venv): Debian's python refuses `pip install` into itself (PEP 668), and a pyenv or
# other python first on the PATH must not matter. Idempotent; needs root for the default path.
set -euo pipefail
. "$(dirname "$0")/vng.sh"
bash "$(dirname "$0")/apt-missing.sh" python3 python3-venv
if ! "$OFFDISK_VENV/bin/vng" --version >/dev/null 2>&1; then
  rm -rf "$OFFDISK_VENV"
  mkdir -p "$(dirname "$OFFDISK_VENV")"
  /usr/bin/python3 -m venv "$OFFDISK_VENV"
  "$OFFDISK_VENV/bin/python3" -m pip install -q --disable-pip-version-check virtme-ng
fi
"$OFFDISK_VENV/bin/vng" --version >/dev/null
echo "virtme-ng: $OFFDISK_VENV/bin/vng"
