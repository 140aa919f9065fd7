"""MTA-STS discovery, refresh and fetching end to end: a real `postern`
with `policy { local; mtasts; dnssec; dane }`, DNS from nsd behind a
validating unbound (an unsigned zone, and a signed one whose corrupted
RRSIGs make chosen TXT lookups SERVFAIL), a policy server per domain
(tests/peers/httpspeer.py, which counts the fetches) and aiosmtpd MX hosts.

Relay 1 (mtasts { refresh_interval 2s }):
 a. RFC 8461 §3.1: a domain that never deployed MTA-STS and whose
    _mta-sts TXT lookup SERVFAILs -> sent (no policy), logged and counted
    (txt_failed_no_policy); two v=STSv1 records, and an invalid one, with
    nothing cached -> sent, no policy fetched;
 b. policies fetched and cached for four domains; then the zones change:
    gone.sts.test's TXT record is removed, sf.sec.test's SERVFAILs ->
    both policies are still refreshed (fetched again over HTTPS);
 c. keep.sec.test's TXT lookup now SERVFAILs and its MX moved to a host
    its cached enforce policy does not list -> deferred 4.7.5, the new MX
    untouched; twocache.sts.test now publishes two STS records and also
    moved its MX -> the cached policy still applies: deferred 4.7.5;
 d. the metrics endpoint shows the cache's entry count.
Relay 2 (defaults: refresh_interval 1d; one worker):
 e. five concurrent deliveries to a domain whose policy server answers
    slowly -> one fetch, all five sent under the policy (mx_level=mtasts);
 f. 300 concurrent deliveries to a domain whose policy host accepts TCP
    and never TLS (a dead host), then one to another domain -> that
    domain's policy is fetched (sent with mx_level=mtasts: the dead host
    took one fetch slot, not all of them), and the dead host saw one
    connection.

Usage: mtasts_refresh_test.py POSTERN_BINARY
"""

import re
import smtplib
import sys
import time
import urllib.request

import dnssec_zone
import httpspeer
import pki
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")


def first_delivery(r, rcpt, timeout=40):
    return r.wait_log(lambda e: e.get("event") == "delivery" and e.get("rcpt") == rcpt,
                      timeout=timeout)[0]


def policy(mode, mx, max_age=86400):
    return ("version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n"
            % (mode, "".join("mx: %s\r\n" % m for m in mx), max_age))


def metric(port, family, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.compile(r"^%s\{%s\} (\d+)$" % (re.escape(family), re.escape(want)))
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            return int(m.group(1))
    return None




# Domain -> (zone, MX address, policy server address, policy or None).
DOMAINS = {
    "nosts": ("sec.test", 45, None, None),
    "two": ("sts.test", 41, 51, ("enforce", ["other.sts.test"])),
    "bad": ("sts.test", 42, 52, ("enforce", ["other.sts.test"])),
    "gone": ("sts.test", 43, 53, ("enforce", ["mx.gone.sts.test"])),
    "twocache": ("sts.test", 44, 54, ("enforce", ["mx.twocache.sts.test"])),
    "keep": ("sec.test", 46, 56, ("enforce", ["mx.keep.sec.test"])),
    "sf": ("sec.test", 49, 59, ("enforce", ["mx.sf.sec.test"])),
    "slow": ("sts.test", 61, 71, ("enforce", ["mx.slow.sts.test"])),
    "dead": ("sts.test", 62, 72, ("enforce", ["mx.dead.sts.test"])),
    "live": ("sts.test", 63, 73, ("enforce", ["mx.live.sts.test"])),
}
# Hosts the MX records move to after the reload (not in any policy).
EVIL = {"keep": 47, "twocache": 48}


def zones(after):
    """The zones before (after=False) and after the change (after=True)."""
    # TTL 1 s: the relay caches answers for their TTL, and these zones
    # change under it.
    z = {"sts.test": {"signed": False, "records": [], "ttl": 1},
         "sec.test": {"signed": True, "records": [], "bogus": [], "ttl": 1}}
    for d, (zone, mx_ip, sts_ip, _) in DOMAINS.items():
        recs = z[zone]["records"]
        if after and d in EVIL:
            recs += [f"{d} MX 10 evil.{d}", f"evil.{d} A 127.0.0.{EVIL[d]}"]
        else:
            recs += [f"{d} MX 10 mx.{d}"]
        # mx.dead has no server: its mail is deferred, which is fine.
        recs.append(f"mx.{d} A 127.0.0.{mx_ip}")
        if sts_ip:
            recs.append(f"mta-sts.{d} A 127.0.0.{sts_ip}")
        txt = ['"v=STSv1; id=1"']
        if d == "nosts":
            txt = ['"not an MTA-STS record"']
        elif d == "two" or (d == "twocache" and after):
            txt = ['"v=STSv1; id=1"', '"v=STSv1; id=2"']
        elif d == "bad":
            txt = ['"v=STSv1; id=no-dashes-allowed"']
        elif d == "gone" and after:
            txt = []
        for t in txt:
            recs.append(f"_mta-sts.{d} TXT {t}")
        # SERVFAIL (bogus signature) for these TXT lookups.
        if d == "nosts" or (after and d in ("keep", "sf")):
            z[zone]["bogus"].append((f"_mta-sts.{d}", "TXT"))
    return z


def wait_refresh(r, dom, mark, timeout=20):
    """Whether a refresh of dom's policy is logged after event `mark`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(x.get("event") == "mtasts_policy_fetched" and x.get("domain") == dom
               and x.get("refresh") == "yes" for x in r.events()[mark:]):
            return True
        time.sleep(0.1)
    return False


def send_many(port, rcpt, n):
    """n messages to rcpt over one SMTP session (each its own job)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.test")
        for i in range(n):
            s.sendmail("s@snd.test", [rcpt], msg(f"{rcpt.split('@')[1]}-{i}"))


def main():
    p = pki.PKI()

    def mx_starter(d, ip, name):
        c, k = p.server_cert(name)
        return lambda port: smtpd_peer.Peer(host=f"127.0.0.{ip}", port=port,
                                            hostname=name, tls_cert=c, tls_key=k)

    starters = [(d, mx_starter(d, ip, f"mx.{d}.{zone}"))
                for d, (zone, ip, _, _) in DOMAINS.items() if d != "dead"]
    starters += [(f"evil.{d}", mx_starter(f"evil.{d}", ip,
                                          f"evil.{d}.{DOMAINS[d][0]}"))
                 for d, ip in EVIL.items()]
    smtp_port, mx = dnssec_zone.on_common_port(starters)

    def https_starter(d):
        zone, _, sts_ip, (mode, mxs) = DOMAINS[d]
        c, k = p.server_cert(f"mta-sts.{d}.{zone}")
        route = {"body": policy(mode, mxs), "content_type": "text/plain"}
        if d == "slow":
            route["delay"] = 3
        cfg = {"routes": {"/.well-known/mta-sts.txt": route}}
        if d == "dead":
            cfg["handshake"] = False  # accepts TCP, never speaks TLS
        return lambda port: httpspeer.start(cfg, c, k, address=f"127.0.0.{sts_ip}",
                                            port=port)

    https_port, web = dnssec_zone.on_common_port([(d, https_starter(d)) for d, v in DOMAINS.items()
                                      if v[2]])
    fx = dnssec_zone.Fixture(zones(False))

    def relay_cfg(mtasts_extra):
        return (f"tls {{ ca_file {p.ca_file} }}\n"
                f"policy {{ local; mtasts {{ https_port {https_port}; {mtasts_extra} }};"
                " dnssec; dane }\n"
                "queue { retry_initial 1h }\n"
                "metrics { listen 127.0.0.1:0 }")

    try:
        with Relay(POSTERN, fx.port,
                   delivery=f"port {smtp_port}; connect_timeout 5s; idle_timeout 1s",
                   extra=relay_cfg("fetch_timeout 5s; refresh_interval 2s")) as r:
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])

            # a. §3.1: no policy for a failed TXT lookup, several STS
            #    records or an invalid one, with nothing cached
            r.send("s@snd.test", ["a@nosts.sec.test"], msg("a1"))
            e = first_delivery(r, "a@nosts.sec.test")
            check(e.get("status") == "sent",
                  f"a: never MTA-STS, _mta-sts TXT SERVFAIL: sent, not deferred "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(any(x.get("event") == "mtasts_txt_failed"
                      and x.get("domain") == "nosts.sec.test"
                      and x.get("level") == "warn"
                      and "no policy" in x.get("using", "") for x in r.events()),
                  "a: the failed TXT lookup is logged at warn (using no policy)")
            n = metric(mport, "postern_policy_results_total", module="mtasts",
                       result="txt_failed_no_policy")
            check(n is not None and n >= 1, f"a: counted as txt_failed_no_policy ({n})")
            for d in ("two", "bad"):
                r.send("s@snd.test", [f"a@{d}.sts.test"], msg(f"a-{d}"))
                e = first_delivery(r, f"a@{d}.sts.test")
                check(e.get("status") == "sent" and e.get("mx_level") == "none",
                      f"a: {d}: not exactly one valid STS record, nothing cached: "
                      f"sent without a policy ({e.get('status')} {e.get('mx_level')}: "
                      f"{e.get('reply')})")
                check(not web[d].requests(), f"a: {d}: no policy was fetched")
                check(any(x.get("event") == "mtasts_txt_invalid"
                          and x.get("domain") == f"{d}.sts.test" for x in r.events()),
                      f"a: {d}: logged (mtasts_txt_invalid)")

            # b. policies cached, then the TXT records go away or fail:
            #    the maintenance still refreshes them over HTTPS
            for d in ("gone", "twocache", "keep", "sf"):
                dom = f"{d}.{DOMAINS[d][0]}"
                r.send("s@snd.test", [f"a@{dom}"], msg(f"b-{d}"))
                e = first_delivery(r, f"a@{dom}")
                check(e.get("status") == "sent" and e.get("mx_level") in ("mtasts", "dnssec"),
                      f"b: {d}: sent under its fetched policy ({e.get('status')} "
                      f"{e.get('mx_level')}: {e.get('reply')})")
            fx.reload(zones(True))
            mark = len(r.events())
            fetched_before = {d: len(web[d].requests()) for d in ("gone", "sf")}
            for d in ("gone", "sf"):
                dom = f"{d}.{DOMAINS[d][0]}"
                refreshed = wait_refresh(r, dom, mark)
                check(refreshed and len(web[d].requests()) > fetched_before[d],
                      f"b: {d}: TXT {'removed' if d == 'gone' else 'SERVFAIL'}, "
                      f"the policy is still refreshed ({len(web[d].requests())} fetches)")

            # c. a cached enforce policy outlives a failed or invalid TXT
            #    lookup: an MX it does not list is still refused
            for d in ("keep", "twocache"):
                dom = f"{d}.{DOMAINS[d][0]}"
                r.send("s@snd.test", [f"b@{dom}"], msg(f"c-{d}"))
                e = first_delivery(r, f"b@{dom}")
                check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5"
                      and f"evil.{dom}" in e.get("reply", ""),
                      f"c: {d}: TXT {'SERVFAIL' if d == 'keep' else 'now two records'}, "
                      f"cached enforce policy applied to the new MX: deferred 4.7.5 "
                      f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
                check(not mx[f"evil.{d}"].messages, f"c: {d}: nothing sent to evil.{dom}")

            # d. the cache's size on the metrics endpoint (maintenance gauges)
            deadline = time.time() + 10
            entries = None
            while time.time() < deadline:
                entries = metric(mport, "postern_policy_state", module="mtasts",
                                 name="cache_entries")
                if entries == 4:
                    break
                time.sleep(0.2)
            check(entries == 4, f"d: postern_policy_state cache_entries = 4 ({entries})")
            used = metric(mport, "postern_policy_state", module="mtasts",
                          name="cache_used_bytes")
            size = metric(mport, "postern_policy_state", module="mtasts",
                          name="cache_map_bytes")
            check(used and size == 64 << 20 and used < size,
                  f"d: cache bytes used {used} of {size}")

        fx.reload(zones(False))
        with Relay(POSTERN, fx.port, workers=1,
                   delivery=(f"port {smtp_port}; connect_timeout 2s; idle_timeout 1s; "
                             "per_domain_connections 400; shutdown_timeout 2s"),
                   extra=relay_cfg("fetch_timeout 30s")) as r:
            # e. single flight: five concurrent deliveries, one fetch
            send_many(r.port, "a@slow.sts.test", 5)
            got = r.wait_log(lambda x: x.get("event") == "delivery"
                             and x.get("rcpt") == "a@slow.sts.test", count=5, timeout=40)
            check(all(x.get("status") == "sent" and x.get("mx_level") == "mtasts"
                      for x in got),
                  "e: five concurrent deliveries all sent under the policy "
                  f"({[x.get('mx_level') for x in got]})")
            check(len(web["slow"].requests()) == 1,
                  f"e: one fetch for five deliveries ({len(web['slow'].requests())})")

            # f. a dead policy host takes one fetch slot, not all of them
            send_many(r.port, "a@dead.sts.test", 300)
            r.send("s@snd.test", ["a@live.sts.test"], msg("f-live"))
            e = first_delivery(r, "a@live.sts.test", timeout=60)
            check(e.get("status") == "sent" and e.get("mx_level") == "mtasts",
                  f"f: with 300 deliveries waiting on a dead policy host, another "
                  f"domain's policy is fetched: sent, mx_level=mtasts "
                  f"({e.get('status')} {e.get('mx_level')}: {e.get('reply')})")
            check(web["dead"].connections() == 1,
                  f"f: the dead policy host saw one connection "
                  f"({web['dead'].connections()})")
    finally:
        fx.close()
        for s in list(mx.values()) + list(web.values()):
            s.stop()
        p.cleanup()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
