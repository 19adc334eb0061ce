# Helpers for the systemd-tier test scripts (run inside the VM by guest.sh, cwd $WORK).
set -u
PW="$WORK/pw"; printf 'correct horse' > "$PW"
FAST=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)   # the VM emulates the CPU: cheap KDFs
AGENT="python3 /mnt/repo/tests/vm/hotplug/ask-agent.py"
ASKDIR=/run/systemd/ask-password

ok() { echo "ok $1"; }
notok() { echo "not ok $1: $2"; }
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else notok "$1" "got '$2', want '$3'"; fi; }

# host REQUEST...: asks host.py (over virtio-serial) to plug or pull a disk.
host() {
  local reply
  exec 3<>/dev/virtio-ports/offdisk.ctl
  echo "$*" >&3; read -r reply <&3; exec 3>&-
  [ "$reply" = ok ] || { echo "# host: $* -> $reply"; return 1; }
}
# wait_until SECONDS COMMAND...: polls until COMMAND succeeds. The limit only catches a hang; the
# tests wait for states, never for a time.
wait_until() { local n=$(( $1 * 5 )); shift; while ! "$@" >/dev/null 2>&1; do n=$((n - 1)); [ "$n" -gt 0 ] || return 1; sleep 0.2; done; }
disk_of() { lsblk -dnpo NAME,SERIAL | awk -v s="$1" '$2 == s { print $1 }'; }
has_disk() { [ -n "$(disk_of "$1")" ]; }
no_disk() { [ -z "$(disk_of "$1")" ]; }
# plug ID MB SERIAL: plugs the disk in and prints its device once udev has handled it.
plug() { host plug "$@" || return 1; wait_until 180 has_disk "$3" || return 1; udevadm settle; disk_of "$3"; }
# unplug ID SERIAL: pulls the disk out and waits until the kernel and udev saw it go.
unplug() { host unplug "$1" || return 1; wait_until 180 no_disk "$2"; udevadm settle; }
# part DISK: its first partition (/dev/sda -> /dev/sda1).
part() { echo "${1}1"; }
cursor() { journalctl -n 0 --show-cursor -q 2>/dev/null | sed -n 's/^-- cursor: //p'; }
# unit_log CURSOR UNIT: what the journal holds about UNIT since CURSOR.
unit_log() { journalctl -q --after-cursor="$1" -u "$2" -o cat 2>/dev/null; }
# unit_ended CURSOR UNIT: UNIT ran and ended (either way) since CURSOR.
unit_ended() { unit_log "$1" "$2" | grep -Eq "Deactivated successfully|Failed with result"; }
unit_started() { unit_log "$1" "$2" | grep -q .; }
luks_mappings() { dmsetup ls 2>/dev/null | awk '$1 ~ /^luks-/ { print $1 }'; }
no_mapping() { [ -z "$(luks_mappings)" ]; }
gen_count() { ls "$1/generations" 2>/dev/null | grep -vc '^\.'; }
# generations_of PART: number of generations on PART, checked with cryptsetup, not offdisk.
generations_of() {
  local n
  cryptsetup open --readonly -d "$PW" "$1" sysdchk >/dev/null 2>&1 || { echo "cannot-open"; return; }
  mkdir -p "$WORK/chk"; mount -o ro /dev/mapper/sysdchk "$WORK/chk" && n=$(gen_count "$WORK/chk")
  umount "$WORK/chk" 2>/dev/null; cryptsetup close sysdchk; udevadm settle
  echo "${n:-cannot-mount}"
}
# new_disk ID MB SERIAL LABEL: a fresh offdisk disk (not registered); prints its device.
new_disk() {
  local d; d=$(plug "$1" "$2" "$3") || return 1
  offdisk init --batch --key-file "$PW" "${FAST[@]}" --label "$4" --no-register "$d" >"$WORK/init-$1.log" 2>&1 \
    || { echo "# init $d failed: $(tail -3 "$WORK/init-$1.log")" >&2; return 1; }
  udevadm settle; echo "$d"
}
