"""Fleet mode end to end: the fleet-wide rate, "local:" limits, and the
life of a node's leases (cluster { }, docs/fleet.md).

Three postern nodes share one redis-server and route everything to one
sink that notes when each message arrives.

 1. per_domain_rate 10 (fleet-wide): 30 messages injected into the three
    nodes at once arrive over about three seconds, never more than the rate
    (with a small tolerance) in any one-second window; each exactly once.
 2. per_domain_rate local:10: the same burst goes at up to 10 per second
    per node, so the fleet as a whole goes faster than 10 per second.
 3. Redis stopped: the rate falls back to the local share; nothing is lost.
 4. A node killed with SIGKILL while it holds connection leases: its leases
    are free again within lease_ttl (the other nodes reach the limit).
 5. A node stopped with SIGTERM gives its leases back and leaves the node
    set at once, without waiting for lease_ttl.

Only counts and orderings are asserted; the windows have room for a slow
machine (a slower node only sends more slowly, which the checks allow).

`qtool cluster` is checked along the way (nodes, leases by node, rates).

Usage: throttle_test.py POSTERN_BINARY QTOOL_BINARY
"""

import json
import subprocess
import sys
import threading
import time

import dnspeer
import rawmx
import redispeer
from relay import Relay

POSTERN = sys.argv[1]
QTOOL = sys.argv[2]
RATE = 10
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def burst(nodes, tag, per_node):
    """Injects into every node at the same time (one thread per node)."""
    sent = [[] for _ in nodes]

    def one(n, r):
        for i in range(per_node):
            s = f"{tag}-n{n}-{i}"
            r.send("s@snd.test", [f"u{i}@x.test"], msg(s))
            sent[n].append(s)

    ts = [threading.Thread(target=one, args=(n, r)) for n, r in enumerate(nodes)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [s for l in sent for s in l]


def max_in_window(times, width=1.0):
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - width + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def cli(redis, *args):
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "--raw", *args],
                         capture_output=True, text=True, timeout=10)
    return [l for l in out.stdout.split("\n") if l]


def lease_holders(redis):
    """Unexpired lease holders over every conn:* key."""
    now_ms = int(cli(redis, "TIME")[0]) * 1000
    out = []
    for key in cli(redis, "KEYS", "postern:conn:*"):
        out += cli(redis, "ZRANGEBYSCORE", key, str(now_ms), "+inf")
    return out


def qtool_cluster(r, *args):
    return subprocess.run([QTOOL, "-c", r.conf, "cluster", *args],
                          capture_output=True, text=True, timeout=20)


def start_nodes(redis, dns, sink, delivery, names):
    return [Relay(POSTERN, dns.port, delivery=delivery,
                  extra=f"cluster {{ redis {redis.url()}; node {name}; "
                        "lease_ttl 3s; local_share 0.5 }")
            for name in names]


def wait_up(nodes):
    for r in nodes:
        r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2,
                   timeout=30)


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    redis = redispeer.RedisPeer()
    sink = rawmx.RawMX("127.0.0.1", 0)
    nodes = []
    try:
        # 1. The fleet-wide rate.
        base = f"route * 127.0.0.1:{sink.port}; idle_timeout 1s; "
        nodes = start_nodes(redis, dns, sink, base + f"per_domain_rate {RATE}",
                            ["a0", "a1", "a2"])
        wait_up(nodes)
        sent = burst(nodes, "fleet", 10)
        sink.wait(len(sent), timeout=120)
        check(sorted(sink.subjects()) == sorted(sent),
              f"fleet rate: every message exactly once ({len(sink.messages)})")
        peak = max_in_window(sink.times)
        span = max(sink.times) - min(sink.times)
        check(peak <= RATE + 3,
              f"fleet rate: at most ~{RATE} in any second over 3 nodes ({peak})")
        check(span >= (len(sent) - 1) / RATE * 0.8,
              f"fleet rate: 30 messages took about 3 s or more ({span:.2f} s)")
        gcra = cli(redis, "KEYS", "postern:rate:*")
        check(len(gcra) == 1, f"fleet rate: one GCRA key in Redis ({gcra})")
        out = qtool_cluster(nodes[0], "--json")
        view = json.loads(out.stdout) if out.returncode == 0 else {}
        check(sorted(n["node"] for n in view.get("nodes", [])) == ["a0", "a1", "a2"],
              f"qtool cluster: the three nodes alive ({out.stdout[:300]} {out.stderr})")
        check(all("pid=" in n["info"] for n in view.get("nodes", [])),
              "qtool cluster: each node's description")
        check([t["destination"] for t in view.get("throttles", [])] ==
              [gcra[0][len("postern:rate:"):]] if gcra else False,
              "qtool cluster: the destination's rate throttle")
        for r in nodes:
            r.close()

        # 2. local: the rate is each node's own.
        sink.messages.clear()
        sink.times.clear()
        nodes = start_nodes(redis, dns, sink,
                            base + f"per_domain_rate local:{RATE}",
                            ["b0", "b1", "b2"])
        wait_up(nodes)
        sent = burst(nodes, "local", 10)
        sink.wait(len(sent), timeout=120)
        check(sorted(sink.subjects()) == sorted(sent),
              f"local rate: every message exactly once ({len(sink.messages)})")
        peak = max_in_window(sink.times)
        check(peak > RATE + 3,
              f"local rate: each node at its own rate, more than {RATE}/s in all ({peak})")

        # 3. Redis down: the local share of the rate, nothing lost.
        for r in nodes:
            r.close()
        sink.messages.clear()
        sink.times.clear()
        nodes = start_nodes(redis, dns, sink, base + f"per_domain_rate {RATE}",
                            ["c0", "c1", "c2"])
        wait_up(nodes)
        redis.stop()
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_down", timeout=30)
        sent = burst(nodes, "down", 5)
        sink.wait(len(sent), timeout=120)
        check(sorted(sink.subjects()) == sorted(sent),
              f"redis down: every message exactly once ({len(sink.messages)})")
        # 5 per node at 0.5 x 10/s: about a second per node, in parallel.
        span = max(sink.times) - min(sink.times)
        check(span >= 4 / (RATE * 0.5) * 0.8,
              f"redis down: each node keeps its local share of the rate ({span:.2f} s)")
        for r in nodes:
            r.close()
        redis.start()

        # 4. SIGKILL: the dead node's leases free themselves within lease_ttl.
        sink.messages.clear()
        sink.max_active = 0
        sink.hold = threading.Event()
        conn = base + "per_domain_connections 2"
        nodes = start_nodes(redis, dns, sink, conn, ["d0", "d1"])
        wait_up(nodes)
        d0, d1 = nodes
        for i in range(4):
            d0.send("s@snd.test", [f"k{i}@x.test"], msg(f"kill-{i}"))
        sink.wait_for(lambda: sink.held >= 2, timeout=30,
                      what="d0's two connections held")
        held = lease_holders(redis)
        check(len(held) == 2 and all(h.startswith("d0:") for h in held),
              f"d0 holds both leases ({held})")
        d0.kill()
        killed = time.monotonic()
        sink.hold.set()
        sink.hold = threading.Event()
        before = sink.held
        for i in range(4):
            d1.send("s@snd.test", [f"m{i}@x.test"], msg(f"after-{i}"))
        sink.wait_for(lambda: sink.held >= before + 2, timeout=30,
                      what="d1 reaching two connections")
        took = time.monotonic() - killed
        held = lease_holders(redis)
        check(len(held) == 2 and all(h.startswith("d1:") for h in held),
              f"after d0's death d1 holds both leases ({held}, after {took:.1f} s)")
        out = qtool_cluster(d1, "--json")
        view = json.loads(out.stdout) if out.returncode == 0 else {}
        ls = view.get("leases", [])
        check(len(ls) == 1 and [h["node"] for h in ls[0]["holders"]] == ["d1", "d1"],
              f"qtool cluster: d1's two leases on one destination ({out.stdout[:400]}{out.stderr[-2000:]})")
        text = qtool_cluster(d1).stdout
        check("d1=2" in text and "nodes alive:" in text,
              f"qtool cluster: the text view ({text!r})")
        sink.hold.set()
        sink.hold = None
        sink.wait_for(lambda: sum(1 for s in sink.subjects() if s.startswith("after-")) == 4,
                      timeout=60, what="d1's messages")

        # 5. SIGTERM: leases and the node entry go at once.
        check("d1" in cli(redis, "ZRANGE", "postern:nodes", "0", "-1"),
              "d1 is in the node set")
        rc = d1.stop()
        check(rc == 0, f"d1 stopped cleanly ({rc})")
        held = lease_holders(redis)
        check(not any(h.startswith("d1:") for h in held),
              f"d1 gave its leases back when it stopped ({held})")
        check("d1" not in cli(redis, "ZRANGE", "postern:nodes", "0", "-1"),
              "d1 left the node set when it stopped")
        for n, r in enumerate(nodes):
            check(not any(e.get("level") == "error" for e in r.events()),
                  f"node {n}: no error logged")
    finally:
        for r in nodes:
            r.close()
        sink.stop()
        redis.close()
        dns.stop()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
