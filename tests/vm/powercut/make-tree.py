#!/usr/bin/env python3
"""make-tree.py DIR [FILES]: a deterministic source tree for the power-cut scenario.

FILES regular files (default 3000) spread over nested directories, mostly small (what a home
directory is full of), one in a hundred of 32-128 KiB, a few empty; plus symlinks, a hard-link pair, an
empty directory and a name that is not UTF-8.
"""
import os
import random
import sys

root = sys.argv[1].encode()
files = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
rng = random.Random(11)
os.makedirs(root, exist_ok=True)
dirs = [root]
for i in range(max(1, files // 40)):
    parent = rng.choice(dirs)
    d = os.path.join(parent, b"d%03d" % i)
    os.mkdir(d)
    dirs.append(d)
for i in range(files):
    d = rng.choice(dirs)
    r = rng.random()
    size = 0 if r < 0.02 else rng.randint(32 << 10, 128 << 10) if r < 0.03 else rng.randint(1, 6000)
    with open(os.path.join(d, b"f%05d.dat" % i), "wb") as f:
        f.write(rng.randbytes(size))
os.symlink(b"d000/f00000.dat", os.path.join(root, b"link-rel"))
os.symlink(b"/nonexistent/target", os.path.join(root, b"link-dangling"))
with open(os.path.join(root, b"hl-a"), "wb") as f:
    f.write(b"linked twice\n")
os.link(os.path.join(root, b"hl-a"), os.path.join(root, b"hl-b"))
os.mkdir(os.path.join(root, b"empty-dir"))
with open(os.path.join(root, b"caf\xe9-latin1.txt"), "wb") as f:
    f.write(b"not utf-8 name\n")
