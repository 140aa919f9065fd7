"""Destination down: the only MX stops while mail keeps arriving. Mail is
deferred (4.x, the connection failure in the reply), nothing busy-loops
while everything waits (postern's CPU time over the quiet period stays
small), and once the MX returns on the same address everything is
delivered exactly once and the queue empties.

Usage: dest_down_test.py POSTERN QTOOL
"""

import sys
import time

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
N = 200 if fk.LONG else 40
QUIET = 30 if fk.LONG else 10


def deliveries(r, **kv):
    return [e for e in r.events()
            if e.get("event") == "delivery" and all(e.get(k) == v for k, v in kv.items())]


def main():
    sink = fk.Sink()
    port = sink.port
    dns = dnspeer.start({"records": {}})
    r = None
    try:
        delivery = f"route * 127.0.0.1:{port}; connect_timeout 2s; idle_timeout 1s"
        r = Relay(POSTERN, dns.port, delivery=delivery,
                  extra="queue { retry_initial 1s; retry_factor 2; retry_max 4s }")
        first = fk.Sender(lambda: r.port, n_threads=2, prefix="u", limit=5).start()
        first.join()
        fk.check(fk.wait_until(lambda: first.acked <= set(sink.ids()), 30),
                 "while the MX is up, mail flows")
        sink.stop()  # the MX goes down
        snd = fk.Sender(lambda: r.port, n_threads=4, prefix="d", limit=N // 4)
        snd.start()
        snd.join()
        fk.check(len(snd.acked) == N, f"{N} messages accepted while the MX is down "
                 f"(acked {len(snd.acked)})")
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("status") == "deferred",
                   count=N, timeout=60)
        d = deliveries(r, status="deferred")
        fk.check(all(e.get("dsn", "").startswith("4.") for e in d),
                 f"{len(d)} deferrals, all with a 4.x.x status")
        fk.check(any("refused" in e.get("reply", "").lower() or "connect" in e.get("reply", "")
                     for e in d), f"deferral says why: {d[0].get('reply')!r}")
        # The quiet period: every message is deferred, retries come every
        # few seconds. A busy loop would burn a whole core.
        c0, t0 = fk.cpu_seconds(r.pid), time.time()
        time.sleep(QUIET)
        c1, t1 = fk.cpu_seconds(r.pid), time.time()
        used = c1 - c0
        print(f"CPU while waiting: {used:.2f}s over {t1 - t0:.1f}s with {N} deferred "
              f"messages", flush=True)
        fk.check(used < 0.25 * (t1 - t0), f"no busy loop: CPU {used:.2f}s < 25% of "
                 f"{t1 - t0:.1f}s")
        st = fk.qstats(QTOOL, r.state)
        fk.check(st["messages"] == N, f"all {N} still queued while the MX is down ({st['messages']})")
        # The MX comes back on the same address.
        sink = fk.Sink(port=port)
        fk.wait_until(lambda: set(snd.acked) <= set(sink.ids()), 60)
        ids = sink.ids()
        fk.check(not (first.acked & set(ids)), "what went out before was not sent again")
        fk.check(set(snd.acked) <= set(ids), f"all {N} delivered after the MX returned "
                 f"({len(set(snd.acked) & set(ids))})")
        fk.check(all(c == 1 for c in ids.values()), "each delivered exactly once")
        fk.wait_until(lambda: fk.qstats(QTOOL, r.state)["messages"] == 0, 30, step=0.5)
        fk.check(fk.qstats(QTOOL, r.state)["messages"] == 0, "queue empty at the end")
        fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        if r:
            r.close()
        sink.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
