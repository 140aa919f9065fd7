"""Slow and hostile MX peers: one byte every 20 seconds, never a word,
an endless multi-line reply, a 10 MB line, a dialogue that is not SMTP, a
hang-up in the middle of DATA. With short timeouts (connect 2s, command
2s, data 3s) postern gives up on each cleanly, defers the message with a
4.x.x status, and a healthy destination on the same single worker keeps
receiving mail the whole time. The relay's memory stays bounded (RSS
checked) and it keeps no descriptor of the hostile sessions.

Usage: hostile_mx_test.py POSTERN QTOOL
"""

import sys
import time

import dnspeer
import faultkit as fk
import hostile_mx
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
MODES = {
    "127.0.0.10": "trickle",
    "127.0.0.11": "silent",
    "127.0.0.12": "endless",
    "127.0.0.13": "longline",
    "127.0.0.14": "badreply",
    "127.0.0.15": "dropdata",
}


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


def main():
    h = hostile_mx.Hostile(MODES)
    good = fk.Sink("127.0.0.1")
    zone = {"records": {}}
    for addr, mode in MODES.items():
        zone["records"][f"{mode}.test"] = {"MX": [[10, f"mx.{mode}.test"]]}
        zone["records"][f"mx.{mode}.test"] = {"A": [addr]}
    dns = dnspeer.start(zone)
    r = None
    try:
        delivery = (f"port {h.port}; route good.test 127.0.0.1:{good.port};"
                    " connect_timeout 2s; command_timeout 2s; data_timeout 3s;"
                    " idle_timeout 1s")
        r = Relay(POSTERN, dns.port, workers=1, delivery=delivery,
                  extra="queue { retry_initial 30s; retry_max 60s }")
        fk.settled_fd_count(r.pid)
        # Sockets only: the sessions' descriptors. Files the relay opens on
        # first use (the MTA-STS policy cache) are not sessions.
        fd0 = fk.socket_fd_count(r.pid)
        rss0 = rss_kb(r.pid)
        for mode in MODES.values():
            r.send("s@snd.test", [f"u@{mode}.test"], fk.message(f"h-{mode}"))
        # Healthy mail keeps flowing while the hostile sessions are open.
        flow = fk.Sender(lambda: r.port, n_threads=2, rcpt="u@good.test",
                         prefix="g", pause=0.2).start()
        t0 = time.time()
        for mode in MODES.values():
            r.wait_log(lambda e, m=mode: e.get("event") == "delivery"
                       and e.get("domain") == f"{m}.test", timeout=60)
        took = time.time() - t0
        flow.stop()
        for mode in MODES.values():
            e = [x for x in r.events() if x.get("event") == "delivery"
                 and x.get("domain") == f"{mode}.test"][0]
            fk.check(e["status"] == "deferred" and e["dsn"].startswith("4."),
                     f"{mode}: deferred {e['dsn']} ({e['reply'][:90]!r})")
            fk.check(h.sessions[[a for a, m in MODES.items() if m == mode][0]] >= 1,
                     f"{mode}: the hostile peer was really reached")
        print(f"all six settled within {took:.1f}s", flush=True)
        fk.check(len(flow.acked) >= 5, f"healthy mail accepted meanwhile ({len(flow.acked)})")
        ok = fk.wait_until(lambda: flow.acked <= set(good.ids()), 30)
        fk.check(ok, f"healthy mail delivered meanwhile ({len(flow.acked & set(good.ids()))}"
                 f"/{len(flow.acked)})")
        rss1 = rss_kb(r.pid)
        print(f"RSS {rss0} kB before, {rss1} kB after", flush=True)
        fk.check(rss1 - rss0 < 64 * 1024, "no 10 MB reply buffered (RSS grew < 64 MB)")
        fk.wait_until(lambda: fk.socket_fd_count(r.pid) <= fd0, 15)
        fd1 = fk.socket_fd_count(r.pid)
        fk.check(fd1 <= fd0, f"no socket kept: {fd0} before, {fd1} after"
                 + ("" if fd1 <= fd0 else f" ({fk.fd_targets(r.pid)})"))
        st = fk.qstats(QTOOL, r.state)
        fk.check(st["messages"] == len(MODES), f"the {len(MODES)} messages stay queued "
                 f"({st['messages']})")
        fk.check(r.stop() == 0, "SIGTERM with hostile sessions around: exit 0")
    finally:
        if r:
            r.close()
        h.stop()
        good.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
