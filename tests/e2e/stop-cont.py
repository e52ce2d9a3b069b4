#!/usr/bin/env python3
"""Pauses and resumes a running QEMU again and again through its HMP monitor
while the end-to-end guest program runs, so every vhost-user stop/start
(SET_VRING_ENABLE 0, GET_VRING_BASE, then the start sequence again) lands in
the middle of real guest traffic. Used by run-e2e.sh --stop-cont.

usage: stop-cont.py --monitor SOCK --console FILE [--stopped-ms N] [--running-ms A-B]
                    [--max-cycles N] [--seed N]

Starts once FILE shows "E2E: guest program start", stops when it shows
"E2E: RESULT" (or after --max-cycles), always leaving the VM running.
Prints one line per cycle and a summary; exit 1 if the monitor misbehaved.
"""
import argparse
import random
import socket
import sys
import time


class Hmp:
    def __init__(self, path, timeout=30.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self._until_prompt()  # banner

    def _until_prompt(self):
        while not self.buf.rstrip().endswith(b"(qemu)"):
            chunk = self.s.recv(4096)
            if not chunk:
                raise RuntimeError("monitor closed")
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out.decode(errors="replace")

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\n")
        return self._until_prompt()


def console_has(path, text):
    try:
        with open(path, "rb") as f:
            return text.encode() in f.read()
    except FileNotFoundError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--monitor", required=True)
    ap.add_argument("--console", required=True)
    ap.add_argument("--stopped-ms", type=int, default=150)
    ap.add_argument("--running-ms", default="50-400")
    ap.add_argument("--max-cycles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.running_ms.split("-"))
    rnd = random.Random(a.seed)
    t0 = time.monotonic()

    def say(msg):
        print(f"stop-cont: {msg} (t={time.monotonic() - t0:.2f} s)", flush=True)

    for _ in range(600):
        try:
            hmp = Hmp(a.monitor)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.1)
    else:
        say("no monitor socket")
        return 1
    while not console_has(a.console, "E2E: guest program start"):
        if console_has(a.console, "E2E: RESULT"):
            break
        time.sleep(0.05)
    say("guest program started: cycling stop/cont")
    cycles = 0
    stopped_total = 0.0
    try:
        while cycles < a.max_cycles and not console_has(a.console, "E2E: RESULT"):
            time.sleep(rnd.randint(lo, hi) / 1000.0)
            t = time.monotonic()
            hmp.cmd("stop")
            status = hmp.cmd("info status")
            if "paused" not in status:
                say(f"after 'stop', info status says: {status.strip()!r}")
                hmp.cmd("cont")
                return 1
            time.sleep(a.stopped_ms / 1000.0)
            hmp.cmd("cont")
            stopped_total += time.monotonic() - t
            cycles += 1
            say(f"cycle {cycles}: stopped for {1000 * (time.monotonic() - t):.0f} ms")
    except (OSError, RuntimeError) as e:
        # QEMU exiting (guest powered off) closes the monitor: not an error here.
        say(f"monitor gone: {e}")
    say(f"done: {cycles} stop/cont cycles, {stopped_total:.2f} s stopped in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
