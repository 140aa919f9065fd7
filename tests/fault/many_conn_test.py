"""Many connections: N concurrent inbound sessions against
`listen { max_sessions M }` (N=1,000, M=800 by default; N=5,000, M=4,000
with POSTERN_LONG=1). The first M get a 220 greeting and are all served
at once (each answers NOOP), the rest get 421 and are closed, a newcomer
while all M are held gets 421 too, slots come back once the clients
leave, and postern ends with exactly the descriptors it started with.
With POSTERN_LONG=1 also descriptor exhaustion: postern limited to 200
descriptors gets 1,000 connections at once, survives, and serves normally
afterwards (long only: it wedged a worker loop once under CPU contention,
see docs/reliability.md).

Usage: many_conn_test.py POSTERN QTOOL
"""

import os
import resource
import selectors
import socket
import sys
import time

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN = sys.argv[1]
N, M = (5000, 4000) if fk.LONG else (1000, 800)
WORKERS = 2


def read_replies(socks, timeout=60):
    """Reads one full reply line from each socket; returns {sock: text}."""
    sel = selectors.DefaultSelector()
    buf = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        buf[s] = b""
    out = {}
    deadline = time.time() + timeout
    while len(out) < len(socks) and time.time() < deadline:
        for key, _ in sel.select(1):
            s = key.fileobj
            try:
                d = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            buf[s] += d
            if b"\r\n" in buf[s] or not d:
                out[s] = buf[s].decode("latin-1")
                sel.unregister(s)
    sel.close()
    for s in socks:
        s.setblocking(True)
    return out


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = N + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError) as e:
            print(f"SKIP: cannot raise the descriptor limit to {want} "
                  f"(hard limit {hard}: {e})", flush=True)
            fk.finish()
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    print(f"{N} connections, max_sessions {M}, RLIMIT_NOFILE {want}", flush=True)
    dns = dnspeer.start({"records": {}})
    r = None
    socks = []
    try:
        r = Relay(POSTERN, dns.port, listen_extra=f"max_sessions {M}; timeout 5m")
        time.sleep(0.5)
        fd0 = fk.settled_fd_count(r.pid)
        t0 = time.time()
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
            socks.append(s)
        print(f"{N} connected in {time.time() - t0:.1f}s", flush=True)
        greet = read_replies(socks)
        got220 = [s for s in socks if greet.get(s, "").startswith("220")]
        got421 = [s for s in socks if greet.get(s, "").startswith("421")]
        other = len(socks) - len(got220) - len(got421)
        print(f"220: {len(got220)}, 421: {len(got421)}, other: {other}", flush=True)
        fk.check(len(got220) == M, f"exactly max_sessions={M} sessions greeted with 220")
        fk.check(len(got421) == N - M and other == 0,
                 f"the other {N - M} got 421 ({len(got421)}; {other} without an answer)")
        fk.check(all("4." in greet[s] for s in got421[:50]),
                 f"421 carries an enhanced status: {greet[got421[0]].strip()!r}" if got421 else "421")
        closed = read_replies(got421, timeout=20)
        fk.check(all(v == "" for v in closed.values()) and len(closed) == len(got421),
                 "the refused connections are closed by the server")
        # Every admitted session is served concurrently.
        for s in got220:
            s.sendall(b"NOOP\r\n")
        noop = read_replies(got220)
        fk.check(sum(1 for v in noop.values() if v.startswith("250")) == M,
                 f"all {M} admitted sessions answer NOOP at once")
        late = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        g = read_replies([late]).get(late, "")
        fk.check(g.startswith("421"), f"a newcomer while {M} are held gets 421 ({g.strip()!r})")
        late.close()
        fd_busy = fk.fd_count(r.pid)
        print(f"descriptors: {fd0} idle, {fd_busy} with {M} sessions", flush=True)
        for s in got220:
            try:
                s.sendall(b"QUIT\r\n")
            except OSError:
                pass
        read_replies(got220, timeout=20)
        for s in socks:
            s.close()
        socks = []
        ok = fk.wait_until(lambda: fk.fd_count(r.pid) <= fd0, 30, step=0.2)
        fd1 = fk.fd_count(r.pid)
        fk.check(ok, f"no descriptor leak: {fd0} before, {fd1} after")
        again = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        g = read_replies([again]).get(again, "")
        fk.check(g.startswith("220"), "slots are free again once the clients left")
        again.close()
        fk.check(r.stop() == 0, "SIGTERM: exit 0")
        r.close()
        r = None
        if fk.LONG:
            exhaustion(dns)
        else:
            print("descriptor exhaustion: only with POSTERN_LONG=1 (see "
                  "docs/reliability.md, it can wedge a worker loop)", flush=True)
    finally:
        for s in socks:
            s.close()
        if r:
            r.close()
        dns.stop()
    fk.finish()


def diagnose(r):
    """Why postern did not recover: its warnings and its threads' CPU."""
    import collections
    ev = collections.Counter(e.get("event") for e in r.events()
                             if e.get("level") in ("warn", "error"))
    print(f"postern warnings and errors: {dict(ev)}", flush=True)
    for t in sorted(os.listdir(f"/proc/{r.pid}/task")):
        with open(f"/proc/{r.pid}/task/{t}/stat") as f:
            x = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{r.pid}/task/{t}/comm") as f:
            name = f.read().strip()
        print(f"thread {t} {name}: state {x[0]} utime {x[11]} stime {x[12]}", flush=True)


def exhaustion(dns):
    """Descriptor exhaustion: postern runs with RLIMIT_NOFILE 200 and gets
    1,000 connections at once. It must survive (connections it cannot take
    are closed), keep no descriptor afterwards, and then serve and deliver
    normally."""
    print("--- descriptor exhaustion: RLIMIT_NOFILE 200, 1,000 connections", flush=True)
    sink = fk.Sink()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
    try:
        r = Relay(POSTERN, dns.port, listen_extra="max_sessions 100", workers=WORKERS,
                  delivery=f"route * 127.0.0.1:{sink.port}")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    socks = []
    try:
        fd0 = fk.settled_fd_count(r.pid)
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", r.port), timeout=30))
        greet = read_replies(socks, timeout=30)
        kinds = {}
        for v in greet.values():
            kinds[v[:3] or "closed"] = kinds.get(v[:3] or "closed", 0) + 1
        print(f"greetings: {kinds}, {len(socks) - len(greet)} without an answer", flush=True)
        fk.check(r.proc.poll() is None, "postern survives running out of descriptors")
        fk.check(kinds.get("220", 0) <= 100, "at most max_sessions=100 admitted")
        if len(greet) != len(socks):
            # Seen under CPU contention: connections left in the backlog
            # while a worker loop is out of descriptors (docs/reliability.md).
            print(f"NOTE {len(socks) - len(greet)} connections neither answered nor "
                  f"closed within 30 s", flush=True)
        for s in socks:
            s.close()
        socks = []
        ok = fk.wait_until(lambda: fk.fd_count(r.pid) <= fd0, 30, step=0.2)
        fk.check(ok, f"descriptors back to {fd0} ({fk.fd_count(r.pid)})")
        if not ok:
            diagnose(r)
        r.send("s@snd.test", ["u@x.test"], fk.message("afterflood"))
        fk.check(fk.wait_until(lambda: "afterflood" in sink.ids(), 20),
                 "after the flood mail is accepted and delivered")
        fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        for s in socks:
            s.close()
        r.close()
        sink.stop()


if __name__ == "__main__":
    main()
