# Shared by the recorder (record.sh, in the VM) and the per-state check (check.sh, on the
# host). $OUT holds what the recording left: the oracle (what each step said it did), the
# passphrase files, offdisk's config and host ledger.
ORACLE=$OUT/oracle
KEYS=$OUT/keys
CONF=$OUT/etc/config.toml
HOSTKEY=$OUT/etc/host.key
export OFFDISK_LEDGER_DIR=$OUT/ledger
FAST=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
ALL_KEYS="A B C"

# The step before STEP in the scenario ("blank" before the first).
step_before() { awk -v s="$1" 'BEGIN { p = "blank" } $0 == s { print p; found = 1; exit } { p = $0 } END { if (!found) print "blank" }' "$ORACLE/steps"; }
# Passphrases (names in $KEYS) that open the disk after STEP, sorted, space-separated.
keys_after() { [ "$1" = blank ] && echo "" || cat "$ORACLE/$1.keys"; }
# "NAME MANIFEST_B3" of each complete generation after STEP.
gens_after() { [ "$1" = blank ] || cat "$ORACLE/$1.gens"; }
