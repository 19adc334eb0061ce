#!/usr/bin/env python3
"""A scripted systemd password agent (the protocol of systemd.io "Password Agents"),
written independently of offdisk so the VM test checks offdisk against the protocol.

ask-agent.py DIR ANSWERS_FILE LOG [DELAY]
Answers each new ask.* request in DIR whose Id starts with "offdisk-dock:" with the next
line of ANSWERS_FILE ("+pass" sends the passphrase, "-" cancels); logs one line per
request: "<Id>\t<Message>". Runs until killed."""
import os, socket, sys, time

d, answers_file, log = sys.argv[1], sys.argv[2], sys.argv[3]
delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
answers = open(answers_file).read().splitlines()
seen = set()

def parse(text):
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Ask]" and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out

while True:
    try:
        names = sorted(n for n in os.listdir(d) if n.startswith("ask."))
    except FileNotFoundError:
        names = []
    for n in names:
        p = os.path.join(d, n)
        if p in seen:
            continue
        try:
            ask = parse(open(p).read())
        except OSError:
            continue
        seen.add(p)
        with open(log, "a") as f:
            f.write("%s\t%s\n" % (ask.get("Id", ""), ask.get("Message", "")))
        if not ask.get("Id", "").startswith("offdisk-dock:"):
            continue
        time.sleep(delay)
        a = answers.pop(0) if answers else "-"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(a.encode(), ask["Socket"])
        except OSError as e:
            with open(log, "a") as f:
                f.write("send failed: %s\n" % e)
        s.close()
    time.sleep(0.1)
