"""Reload and shutdown under load.

1. SIGHUP with a changed route while senders stream mail: the reload is
   logged, new mail goes to the new destination, nothing acked is lost.
2. SIGHUP with a broken file: `reload_rejected` with the error, the old
   configuration keeps running (mail still flows to the same place).
3. SIGTERM while senders stream mail: exit 0; after a restart every acked
   message is delivered and none twice (a graceful stop finishes or gives
   back what is in flight).

Usage: reload_shutdown_test.py POSTERN QTOOL
"""

import signal
import sys
import time

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
ROUNDS = 5 if fk.LONG else 1


def main():
    a = fk.Sink("127.0.0.1")
    b = fk.Sink("127.0.0.2")
    dns = dnspeer.start({"records": {}})
    r = None
    all_acked = set()
    try:
        r = Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{a.port}",
                  extra="queue { retry_initial 1s; retry_max 2s }")
        for rnd in range(ROUNDS):
            src, dst = (a, b) if rnd % 2 == 0 else (b, a)
            snd = fk.Sender(lambda: r.port, n_threads=3, prefix=f"r{rnd}-",
                            pause=0.01).start()
            time.sleep(1.5)
            with open(r.conf) as f:
                conf = f.read()
            good = conf.replace(f"127.0.0.{1 if src is a else 2}:{src.port}",
                                f"127.0.0.{2 if dst is b else 1}:{dst.port}")
            with open(r.conf, "w") as f:
                f.write(good)
            before = len([e for e in r.events() if e.get("event") == "reloaded"])
            r.proc.send_signal(signal.SIGHUP)
            r.wait_log(lambda e: e.get("event") == "reloaded", count=before + 1)
            n_dst = len(dst.ids())
            fk.wait_until(lambda: len(dst.ids()) > n_dst + 20, 20)
            fk.check(len(dst.ids()) > n_dst + 20,
                     f"round {rnd}: after SIGHUP new mail goes to the new route "
                     f"({len(dst.ids()) - n_dst} there)")
            # A broken file: rejected, the running configuration stays.
            with open(r.conf, "w") as f:
                f.write(good + "\nthis is { not a directive\n")
            rej = len([e for e in r.events() if e.get("event") == "reload_rejected"])
            r.proc.send_signal(signal.SIGHUP)
            ev = r.wait_log(lambda e: e.get("event") == "reload_rejected", count=rej + 1)
            fk.check("postern.conf" in ev[-1].get("error", ""),
                     f"round {rnd}: broken file rejected: {ev[-1].get('error', '')[:100]!r}")
            n_dst = len(dst.ids())
            fk.wait_until(lambda: len(dst.ids()) > n_dst + 20, 20)
            fk.check(r.proc.poll() is None and len(dst.ids()) > n_dst + 20,
                     f"round {rnd}: still running with the old configuration")
            with open(r.conf, "w") as f:
                f.write(good)
            snd.stop()
            all_acked |= snd.acked
            ok = fk.wait_until(lambda: all_acked <= set(a.ids()) | set(b.ids()), 60)
            fk.check(ok, f"round {rnd}: nothing lost across reloads "
                     f"({len(all_acked)} acked so far)")
        # Graceful shutdown under load.
        shut = fk.Sender(lambda: r.port, n_threads=4, prefix="t", pause=0.0).start()
        time.sleep(1.5)
        rc = r.stop()
        shut.stop()
        fk.check(rc == 0, f"SIGTERM under load: exit 0 (got {rc})")
        print(f"{len(shut.acked)} acked before the stop, {len(shut.unacked)} refused",
              flush=True)
        r.start()
        all_acked |= shut.acked
        ok = fk.wait_until(lambda: all_acked <= set(a.ids()) | set(b.ids()), 60)
        fk.check(ok, f"after restart every acked message is delivered ({len(all_acked)})")
        ids = a.ids() + b.ids()
        dups = [m for m, c in ids.items() if c > 1]
        fk.check(not dups, f"nothing delivered twice ({len(dups)} duplicates: {dups[:5]})")
        fk.check(fk.wait_until(lambda: fk.qstats(QTOOL, r.state)["messages"] == 0, 30),
                 "queue empty at the end")
        fk.check(r.stop() == 0, "final SIGTERM: exit 0")
    finally:
        if r:
            r.close()
        a.stop()
        b.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
