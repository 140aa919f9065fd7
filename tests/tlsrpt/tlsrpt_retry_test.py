"""TLS reporting (RFC 8460): retries of reports that could not be posted,
for a bounded time. `tlsrpt { retry_for 1m }`, so the first retry comes
7.5 s after the first try (retry_for / 8), then at doubling intervals, the
last at the end of the minute:

 1. flaky.plain.test's receiver answers 500: the report is deferred
    (tlsrpt_report_deferred), then the receiver comes back (201) and the
    next try delivers it - the report passes the schema check;
 2. down.plain.test's receiver always answers 503: the report is tried
    several times (backoff), given up after retry_for (logged
    tlsrpt_report_given_up), counted in postern_tlsrpt_reports_total
    {result="failed"}, and not tried again after a restart.

Usage: tlsrpt_retry_test.py POSTERN QTOOL
"""

import re
import subprocess
import sys
import time
import urllib.request

import dnssec_zone
import httpspeer
import pki
import smtpd_peer
import tlsrpt_check
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def metric(port, family, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(family), re.escape(want)),
                  text, re.M)
    return int(m.group(1)) if m else None


def main():
    p = pki.PKI()
    mxc = p.server_cert("mx.plain.test")
    port = None
    for _ in range(20):
        port = dnssec_zone._free_port()
        try:
            mx = smtpd_peer.Peer(host="127.0.0.71", port=port, hostname="mx.plain.test",
                                 tls_cert=mxc[0], tls_key=mxc[1])
            break
        except OSError:
            continue
    c1, k1 = p.server_cert("rpt1.plain.test")
    c2, k2 = p.server_cert("rpt2.plain.test")
    failing = {"routes": {"/r": {"status": 500, "body": "try later"}}}
    fine = {"routes": {"/r": {"status": 201, "body": ""}}}
    down = {"routes": {"/r": {"status": 503, "body": "down"}}}
    rpt1 = httpspeer.start(failing, c1, k1, address="127.0.0.72", port=0)
    hport = rpt1.port
    rpt2 = httpspeer.start(down, c2, k2, address="127.0.0.73", port=hport)
    zones = {"plain.test": {"signed": False, "records": [
        "flaky MX 10 mx", "down MX 10 mx", "mx A 127.0.0.71",
        f'_smtp._tls.flaky TXT "v=TLSRPTv1; rua=https://rpt1.plain.test:{hport}/r"',
        f'_smtp._tls.down TXT "v=TLSRPTv1; rua=https://rpt2.plain.test:{hport}/r"',
        "rpt1 A 127.0.0.72", "rpt2 A 127.0.0.73",
    ]}}
    fx = dnssec_zone.Fixture(zones)
    cfg = (f"tls {{ ca_file {p.ca_file} }}\n"
           "metrics { listen 127.0.0.1:0 }\n"
           "tlsrpt { submitter relay.test; retry_for 1m; https_timeout 5s }")
    try:
        r = Relay(POSTERN, fx.port, delivery=f"port {port}; connect_timeout 3s",
                  extra=cfg)
        try:
            for d in ("flaky", "down"):
                r.send("s@snd.test", [f"a@{d}.plain.test"],
                       f"Subject: {d}\r\n\r\nbody\r\n")
                r.wait_log(lambda e: e.get("event") == "delivery"
                           and e.get("rcpt") == f"a@{d}.plain.test")
            out = subprocess.run([QTOOL, "-d", r.state, "tlsrpt", "send"],
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 0, f"qtool tlsrpt send ({out.stdout.strip()})")
            r.stop()
            r.start()
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening",
                                   since_start=True)[-1]["port"])
            # 1. deferred, then delivered once the receiver is back
            e = r.wait_log(lambda e: e.get("event") == "tlsrpt_report_deferred"
                           and e.get("domain") == "flaky.plain.test",
                           since_start=True, timeout=30)[0]
            check(e.get("retry_in") == "7s" and len(rpt1.posts()) == 1,
                  f"1: first try refused (500): deferred, retry in {e.get('retry_in')}")
            rpt1.stop()
            rpt1 = httpspeer.start(fine, c1, k1, address="127.0.0.72", port=hport)
            r.wait_log(lambda e: e.get("event") == "tlsrpt_report_sent"
                       and e.get("domain") == "flaky.plain.test",
                       since_start=True, timeout=30)
            posts = rpt1.posts()
            rep = tlsrpt_check.load_gzip(posts[0]["body"]) if posts else {}
            check(len(posts) == 1 and not tlsrpt_check.validate(rep, strict=True),
                  "1: the retry delivered a valid report")
            # 2. given up after retry_for
            t0 = time.time()
            e = r.wait_log(lambda e: e.get("event") == "tlsrpt_report_given_up"
                           and e.get("domain") == "down.plain.test",
                           since_start=True, timeout=100)[0]
            tries = len(rpt2.posts())
            check(tries >= 4, f"2: tried {tries} times with backoff before giving up")
            check(metric(mport, "postern_tlsrpt_reports_total", result="failed") == 1
                  and metric(mport, "postern_tlsrpt_reports_total", result="sent") == 1,
                  "2: metrics: one report sent, one failed")
            r.stop()
            r.start()
            time.sleep(4)
            again = [x for x in r.events(since_start=True)
                     if x.get("event", "").startswith("tlsrpt_report")]
            check(not again and len(rpt2.posts()) == tries,
                  f"2: not tried again after a restart ({again})")
        finally:
            r.kill()
    finally:
        fx.close()
        mx.stop()
        rpt1.stop()
        rpt2.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
