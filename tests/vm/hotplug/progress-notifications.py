#!/usr/bin/env python3
"""progress-notifications.py BUS_LOG SUMMARY

Reads a `dbus-monitor` log of the session bus (Notify calls and method returns) and checks
that the notifications with SUMMARY are one notification updated in place: the first is new
(replaces_id 0), the notification daemon answers it with an id, and at least two later
updates replace exactly that id and carry numbers (files, a percentage, time left).
Prints what it found; exits 1 when the check fails."""
import re, sys

log, want = sys.argv[1], sys.argv[2]
text = open(log, errors="replace").read()
blocks = re.split(r"\n(?=(?:method call|method return|signal|error) )", text)
calls, returns = [], {}
arg = r'\s+string "(.*?)"\n\s+uint32 (\d+)\n\s+string "(.*?)"\n\s+string "(.*?)"\n\s+string "(.*?)"\n'
for b in blocks:
    head = b.split("\n", 1)[0]
    if head.startswith("method call") and "member=Notify" in head:
        m = re.search(arg, b, re.S)
        serial = re.search(r"serial=(\d+)", head)
        sender = re.search(r"sender=(\S+)", head)
        if m and serial and sender:
            calls.append({"sender": sender.group(1), "serial": serial.group(1), "replaces": int(m.group(2)), "summary": m.group(4), "body": m.group(5)})
    elif head.startswith("method return"):
        rs = re.search(r"reply_serial=(\d+)", head)
        dest = re.search(r"destination=(\S+)", head)
        val = re.search(r"\n\s+uint32 (\d+)", b)
        if rs and dest and val:
            returns[(dest.group(1), rs.group(1))] = int(val.group(1))

mine = [c for c in calls if c["summary"] == want]
for c in mine:
    c["id"] = returns.get((c["sender"], c["serial"]))
    print(f'replaces={c["replaces"]} id={c["id"]} body={c["body"]!r}')
if not mine:
    sys.exit(f"no notification {want!r} among {len(calls)} Notify calls")
first = mine[0]
if first["replaces"] != 0 or not first["id"]:
    sys.exit("the first progress notification is not a new one the daemon gave an id")
later = mine[1:]
if any(c["replaces"] != first["id"] or c["id"] != first["id"] for c in later):
    sys.exit("an update did not replace the first notification in place")
numbers = [c for c in later if re.search(r"\d+ files, .*\d+%.*left", c["body"])]
if len(numbers) < 2:
    sys.exit(f"only {len(numbers)} updates with files, percent and time left")
print(f"ok: {len(later)} updates of notification {first['id']}, {len(numbers)} with numbers")
