"""Fleet mode follows a reload (SIGHUP): on, to another Redis, off.

One node and one sink that can hold messages (so connections and their
leases stay open) and two redis-servers:

 1. Alone (no cluster block): mail goes, nothing is written to Redis.
 2. Reload with a cluster block naming Redis A: cluster_reloaded from
    alone to fleet, the node joins A's node set and its connections take
    leases there.
 3. Reload naming Redis B, connections still open: A gets the leases back
    and loses the node at once; the live connections take leases in B at
    their next renewal; the node joins B.
 4. Reload without the cluster block: B loses the node; mail still goes.
 Every message arrives exactly once.

Usage: reload_test.py POSTERN_BINARY
"""

import os
import signal
import sys
import threading
import time

import dnspeer
import rawmx
import redispeer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def holders(redis):
    out = redis.command("EVAL", "local n = 0 for _, k in ipairs(redis.call('KEYS', "
                        "'postern:conn:*')) do n = n + redis.call('ZCARD', k) end "
                        "return n", "0")
    return int(out.strip().lstrip(":") or 0)


def nodes(redis):
    return int(redis.command("ZCARD", "postern:nodes").strip().lstrip(":") or 0)


def wait_until(pred, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    check(False, f"timed out: {what}")
    return False


def reload(r, extra, count):
    with open(r.conf) as f:
        text = f.read()
    base = text.split("# cluster:\n")[0]
    with open(r.conf, "w") as f:
        f.write(base + "# cluster:\n" + extra + "\n")
    os.kill(r.pid, signal.SIGHUP)
    r.wait_log(lambda e: e.get("event") == "reloaded", count=count, timeout=30)


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    a = redispeer.RedisPeer()
    b = redispeer.RedisPeer()
    sink = rawmx.RawMX("127.0.0.1", 0)
    r = None
    sent = []
    try:
        r = Relay(POSTERN, dns.port,
                  delivery=f"route * 127.0.0.1:{sink.port}; per_domain_connections 2; "
                           "idle_timeout 30s",
                  extra="# cluster:\n")
        # 1. Alone.
        r.send("s@snd.test", ["u0@x.test"], msg("alone"))
        sent.append("alone")
        sink.wait(1, timeout=30)
        check(nodes(a) == 0 and holders(a) == 0, "alone: nothing in Redis")

        # 2. Into the fleet (Redis A), with connections held open.
        def cl(redis):
            return (f"cluster {{ redis {redis.url()}; node r1; lease_ttl 3s }}")
        reload(r, cl(a), 1)
        r.wait_log(lambda e: e.get("event") == "cluster_reloaded"
                   and e.get("to") == "fleet", timeout=30)
        r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2, timeout=30)
        check(wait_until(lambda: nodes(a) == 1, "node in A's node set"),
              "fleet: the node joined A's node set")
        sink.hold = threading.Event()
        for i in range(4):
            r.send("s@snd.test", [f"h{i}@x.test"], msg(f"held-{i}"))
            sent.append(f"held-{i}")
        sink.wait_for(lambda: sink.held >= 2, timeout=30, what="two held")
        check(holders(a) == 2, f"fleet: two leases in A ({holders(a)})")

        # 3. To Redis B while the connections are open.
        reload(r, cl(b), 2)
        check(wait_until(lambda: nodes(a) == 0 and holders(a) == 0,
                         "A emptied"),
              "moved: A got its leases back and lost the node at once")
        check(wait_until(lambda: nodes(b) == 1 and holders(b) == 2,
                         "B's node and leases"),
              f"moved: the node and its live connections' leases are in B ({holders(b)})")
        sink.hold.set()
        sink.hold = None

        # 4. Alone again.
        reload(r, "", 3)
        r.wait_log(lambda e: e.get("event") == "cluster_reloaded"
                   and e.get("to") == "alone", timeout=30)
        check(wait_until(lambda: nodes(b) == 0, "B without the node"),
              "alone again: the node left B's node set")
        r.send("s@snd.test", ["u9@x.test"], msg("alone-again"))
        sent.append("alone-again")
        sink.wait(len(sent), timeout=60)
        got = sink.subjects()
        check(sorted(got) == sorted(sent), f"every message exactly once ({got})")
        check(not any(e.get("level") == "error" for e in r.events()),
              "no error logged")
    finally:
        if r:
            r.close()
        sink.stop()
        a.close()
        b.close()
        dns.stop()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
