"""DNS down: the only resolver postern knows never answers (a UDP socket
nobody reads). Mail to MX-routed domains is deferred with a clear 4.4.3
status naming the lookup; mail to a static route on the same (single)
worker keeps flowing meanwhile, so no worker is stuck behind the silent
resolver. When DNS answers again the deferred mail goes out; then an answer slower
than usual but within `dns { timeout }` is used, and one slower than the
timeout is a deferral like silence.

Usage: dns_down_test.py POSTERN QTOOL
"""

import socket
import sys
import threading

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
N_DOWN = 10
N_ROUTED = 30


def main():
    for _ in range(100):  # a port free for both UDP and TCP
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        silent_tcp = socket.socket()
        try:
            silent_tcp.bind(("127.0.0.1", silent.getsockname()[1]))
            break
        except OSError:
            silent.close()
            silent_tcp.close()
    silent_tcp.listen(16)  # accepts (kernel backlog), never answers
    dport = silent.getsockname()[1]
    routed = fk.Sink("127.0.0.1")
    mx = fk.Sink("127.0.0.2")
    r = None
    try:
        delivery = f"route routed.test 127.0.0.1:{routed.port}; port {mx.port}"
        r = Relay(POSTERN, dport, workers=1, delivery=delivery,
                  extra="queue { retry_initial 2s; retry_max 3s }")
        down = fk.Sender(lambda: r.port, n_threads=2, rcpt="u@dnsdown.test",
                         prefix="dn", limit=N_DOWN // 2).start()
        flow = fk.Sender(lambda: r.port, n_threads=3, rcpt="u@routed.test",
                         prefix="rt", limit=N_ROUTED // 3).start()
        down.join()
        flow.join()
        fk.check(len(down.acked) == N_DOWN and len(flow.acked) == N_ROUTED,
                 f"all accepted ({len(down.acked)} + {len(flow.acked)})")
        ok = fk.wait_until(lambda: flow.acked <= set(routed.ids()), 30)
        fk.check(ok, f"routed mail flows while DNS is silent "
                 f"({len(flow.acked & set(routed.ids()))}/{N_ROUTED})")
        r.wait_log(lambda e: e.get("event") == "delivery" and e.get("domain") == "dnsdown.test",
                   count=N_DOWN, timeout=60)
        d = [e for e in r.events() if e.get("event") == "delivery"
             and e.get("domain") == "dnsdown.test"]
        fk.check(all(e["status"] == "deferred" for e in d),
                 f"{len(d)} dnsdown.test deliveries, all deferred")
        fk.check(all(e["dsn"] == "4.4.3" and "MX lookup" in e["reply"] for e in d),
                 f"clear status: dsn {d[0]['dsn']} reply {d[0]['reply']!r}")
        # A second batch of routed mail while the deferred retries keep
        # hitting the silent resolver.
        more = fk.Sender(lambda: r.port, n_threads=2, rcpt="u@routed.test",
                         prefix="rt2", limit=5).start()
        more.join()
        ok = fk.wait_until(lambda: more.acked <= set(routed.ids()), 30)
        fk.check(ok, "routed mail still flows during the retries")
        st = fk.qstats(QTOOL, r.state)
        fk.check(st["messages"] == N_DOWN, f"the {N_DOWN} waiting messages stay queued "
                 f"({st['messages']})")
        # DNS comes back: restart postern against a resolver that answers
        # (dns servers need a restart, relay.c says so).
        dns = dnspeer.start({
            "records": {"dnsdown.test": {"A": ["127.0.0.2"]},
                        "slowdns.test": {"A": ["127.0.0.2"]},
                        "veryslow.test": {"A": ["127.0.0.2"]}},
            "behaviour": {"slowdns.test": {"delay": 0.6},      # under `timeout 1s`
                          "veryslow.test": {"delay": 5}}})    # over it
        try:
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
            with open(r.conf) as f:
                conf = f.read().replace(f"127.0.0.1:{dport}", f"127.0.0.1:{dns.port}")
            with open(r.conf, "w") as f:
                f.write(conf)
            r.start()
            ok = fk.wait_until(lambda: down.acked <= set(mx.ids()), 40)
            fk.check(ok, f"deferred mail delivered once DNS answers "
                     f"({len(down.acked & set(mx.ids()))}/{N_DOWN})")
            # Slow DNS: an answer within the timeout is used, a later one
            # is a deferral like silence.
            r.send("s@snd.test", ["u@slowdns.test"], fk.message("slowdns"))
            r.send("s@snd.test", ["u@veryslow.test"], fk.message("veryslow"))
            fk.check(fk.wait_until(lambda: "slowdns" in mx.ids(), 30),
                     "slow DNS (0.6 s, timeout 1 s): delivered")
            ev = r.wait_log(lambda e: e.get("event") == "delivery"
                            and e.get("domain") == "veryslow.test", timeout=30)[0]
            fk.check(ev["status"] == "deferred" and ev["dsn"] == "4.4.3",
                     f"DNS slower than the timeout: deferred {ev['dsn']} {ev['reply']!r}")
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
        finally:
            dns.stop()
    finally:
        if r:
            r.close()
        routed.stop()
        mx.stop()
        silent.close()
        silent_tcp.close()
    fk.finish()


if __name__ == "__main__":
    main()
