"""faultkit - shared pieces of Postern's fault and security tests.

    import faultkit as fk
    fk.check(cond, "what")            # prints ok/FAIL, remembers failures
    fk.finish()                       # prints the summary, exits 0/1
    fk.LONG                           # True when POSTERN_LONG=1 (tools/test --long)
    sink = fk.Sink()                  # recording MX on 127.0.0.1 (aiosmtpd)
    sink.ids()                        # Counter of Message-IDs received
    snd = fk.Sender(lambda: relay.port, n_threads=4)   # background load
    snd.start(); ...; snd.stop()
    snd.acked                         # ids whose DATA got 250
    fk.qstats(qtool, state_dir)       # `qtool stats --json` parsed
    fk.cpu_seconds(pid), fk.fd_count(pid)

A message is identified by its Message-ID header, <ID@fault.test>.
"""

import collections
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time

import mxpeer

LONG = os.environ.get("POSTERN_LONG") == "1"
failures = []
_MID = re.compile(rb"(?im)^Message-ID:\s*<([^>]+)@fault\.test>")


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def finish():
    print(f"{len(failures)} failed checks" if failures else "all checks passed",
          flush=True)
    sys.exit(1 if failures else 0)


def message(mid, size=0):
    pad = ("x" * 70 + "\r\n") * (size // 72)
    return (f"From: s@snd.test\r\nTo: r@dst.test\r\nSubject: {mid}\r\n"
            f"Message-ID: <{mid}@fault.test>\r\n\r\nbody {mid}\r\n{pad}")


def mids(data):
    return [m.decode() for m in _MID.findall(data)]


class _TimedList(list):
    """The list mxpeer appends to, remembering when each item came."""

    def __init__(self):
        super().__init__()
        self.times = []

    def append(self, x):
        self.times.append(time.time())
        super().append(x)


class Sink(mxpeer.MX):
    """A recording MX; ids() counts the Message-IDs it accepted,
    arrivals() lists (time, id) in order."""

    def __init__(self, host="127.0.0.1", port=0, **kw):
        super().__init__(host, port, **kw)
        with self.lock:
            self.messages = _TimedList()

    def arrivals(self):
        with self.lock:
            return [(t, m) for t, (_, _, data) in zip(self.messages.times, self.messages)
                    for m in mids(data)]

    def stop(self):
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        super().stop()

    def ids(self):
        c = collections.Counter()
        with self.lock:
            for _, rcpts, data in self.messages:
                for m in mids(data):
                    c[m] += 1
        return c


def wait_until(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Sender:
    """Background SMTP load: each thread sends one message per session and
    records whether its DATA got a 250 (acked) or not (lost: refused,
    disconnected, connection refused while postern is down)."""

    def __init__(self, port_fn, n_threads=4, rcpt="r@dst.test", prefix="m",
                 pause=0.0, size=0, limit=None):
        self.port_fn = port_fn
        self.n_threads = n_threads
        self.rcpt = rcpt
        self.prefix = prefix
        self.pause = pause
        self.size = size
        self.limit = limit
        self.acked = set()
        self.unacked = set()
        self.errors = collections.Counter()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _run(self, k):
        seq = 0
        while not self._stop.is_set():
            if self.limit is not None and seq >= self.limit:
                break
            mid = f"{self.prefix}{k}-{seq}"
            seq += 1
            ok = False
            try:
                with smtplib.SMTP("127.0.0.1", self.port_fn(), timeout=15) as s:
                    s.ehlo("client.test")
                    s.sendmail("s@snd.test", [self.rcpt], message(mid, self.size))
                    ok = True
            except Exception as e:  # noqa: BLE001 - every failure is "not acked"
                with self.lock:
                    self.errors[type(e).__name__ + ":" + str(e)[:40]] += 1
            with self.lock:
                (self.acked if ok else self.unacked).add(mid)
            if not ok:
                time.sleep(0.05)
            elif self.pause:
                time.sleep(self.pause)

    def start(self):
        for k in range(self.n_threads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def join(self):
        for t in self._threads:
            t.join()


def qstats(qtool, state):
    import json
    p = subprocess.run([qtool, "-d", state, "stats", "--json"],
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("qtool stats failed: " + p.stderr.decode(errors="replace"))
    return json.loads(p.stdout)


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    """What each descriptor points at ("socket:[123]", a path, ...)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


def socket_fd_count(pid):
    return sum(1 for t in fd_targets(pid) if t.startswith("socket:"))


def settled_fd_count(pid, quiet=0.5, timeout=10):
    """The descriptor count once it has not changed for `quiet` seconds
    (worker threads open their resolvers and timers after startup)."""
    deadline = time.time() + timeout
    last, since = fd_count(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.1)
        n = fd_count(pid)
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= quiet:
            break
    return last


def smtp_dialogue(port, lines, src=None, timeout=10):
    """Speaks raw SMTP: sends each of `lines` (bytes, CRLF added) and
    returns the list of replies (greeting first) as text."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(src, 0) if src else None)
    f = s.makefile("rb")

    def reply():
        out = []
        while True:
            l = f.readline()
            if not l:
                break
            out.append(l.decode("latin-1").rstrip("\r\n"))
            if len(l) < 4 or l[3:4] != b"-":
                break
        return "\n".join(out)
    replies = [reply()]
    for l in lines:
        try:
            s.sendall(l + b"\r\n")
        except OSError:
            replies.append("")
            break
        replies.append(reply())
    s.close()
    return replies
