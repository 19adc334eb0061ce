#!/usr/bin/env bash
# Checks that the Rust toolchain on the PATH (after ~/.cargo/env, where rustup puts it) is at
# least Cargo.toml's rust-version, and says exactly what to run when it is missing or too old.
# Debian 12's own cargo (apt package cargo) is far older and cannot read Cargo.lock v4.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml" | head -n 1)
[ -n "$want" ] || { echo "check-rust: no rust-version in $repo/Cargo.toml" >&2; exit 1; }
. "$HOME/.cargo/env" 2>/dev/null || true

rustup_steps() {
  cat >&2 <<MSG
Install a current Rust with rustup (as the user who builds; root is fine):
  apt-get install -y curl ca-certificates gcc
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "\$HOME/.cargo/env"
then run this command again.
MSG
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "offdisk needs Rust >= $want (Cargo.toml rust-version), and cargo is not installed." >&2
  rustup_steps
  exit 1
fi
have=$(cargo --version 2>/dev/null | awk '{print $2}' | sed 's/[-+].*//')
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" != "$want" ]; then
  where=$(command -v cargo)
  echo "offdisk needs Rust >= $want (Cargo.toml rust-version); $where is ${have:-of unknown version}." >&2
  if command -v rustup >/dev/null 2>&1; then
    echo "Update it with:" >&2
    echo "  rustup update stable && rustup default stable" >&2
    echo "then run this command again." >&2
  else
    case "$where" in
      /usr/bin/*) echo "That is Debian's cargo (apt package cargo): too old for offdisk; rustup's comes first on the PATH once installed." >&2 ;;
    esac
    rustup_steps
  fi
  exit 1
fi
echo "check-rust: cargo $have (>= $want)"
