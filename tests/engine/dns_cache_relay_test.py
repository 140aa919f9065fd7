"""The relay's DNS answer cache, end to end: two delivery attempts to one
domain a few seconds apart (the first connection closed in between, so the
second attempt looks everything up again) ask the DNS server only once for
the MX, the MX host's addresses and the _mta-sts TXT record; the metrics
say so. An answer whose TTL has run out is asked again; with
`dns { cache_size 0 }` every attempt asks.

Usage: dns_cache_relay_test.py POSTERN
"""

import sys
import time
import urllib.request

import dnspeer
import mxpeer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            values[k] = float(v)
    return values


def main():
    mx = mxpeer.MX("127.0.0.1", 0)
    dns = dnspeer.start({"records": {
        "d1.test": {"MX": [[10, "mx1.d1.test"]]},
        "mx1.d1.test": {"A": ["127.0.0.1"]},
        "short.test": {"MX": [[10, "mx1.d1.test"]]},
    }, "behaviour": {"short.test": {"ttl": 1}}})
    try:
        with Relay(POSTERN, dns.port, workers=1,
                   delivery=f"port {mx.port}; idle_timeout 100ms",
                   extra="metrics { listen 127.0.0.1:0 }") as r:
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])

            def asked(name, rtype):
                return sum(1 for q in dns.queries() if q[1] == name and q[2] == rtype)

            for i in range(2):
                r.send("s@snd.test", [f"u{i}@d1.test"], f"Subject: {i}\r\n\r\nhi\r\n")
                r.wait_log(lambda e, i=i: e.get("event") == "delivery"
                           and e.get("rcpt") == f"u{i}@d1.test")
                time.sleep(0.5)  # the idle connection closes (100 ms)
            opened = [e for e in r.events() if e.get("event") == "connection_ready"]
            check(len(opened) == 2, f"two separate connections, so two attempts ({len(opened)})")
            check(asked("d1.test", "MX") == 1, f"MX asked once ({asked('d1.test', 'MX')})")
            check(asked("mx1.d1.test", "A") == 1, f"A asked once ({asked('mx1.d1.test', 'A')})")
            check(asked("_mta-sts.d1.test", "TXT") == 1,
                  f"_mta-sts TXT (a cached denial) asked once ({asked('_mta-sts.d1.test', 'TXT')})")
            m = metrics(mport)
            hits = m.get('postern_dns_cache_lookups_total{result="hit"}', 0)
            check(hits >= 4, f"metrics: cache hits counted ({hits})")
            check(m.get("postern_dns_cache_entries", 0) >= 4, "metrics: entries held")

            # A TTL of 1 s: after 1.5 s the MX is asked again.
            for i in range(2):
                r.send("s@snd.test", [f"s{i}@short.test"], f"Subject: s{i}\r\n\r\nhi\r\n")
                r.wait_log(lambda e, i=i: e.get("event") == "delivery"
                           and e.get("rcpt") == f"s{i}@short.test")
                time.sleep(1.5)
            check(asked("short.test", "MX") == 2,
                  f"an expired answer is asked again ({asked('short.test', 'MX')})")
        # dns { cache_size 0 }: every attempt asks.
        before = sum(1 for q in dns.queries() if q[1] == "d1.test" and q[2] == "MX")
        with Relay(POSTERN, dns.port, workers=1, dns_extra="cache_size 0",
                   delivery=f"port {mx.port}; idle_timeout 100ms") as r:
            for i in range(2):
                r.send("s@snd.test", [f"n{i}@d1.test"], f"Subject: n{i}\r\n\r\nhi\r\n")
                r.wait_log(lambda e, i=i: e.get("event") == "delivery"
                           and e.get("rcpt") == f"n{i}@d1.test")
                time.sleep(0.5)
        after = sum(1 for q in dns.queries() if q[1] == "d1.test" and q[2] == "MX")
        check(after - before == 2, f"cache_size 0: every attempt asks ({after - before})")
    finally:
        dns.stop()
        mx.stop()
    print("all checks passed" if not failures else f"{len(failures)} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
