"""Connection attempts of one destination that run side by side.

 1. No reconnect storm: while the destination's only connection is busy
    (the MX holds its reply), a second message starts a second attempt,
    which the MX refuses with `421 4.3.2 too many sessions`. The relay then
    waits for the busy connection instead of reconnecting again and again
    (it used to start a new attempt each time one exhausted while another
    connection was open: one new session per 421, as fast as the network
    allows). Both messages are delivered over the first connection.

 2. Issue 5 step 5 across concurrent attempts. Two messages for mix.test
    arrive together, so the destination runs two connection attempts at
    once. Its only MX answers the first connection with `421 4.3.2 busy`
    (temporary) after 0.5 s and the second with `554 5.7.1 go away`
    (permanent) after 2 s. The temporary failure happened along the way
    while these messages were being tried, so both must be deferred, not
    bounced. (The destination used to decide from the attempt that
    exhausted last alone: both messages bounced with 5.x.x and DSNs.)

 3. Equal MX preferences are shuffled per attempt (RFC 5321 5.1): with a
    new connection per message, 20 messages reach both MX hosts.

Usage: attempts_test.py POSTERN_BINARY
"""

import sys
import threading
import time

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


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def no_storm(dns):
    busy = rawmx.RawMX("127.0.0.1", 0, greetings=[(0, "220 rawmx.test ESMTP")] +
                       [(0, "421 4.3.2 too many sessions")] * 200)
    try:
        with Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{busy.port}") as r:
            busy.hold = threading.Event()
            r.send("s@snd.test", ["a@busy.test"], msg("first"))
            busy.wait_for(lambda: busy.held >= 1, what="held message")
            r.send("s@snd.test", ["b@busy.test"], msg("second"))
            time.sleep(2)
            sessions = busy.sessions
            check(sessions == 2, f"busy MX: one refused extra session, no storm (saw {sessions})")
            busy.hold.set()
            busy.hold = None
            got = busy.wait(2, timeout=20)
            check(len(got) == 2, "busy MX: both messages delivered over the first connection")
    finally:
        busy.stop()


def shuffle():
    port = mxpeer.free_port("127.0.0.2")
    m2 = mxpeer.MX("127.0.0.2", port)
    m3 = mxpeer.MX("127.0.0.3", port)
    dns = dnspeer.start({"ad": False, "records": {
        "eq.test": {"MX": [[10, "a.eq.test"], [10, "b.eq.test"]]},
        "a.eq.test": {"A": ["127.0.0.2"]},
        "b.eq.test": {"A": ["127.0.0.3"]},
    }})
    try:
        with Relay(POSTERN, dns.port, delivery=f"port {port}; reuse_limit 1") as r:
            n = 20
            for i in range(n):
                r.send("s@snd.test", [f"u{i}@eq.test"], msg(f"eq{i}"))
            r.wait_log(lambda e: e.get("event") == "delivery" and e.get("status") == "sent",
                       count=n)
            a, b = len(m2.messages), len(m3.messages)
            # All 20 on one host by chance: probability 2 * 2^-20.
            check(a + b == n and a > 0 and b > 0,
                  f"equal preferences: both MX hosts used ({a} and {b})")
    finally:
        m2.stop()
        m3.stop()
        dns.stop()


def main():
    dns0 = dnspeer.start({"ad": False, "records": {}})
    try:
        no_storm(dns0)
    finally:
        dns0.stop()
    shuffle()
    mx = rawmx.RawMX("127.0.0.1", 0, greetings=[(0.5, "421 4.3.2 busy"),
                                                (2.0, "554 5.7.1 go away")])
    dns = dnspeer.start({"ad": False, "records": {
        "mix.test": {"MX": [[10, "mx.mix.test"]]},
        "mx.mix.test": {"A": ["127.0.0.1"]},
    }})
    try:
        with Relay(POSTERN, dns.port, delivery=f"port {mx.port}") as r:
            t0 = time.time()
            r.send("s@snd.test", ["a@mix.test"], msg("m1"))
            r.send("s@snd.test", ["b@mix.test"], msg("m2"))
            sent_in = time.time() - t0
            evs = r.wait_log(lambda e: e.get("event") == "delivery", count=2, timeout=30)
            print(f"(submitted both in {sent_in:.2f}s; MX sessions: {mx.sessions})")
            check(mx.sessions == 2, "two concurrent attempts reached the MX")
            for e in evs[:2]:
                check(e.get("status") == "deferred" and e.get("dsn", "").startswith("4."),
                      f"{e.get('rcpt')}: deferred with a 4.x.x status "
                      f"(status={e.get('status')} dsn={e.get('dsn')})")
            check(not [e for e in r.events() if e.get("event") == "dsn_queued"],
                  "no DSN for mail that was only deferred")
    finally:
        mx.stop()
        dns.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
