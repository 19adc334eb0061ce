# Sourced by the scripts that boot throwaway VMs: where virtme-ng lives.
# virtme-ng (PyPI) is installed by scripts/virtme-venv.sh into a virtual environment at
# $OFFDISK_VENV (default /opt/offdisk-tests/venv), made with Debian's /usr/bin/python3, so no
# script depends on which python comes first on the PATH or on pip installing into it.
OFFDISK_VENV=${OFFDISK_VENV:-/opt/offdisk-tests/venv}
# vng runs its helpers (virtme-run, ...) by name: the venv's must come first on the PATH.
if [ -x "$OFFDISK_VENV/bin/vng" ]; then
  PATH="$OFFDISK_VENV/bin:$PATH"
  export PATH
fi

# Prints the vng to run: $OFFDISK_VNG, else the venv's, else one on the PATH. Fails if none.
offdisk_vng() {
  if [ -n "${OFFDISK_VNG:-}" ]; then echo "$OFFDISK_VNG"; return 0; fi
  if [ -x "$OFFDISK_VENV/bin/vng" ]; then echo "$OFFDISK_VENV/bin/vng"; return 0; fi
  command -v vng 2>/dev/null
}
