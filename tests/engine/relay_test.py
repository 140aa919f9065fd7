"""End-to-end delivery through a real `postern`: SMTP in, LMDB queue, MX
selection against a scripted DNS server, delivery to recording MX servers,
per-recipient outcomes, retries, DSNs and graceful shutdown.

Usage: relay_test.py POSTERN_BINARY
"""

import email
import email.policy
import urllib.error
import urllib.request
import sys
import threading
import time

import dnspeer
import mxpeer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject, extra=""):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n"
            f".leading dot line\r\n{extra}")


def deliveries(r, **kv):
    return [e for e in r.events()
            if e.get("event") == "delivery" and all(e.get(k) == v for k, v in kv.items())]


def parse_dsn(data):
    m = email.message_from_bytes(data, policy=email.policy.compat32)
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = m.get_payload()
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    # message/delivery-status payload: a list of header blocks
    blocks = status.get_payload()
    per_msg = blocks[0]
    per_rcpt = blocks[1:]
    return m, per_msg, per_rcpt, parts


def main():
    port = mxpeer.free_port("127.0.0.2")
    mx1 = mxpeer.MX("127.0.0.2", port, rcpt_replies={
        "bad@": "550 5.1.1 no such user",
        "later@": ("450 4.2.0 try again later", True),
        "never@": "451 4.3.0 always busy",
    })
    mx2 = mxpeer.MX("127.0.0.3", port)
    snd = mxpeer.MX("127.0.0.5", port)
    routed = mxpeer.MX("127.0.0.1", 0)
    zone = {
        "ad": False,
        "records": {
            "d1.test": {"MX": [[10, "mx1.d1.test"], [20, "mx2.d1.test"]]},
            "mx1.d1.test": {"A": ["127.0.0.2"]},
            "mx2.d1.test": {"A": ["127.0.0.3"]},
            "d2.test": {"MX": [[10, "dead.d2.test"], [20, "mx2.d1.test"]]},
            "dead.d2.test": {"A": ["127.0.0.4"]},
            "snd.test": {"MX": [[10, "mx.snd.test"]]},
            "mx.snd.test": {"A": ["127.0.0.5"]},
            "nullmx.test": {"MX": [[0, "."]]},
            "imp.test": {"A": ["127.0.0.3"]},
            "reuse.test": {"A": ["127.0.0.6"]},
        },
        "behaviour": {"tempfail.test": {"rcode": "SERVFAIL"}},
    }
    dns = dnspeer.start(zone)
    try:
        delivery = (f"port {port}; route routed.test 127.0.0.1:{routed.port};"
                    " connect_timeout 2s")
        with Relay(POSTERN, dns.port, delivery=delivery,
                   extra="queue { retry_initial 1s; retry_max 2s }\n"
                         "metrics { listen 127.0.0.1:0 }") as r:
            # 1. A static route: N messages in, N out, each once, over
            #    several client sessions at once.
            n = 30

            def sender(k):
                for i in range(k, n, 3):
                    r.send("s@snd.test", [f"u{i}@routed.test"], msg(f"route{i}"))
            threads = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            got = routed.wait(n)
            subjects = sorted(email.message_from_bytes(d)["Subject"] for _, _, d in got)
            check(len(got) == n and len(set(subjects)) == n,
                  f"route: {n} messages in, {n} distinct out")
            first = email.message_from_bytes(got[0][2])
            check(first["Received"] is not None and "relay.test" in first["Received"],
                  "route: a Received header was prepended")
            check(b"\r\n.leading dot line\r\n" in got[0][2],
                  "route: a line starting with a dot arrives intact")
            sent = deliveries(r, status="sent", domain="routed.test")
            check(len(sent) == n, f"route: {n} delivery log lines with status=sent")
            check(all(e.get("dsn") == "2.0.0" and e.get("tls_level") and e.get("mx_level")
                      for e in sent), "route: log lines carry dsn, tls_level, mx_level")

            # 2. MX preference: d1.test goes to its preferred MX.
            r.send("s@snd.test", ["ok@d1.test"], msg("pref"))
            mx1.wait(1)
            check(len(mx2.messages) == 0, "mx: preference 10 chosen over 20")

            # 3. Fallback: the first MX refuses connections, the second takes it.
            r.send("s@snd.test", ["ok@d2.test"], msg("fallback"))
            mx2.wait(1)
            check(mx2.messages[0][1] == ["ok@d2.test"], "mx: fallback to the next MX")

            # 4. Implicit MX: no MX record, the domain's A record is used.
            r.send("s@snd.test", ["ok@imp.test"], msg("implicit"))
            mx2.wait(2)
            check(mx2.messages[1][1] == ["ok@imp.test"], "mx: implicit MX (RFC 5321 5.1)")

            # 5. Per-recipient outcomes in one message: sent, bounced,
            #    deferred-then-sent; one DSN for the bounce.
            r.send("s@snd.test", ["ok2@d1.test", "bad@d1.test", "later@d1.test"],
                   msg("mixed"))
            r.wait_log(lambda e: e.get("event") == "delivery" and
                       e.get("rcpt") == "later@d1.test" and e.get("status") == "sent",
                       timeout=30)
            check(len(deliveries(r, rcpt="later@d1.test", status="deferred")) == 1,
                  "mixed: 450 recipient deferred once, then sent on retry")
            check(len(deliveries(r, rcpt="bad@d1.test", status="bounced", dsn="5.1.1")) == 1,
                  "mixed: 550 recipient bounced with 5.1.1")
            dsns = snd.wait(1)
            m, per_msg, per_rcpt, parts = parse_dsn(dsns[0][2])
            check(dsns[0][0] in ("", "<>") and dsns[0][1] == ["s@snd.test"],
                  "dsn: sent with the null sender to the envelope sender")
            check(per_msg["Reporting-MTA"] == "dns; relay.test", "dsn: Reporting-MTA")
            check(len(per_rcpt) == 1 and per_rcpt[0]["Final-Recipient"] == "rfc822; bad@d1.test"
                  and per_rcpt[0]["Action"] == "failed" and per_rcpt[0]["Status"] == "5.1.1",
                  "dsn: one failed recipient with its status")
            check("550" in (per_rcpt[0]["Diagnostic-Code"] or "")
                  and per_rcpt[0]["Remote-MTA"] == "dns; mx1.d1.test",
                  "dsn: diagnostic and remote MTA")
            check("Subject: mixed" in parts[2].as_string(), "dsn: original headers returned")

            # 6. Null MX bounces at once with 5.1.10 (RFC 7505).
            r.send("s@snd.test", ["x@nullmx.test"], msg("nullmx"))
            r.wait_log(lambda e: e.get("rcpt") == "x@nullmx.test" and e.get("event") == "delivery")
            check(len(deliveries(r, rcpt="x@nullmx.test", status="bounced", dsn="5.1.10")) == 1,
                  "null MX: bounced with 5.1.10")
            snd.wait(2)

            # 7. A domain that does not exist bounces; a DNS failure defers.
            r.send("s@snd.test", ["x@nxdomain.test"], msg("nx"))
            r.send("s@snd.test", ["x@tempfail.test"], msg("tf"))
            r.wait_log(lambda e: e.get("rcpt") == "x@nxdomain.test" and e.get("event") == "delivery")
            r.wait_log(lambda e: e.get("rcpt") == "x@tempfail.test" and e.get("event") == "delivery")
            check(len(deliveries(r, rcpt="x@nxdomain.test", status="bounced")) == 1,
                  "NXDOMAIN: bounced")
            tf = deliveries(r, rcpt="x@tempfail.test")
            check(tf[0]["status"] == "deferred" and tf[0]["dsn"].startswith("4."),
                  "DNS SERVFAIL: deferred with a 4.x.x status")

            # 8. A null-sender message that bounces makes no DSN (double bounce).
            r.send("", ["bad@d1.test"], msg("nullsender"))
            r.wait_log(lambda e: e.get("event") == "double_bounce")
            check(True, "null sender bounce: logged as double bounce, no DSN")

            # 9. Metrics: Prometheus text with the counters seen above.
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
            values = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    k, v = line.rsplit(" ", 1)
                    values[k] = float(v)
            accepted = values.get("postern_messages_accepted_total", 0)
            check(accepted >= n + 8, f"metrics: accepted counter ({accepted})")
            sent_none = values.get('postern_deliveries_total{status="sent",mx_level="none",tls_level="none"}', 0)
            check(sent_none >= n, f"metrics: sent deliveries by level ({sent_none})")
            check(values.get("postern_dsn_queued_total", 0) >= 2, "metrics: DSNs counted")
            check(values.get("postern_double_bounces_total", 0) >= 1, "metrics: double bounce counted")
            check("postern_queue_messages" in values and "postern_inbound_sessions" in values,
                  "metrics: queue and session gauges present")
            # (dns_cache_relay_test checks the DNS cache counters' values.)
            check('postern_dns_cache_lookups_total{result="miss"}' in values and
                  'postern_tls_certificate_checks_total{result="verified"}' in values,
                  "metrics: DNS cache and certificate check counters present")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}/other", timeout=10)
                check(False, "metrics: unknown path refused")
            except urllib.error.HTTPError as e:
                check(e.code == 404, "metrics: unknown path is 404")

            # 10. Graceful shutdown: exit 0.
            rc = r.stop()
            check(rc == 0, f"SIGTERM: exit status 0 (got {rc})")

            # 11. The deferred message is still queued after a restart and is
            #     attempted again (SERVFAIL keeps it deferred).
            r.start()
            r.wait_log(lambda e: e.get("rcpt") == "x@tempfail.test" and
                       e.get("event") == "delivery", since_start=True, timeout=30)
            check(True, "restart: deferred message attempted again")
            check(r.stop() == 0, "second shutdown: exit status 0")
        # 12. Connection reuse, a [host] route (no MX lookup),
        #     per_domain_rate, and RFC 3461 parameters in our DSNs.
        reuse = mxpeer.MX("127.0.0.6", port, rcpt_replies={"bad@": "550 5.1.1 nobody"})
        try:
            delivery = (f"port {port}; route rl.test [reuse.test]:{port};"
                        " reuse_limit 2; per_domain_rate 4")
            with Relay(POSTERN, dns.port, delivery=delivery,
                       extra="queue { retry_initial 1s }\n"
                             "policy { local\n mtasts }") as r3:
                for i in range(6):
                    r3.send("s@snd.test", [f"u{i}@rl.test"], msg(f"reuse{i}"))
                    reuse.wait(i + 1)
                check(reuse.sessions == 3,
                      f"reuse_limit 2: 6 messages over 3 sessions (saw {reuse.sessions})")
                mxq = [q for q in dns.queries() if q[1] in ("reuse.test", "rl.test")
                       and q[2] == "MX"]
                check(not mxq, "[host] route: no MX lookup")
                # RFC 8461 §3.4: the smart host's domain is the policy
                # domain, never the recipient domain.
                # (The resolver saw the earlier relays' lookups too.)
                stsq = {q[1] for q in dns.queries()
                        if q[1] in ("_mta-sts.reuse.test", "_mta-sts.rl.test")}
                check(stsq == {"_mta-sts.reuse.test"},
                      f"routed mail: MTA-STS looked up for the smart host only ({stsq})")
                for i in range(8):
                    r3.send("s@snd.test", [f"rate{i}@rl.test"], msg(f"rate{i}"))
                evs = r3.wait_log(lambda e: e.get("event") == "delivery" and
                                  e.get("rcpt", "").startswith("rate"), count=8)
                stamps = sorted(time.mktime(time.strptime(e["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
                                + float("0." + e["ts"][20:23]) for e in evs)
                spread = stamps[-1] - stamps[0]
                check(spread >= 1.2, f"per_domain_rate 4: 8 deliveries spread over {spread:.2f}s")

                # RET=FULL, ENVID, ORCPT, NOTIFY=FAILURE: the DSN carries them.
                before = len(snd.messages)
                r3.send("s@snd.test", ["bad@rl.test"], msg("dsnparams", "secret body\r\n"),
                        mail_options=["RET=FULL", "ENVID=env123"],
                        rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;Bad@rl.test"])
                got = snd.wait(before + 1)
                _, per_msg, per_rcpt, parts = parse_dsn(got[before][2])
                check(per_msg["Original-Envelope-Id"] == "env123", "DSN: ENVID returned")
                check(per_rcpt[0]["Original-Recipient"] == "rfc822;Bad@rl.test",
                      "DSN: ORCPT returned as Original-Recipient")
                check(parts[2].get_content_type() == "message/rfc822" and
                      "secret body" in parts[2].as_string(), "DSN: RET=FULL returns the body")
                # NOTIFY=NEVER: bounced, but no report.
                r3.send("s@snd.test", ["bad@rl.test"], msg("never"),
                        rcpt_options=["NOTIFY=NEVER"])
                r3.wait_log(lambda e: e.get("event") == "delivery" and
                            e.get("status") == "bounced", count=2)
                time.sleep(1)
                check(len(snd.messages) == before + 1, "NOTIFY=NEVER: no DSN")
                check(r3.stop() == 0, "reuse relay: clean exit")
        finally:
            reuse.stop()

        # 12b. Chaining (delivery chain_threshold): with one connection to a
        #      next hop fast enough for the threshold, waiting messages
        #      ride behind the one in progress (RFC 2920); each arrives
        #      exactly once, on one session, and the metric counts them.
        #      With chain_threshold 0 nothing is chained. The peer takes
        #      50 ms per message so that messages do wait.
        for threshold in ("1m", "0"):
            chain = mxpeer.MX("127.0.0.6", port, data_delay=0.05, pipelining=True)
            try:
                delivery = (f"port {port}; route ch.test [reuse.test]:{port};"
                            f" per_domain_connections 1; chain_threshold {threshold}")
                with Relay(POSTERN, dns.port, delivery=delivery,
                           extra="metrics { listen 127.0.0.1:0 }") as r4:
                    r4.send("s@snd.test", ["first@ch.test"], msg("chain-first"))
                    chain.wait(1)
                    total = 1 + 24

                    def burst(k):
                        for i in range(k, 24, 4):
                            r4.send("s@snd.test", [f"c{i}@ch.test"], msg(f"chain{i}"))
                    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
                    [t.start() for t in threads]
                    [t.join() for t in threads]
                    got = chain.wait(total)
                    time.sleep(0.5)
                    subjects = [email.message_from_bytes(d)["Subject"] for _, _, d in chain.messages]
                    check(len(subjects) == total and len(set(subjects)) == total,
                          f"chain_threshold {threshold}: {total} messages, each once "
                          f"(got {len(subjects)}, {len(set(subjects))} distinct)")
                    check(chain.sessions == 1,
                          f"chain_threshold {threshold}: one session (saw {chain.sessions})")
                    mport = int(r4.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])
                    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                                  timeout=10).read().decode()
                    chained = sum(float(l.split()[-1]) for l in text.splitlines()
                                  if l.startswith("postern_messages_chained_total"))
                    if threshold == "0":
                        check(chained == 0, f"chain_threshold 0: nothing chained ({chained})")
                    else:
                        check(chained >= 1, f"chain_threshold 1m: messages chained ({chained})")
                    check(r4.stop() == 0, f"chain relay ({threshold}): clean exit")
            finally:
                chain.stop()

        # 13. max_age: a recipient that keeps failing temporarily gets a
        #     delay warning (delay_warning) and then bounces with 4.4.7.
        with Relay(POSTERN, dns.port, delivery=f"port {port}",
                   extra="queue { retry_initial 1s; retry_max 1s; max_age 4s;"
                         " delay_warning 2s }") as r2:
            before = len(snd.messages)
            r2.send("s@snd.test", ["never@d1.test"], msg("expire"))
            exp = r2.wait_log(lambda e: e.get("rcpt") == "never@d1.test" and
                              e.get("event") == "expired", timeout=40)
            check(exp[-1]["dsn"] == "4.4.7" and exp[-1]["status"] == "bounced",
                  "max_age: expired, bounced with 4.4.7 (%s)" % exp[-1]["dsn"])
            got = snd.wait(before + 2, timeout=30)[before:]
            kinds = {}
            for _, _, data in got:
                _, _, per_rcpt, _ = parse_dsn(data)
                kinds[per_rcpt[0]["Action"]] = per_rcpt[0]["Status"]
            check(kinds.get("delayed", "").startswith("4."),
                  "delay_warning: a delay DSN (Action: delayed) came first")
            check(kinds.get("failed") == "4.4.7",
                  "max_age: the failure DSN says Status 4.4.7")
            check(r2.stop() == 0, "max_age relay: clean exit")
    finally:
        dns.stop()
        for m in (mx1, mx2, snd, routed):
            m.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
