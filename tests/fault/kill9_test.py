"""kill -9 under load: senders stream mail through a real postern into a
recording sink while postern is killed with SIGKILL at random moments and
restarted. At the end every message that got a 250 has been delivered,
duplicates are bounded by the work in flight at the kills, and the queue
is empty.

Default: 12 kills; POSTERN_LONG=1: 40 kills with more senders.

Usage: kill9_test.py POSTERN QTOOL
"""

import random
import signal
import sys
import time

import dnspeer
import faultkit as fk
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
SINK_LAG = 2.0  # seconds
KILLS = 40 if fk.LONG else 12
THREADS = 8 if fk.LONG else 4


def main():
    rnd = random.Random()
    seed = rnd.randrange(1 << 30)
    rnd.seed(seed)
    print(f"seed {seed}, {KILLS} kills, {THREADS} sender threads", flush=True)
    sink = fk.Sink()
    dns = dnspeer.start({"records": {}})
    delivery = f"route * 127.0.0.1:{sink.port}; connect_timeout 2s"
    r = Relay(POSTERN, dns.port, delivery=delivery,
              extra="queue { retry_initial 1s; retry_max 2s }")
    snd = fk.Sender(lambda: r.port, n_threads=THREADS, prefix="k")
    try:
        snd.start()
        kills = 0
        kill_times = []
        while kills < KILLS:
            time.sleep(rnd.uniform(0.2, 1.5))
            # The kill's time is taken before the signal: the sink may record
            # a copy that was on the wire a little after the relay died.
            kill_times.append(time.time())
            r.proc.send_signal(signal.SIGKILL)
            r.proc.wait()
            r.proc = None
            kills += 1
            time.sleep(rnd.uniform(0.0, 0.3))
            r.start()
        time.sleep(1.0)
        snd.stop()
        acked = set(snd.acked)
        print(f"senders: {len(acked)} acked, {len(snd.unacked)} not acked; "
              f"errors: {dict(snd.errors.most_common(5))}", flush=True)
        fk.check(kills >= 10, f"postern killed with SIGKILL and restarted {kills} times")
        fk.check(len(acked) >= 50, f"load was real: {len(acked)} messages acked (>= 50)")

        def all_in():
            return acked <= set(sink.ids())
        fk.wait_until(all_in, 120)
        ids = sink.ids()
        missing = acked - set(ids)
        fk.check(not missing, f"every acked message delivered ({len(acked)} checked; "
                 f"missing {len(missing)}: {sorted(missing)[:5]})")
        unexpected = set(ids) - acked - snd.unacked
        fk.check(not unexpected, f"nothing delivered that was never sent ({len(unexpected)})")
        late = set(ids) & snd.unacked
        print(f"{len(late)} messages whose 250 was lost in a kill were delivered anyway "
              f"(committed before the kill)", flush=True)
        dups = {m: c for m, c in ids.items() if c > 1}
        extra = sum(c - 1 for c in dups.values())
        print(f"duplicates: {len(dups)} messages, {extra} extra copies over {kills} kills",
              flush=True)
        # A kill can only duplicate what was being delivered at that moment:
        # at most one message per delivery connection in flight (workers x
        # connections, well under 20 per kill here).
        fk.check(extra <= 20 * kills, f"duplicates bounded by in-flight work "
                 f"({extra} <= {20 * kills})")
        # A duplicate must straddle a kill: its first copy reached the sink
        # before some kill (while postern had not yet committed the result)
        # and the next copy after it.
        seen = {}
        outside = []
        for t, m in sink.arrivals():
            # The sink timestamps a copy when its thread gets to it, which
            # on a loaded machine can be well after the bytes arrived.
            if m in seen and not any(seen[m] - SINK_LAG <= k <= t for k in kill_times):
                outside.append(m)
            seen[m] = t
        fk.check(not outside, f"every duplicate was in flight at a kill "
                 f"({len(outside)} not: {outside[:5]})")

        def empty():
            return fk.qstats(QTOOL, r.state).get("messages") == 0
        fk.wait_until(empty, 60, step=0.5)
        st = fk.qstats(QTOOL, r.state)
        fk.check(st.get("messages") == 0, f"queue ends empty (qtool stats: {st})")
        rc = r.stop()
        fk.check(rc == 0, f"final SIGTERM: exit 0 (got {rc})")
    finally:
        snd.stop()
        r.close()
        sink.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
