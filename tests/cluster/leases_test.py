"""Fleet-wide connection leases (cluster { }, docs/fleet.md), end to end.

Three postern nodes share one redis-server and route everything to one
sink with per_domain_connections 2. The sink counts the connections open
at once, over all nodes.

 1. Redis up: a burst from every node; at most 2 connections at once in
    all, every message arrives exactly once.
 2. Redis stopped: every node logs cluster_redis_down and goes on with its
    local share; a burst from every node arrives exactly once.
 3. Redis restarted: cluster_redis_up; once the connections of (2) have
    closed, a new burst again sees at most 2 connections at once.
 4. Connections opened while Redis was down (idle_timeout long, so they
    stay open) take leases when it returns: two get one, the third is
    denied (cluster_lease_denied) and closes, so the fleet is back within
    its limit without waiting for idle_timeout.

Usage: leases_test.py POSTERN_BINARY
"""

import sys
import threading
import time

import dnspeer
import rawmx
import redispeer
from relay import Relay

POSTERN = sys.argv[1]
NODES = 3
BURST = 12
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def burst(nodes, tag):
    sent = []
    for n, r in enumerate(nodes):
        for i in range(BURST):
            s = f"{tag}-n{n}-{i}"
            r.send("s@snd.test", [f"u{i}@x.test"], msg(s))
            sent.append(s)
    return sent


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    redis = redispeer.RedisPeer()
    sink = rawmx.RawMX("127.0.0.1", 0)
    sink.dot_delay = 0.05  # each message a little slow: connections overlap
    nodes = []
    try:
        delivery = (f"route * 127.0.0.1:{sink.port}; per_domain_connections 2; "
                    "idle_timeout 1s")
        for n in range(NODES):
            nodes.append(Relay(POSTERN, dns.port, delivery=delivery,
                               extra=f"cluster {{ redis {redis.url()}; node n{n}; "
                                     "lease_ttl 3s; local_share 0.5 }"))
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2,
                       timeout=30)

        # 1. Redis up: the fleet keeps to the limit.
        sent = burst(nodes, "up")
        sink.wait(len(sent), timeout=120)
        got = sink.subjects()
        check(sorted(got) == sorted(sent), "redis up: every message exactly once "
              f"({len(got)} of {len(sent)})")
        check(sink.max_active <= 2,
              f"redis up: at most 2 connections at once fleet-wide ({sink.max_active})")
        check(sink.max_active >= 1, "redis up: the sink saw connections")

        # 2. Redis down: local share, nothing lost.
        redis.stop()
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_down", timeout=30)
        before = len(sink.messages)
        sent2 = burst(nodes, "down")
        sink.wait(before + len(sent2), timeout=120)
        got = sink.subjects()
        check(sorted(got) == sorted(sent + sent2),
              f"redis down: every message exactly once ({len(got) - before} of {len(sent2)})")
        for n, r in enumerate(nodes):
            down = [e for e in r.events() if e.get("event") == "cluster_redis_down"]
            check(len(down) >= 1 and down[0].get("local_share") == "0.5",
                  f"node n{n}: cluster_redis_down logged with the local share")

        # 3. Redis back: leases again.
        redis.start()
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=4,
                       timeout=60)
        sink.wait_for(lambda: sink.active == 0, timeout=60,
                      what="the connections of the outage closed")
        sink.max_active = 0
        before = len(sink.messages)
        sent3 = burst(nodes, "again")
        sink.wait(before + len(sent3), timeout=120)
        got = sink.subjects()
        check(sorted(got) == sorted(sent + sent2 + sent3),
              f"redis back: every message exactly once ({len(got) - before} of {len(sent3)})")
        check(sink.max_active <= 2,
              f"redis back: at most 2 connections at once fleet-wide ({sink.max_active})")
        for n, r in enumerate(nodes):
            check(not any(e.get("level") == "error" for e in r.events()),
                  f"node n{n}: no error logged")

        # 4. Outage connections adopt leases when Redis returns.
        for r in nodes:
            r.close()
        nodes = []
        sink.wait_for(lambda: sink.active == 0, timeout=60,
                      what="every connection closed")
        delivery = (f"route * 127.0.0.1:{sink.port}; per_domain_connections 2; "
                    "idle_timeout 60s")
        for n in range(NODES):
            nodes.append(Relay(POSTERN, dns.port, delivery=delivery,
                               extra=f"cluster {{ redis {redis.url()}; node x{n}; "
                                     "lease_ttl 3s; local_share 0.5 }"))
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2,
                       timeout=30)
        redis.stop()
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_down", timeout=30)
        before = len(sink.messages)
        sent4 = burst(nodes, "outage")
        sink.wait(before + len(sent4), timeout=120)
        sink.wait_for(lambda: sink.active == 3, timeout=30,
                      what="one idle connection per node")
        redis.start()
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=4,
                       timeout=60)
        sink.wait_for(lambda: sink.active <= 2, timeout=30,
                      what="the fleet back within its limit")
        check(sink.active <= 2,
              f"redis back: outage connections over the limit closed ({sink.active})")
        denied = sum(len([e for e in r.events()
                          if e.get("event") == "cluster_lease_denied"]) for r in nodes)
        check(denied == 1, f"exactly one connection was denied a lease ({denied})")
        holders = redis.command("EVAL", "local n = 0 for _, k in ipairs(redis.call("
                                "'KEYS', 'postern:conn:*')) do n = n + "
                                "redis.call('ZCARD', k) end return n", "0")
        check(holders.strip() == ":2",
              f"the two remaining connections hold leases ({holders.strip()})")
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
