# Test 1, second case: the passphrase answered by `offdisk agent` in a logged-in user's session.
# A user logs in on tty1 (getty's autologin -> login -> pam_systemd: a logind session on seat0,
# the active local session, with its user manager and /run/user/UID); the shipped user unit
# offdisk-agent.service runs there, with a scripted pinentry (the Assuan commands offdisk's
# pinentry client sends) named by OFFDISK_PINENTRY in the user manager's environment. No
# ask-password agent runs, so the answer can only come from offdisk agent: the registered disk
# is plugged in -> exactly one prompt reaches the pinentry -> a verified new generation ->
# closed -> the summary in the journal.
. /mnt/repo/tests/systemd/lib.sh
user=odsess
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
uid=$(id -u "$user"); home=/home/$user
pin=$home/pinentry-test
# The scripted pinentry: greets, says OK to every setting, answers GETPIN from $home/pin-answer,
# and logs each command (never the answer) to $home/pin.log.
cat > "$pin" <<EOF
#!/bin/sh
echo 'OK Pleased to meet you'
while read -r cmd rest; do
  echo "\$cmd \$rest" >> $home/pin.log
  case "\$cmd" in
    GETPIN) echo "D \$(cat $home/pin-answer)"; echo OK;;
    BYE) echo OK; exit 0;;
    *) echo OK;;
  esac
done
EOF
printf 'correct horse' > "$home/pin-answer"; : > "$home/pin.log"
chmod 755 "$pin"; chown "$user:" "$pin" "$home/pin-answer" "$home/pin.log"; chmod 600 "$home/pin-answer"

# --- the login: autologin on tty1, as a console login of a real user ----------------------------
mkdir -p /run/systemd/system/getty@tty1.service.d
cat > /run/systemd/system/getty@tty1.service.d/autologin.conf <<EOF
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin $user --noclear %I \$TERM
EOF
systemctl daemon-reload; systemctl restart getty@tty1.service
# The active session of seat0 is the user's, local, of class user: what dock's audience reads.
session_active() {
  local s; s=$(sed -n 's/^ACTIVE=//p' /run/systemd/seats/seat0 2>/dev/null)
  [ -n "$s" ] && grep -qx "UID=$uid" "/run/systemd/sessions/$s" && grep -qx 'CLASS=user' "/run/systemd/sessions/$s" \
    && [ -S "/run/user/$uid/systemd/private" ]
}
if wait_until 120 session_active; then
  ok sysd-agent-session-logged-in
else
  notok sysd-agent-session-logged-in "no active session of $user on seat0: $(loginctl list-sessions --no-legend 2>&1 | tr '\n' '|')"
fi

# --- a registered disk (no user named: the active session's user is asked) ----------------------
mkdir -p /srv/session; echo "from the session" > /srv/session/a.txt
d=$(new_disk sess 96 ODSESS1 OFFSITE6) || notok sysd-agent-init "could not make the disk"
p=$(part "$d")
out=$(offdisk register "$p" --source /srv/session --passphrase-file "$PW" 2>&1) || notok sysd-agent-register "$out"
unplug sess ODSESS1
# The agent starts only now: a dock that registering may set off (udev's change event) must not
# take the one answer this test counts.
as_user() { runuser -u "$user" -- env XDG_RUNTIME_DIR=/run/user/$uid "$@"; }
as_user systemctl --user set-environment OFFDISK_PINENTRY="$pin"
as_user systemctl --user start offdisk-agent.service
agent_up() { [ -S "/run/user/$uid/offdisk/agent.sock" ]; }
wait_until 60 agent_up && ok sysd-agent-listening \
  || notok sysd-agent-listening "$(as_user systemctl --user status offdisk-agent.service 2>&1 | tail -4 | tr '\n' '|')"
grep -qs "ask-agent[.]py" /proc/[0-9]*/cmdline && notok sysd-agent-no-other-agent "a scripted ask-password agent is running"

c=$(cursor)
d=$(plug sess 96 ODSESS1); p=$(part "$d"); unit=offdisk-dock@${p#/dev/}.service
if wait_until 600 unit_ended "$c" "$unit"; then
  log=$(unit_log "$c" "$unit")
  summary=$(echo "$log" | grep ': done: .*quick verify passed')
  [ -n "$summary" ] && echo "$log" | grep -q 'Deactivated successfully' && echo "$log" | grep -q 'closed, safe to unplug' \
    && ok sysd-agent-dock-completes || notok sysd-agent-dock-completes "$(echo "$log" | tail -5 | tr '\n' '|')"
  echo "# journal: $summary"
  expect_eq sysd-agent-unit-exit-status "$(systemctl show -p ExecMainStatus --value "$unit")" 0
else
  notok sysd-agent-dock-completes "$unit never ended: $(systemctl status "$unit" 2>&1 | tail -5 | tr '\n' '|')"
fi
expect_eq sysd-agent-one-prompt "$(grep -c '^GETPIN' "$home/pin.log")" 1
grep -q 'SETDESC .*OFFSITE6' "$home/pin.log" && ok sysd-agent-prompt-names-disk || notok sysd-agent-prompt-names-disk "$(grep SETDESC "$home/pin.log")"
echo "# agent's journal: $(journalctl -q --after-cursor="$c" _UID="$uid" -o cat | grep -i offdisk | tail -3 | tr '\n' '|')"
no_mapping && ok sysd-agent-closed || notok sysd-agent-closed "$(luks_mappings)"
expect_eq sysd-agent-generation "$(generations_of "$p")" 1
out=$(offdisk verify --from "$p" --key-file "$PW" 2>&1); rc=$?
expect_eq sysd-agent-generation-verifies "$rc" 0; [ "$rc" -eq 0 ] || echo "# $out" | tail -3
unplug sess ODSESS1

# Log the user out again (the other scripts run without a session).
as_user systemctl --user stop offdisk-agent.service
rm -rf /run/systemd/system/getty@tty1.service.d; systemctl daemon-reload
loginctl terminate-user "$user" 2>/dev/null; systemctl restart getty@tty1.service
