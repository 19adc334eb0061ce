#!/usr/bin/env python3
"""Prints everything observable about a tree, one line per entry in byte order of paths:
type, mode, owner, size, nanosecond mtime, SHA-256 of contents, symlink target, xattrs and
hard-link group. Used by t-anywhere.sh to compare what the kernel's dm-crypt + ext4 mount
shows with what `offdisk restore --from` wrote.

usage: anywhere-snap.py DIR [--no-owner] [--strip-setid]"""
import hashlib
import os
import stat
import sys

root = os.fsencode(sys.argv[1])
no_owner = "--no-owner" in sys.argv
strip_setid = "--strip-setid" in sys.argv

entries = []
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        entries.append(os.path.join(d, n))
entries.sort()
count = {}
for p in entries:
    st = os.lstat(p)
    if stat.S_ISREG(st.st_mode):
        count[st.st_ino] = count.get(st.st_ino, 0) + 1
first = {}
for p in entries:
    st = os.lstat(p)
    rel = os.path.relpath(p, root)
    mode = stat.S_IMODE(st.st_mode)
    if strip_setid:
        mode &= ~0o6000
    kind = stat.S_IFMT(st.st_mode) >> 12
    uid, gid = (0, 0) if no_owner else (st.st_uid, st.st_gid)
    size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
    content = ""
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        content = h.hexdigest()
    target = os.readlink(p).hex() if stat.S_ISLNK(st.st_mode) else ""
    xattrs = []
    if not stat.S_ISLNK(st.st_mode):
        for name in sorted(os.listxattr(p, follow_symlinks=False)):
            xattrs.append(name + "=" + os.getxattr(p, name, follow_symlinks=False).hex())
    group = ""
    if stat.S_ISREG(st.st_mode) and count[st.st_ino] > 1:
        group = first.setdefault(st.st_ino, rel).hex()
    print(rel.hex(), kind, oct(mode), uid, gid, size, st.st_mtime_ns, content, target, ",".join(xattrs), group)
