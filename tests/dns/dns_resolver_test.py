"""Integration test of net/dns against the scripted server dnspeer.py.

Runs the dns_lookup driver (argv[1]) against dnspeer instances on loopback
and checks each outcome: answers of every type, the AD bit and when it is
believed, SERVFAIL/REFUSED as TEMPFAIL, NXDOMAIN, NODATA, truncation
answered over TCP, garbage as MALFORMED, silence as TEMPFAIL after the
timeout, null MX, CNAME chains (followed, too long, looping), merged host
lookups, cancellation, closing with lookups pending, IPv6 servers and
failover to the second configured server.
"""

import json
import socket
import subprocess
import sys

import dnspeer

DRIVER = sys.argv[1]
failures = []

TLSA_HASH = "a0" * 32

CONFIG = {
    "ttl": 300,
    "soa_minimum": 42,
    "records": {
        "example.org": {"MX": [[10, "mx1.example.org"], [20, "mx2.example.org"]],
                        "TXT": [["v=spf1 ", "-all"], ["second record"]]},
        "mx1.example.org": {"A": ["192.0.2.1", "192.0.2.2"],
                            "AAAA": ["2001:db8::1"]},
        "mx2.example.org": {"A": ["192.0.2.3"]},
        "_25._tcp.mx1.example.org": {"TLSA": [[3, 1, 1, TLSA_HASH],
                                              [2, 0, 1, "0102"]]},
        "nullmx.example.org": {"MX": [[0, "."]]},
        "noad.example.org": {"A": ["192.0.2.9"]},
        "alias.example.org": {"CNAME": "c1.example.net"},
        "c1.example.net": {"CNAME": "c2.example.net"},
        "c2.example.net": {"CNAME": "mx2.example.org"},
        "loop1.example.org": {"CNAME": "loop2.example.org"},
        "loop2.example.org": {"CNAME": "loop1.example.org"},
        "dangling.example.org": {"CNAME": "gone.example.org"},
        "big.example.org": {"A": ["198.51.100.%d" % i for i in range(1, 101)]},
        "tc.example.org": {"A": ["192.0.2.77"]},
        "half.example.org": {"A": ["192.0.2.50"]},
        "slow.example.org": {"A": ["192.0.2.60"]},
        "short.example.org": {"A": ["192.0.2.61"]},
        "v6sf.example.org": {"A": ["192.0.2.62"]},
        "v6noad.example.org": {"A": ["192.0.2.63"]},
    },
    "behaviour": {
        "noad.example.org": {"ad": False},
        "sf.example.org": {"rcode": "SERVFAIL"},
        "ref.example.org": {"rcode": "REFUSED"},
        "tc.example.org": {"truncate": True},
        "bad.example.org": {"garbage": True},
        "raw.example.org": {"garbage": "raw"},
        "quiet.example.org": {"silent": True},
        "slow.example.org": {"delay": 0.1},
        "short.example.org": {"ttl": 7},
        "v6sf.example.org": {"rcode": "SERVFAIL", "types": ["AAAA"]},
        "v6noad.example.org": {"ad": False, "types": ["AAAA"]},
    },
}
# A chain of 9 CNAMEs, one more than the resolver follows.
for i in range(9):
    CONFIG["records"]["l%d.example.org" % i] = {"CNAME": "l%d.example.org" % (i + 1)}
CONFIG["records"]["l9.example.org"] = {"A": ["192.0.2.99"]}


def check(what, cond, detail=""):
    print("%s: %s%s" % ("ok" if cond else "FAIL", what,
                         (" (%s)" % detail) if not cond and detail else ""))
    if not cond:
        failures.append(what)


def run(args, timeout=30):
    p = subprocess.run([DRIVER] + args, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        check("driver exits 0 for %s" % " ".join(args), False,
              "rc=%d stderr=%s" % (p.returncode, p.stderr.strip()))
    out = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return out


def lookups(peer, names, extra=()):
    res = run(["--server", peer.address(), "--timeout", "400",
               "--attempts", "1"] + list(extra) + names)
    return {(r["name"], r["type"]): r for r in res}


def main():
    with dnspeer.start(CONFIG) as peer:
        names = [
            "example.org/MX", "nullmx.example.org/MX", "mx1.example.org/A",
            "mx1.example.org/AAAA", "example.org/TXT",
            "_25._tcp.mx1.example.org/TLSA", "noad.example.org/A",
            "sf.example.org/A", "ref.example.org/A", "nx.example.org/A",
            "mx2.example.org/AAAA", "tc.example.org/A", "big.example.org/A",
            "bad.example.org/A", "raw.example.org/A", "quiet.example.org/A",
            "alias.example.org/A", "l0.example.org/A", "loop1.example.org/A",
            "dangling.example.org/A", "mx1.example.org/HOST",
            "mx2.example.org/HOST", "nx.example.org/HOST",
            "slow.example.org/A", "short.example.org/A", "alias.example.org/CNAME",
            "v6sf.example.org/HOST", "v6noad.example.org/HOST",
            "alias.example.org/HOST",
        ]
        r = lookups(peer, names)

        a = r[("example.org", "MX")]
        check("MX answer", a["status"] == "answer" and
              sorted(a["records"]) == ["10 mx1.example.org", "20 mx2.example.org"], a)
        check("MX authenticated from a loopback resolver with AD", a["ad"])
        check("MX ttl", a["ttl"] == 300, a)
        check("MX not null", not a["null_mx"])

        a = r[("nullmx.example.org", "MX")]
        check("null MX reported", a["status"] == "answer" and a["null_mx"]
              and a["records"] == ["0 ."], a)

        a = r[("mx1.example.org", "A")]
        check("A records", sorted(a["records"]) == ["192.0.2.1", "192.0.2.2"], a)
        a = r[("mx1.example.org", "AAAA")]
        check("AAAA record", a["records"] == ["2001:db8::1"], a)

        a = r[("example.org", "TXT")]
        texts = sorted((t["strings"], t["text"]) for t in a["records"])
        check("TXT strings concatenated, records kept apart",
              texts == [(1, "second record"), (2, "v=spf1 -all")], a)

        a = r[("_25._tcp.mx1.example.org", "TLSA")]
        check("TLSA parsed", sorted(a["records"]) ==
              sorted(["3 1 1 " + TLSA_HASH, "2 0 1 0102"]) and a["ad"], a)

        a = r[("noad.example.org", "A")]
        check("answer without AD is not authenticated",
              a["status"] == "answer" and not a["ad"], a)

        a = r[("sf.example.org", "A")]
        check("SERVFAIL is TEMPFAIL", a["status"] == "tempfail" and not a["ad"], a)
        a = r[("ref.example.org", "A")]
        check("REFUSED is TEMPFAIL", a["status"] == "tempfail", a)

        a = r[("nx.example.org", "A")]
        check("NXDOMAIN", a["status"] == "nxdomain" and a["rcode"] == 3, a)
        check("NXDOMAIN authenticated denial", a["ad"], a)
        check("NXDOMAIN negative TTL from SOA minimum", a["ttl"] == 42, a)

        a = r[("mx2.example.org", "AAAA")]
        check("NODATA", a["status"] == "nodata" and a["records"] == [], a)

        a = r[("tc.example.org", "A")]
        check("truncated UDP answer retried over TCP",
              a["status"] == "answer" and a["records"] == ["192.0.2.77"], a)
        a = r[("big.example.org", "A")]
        check("answer larger than the EDNS payload arrives complete",
              a["status"] == "answer" and len(a["records"]) == 100, a)
        q = peer.queries()
        check("TCP used for the truncated names",
              ("tcp", "tc.example.org", "A") in q and
              ("tcp", "big.example.org", "A") in q, q)
        check("small answers stay on UDP",
              ("tcp", "mx1.example.org", "A") not in q)

        a = r[("bad.example.org", "A")]
        check("garbage answer is MALFORMED", a["status"] == "malformed", a)
        a = r[("raw.example.org", "A")]
        check("random bytes are ignored, then TEMPFAIL",
              a["status"] == "tempfail" and a["err"] == "TIMEOUT", a)
        a = r[("quiet.example.org", "A")]
        check("silence is TEMPFAIL after the timeout",
              a["status"] == "tempfail" and a["err"] == "TIMEOUT" and
              not a["ad"], a)

        a = r[("alias.example.org", "A")]
        check("CNAME chain followed to the canonical name",
              a["status"] == "answer" and a["cname"] == "mx2.example.org" and
              a["hops"] == 3 and a["records"] == ["192.0.2.3"], a)
        a = r[("alias.example.org", "CNAME")]
        check("CNAME asked directly is not followed",
              a["status"] == "answer" and a["records"] == ["c1.example.net"] and
              a["hops"] == 0, a)
        a = r[("l0.example.org", "A")]
        check("CNAME chain longer than 8 is MALFORMED",
              a["status"] == "malformed", a)
        a = r[("loop1.example.org", "A")]
        check("CNAME loop is MALFORMED", a["status"] == "malformed", a)
        a = r[("dangling.example.org", "A")]
        check("CNAME to a missing name is NXDOMAIN for the target",
              a["status"] == "nxdomain" and a["cname"] == "gone.example.org", a)

        a = r[("mx1.example.org", "HOST")]
        check("host lookup merges A and AAAA",
              sorted(a["records"]) == ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
              and a["ad"] and not a["partial"], a)
        check("host lookup: both families answered and validated",
              a["a"] == {"status": "answer", "ad": True}
              and a["aaaa"] == {"status": "answer", "ad": True}
              and a["select"] == {"a": True, "aaaa": True, "authenticated": True}, a)
        a = r[("mx2.example.org", "HOST")]
        check("host lookup with authenticated NODATA for AAAA is authenticated",
              a["records"] == ["192.0.2.3"] and a["ad"], a)
        a = r[("nx.example.org", "HOST")]
        check("host lookup NXDOMAIN", a["status"] == "nxdomain", a)

        a = r[("v6sf.example.org", "HOST")]
        check("host lookup with AAAA SERVFAIL: partial, not authenticated",
              a["status"] == "answer" and a["records"] == ["192.0.2.62"] and
              a["partial"] and not a["ad"], a)
        check("host lookup with AAAA SERVFAIL: per family, A validated and "
              "AAAA failed; DANE may use the A addresses (RFC 7672 §2.1.1)",
              a["a"] == {"status": "answer", "ad": True}
              and a["aaaa"] == {"status": "tempfail", "ad": False}
              and a["select"] == {"a": True, "aaaa": False, "authenticated": True}, a)
        a = r[("v6noad.example.org", "HOST")]
        check("host lookup with unauthenticated AAAA NODATA: not authenticated",
              a["status"] == "answer" and not a["partial"] and not a["ad"], a)
        check("host lookup with unauthenticated AAAA NODATA: per family",
              a["a"]["status"] == "answer" and a["aaaa"] == {"status": "nodata", "ad": False}, a)
        a = r[("alias.example.org", "HOST")]
        check("host lookup reports the canonical name",
              a["cname"] == "mx2.example.org" and a["records"] == ["192.0.2.3"], a)

        a = r[("slow.example.org", "A")]
        check("delayed answer within the timeout",
              a["status"] == "answer" and a["records"] == ["192.0.2.60"], a)
        a = r[("short.example.org", "A")]
        check("TTL reported", a["ttl"] == 7, a)

        # Longer timeout: the delayed answer must still arrive while the
        # other lookups complete (one loop, many lookups in flight).
        r = lookups(peer, ["slow.example.org/A", "mx2.example.org/A"],
                    ["--timeout", "2000"])
        check("concurrent lookups complete",
              all(x["status"] == "answer" for x in r.values()), r)

        # Cancellation and closing with lookups in flight.
        r = run(["--server", peer.address(), "--cancel-first",
                 "slow.example.org/A", "mx2.example.org/A"])
        check("cancelled lookup reports CANCELED", r[0]["status"] == "canceled", r)
        check("other lookup unaffected by cancel", r[1]["status"] == "answer", r)
        r = run(["--server", peer.address(), "--cancel-first",
                 "slow.example.org/HOST"])
        check("cancelled host lookup reports CANCELED",
              r and r[0]["status"] == "canceled", r)
        r = run(["--server", peer.address(), "--close-early",
                 "slow.example.org/A", "mx1.example.org/HOST"])
        check("closing the resolver cancels pending lookups",
              len(r) == 2 and all(x["status"] == "canceled" for x in r), r)

        # Invalid names are refused at once, without a callback.
        r = run(["--server", peer.address(), "a..b/A", "x\\065y/A"])
        check("bad names refused",
              [x.get("error") for x in r] == ["INVAL", "INVAL"], r)

        # Failover: the first server refuses (nothing listens on its port),
        # the second answers. Only configured servers are ever used.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        s.close()
        r = run(["--server", "127.0.0.1:%d" % dead, "--server", peer.address(),
                 "--attempts", "2", "mx2.example.org/A"])
        check("second server used when the first is down",
              r and r[0]["status"] == "answer", r)

    # IPv6 server, and AD behaviour over it.
        # The answer cache: a second lookup of the same name and type
        # within its TTL is answered without asking the server, with the
        # same records and AD bit and a TTL that never grows; denials with
        # an SOA are cached (RFC 2308), failures never; --no-cache asks
        # every time.
        def asked(name, rtype):
            return sum(1 for q in peer.queries() if q[1] == name and q[2] == rtype)

        seq = ["example.org/MX", "example.org/MX", "nx.example.org/A",
               "nx.example.org/A", "sf.example.org/A", "sf.example.org/A",
               "mx1.example.org/HOST", "mx1.example.org/HOST",
               "noad.example.org/A", "noad.example.org/A"]
        before = {k: asked(*k) for k in [("example.org", "MX"), ("nx.example.org", "A"),
                                         ("sf.example.org", "A"), ("mx1.example.org", "A"),
                                         ("mx1.example.org", "AAAA"),
                                         ("noad.example.org", "A")]}
        out = run(["--server", peer.address(), "--timeout", "400", "--attempts", "1",
                   "--sequential"] + seq)
        res, stats = out[:-1], out[-1]["cache"]
        delta = {k: asked(*k) - v for k, v in before.items()}
        check("cache: a repeated MX lookup asks once", delta[("example.org", "MX")] == 1, delta)
        check("cache: the cached MX answer is the same, AD kept",
              res[1]["records"] == res[0]["records"] and res[1]["ad"] and
              0 < res[1]["ttl"] <= res[0]["ttl"], (res[0], res[1]))
        check("cache: NXDOMAIN cached for its negative TTL",
              delta[("nx.example.org", "A")] == 1 and res[3]["status"] == "nxdomain"
              and res[3]["ad"] and 0 < res[3]["ttl"] <= 42, (delta, res[3]))
        check("cache: SERVFAIL never cached", delta[("sf.example.org", "A")] == 2, delta)
        check("cache: host lookups cache A and AAAA",
              delta[("mx1.example.org", "A")] == 1 and delta[("mx1.example.org", "AAAA")] == 1
              and sorted(res[7]["records"]) == sorted(res[6]["records"]), delta)
        check("cache: an unauthenticated answer stays unauthenticated",
              delta[("noad.example.org", "A")] == 1 and not res[9]["ad"], res[9])
        # hits: MX, NXDOMAIN, A, AAAA, noad; misses: those five once and
        # SERVFAIL twice.
        check("cache: counters", stats["hits"] == 5 and stats["misses"] == 7 and
              stats["entries"] == 5, stats)
        before = asked("example.org", "MX")
        run(["--server", peer.address(), "--timeout", "400", "--attempts", "1",
             "--sequential", "--no-cache", "example.org/MX", "example.org/MX"])
        check("no cache: every lookup asks", asked("example.org", "MX") - before == 2)

        # The in-flight limit: with one query allowed at the resolver, the
        # second waits until the first has timed out; without the limit it
        # is answered at once. A waiting query that is cancelled never
        # reaches the server; closing the resolver cancels waiting ones.
        def waited(args):
            out = run(["--server", peer.address(), "--timeout", "400", "--attempts", "1",
                       "--stats"] + args)
            return out[:-1], out[-1]["cache"]
        res, st = waited(["quiet.example.org/A", "example.org/MX"])
        check("no limit reached: the second query does not wait",
              res[1]["status"] == "answer" and res[1]["ms"] < 350 and st["waited"] == 0,
              (res, st))
        before = asked("www.example.org", "A")
        res, st = waited(["--max-inflight", "1", "--cancel-last", "quiet.example.org/A",
                          "example.org/MX", "mx2.example.org/HOST", "www.example.org/A"])
        check("max_inflight 1: the second query waits for the first's timeout",
              res[0]["status"] == "tempfail" and res[1]["status"] == "answer" and
              res[1]["ms"] >= 380, res)
        check("max_inflight 1: a host lookup's A and AAAA wait too, then answer",
              res[2]["status"] == "answer" and res[2]["ms"] >= res[1]["ms"], res[2])
        check("max_inflight 1: a cancelled waiting query is never sent",
              res[3]["status"] == "canceled" and res[3]["ms"] < 350 and
              asked("www.example.org", "A") == before, (res[3], before))
        check("max_inflight 1: waits counted", st["waited"] == 4, st)
        out = run(["--server", peer.address(), "--timeout", "400", "--attempts", "1",
                   "--max-inflight", "1", "--close-early", "quiet.example.org/A",
                   "example.org/MX", "mx2.example.org/HOST"])
        check("close cancels waiting queries",
              [x["status"] for x in out] == ["canceled"] * 3, out)

    with dnspeer.start(CONFIG, address="::1") as peer6:
        r = run(["--server", peer6.address(), "example.org/MX",
                 "noad.example.org/A"])
        check("IPv6 server answers", r[0]["status"] == "answer" and r[0]["ad"], r)
        check("IPv6 no AD", r[1]["status"] == "answer" and not r[1]["ad"], r)

    # When AD is believed. 192.0.2.1 is never queried here.
    def trust(args):
        out = run(["--trust"] + args)
        return out[0]["trust"] if out else None
    check("loopback IPv4 trusted", trust(["--server", "127.0.0.1:53"]) is True)
    check("loopback IPv6 trusted", trust(["--server", "[::1]:5353"]) is True)
    check("remote server not trusted", trust(["--server", "192.0.2.1"]) is False)
    check("remote server trusted with trust_ad yes",
          trust(["--trust-ad", "--server", "192.0.2.1"]) is True)
    check("one remote server among loopback ones: not trusted",
          trust(["--server", "127.0.0.1", "--server", "192.0.2.1:53"]) is False)
    # No servers: /etc/resolv.conf. Only construction, never a query.
    check("default servers from resolv.conf accepted",
          trust([]) in (True, False))

    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
