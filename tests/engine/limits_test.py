"""Delivery limits and the opportunistic-TLS fallback, end to end.

 1. max_connections 1 with two destinations: the destination that found no
    free slot is delivered once the other's connection closes, woken by the
    slot's release (not by polling). (It used to wait for a new job to
    itself that never came: its message stayed in flight, undelivered,
    until restart.)
 2. A server that accepts STARTTLS and then hangs up before the handshake:
    with no policy requiring TLS the relay reconnects once in plaintext and
    delivers (issue 5, step 3). (Only a TLS-level error used to trigger the
    retry; a drop deferred the mail.)
 1b. The same with idle_timeout 60s: a.test's idle session is closed for
    b.test at once (it used to hold the only slot for the whole idle time).
 1c. Slow start: 12 messages to a new destination whose greeting is held
    open only initial_connections (2) attempts until one is up; then up
    to per_domain_connections carry the rest.
 3. Back-pressure with a tiny in-flight limit (delivery { max_inflight 2 }):
    while the MX holds its replies, exactly 2 messages are in flight; after
    release, the scan resumes and every message is delivered once.

Usage: limits_test.py POSTERN_BINARY
"""

import sys
import threading
import time
import urllib.request

import dnspeer
import mxpeer
import rawmx
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject, body="body\r\n"):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\n{body}"


def deliveries(r, **kv):
    return [e for e in r.events()
            if e.get("event") == "delivery" and all(e.get(k) == v for k, v in kv.items())]


def gauge(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    a = mxpeer.MX("127.0.0.1", 0)
    b = mxpeer.MX("127.0.0.1", 0)
    drop = rawmx.RawMX("127.0.0.1", 0, starttls_drop=True)
    slow = rawmx.RawMX("127.0.0.1", 0)
    try:
        # 1. One connection slot for two destinations.
        delivery = (f"route a.test 127.0.0.1:{a.port}; route b.test 127.0.0.1:{b.port};"
                    " max_connections 1; idle_timeout 1s")
        with Relay(POSTERN, dns.port, delivery=delivery) as r:
            # a.test's connection stays open (idle) for a while and holds
            # the only slot when b.test's message arrives.
            r.send("s@snd.test", ["x@a.test"], msg("slot-a"))
            a.wait(1, timeout=20)
            r.send("s@snd.test", ["y@b.test"], msg("slot-b"))
            ok = True
            try:
                b.wait(1, timeout=20)
            except AssertionError as e:
                print(e)
                ok = False
            check(ok, "max_connections 1: both destinations delivered")
            check(len(a.messages) == 1 and len(b.messages) == 1,
                  "max_connections 1: each message once")
            # b.test's destination is its route target.
            check(any(e.get("event") == "connection_slot_woken" and
                      str(b.port) in e.get("dest", "") for e in r.events()),
                  "max_connections 1: b.test was woken when a.test's slot was released")

        # 1b. An idle session does not hold the only slot for its idle time.
        a2 = mxpeer.MX("127.0.0.1", 0)
        b2 = mxpeer.MX("127.0.0.1", 0)
        try:
            delivery = (f"route a.test 127.0.0.1:{a2.port}; route b.test 127.0.0.1:{b2.port};"
                        " max_connections 1; idle_timeout 60s")
            with Relay(POSTERN, dns.port, delivery=delivery) as r:
                r.send("s@snd.test", ["x@a.test"], msg("idle-a"))
                a2.wait(1, timeout=20)
                r.send("s@snd.test", ["y@b.test"], msg("idle-b"))
                ok = True
                try:
                    b2.wait(1, timeout=20)
                except AssertionError:
                    ok = False
                check(ok, "idle_timeout 60s, max_connections 1: b.test delivered "
                          "without waiting out a.test's idle session")
                check(any(e.get("event") == "connection_released" and
                          str(a2.port) in e.get("dest", "") for e in r.events()),
                      "a.test's idle session was released for the waiting destination")
        finally:
            a2.stop()
            b2.stop()

        # 1c. Slow start.
        gated = rawmx.RawMX("127.0.0.1", 0)
        gated.greet_gate = threading.Event()
        try:
            delivery = (f"route slow.test 127.0.0.1:{gated.port};"
                        " per_domain_connections 6; initial_connections 2")
            with Relay(POSTERN, dns.port, delivery=delivery) as r:
                for i in range(12):
                    r.send("s@snd.test", [f"u{i}@slow.test"], msg(f"slow{i}"))
                time.sleep(2)  # time enough for more attempts, were they allowed
                early = gated.sessions
                gated.greet_gate.set()
                gated.wait(12, timeout=30)
                check(early == 2, f"slow start: 2 attempts before a connection is up ({early})")
                check(2 <= gated.sessions <= 6,
                      f"then at most per_domain_connections ({gated.sessions} sessions in all)")
                check(len(gated.messages) == 12, "slow start: all 12 delivered")
        finally:
            gated.stop()

        # 2. STARTTLS accepted, then the server hangs up: plaintext retry.
        with Relay(POSTERN, dns.port,
                   delivery=f"route * 127.0.0.1:{drop.port}; connect_timeout 2s") as r:
            r.send("s@snd.test", ["x@drop.test"], msg("dropped-tls"))
            evs = r.wait_log(lambda e: e.get("event") == "delivery" and
                             e.get("rcpt") == "x@drop.test", timeout=30)
            check(evs[0].get("status") == "sent" and evs[0].get("tls_level") == "none",
                  "STARTTLS dropped: delivered in plaintext on a second connection "
                  f"(status={evs[0].get('status')} dsn={evs[0].get('dsn')})")
            check(drop.starttls == 1 and len(drop.messages) == 1,
                  "STARTTLS dropped: one STARTTLS, one message")
            check(len([e for e in r.events()
                       if e.get("event") == "starttls_failed_plaintext_retry"]) == 1,
                  "STARTTLS dropped: the retry is logged")

        # 3. A tiny in-flight limit.
        with Relay(POSTERN, dns.port,
                   delivery=f"route * 127.0.0.1:{slow.port}; per_domain_connections 10;"
                            " max_inflight 2",
                   extra="metrics { listen 127.0.0.1:0 }") as r:
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])
            slow.hold = threading.Event()
            n = 6
            for i in range(n):
                r.send("s@snd.test", [f"u{i}@slow.test"], msg(f"bp{i}"))
            slow.wait_for(lambda: slow.held >= 2, what="2 held messages")
            time.sleep(1.5)  # a scheduler tick or two: nothing more may start
            check(slow.held == 2, f"max_inflight 2: 2 messages started (saw {slow.held})")
            check(gauge(mport, "postern_inflight_messages") == 2,
                  "max_inflight 2: the in-flight gauge says 2")
            slow.hold.set()
            slow.hold = None
            got = slow.wait(n, timeout=30)
            subjects = sorted(d.split(b"Subject: ")[1].split(b"\r\n")[0] for _, _, d in got)
            check(len(got) == n and len(set(subjects)) == n,
                  f"max_inflight 2: all {n} messages delivered once after release")
            r.wait_log(lambda e: e.get("event") == "delivery", count=n)
            check(len(deliveries(r, status="sent")) == n, "max_inflight 2: n sent lines")

        # 4. The in-flight bodies cap: with room for 150 kB of bodies, three
        #    60 kB messages start (the third crosses the cap), the rest wait
        #    in the due index until results free the room.
        with Relay(POSTERN, dns.port,
                   delivery=f"route * 127.0.0.1:{slow.port}; per_domain_connections 10;"
                            " max_inflight_bytes 150000",
                   extra="metrics { listen 127.0.0.1:0 }") as r:
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])
            slow.hold = threading.Event()
            slow.held = 0
            base = len(slow.messages)
            n = 6
            big = "x" * 78 + "\r\n"
            for i in range(n):
                r.send("s@snd.test", [f"b{i}@slow.test"], msg(f"bytes{i}", big * 750))
            slow.wait_for(lambda: slow.held >= 3, what="3 held messages")
            time.sleep(1.5)  # a scheduler tick or two: nothing more may start
            check(slow.held == 3, f"in-flight bytes cap: 3 messages started (saw {slow.held})")
            check(gauge(mport, "postern_inflight_messages") == 3,
                  "in-flight bytes cap: the in-flight gauge says 3")
            slow.hold.set()
            slow.hold = None
            got = slow.wait(base + n, timeout=30)[base:]
            subjects = sorted(d.split(b"Subject: ")[1].split(b"\r\n")[0] for _, _, d in got)
            check(len(got) == n and len(set(subjects)) == n,
                  f"in-flight bytes cap: all {n} messages delivered once after release")
    finally:
        for m in (a, b, drop, slow):
            m.stop()
        dns.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
