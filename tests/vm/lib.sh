# Helpers for the VM test scripts. Sourced with cwd = $WORK (tmpfs-backed overlay).
set -u
PW="$WORK/pw"
printf 'correct horse' > "$PW"
printf 'wrong horse' > "$WORK/badpw"
# Small KDF costs: the VM emulates the CPU (TCG) and is slow.
FAST_CS=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
FAST_OD=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)

ok() { echo "ok $1"; }
notok() { echo "not ok $1: $2"; }
# check NAME COMMAND...: ok when the command succeeds.
check() { local n=$1; shift; if "$@" >/dev/null 2>>"$WORK/check.err"; then ok "$n"; else notok "$n" "command failed: $*"; fi; }
# expect_eq NAME GOT WANT
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else notok "$1" "got '$2', want '$3'"; fi; }

# new_image NAME SIZE_MB: a sparse image file; prints its path.
new_image() { local f="$WORK/$1.img"; rm -f "$f"; truncate -s "${2}M" "$f"; echo "$f"; }
# new_loop NAME SIZE_MB: a loop device (with partition scanning) on a fresh image.
new_loop() { losetup -P -f --show "$(new_image "$1" "$2")"; }

# table_of NAME: the live table of a mapping, keys shown, without the name.
table_of() { dmsetup table --showkeys "$1" 2>/dev/null; }
dm_uuid_of() { dmsetup info -c --noheadings -o uuid "$1" 2>/dev/null; }
mapping_count() { dmsetup ls 2>/dev/null | grep -vc '^No devices found'; }
