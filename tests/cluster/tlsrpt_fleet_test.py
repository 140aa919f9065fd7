"""TLS reports (RFC 8460) over a fleet (cluster { }, docs/fleet.md), end to
end: three postern nodes share one redis-server and each delivers mail to
rpt.plain.test (an MX with STARTTLS and a certificate from the test CA),
whose `_smtp._tls` record names an HTTPS report receiver.

 1. Every node counts sessions for the same domain on the same day (its own
    counts: `qtool tlsrpt report`, local). The nodes are stopped, today's
    report is asked for on n0 (`qtool tlsrpt send`), n1 and n2 start and
    share their counts (tlsrpt_fleet_published), then n0 starts and sends:
    exactly ONE report reaches the receiver, it passes the RFC 8460 schema
    check, and its counts are the sum of the three nodes' counts.
 2. Redis holds one field per node for the day and the done record.
 3. n1 restarts and is asked too: it shares its counts again and finds the
    report done by the fleet (tlsrpt_fleet_already_done): nothing is sent.
 4. An operator resend (the done record deleted, `qtool tlsrpt send` on
    n2): n2 sends the report again, with the same sum - n1's second share
    replaced its counts, it did not add to them.
 5. Redis stopped, a report asked for on n1 (send_window 2s): n1 keeps it
    while Redis is unavailable (tlsrpt_fleet_waiting), then sends its own
    counts alone (tlsrpt_fleet_alone) - never silently dropped.

Usage: tlsrpt_fleet_test.py POSTERN QTOOL
"""

import datetime
import json
import subprocess
import sys

import dnspeer
import dnssec_zone
import httpspeer
import pki
import redispeer
import smtpd_peer
import tlsrpt_check
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
NODES = 3
DOMAIN = "rpt.plain.test"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody\r\n")


def qtool(r, *args):
    return subprocess.run([QTOOL, "-c", r.conf, "tlsrpt"] + list(args),
                          capture_output=True, text=True, timeout=30)


def summary(rep):
    s = [p["summary"] for p in rep.get("policies", [])]
    return (sum(x["total-successful-session-count"] for x in s),
            sum(x["total-failure-session-count"] for x in s))


def event(r, name, **kv):
    return r.wait_log(lambda e: e.get("event") == name
                      and all(e.get(k) == v for k, v in kv.items()),
                      timeout=60, since_start=True)


def main():
    p = pki.PKI()
    mc, mk = p.server_cert(f"mx.{DOMAIN}")
    rc_, rk = p.server_cert("rcv.plain.test")
    smtp_port, mx = dnssec_zone.on_common_port([("mx", lambda port: smtpd_peer.Peer(
        host="127.0.0.44", port=port, hostname=f"mx.{DOMAIN}", tls_cert=mc,
        tls_key=mk))])
    web = httpspeer.start({"routes": {"/v1/tlsrpt": {"status": 201, "body": ""}}},
                          rc_, rk, address="127.0.0.45", port=0)
    dns = dnspeer.start({"ad": False, "records": {
        DOMAIN: {"MX": [[10, f"mx.{DOMAIN}"]]},
        f"mx.{DOMAIN}": {"A": ["127.0.0.44"]},
        f"_smtp._tls.{DOMAIN}": {"TXT": [[
            f"v=TLSRPTv1; rua=https://rcv.plain.test:{web.port}/v1/tlsrpt"]]},
        "rcv.plain.test": {"A": ["127.0.0.45"]},
    }})
    redis = redispeer.RedisPeer()
    nodes = []
    try:
        for n in range(NODES):
            extra = (f"tls {{ ca_file {p.ca_file} }}\n"
                     "queue { retry_initial 1h }\n"
                     "tlsrpt { organization \"Postern fleet\"; submitter relay.test; "
                     "https_timeout 10s; send_window 2s }\n"
                     f"cluster {{ redis {redis.url()}; node n{n} }}")
            nodes.append(Relay(POSTERN, dns.port, extra=extra,
                               delivery=f"port {smtp_port}; connect_timeout 5s; "
                                        "reuse_limit 1"))
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")

        # 1. Every node counts; one report with the sum.
        for n, r in enumerate(nodes):
            for i in range(n + 1):
                rcpt = f"u{i}@{DOMAIN}"
                r.send("s@snd.test", [rcpt], msg(f"n{n}-{i}"))
                e = r.wait_log(lambda e: e.get("event") == "delivery"
                               and e.get("rcpt") == rcpt, timeout=60)[0]
                check(e.get("status") == "sent", f"1: n{n} delivered {rcpt}")
        local = []
        for n, r in enumerate(nodes):
            out = qtool(r, "report", DOMAIN)
            rep = json.loads(out.stdout or "{}")
            local.append(summary(rep))
            check(out.returncode == 0 and local[-1][0] >= 1,
                  f"1: n{n} counted its own sessions ({local[-1]})")
        total = (sum(x[0] for x in local), sum(x[1] for x in local))
        for r in nodes:
            r.stop()
        out = qtool(nodes[0], "send")
        check(out.returncode == 0, f"1: qtool tlsrpt send on n0 ({out.stdout.strip()})")
        for r in nodes[1:]:
            r.start()
            event(r, "tlsrpt_fleet_published", day=day)
        nodes[0].start()
        e = event(nodes[0], "tlsrpt_report_sent", domain=DOMAIN)[0]
        posts = web.posts()
        check(len(posts) == 1, f"1: exactly one report reached the receiver ({len(posts)})")
        rep = tlsrpt_check.load_gzip(posts[0]["body"]) if posts else {}
        errs = tlsrpt_check.validate(rep, strict=True)
        check(not errs, f"1: the report passes the schema check ({errs})")
        check(summary(rep) == total and rep.get("organization-name") == "Postern fleet",
              f"1: its counts are the sum of the three nodes' ({summary(rep)} == "
              f"{local} summed)")
        sending = [x for x in nodes[0].events(since_start=True)
                   if x.get("event") == "tlsrpt_fleet_sending"]
        check(len(sending) == 1 and sorted(sending[0].get("nodes", "").split(",")) ==
              ["n0", "n1", "n2"], f"1: n0 summed n0, n1 and n2 ({sending})")

        # 2. What Redis holds.
        fields = redis.cli("HKEYS", f"postern:tlsrpt:{day}:{DOMAIN}").split()
        check(sorted(fields) == ["n0", "n1", "n2"], f"2: one field per node ({fields})")
        done = redis.cli("GET", f"postern:tlsrpt-done:{day}:{DOMAIN}")
        check(done.startswith("sent n0 "), f"2: the done record says n0 sent it ({done!r})")

        # 3. A restarted node shares again and does not resend.
        nodes[1].stop()
        qtool(nodes[1], "send")
        nodes[1].start()
        event(nodes[1], "tlsrpt_fleet_published", day=day)
        event(nodes[1], "tlsrpt_fleet_already_done", domain=DOMAIN)
        check(len(web.posts()) == 1, f"3: n1 did not send again ({len(web.posts())} reports)")
        check(not any(x.get("event", "").startswith("tlsrpt_report")
                      for x in nodes[1].events(since_start=True)),
              "3: n1 logged no report of its own")

        # 4. An operator resend from n2: the same sum.
        redis.cli("DEL", f"postern:tlsrpt-done:{day}:{DOMAIN}")
        nodes[2].stop()
        qtool(nodes[2], "send")
        nodes[2].start()
        event(nodes[2], "tlsrpt_report_sent", domain=DOMAIN)
        posts = web.posts()
        rep2 = tlsrpt_check.load_gzip(posts[-1]["body"]) if len(posts) == 2 else {}
        check(len(posts) == 2 and summary(rep2) == total,
              f"4: the resent report has the same sum, nothing counted twice "
              f"({summary(rep2)} == {total})")

        # 5. Redis down: n1 waits, then sends its own counts alone.
        redis.stop()
        nodes[1].stop()
        qtool(nodes[1], "send")
        nodes[1].start()
        event(nodes[1], "tlsrpt_fleet_waiting", domain=DOMAIN)
        event(nodes[1], "tlsrpt_fleet_alone", domain=DOMAIN)
        event(nodes[1], "tlsrpt_report_sent", domain=DOMAIN)
        posts = web.posts()
        rep3 = tlsrpt_check.load_gzip(posts[-1]["body"]) if len(posts) == 3 else {}
        check(len(posts) == 3 and summary(rep3) == local[1]
              and not tlsrpt_check.validate(rep3, strict=True),
              f"5: Redis down: n1 sent its own counts alone ({summary(rep3)} == "
              f"{local[1]})")
        for n, r in enumerate(nodes):
            check(not any(x.get("level") == "error" for x in r.events()),
                  f"node n{n}: no error logged")
    finally:
        for r in nodes:
            r.close()
        redis.close()
        web.stop()
        for s in mx.values():
            s.stop()
        dns.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
