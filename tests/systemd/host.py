#!/usr/bin/env python3
"""Boots the systemd test VM under qemu (TCG) and plugs and pulls its disks on the guest's request.

host.py --kernel K --initrd I --image BASE --repo DIR --out DIR --timeout S [--disk ID:MB:SERIAL ...]

The root disk is a throwaway qcow2 overlay on BASE (the cached image stays untouched). The guest
sees the repository (read-only) and OUT through 9p, its console is copied to stdout, and it asks
for disk changes over the virtio-serial port "offdisk.ctl", one line per request:
  plug ID MB SERIAL [BPS]
                      attach disk ID (a MB-sized raw image, created on first use, kept between
                      plugs) as a USB mass-storage device with that serial number; BPS throttles
                      its I/O to that many bytes a second (a slow disk, to pull it mid-copy)
  unplug ID           pull it out (qemu device_del: a surprise removal for USB)
each answered by "ok" or "err WHY". --disk attaches a disk at boot (coldplug) the same way.
When the guest powers off leaving OUT/reboot (lines of disk IDs), the VM boots again on the same
root overlay with those disks attached from power-on: a boot with a disk already docked.
Exits with qemu's status, or 124 when the timeout hits (the VM is killed)."""
import argparse, os, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
for a in ("--kernel", "--initrd", "--image", "--repo", "--out"):
    ap.add_argument(a, required=True)
ap.add_argument("--timeout", type=float, default=900)
ap.add_argument("--disk", action="append", default=[])
ap.add_argument("--append", default="")
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="offdisk-sysd-")
overlay = os.path.join(tmp, "root.qcow2")
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(args.image), "-F", "raw", overlay], check=True)
mon_path, ctl_path = os.path.join(tmp, "mon.sock"), os.path.join(tmp, "ctl.sock")
disks = os.path.join(tmp, "disks")
os.mkdir(disks)
plugs = {}  # disk id -> generation counter (qemu ids must be fresh after a device_del)


def image_of(did, mb):
    p = os.path.join(disks, did + ".img")
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.truncate(int(mb) * 1024 * 1024)
    return p


def drive_opts(did, mb):
    n = plugs.get(did, 0) + 1
    plugs[did] = n
    return "drv-%s-%d" % (did, n), image_of(did, mb)


cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2", "-no-reboot",
       "-display", "none", "-serial", "stdio", "-monitor", "unix:%s,server=on,wait=off" % mon_path,
       "-kernel", args.kernel, "-initrd", args.initrd,
       "-append", "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=0 " + args.append,
       "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe" % overlay,
       "-virtfs", "local,path=%s,mount_tag=offdisk-repo,security_model=none,readonly=on,id=repo" % os.path.abspath(args.repo),
       "-virtfs", "local,path=%s,mount_tag=offdisk-out,security_model=none,id=out" % os.path.abspath(args.out),
       "-device", "qemu-xhci,id=xhci",
       "-device", "virtio-serial-pci,id=vser",
       "-chardev", "socket,id=ctl,path=%s,server=on,wait=off" % ctl_path,
       "-device", "virtserialport,chardev=ctl,name=offdisk.ctl"]
sizes = {}  # disk id -> (MB, serial), for a second boot with them attached


def boot(specs):
    global qemu
    for sock in (mon_path, ctl_path):
        if os.path.exists(sock):
            os.remove(sock)
    c = list(cmd)
    for spec in specs:
        did, mb, serial = spec.split(":")
        sizes[did] = (mb, serial)
        drv, path = drive_opts(did, mb)
        c += ["-drive", "file=%s,if=none,id=%s,format=raw,cache=unsafe" % (path, drv),
              "-device", "usb-storage,bus=xhci.0,drive=%s,id=%s,serial=%s,removable=on" % (drv, did, serial)]
    qemu = subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    threading.Thread(target=pump, args=(qemu,), daemon=True).start()
    threading.Thread(target=control, daemon=True).start()


def pump(q):
    for line in q.stdout:
        sys.stdout.write(line.decode(errors="replace").replace("\r", ""))
        sys.stdout.flush()

def connect(path):
    while qemu.poll() is None:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            time.sleep(0.2)
    return None


class Monitor:
    def __init__(self):
        self.s = connect(mon_path)
        self.read_prompt()

    def read_prompt(self):
        buf = b""
        while not buf.endswith(b"(qemu) "):
            chunk = self.s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")

    def run(self, line):
        self.s.sendall(line.encode() + b"\n")
        out = self.read_prompt()
        # The monitor echoes the command; what follows it, before the prompt, is its answer.
        out = out.replace("(qemu) ", "").split("\n", 1)[-1].strip()
        return out


def control():
    mon = Monitor()
    ctl = connect(ctl_path)
    if ctl is None:
        return
    f = ctl.makefile("rwb", buffering=0)
    for raw in f:
        words = raw.decode(errors="replace").split()
        reply = "err unknown request"
        try:
            if words[:1] == ["plug"] and len(words) in (4, 5):
                did, mb, serial = words[1:4]
                sizes[did] = (mb, serial)
                drv, path = drive_opts(did, mb)
                throttle = ",throttling.bps-total=%d" % int(words[4]) if len(words) == 5 else ""
                out = mon.run("drive_add 0 if=none,id=%s,file=%s,format=raw,cache=unsafe%s" % (drv, path, throttle))
                if "OK" not in out:
                    reply = "err drive_add: " + out
                else:
                    out = mon.run("device_add usb-storage,bus=xhci.0,drive=%s,id=%s,serial=%s,removable=on" % (drv, did, serial))
                    reply = "ok" if not out else "err device_add: " + out
            elif words[:1] == ["unplug"] and len(words) == 2:
                out = mon.run("device_del %s" % words[1])
                reply = "ok" if not out else "err device_del: " + out
        except Exception as e:  # report to the guest rather than hang it
            reply = "err %s" % e
        sys.stdout.write("host: %s -> %s\n" % (" ".join(words), reply))
        f.write((reply + "\n").encode())

deadline = time.monotonic() + args.timeout
specs = args.disk
while True:
    boot(specs)
    try:
        rc = qemu.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        print("host: the VM did not finish within %d s: killed" % args.timeout)
        qemu.kill()
        qemu.wait()
        rc = 124
        break
    again = os.path.join(args.out, "reboot")
    if rc != 0 or not os.path.exists(again):
        break
    ids = open(again).read().split()
    os.remove(again)
    specs = ["%s:%s:%s" % (d, sizes[d][0], sizes[d][1]) for d in ids if d in sizes]
    print("host: booting again with %s attached" % (", ".join(specs) or "no disk"))
time.sleep(0.2)
subprocess.run(["rm", "-rf", tmp])
sys.exit(rc)
