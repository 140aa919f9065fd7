"""MTA-STS policies shared by a fleet (cluster { }, docs/fleet.md), end to
end: three postern nodes share one redis-server; each policy domain has its
own HTTPS policy server (tests/peers/httpspeer.py), which counts fetches,
and an aiosmtpd MX with a certificate from the test CA.

 1. Redis up: mail to one.sts.test injected into all three nodes at once
    -> exactly one policy fetch in the fleet (one node fetches, the others
    wait for its shared entry: mtasts_policy_shared), and every node
    delivers per the enforce policy (mx_level=mtasts, authenticated TLS).
 2. A corrupt shared entry for bad.sts.test (a format this build does not
    know, saying mode none) is ignored and logged (mtasts_shared_invalid):
    the node fetches, delivers per the enforce policy (not downgraded), and
    the entry is replaced by a valid one.
 3. Redis stopped: mail to down.sts.test on every node -> each node fetches
    for itself (three fetches) and delivers per the policy.
 4. Refreshes (two more nodes, refresh_interval 2s, Redis back): after
    both used ref.sts.test's policy, a node's refresh takes the policy the
    other node fetched meanwhile (mtasts_refresh_shared) instead of
    fetching it again.

Usage: mtasts_shared_test.py POSTERN_BINARY
"""

import sys
import time

import dnspeer
import dnssec_zone
import httpspeer
import pki
import redispeer
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
NODES = 3
DOMAINS = {"one": (41, 51), "bad": (42, 52), "down": (43, 53),
           "ref": (46, 56)}  # mx, mta-sts
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody\r\n")


def policy(mx):
    return f"version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n"


def fetches(web):
    return len([q for q in web.requests() if q["path"] == "/.well-known/mta-sts.txt"])


def delivered(r, rcpt):
    return r.wait_log(lambda e: e.get("event") == "delivery"
                      and e.get("rcpt") == rcpt, timeout=60)[0]


def per_policy(e):
    return (e.get("status") == "sent" and e.get("mx_level") == "mtasts"
            and e.get("tls_level") == "authenticated")


def main():
    p = pki.PKI()
    records = {}
    for d, (mx_ip, sts_ip) in DOMAINS.items():
        records[f"{d}.sts.test"] = {"MX": [[10, f"mx.{d}.sts.test"]]}
        records[f"mx.{d}.sts.test"] = {"A": [f"127.0.0.{mx_ip}"]}
        records[f"_mta-sts.{d}.sts.test"] = {"TXT": [["v=STSv1; id=20261206"]]}
        records[f"mta-sts.{d}.sts.test"] = {"A": [f"127.0.0.{sts_ip}"]}
    dns = dnspeer.start({"ad": False, "records": records})

    def mx_starter(d):
        c, k = p.server_cert(f"mx.{d}.sts.test")
        return lambda port: smtpd_peer.Peer(host=f"127.0.0.{DOMAINS[d][0]}",
                                            port=port, hostname=f"mx.{d}.sts.test",
                                            tls_cert=c, tls_key=k)

    def web_starter(d):
        c, k = p.server_cert(f"mta-sts.{d}.sts.test")
        # A slow answer, so that the other nodes ask while the fetch runs.
        cfg = {"routes": {"/.well-known/mta-sts.txt": {
            "body": policy(f"mx.{d}.sts.test"), "delay": 1.0}}}
        return lambda port: httpspeer.start(cfg, c, k,
                                            address=f"127.0.0.{DOMAINS[d][1]}",
                                            port=port)

    smtp_port, mx = dnssec_zone.on_common_port([(d, mx_starter(d)) for d in DOMAINS])
    https_port, web = dnssec_zone.on_common_port([(d, web_starter(d)) for d in DOMAINS])
    redis = redispeer.RedisPeer()
    nodes = []

    def node(name, mtasts_extra=""):
        extra = (f"tls {{ ca_file {p.ca_file} }}\n"
                 f"policy {{ local; mtasts {{ https_port {https_port}; "
                 f"fetch_timeout 5s; {mtasts_extra} }}; dnssec; dane }}\n"
                 "queue { retry_initial 1h }\n"
                 f"cluster {{ redis {redis.url()}; node {name} }}")
        nodes.append(Relay(POSTERN, dns.port, extra=extra,
                           delivery=f"port {smtp_port}; connect_timeout 5s"))

    try:
        for n in range(NODES):
            node(f"n{n}")
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2,
                       timeout=30)

        # 1. One fetch serves the fleet.
        for n, r in enumerate(nodes):
            r.send("s@snd.test", [f"u{n}@one.sts.test"], msg(f"one-{n}"))
        for n, r in enumerate(nodes):
            e = delivered(r, f"u{n}@one.sts.test")
            check(per_policy(e), f"1: node n{n} delivered per the enforce policy "
                  f"({e.get('status')} {e.get('mx_level')} {e.get('tls_level')}: "
                  f"{e.get('reply')})")
        check(fetches(web["one"]) == 1,
              f"1: exactly one policy fetch for three nodes ({fetches(web['one'])})")
        fetched = [n for n, r in enumerate(nodes)
                   if any(e.get("event") == "mtasts_policy_fetched"
                          and e.get("domain") == "one.sts.test" for e in r.events())]
        shared = [n for n, r in enumerate(nodes)
                  if any(e.get("event") == "mtasts_policy_shared"
                         and e.get("domain") == "one.sts.test" for e in r.events())]
        check(len(fetched) == 1 and sorted(fetched + shared) == list(range(NODES)),
              f"1: one node fetched ({fetched}), the others used its policy ({shared})")
        entry = redis.cli("GET", "postern:mtasts:one.sts.test")
        check(entry.startswith("postern-mtasts 1\nid: 20261206\n")
              and "mode: enforce" in entry,
              f"1: the shared entry is in Redis ({entry[:60]!r})")

        # 2. A corrupt shared entry is ignored, never "no policy".
        now = int(time.time())
        corrupt = (f"postern-mtasts 2\nid: 20261206\nfetched: {now}\n\n"
                   "version: STSv1\nmode: none\nmax_age: 86400\n")
        redis.command("SET", "postern:mtasts:bad.sts.test", corrupt)
        nodes[0].send("s@snd.test", ["u@bad.sts.test"], msg("bad"))
        e = delivered(nodes[0], "u@bad.sts.test")
        check(per_policy(e), "2: delivered per the fetched enforce policy, not "
              f"downgraded ({e.get('status')} {e.get('mx_level')} {e.get('tls_level')})")
        check(any(x.get("event") == "mtasts_shared_invalid"
                  and x.get("domain") == "bad.sts.test" for x in nodes[0].events()),
              "2: the corrupt entry was logged (mtasts_shared_invalid)")
        check(fetches(web["bad"]) == 1, f"2: the policy was fetched ({fetches(web['bad'])})")
        entry = redis.cli("GET", "postern:mtasts:bad.sts.test")
        check(entry.startswith("postern-mtasts 1\n") and "mode: enforce" in entry,
              f"2: the entry was replaced by the fetched policy ({entry[:40]!r})")

        # 3. Redis down: every node fetches for itself and delivers.
        redis.stop()
        for r in nodes:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_down", timeout=30)
        for n, r in enumerate(nodes):
            r.send("s@snd.test", [f"u{n}@down.sts.test"], msg(f"down-{n}"))
        for n, r in enumerate(nodes):
            e = delivered(r, f"u{n}@down.sts.test")
            check(per_policy(e), f"3: Redis down: node n{n} delivered per the policy "
                  f"({e.get('status')} {e.get('mx_level')} {e.get('tls_level')})")
        check(fetches(web["down"]) == NODES,
              f"3: Redis down: each node fetched for itself ({fetches(web['down'])})")

        # 4. Refreshes: one node fetches, the other takes its result.
        redis.start()
        for r in nodes:
            r.stop()
        for n in range(2):
            node(f"r{n}", "refresh_interval 2s")
        refs = nodes[NODES:]
        for r in refs:
            r.wait_log(lambda e: e.get("event") == "cluster_redis_up", count=2,
                       timeout=30)
        for n, r in enumerate(refs):
            r.send("s@snd.test", [f"u{n}@ref.sts.test"], msg(f"ref-{n}"))
            e = delivered(r, f"u{n}@ref.sts.test")
            check(per_policy(e), f"4: node r{n} delivered per the policy")
        got = None
        try:
            got = refs[0].wait_log(lambda e: e.get("event") == "mtasts_refresh_shared"
                                   and e.get("domain") == "ref.sts.test", timeout=40)
        except AssertionError:
            try:
                got = refs[1].wait_log(lambda e: e.get("event") == "mtasts_refresh_shared"
                                       and e.get("domain") == "ref.sts.test", timeout=5)
            except AssertionError:
                pass
        check(got is not None and fetches(web["ref"]) >= 2,
              "4: a refresh took the policy another node had fetched "
              f"(mtasts_refresh_shared; {fetches(web['ref'])} fetches)")
        for n, r in enumerate(nodes):
            check(not any(e.get("level") == "error" for e in r.events()),
                  f"node {n}: no error logged")
    finally:
        for r in nodes:
            r.close()
        redis.close()
        for s in list(mx.values()) + list(web.values()):
            s.stop()
        dns.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
