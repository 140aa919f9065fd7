"""MTA-STS end to end: a real `postern` with `policy { local; mtasts; dnssec;
dane }`, DNS from nsd behind unbound (an unsigned zone, and a signed one
for MTA-STS together with DANE), a
policy server per domain (tests/peers/httpspeer.py, certificates from the
test CA) and aiosmtpd MX hosts on 127.0.0.x.

Scenarios (each checks the outcome at the MX peers and the delivery log):
 a. enforce, matching MX, valid certificate -> sent, mx_level=mtasts
    tls_level=authenticated;
 b. enforce, MX not in the policy -> rejected: deferred 4.7.5, MX untouched;
 c. enforce, self-signed MX certificate -> deferred 4.7.5;
 d. testing mode, self-signed certificate -> sent (encrypted), failure
    logged (mtasts_testing_failure);
 e. TXT record but the policy server is down, nothing cached -> no policy
    (RFC 8461 §3.3): sent opportunistically, logged;
 f. cached policy: fetched and used once; then the relay restarts, the TXT
    id changes, the policy server is down and the MX presents a self-signed
    certificate -> the cached enforce policy (from LMDB, across the
    restart) still applies: deferred 4.7.5;
 g. enforce and DANE (signed zone) for an MX with a self-signed certificate
    matching its TLSA record -> DANE governs (RFC 8461 §2): sent,
    mx_level=dnssec tls_level=authenticated, logged;
 i. routes (RFC 8461 §3.4: the smart host's domain is the policy domain):
    a route to [smarta.sts.test], whose enforce policy does not list it ->
    deferred 4.7.5; a route to smartb.sts.test (its MX hosts), whose policy
    lists its MX -> sent, mx_level=mtasts; a route to an IP address -> no
    policy domain, sent without MTA-STS;
 j. testing mode, MX without STARTTLS -> sent in plaintext; the missing TLS
    is logged (mtasts_testing_failure) and counted (testing_tls_failure on
    the metrics endpoint).
(The refresh, single-flight and §3.1 cases are in mtasts_refresh_test.py.)

Usage: mtasts_test.py POSTERN_BINARY
"""

import hashlib
import re
import subprocess
import sys
import urllib.request

import dnssec_zone
import httpspeer
import pki
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
PROBE = sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)




def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")


def deliveries(r, rcpt):
    return [e for e in r.events() if e.get("event") == "delivery" and e.get("rcpt") == rcpt]


def first_delivery(r, rcpt, timeout=40):
    return r.wait_log(lambda e: e.get("event") == "delivery" and e.get("rcpt") == rcpt,
                      timeout=timeout)[0]


def policy(mode, mx, max_age=86400):
    return ("version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n"
            % (mode, "".join("mx: %s\r\n" % m for m in mx), max_age))


def metric(port, family, **labels):
    """The value of one sample on the relay's metrics endpoint (0 if absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.compile(r"^%s\{%s\} (\d+)$" % (re.escape(family), re.escape(want))
                     if labels else r"^%s (\d+)$" % re.escape(family))
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            return int(m.group(1))
    return 0




def zones(ids, tlsa):
    recs = []
    ip = {"enf": 31, "notin": 32, "badcert": 33, "testing": 34, "nopolicy": 35,
          "cache": 36, "smartb": 82, "plain": 84}
    sts_ip = {"enf": 21, "notin": 22, "badcert": 23, "testing": 24, "nopolicy": 25,
              "cache": 26, "smartb": 92, "plain": 94}
    for d in ip:
        recs += [f"{d} MX 10 mx.{d}",
                 f"mx.{d} A 127.0.0.{ip[d]}",
                 f'_mta-sts.{d} TXT "v=STSv1; id={ids.get(d, "1")}"',
                 f"mta-sts.{d} A 127.0.0.{sts_ip[d]}"]
    # A smart host named by a [host] route: no MX of its own is looked up.
    recs += ["smarta A 127.0.0.81",
             '_mta-sts.smarta TXT "v=STSv1; id=1"',
             "mta-sts.smarta A 127.0.0.91"]
    # A signed zone: MTA-STS enforce and DANE for the same MX (RFC 8461 §2).
    signed = ["both MX 10 mx.both",
              "mx.both A 127.0.0.37",
              f"{tlsa[0]}.mx.both TLSA 3 1 1 {tlsa[1]}",
              '_mta-sts.both TXT "v=STSv1; id=1"',
              "mta-sts.both A 127.0.0.27"]
    return {"sts.test": {"signed": False, "records": recs},
            "sec.test": {"signed": True, "records": signed}}


def main():
    p = pki.PKI()
    cert = {d: p.server_cert(f"mx.{d}.sts.test")
            for d in ("enf", "notin", "cache", "smartb")}
    cert["smarta"] = p.server_cert("smarta.sts.test")
    cert["ip"] = p.server_cert("ip.test", self_signed=True)
    selfsigned = {d: p.server_cert(f"mx.{d}.sts.test", self_signed=True)
                  for d in ("badcert", "testing", "nopolicy", "cache")}
    both = p.server_cert("mx.both.sec.test", self_signed=True)
    mx_ip = {"enf": 31, "notin": 32, "badcert": 33, "testing": 34, "nopolicy": 35,
             "cache": 36, "both": 37, "smarta": 81, "smartb": 82, "ip": 83,
             "plain": 84}
    mx_name = {"both": "mx.both.sec.test", "smarta": "smarta.sts.test",
               "ip": "ip.test"}

    def mx_starter(d, crt_key):
        name = mx_name.get(d, f"mx.{d}.sts.test")
        if crt_key is None:  # no STARTTLS offered
            return lambda port: smtpd_peer.Peer(
                host=f"127.0.0.{mx_ip[d]}", port=port, hostname=name)
        return lambda port: smtpd_peer.Peer(
            host=f"127.0.0.{mx_ip[d]}", port=port, hostname=name,
            tls_cert=crt_key[0], tls_key=crt_key[1])

    mx_certs = {"enf": cert["enf"], "notin": cert["notin"],
                "badcert": selfsigned["badcert"], "testing": selfsigned["testing"],
                "nopolicy": selfsigned["nopolicy"], "cache": cert["cache"],
                "both": both, "smarta": cert["smarta"], "smartb": cert["smartb"],
                "ip": cert["ip"], "plain": None}
    smtp_port, mx = dnssec_zone.on_common_port([(d, mx_starter(d, c)) for d, c in mx_certs.items()])

    policies = {
        "enf": ("enforce", ["mx.enf.sts.test"], 21),
        "notin": ("enforce", ["other.sts.test"], 22),
        "badcert": ("enforce", ["mx.badcert.sts.test"], 23),
        "testing": ("testing", ["*.testing.sts.test"], 24),
        "cache": ("enforce", ["mx.cache.sts.test"], 26),
        "both": ("enforce", ["mx.both.sec.test"], 27),
        "smarta": ("enforce", ["other.sts.test"], 91),
        "smartb": ("enforce", ["mx.smartb.sts.test"], 92),
        "plain": ("testing", ["mx.plain.sts.test"], 94),
    }

    def https_starter(d):
        mode, mxs, last = policies[d]
        zone = "sec.test" if d == "both" else "sts.test"
        c, k = p.server_cert(f"mta-sts.{d}.{zone}")
        cfg = {"routes": {"/.well-known/mta-sts.txt": {
            "body": policy(mode, mxs),
            "content_type": "text/plain; charset=utf-8"}}}
        return lambda port: httpspeer.start(cfg, c, k, address=f"127.0.0.{last}", port=port)

    https_port, web = dnssec_zone.on_common_port([(d, https_starter(d)) for d in policies])
    tlsa = (f"_{smtp_port}._tcp", pki.spki_sha256(both[0]))
    fx = dnssec_zone.Fixture(zones({}, tlsa))
    relay_cfg = (f"tls {{ ca_file {p.ca_file} }}\n"
                 f"policy {{ local; mtasts {{ https_port {https_port}; fetch_timeout 5s }};"
                 " dnssec; dane }\n"
                 "queue { retry_initial 1h }\n"
                 "metrics { listen 127.0.0.1:0 }")
    routes = (f"route rta.test [smarta.sts.test]:{smtp_port}; "
              f"route rtb.test smartb.sts.test:{smtp_port}; "
              f"route rtc.test 127.0.0.83:{smtp_port}")
    try:
        with Relay(POSTERN, fx.port,
                   delivery=f"port {smtp_port}; connect_timeout 5s; idle_timeout 1s; {routes}",
                   extra=relay_cfg) as r:
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])
            # a. enforce, match, valid certificate
            r.send("s@snd.test", ["a@enf.sts.test"], msg("a"))
            e = first_delivery(r, "a@enf.sts.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "mtasts"
                  and e.get("tls_level") == "authenticated",
                  f"a: enforce + valid certificate: sent, mx_level=mtasts "
                  f"tls_level=authenticated ({e.get('status')} {e.get('mx_level')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")
            check(any(q["path"] == "/.well-known/mta-sts.txt"
                      for q in web["enf"].requests()),
                  "a: the policy was fetched from mta-sts.enf.sts.test")

            # b. MX not in the policy
            r.send("s@snd.test", ["a@notin.sts.test"], msg("b"))
            e = first_delivery(r, "a@notin.sts.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5"
                  and "MTA-STS" in e.get("reply", ""),
                  f"b: MX not in policy: deferred 4.7.5 ({e.get('status')} "
                  f"{e.get('dsn')}: {e.get('reply')})")
            check(not mx["notin"].commands, "b: the unlisted MX was not contacted")

            # postern-probe with the relay's configuration shows the policy
            # and the same verdicts, without sending mail.
            import json as _json
            import subprocess as _sp
            out = _sp.run([PROBE, "-c", r.conf, "--json", "notin.sts.test"],
                          capture_output=True, timeout=60)
            pr = _json.loads(out.stdout or b"{}")
            check(out.returncode == 1 and pr.get("verdict") == "defer"
                  and "enforce policy" in pr.get("policy", "")
                  and "MTA-STS" in pr["mx"][0]["reason"],
                  f"probe: MX not in policy: defer, policy shown ({pr.get('policy')})")
            out = _sp.run([PROBE, "-c", r.conf, "--json", "enf.sts.test"],
                          capture_output=True, timeout=60)
            pr = _json.loads(out.stdout or b"{}")
            check(out.returncode == 0 and pr.get("verdict") == "deliver"
                  and pr["mx"][0]["mx_level"] == "mtasts"
                  and pr["mx"][0]["tls_level"] == "authenticated",
                  f"probe: enforce + valid certificate: deliver at mtasts/authenticated")

            # c. invalid certificate under enforce
            r.send("s@snd.test", ["a@badcert.sts.test"], msg("c"))
            e = first_delivery(r, "a@badcert.sts.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"c: enforce + self-signed: deferred 4.7.5 ({e.get('status')} "
                  f"{e.get('dsn')}: {e.get('reply')})")
            check(not mx["badcert"].messages, "c: nothing sent to the bad-cert MX")

            # d. testing mode with a bad certificate
            r.send("s@snd.test", ["a@testing.sts.test"], msg("d"))
            e = first_delivery(r, "a@testing.sts.test")
            check(e.get("status") == "sent" and e.get("tls_level") == "encrypted"
                  and e.get("mx_level") == "none",
                  f"d: testing + self-signed: sent, mx_level=none tls_level=encrypted "
                  f"({e.get('status')} {e.get('mx_level')} {e.get('tls_level')})")
            check(any(x.get("event") == "mtasts_testing_failure"
                      and x.get("domain") == "testing.sts.test" for x in r.events()),
                  "d: the failure is logged (mtasts_testing_failure)")

            # e. TXT but no policy server, nothing cached: no policy
            r.send("s@snd.test", ["a@nopolicy.sts.test"], msg("e"))
            e = first_delivery(r, "a@nopolicy.sts.test")
            check(e.get("status") == "sent" and e.get("tls_level") == "encrypted",
                  f"e: policy unreachable, nothing cached: sent opportunistically "
                  f"({e.get('status')} {e.get('tls_level')}: {e.get('reply')})")
            check(any(x.get("event") == "mtasts_fetch_failed"
                      and x.get("domain") == "nopolicy.sts.test" for x in r.events()),
                  "e: the failed fetch is logged")

            # g. MTA-STS enforce and DANE on one MX whose certificate is
            #    self-signed: DANE governs authentication (RFC 8461 §2)
            r.send("s@snd.test", ["a@both.sec.test"], msg("g"))
            e = first_delivery(r, "a@both.sec.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "dnssec"
                  and e.get("tls_level") == "authenticated",
                  f"g: enforce + DANE match, no PKIX: sent, mx_level=dnssec "
                  f"tls_level=authenticated ({e.get('status')} {e.get('mx_level')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")
            check(any(x.get("event") == "mtasts_dane_governs"
                      and x.get("domain") == "both.sec.test" for x in r.events()),
                  "g: logged: DANE governs, the MTA-STS PKIX check is not applied")

            # i. routes: the smart host's domain is the policy domain
            r.send("s@snd.test", ["a@rta.test"], msg("i1"))
            e = first_delivery(r, "a@rta.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5"
                  and "MTA-STS policy of smarta.sts.test" in e.get("reply", ""),
                  f"i: route to [smarta.sts.test], not in its enforce policy: "
                  f"deferred 4.7.5 ({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(not mx["smarta"].messages, "i: nothing sent to the unlisted smart host")
            check(len(web["smarta"].requests()) == 1,
                  "i: the policy of smarta.sts.test was fetched")
            r.send("s@snd.test", ["a@rtb.test"], msg("i2"))
            e = first_delivery(r, "a@rtb.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "mtasts"
                  and e.get("tls_level") == "authenticated"
                  and e.get("mx") == "mx.smartb.sts.test",
                  f"i: route to smartb.sts.test, its MX in its enforce policy: sent, "
                  f"mx_level=mtasts ({e.get('status')} {e.get('mx')} "
                  f"{e.get('mx_level')} {e.get('tls_level')}: {e.get('reply')})")
            r.send("s@snd.test", ["a@rtc.test"], msg("i3"))
            e = first_delivery(r, "a@rtc.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "none"
                  and e.get("tls_level") == "encrypted",
                  f"i: route to an IP address: no policy domain, sent without "
                  f"MTA-STS ({e.get('status')} {e.get('mx_level')} {e.get('tls_level')})")
            check(not any(x.get("event", "").startswith("mtasts")
                          and "127.0.0.83" in x.get("domain", "") for x in r.events()),
                  "i: no MTA-STS discovery for the IP route")

            # j. testing mode, no STARTTLS at the MX: delivered in plaintext,
            #    the missing TLS is logged and counted
            before = metric(mport, "postern_policy_results_total",
                            module="mtasts", result="testing_tls_failure")
            r.send("s@snd.test", ["a@plain.sts.test"], msg("j"))
            e = first_delivery(r, "a@plain.sts.test")
            check(e.get("status") == "sent" and e.get("tls_level") == "none",
                  f"j: testing mode, no STARTTLS: sent in plaintext "
                  f"({e.get('status')} {e.get('tls_level')}: {e.get('reply')})")
            check(any(x.get("event") == "mtasts_testing_failure"
                      and x.get("domain") == "plain.sts.test"
                      and "no TLS" in x.get("reason", "") for x in r.events()),
                  "j: the missing TLS is logged (mtasts_testing_failure)")
            after = metric(mport, "postern_policy_results_total",
                           module="mtasts", result="testing_tls_failure")
            check(after == before + 1,
                  f"j: counted as testing_tls_failure ({before} -> {after})")

            # f. cached policy survives a restart and a dead policy server
            r.send("s@snd.test", ["a@cache.sts.test"], msg("f1"))
            e = first_delivery(r, "a@cache.sts.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "mtasts",
                  f"f: first message sent under the fetched policy ({e.get('status')} "
                  f"{e.get('mx_level')}: {e.get('reply')})")
            check(r.stop() == 0, "f: relay stopped cleanly")
            web.pop("cache").stop()
            mx.pop("cache").stop()
            c, k = selfsigned["cache"]
            mx["cache"] = smtpd_peer.Peer(host="127.0.0.36", port=smtp_port,
                                          hostname="mx.cache.sts.test",
                                          tls_cert=c, tls_key=k)
            fx.reload(zones({"cache": "2"}, tlsa))
            r.start()
            r.send("s@snd.test", ["b@cache.sts.test"], msg("f2"))
            e = first_delivery(r, "b@cache.sts.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"f: new id, server down, cached enforce policy applied: deferred "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(any(x.get("event") == "mtasts_fetch_failed"
                      and x.get("domain") == "cache.sts.test"
                      and x.get("using") == "cached policy" for x in r.events()),
                  "f: logged: fetch failed, using the cached policy")
            check(not mx["cache"].messages, "f: nothing sent to the self-signed MX")
    finally:
        fx.close()
        for s in list(mx.values()) + list(web.values()):
            s.stop()
        p.cleanup()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
