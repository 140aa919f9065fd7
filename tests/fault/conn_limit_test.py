"""A remote MX that takes one connection per client at a time (the others
get "421 4.7.0 too many connections" at once, a common anti-abuse limit),
and is slow. Postern must carry the waiting mail over the connection it
has instead of reconnecting as fast as the remote refuses: every message
is delivered, the number of refused sessions stays a small multiple of
the message count, and postern's CPU stays low.

Usage: conn_limit_test.py POSTERN QTOOL
"""

import sys
import time

import dnspeer
import faultkit as fk
import hostile_mx
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
N = 20


def main():
    h = hostile_mx.Hostile({"127.0.0.30": "onlyone"})
    dns = dnspeer.start({"records": {}})
    r = None
    try:
        r = Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.30:{h.port}",
                  extra="queue { retry_initial 3s; retry_max 6s }")
        c0, t0 = fk.cpu_seconds(r.pid), time.time()
        snd = fk.Sender(lambda: r.port, n_threads=4, prefix="c", limit=N // 4).start()
        snd.join()
        fk.check(len(snd.acked) == N, f"{N} messages accepted")
        ok = fk.wait_until(lambda: getattr(h, "delivered", 0) >= N, 120)
        took = time.time() - t0
        used = fk.cpu_seconds(r.pid) - c0
        sessions = h.sessions["127.0.0.30"]
        print(f"{getattr(h, 'delivered', 0)} delivered in {took:.1f}s over {sessions} "
              f"sessions; postern CPU {used:.2f}s", flush=True)
        fk.check(ok, f"all {N} delivered through the one-at-a-time MX")
        fk.check(sessions <= 20 * N, f"no reconnect storm: {sessions} sessions for {N} "
                 f"messages (<= {20 * N})")
        fk.check(used < 0.25 * took, f"CPU {used:.2f}s < 25% of {took:.1f}s")
        fk.check(fk.wait_until(lambda: fk.qstats(QTOOL, r.state)["messages"] == 0, 30),
                 "queue empty at the end")
        fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        if r:
            r.close()
        h.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
