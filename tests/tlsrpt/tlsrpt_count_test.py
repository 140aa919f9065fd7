"""TLS reporting (RFC 8460), the counts: a real `postern` with a `tlsrpt { }`
block and the default policy chain delivers through a validating unbound
(nsd: a signed and an unsigned zone) to aiosmtpd MX hosts on 127.0.0.x and
MTA-STS policy servers (tests/peers/httpspeer.py); `qtool tlsrpt list
--json` must then show exactly what happened, per policy domain, applied
policy and result type (RFC 8460 §4.3, §4.4):

 1. dane.sec.test: DANE-EE match -> 1 successful session under "tlsa" with
    the TLSA record as policy-string;
 2. fb.sec.test: first MX fails DANE (mismatch), the second matches ->
    1 failure tlsa-invalid (mx mxbad, its IP and ours) + 1 success;
 3. strip.sec.test: TLSA records, the MX offers no STARTTLS ->
    starttls-not-supported under "tlsa", nothing delivered;
 4. enf.sts.test: MTA-STS enforce, self-signed MX certificate ->
    certificate-not-trusted under "sts" with the policy's lines and mx-host;
 5. tst.sts.test: MTA-STS testing, self-signed -> delivered, and still a
    certificate-not-trusted failure (testing mode is what reports are for);
 6. none.plain.test: no policy, PKIX-valid certificate -> 1 success under
    "no-policy-found";
 7. gone.sts.test: a TXT record, the policy server down, nothing cached ->
    delivered without a policy (RFC 8461 §3.3), counted as
    sts-policy-fetch-error under "no-policy-found" (§4.4: no policy could
    be found);
 8. the counts survive kill -9 (they are committed with the results);
 9. without a tlsrpt block nothing is counted.

Usage: tlsrpt_count_test.py POSTERN QTOOL
"""

import hashlib
import json
import subprocess
import sys
import time

import dnssec_zone
import httpspeer
import tlsrpt_check
import pki
import smtpd_peer
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)




def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")




def counts(state_dir):
    out = subprocess.run([QTOOL, "-d", state_dir, "tlsrpt", "list", "--json"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        check(False, f"qtool tlsrpt list exits 0 ({out.returncode}: {out.stderr})")
        return {}
    return {d["policy-domain"]: d["policies"] for d in json.loads(out.stdout)}


def first_delivery(r, rcpt, timeout=40):
    return r.wait_log(lambda e: e.get("event") == "delivery" and e.get("rcpt") == rcpt,
                      timeout=timeout)[0]


def main():
    p = pki.PKI()
    mx_ip = {"mx1.dane.sec.test": 41, "mxbad.fb.sec.test": 42, "mxgood.fb.sec.test": 43,
             "mx.strip.sec.test": 44, "mx.enf.sts.test": 45, "mx.tst.sts.test": 46,
             "mx.none.plain.test": 47, "mx.gone.sts.test": 48}
    certs = {
        "mx1.dane.sec.test": p.server_cert("mx1.dane.sec.test", self_signed=True),
        "mxbad.fb.sec.test": p.server_cert("mxbad.fb.sec.test"),
        "mxgood.fb.sec.test": p.server_cert("mxgood.fb.sec.test", self_signed=True),
        "mx.strip.sec.test": None,
        "mx.enf.sts.test": p.server_cert("mx.enf.sts.test", self_signed=True),
        "mx.tst.sts.test": p.server_cert("mx.tst.sts.test", self_signed=True),
        "mx.none.plain.test": p.server_cert("mx.none.plain.test"),
        "mx.gone.sts.test": p.server_cert("mx.gone.sts.test"),
    }

    def mx_starter(name):
        ck = certs[name]
        kw = {"tls_cert": ck[0], "tls_key": ck[1]} if ck else {}
        return lambda port: smtpd_peer.Peer(host=f"127.0.0.{mx_ip[name]}", port=port,
                                            hostname=name, **kw)

    smtp_port, mx = dnssec_zone.on_common_port([(n, mx_starter(n)) for n in mx_ip])

    def https_starter(dom, mode, last):
        c, k = p.server_cert(f"mta-sts.{dom}")
        body = (f"version: STSv1\r\nmode: {mode}\r\nmx: mx.{dom}\r\n"
                "max_age: 86400\r\n")
        cfg = {"routes": {"/.well-known/mta-sts.txt": {
            "body": body, "content_type": "text/plain"}}}
        return lambda port: httpspeer.start(cfg, c, k, address=f"127.0.0.{last}",
                                            port=port)

    https_port, web = dnssec_zone.on_common_port([
        ("enf", https_starter("enf.sts.test", "enforce", 55)),
        ("tst", https_starter("tst.sts.test", "testing", 56))])
    t = f"_{smtp_port}._tcp"
    dane_spki = pki.spki_sha256(certs["mx1.dane.sec.test"][0])
    good_spki = pki.spki_sha256(certs["mxgood.fb.sec.test"][0])
    wrong = hashlib.sha256(b"not a key").hexdigest()
    zones = {
        "sec.test": {"signed": True, "records": [
            "dane MX 10 mx1.dane", "mx1.dane A 127.0.0.41",
            f"{t}.mx1.dane TLSA 3 1 1 {dane_spki}",
            "fb MX 10 mxbad.fb", "fb MX 20 mxgood.fb",
            "mxbad.fb A 127.0.0.42", f"{t}.mxbad.fb TLSA 3 1 1 {wrong}",
            "mxgood.fb A 127.0.0.43", f"{t}.mxgood.fb TLSA 3 1 1 {good_spki}",
            "strip MX 10 mx.strip", "mx.strip A 127.0.0.44",
            f"{t}.mx.strip TLSA 3 1 1 {dane_spki}",
        ]},
        "sts.test": {"signed": False, "records": [
            "enf MX 10 mx.enf", "mx.enf A 127.0.0.45",
            '_mta-sts.enf TXT "v=STSv1; id=1"', "mta-sts.enf A 127.0.0.55",
            "tst MX 10 mx.tst", "mx.tst A 127.0.0.46",
            '_mta-sts.tst TXT "v=STSv1; id=1"', "mta-sts.tst A 127.0.0.56",
            "gone MX 10 mx.gone", "mx.gone A 127.0.0.48",
            '_mta-sts.gone TXT "v=STSv1; id=1"', "mta-sts.gone A 127.0.0.57",
        ]},
        "plain.test": {"signed": False, "records": [
            "none MX 10 mx.none", "mx.none A 127.0.0.47",
        ]},
    }
    fx = dnssec_zone.Fixture(zones)
    cfg = (f"tls {{ ca_file {p.ca_file} }}\n"
           f"policy {{ local; mtasts {{ https_port {https_port}; fetch_timeout 3s }};"
           " dnssec; dane }\n"
           "queue { retry_initial 1h }\n"
           "tlsrpt { organization \"Postern test\" }")
    try:
        with Relay(POSTERN, fx.port, delivery=f"port {smtp_port}; connect_timeout 3s",
                   extra=cfg) as r:
            rcpts = ["a@dane.sec.test", "a@fb.sec.test", "a@strip.sec.test",
                     "a@enf.sts.test", "a@tst.sts.test", "a@none.plain.test",
                     "a@gone.sts.test"]
            for i, rc in enumerate(rcpts):
                r.send("s@snd.test", [rc], msg(f"m{i}"))
            got = {rc: first_delivery(r, rc) for rc in rcpts}
            status = {rc: e.get("status") for rc, e in got.items()}
            check(status == {"a@dane.sec.test": "sent", "a@fb.sec.test": "sent",
                             "a@strip.sec.test": "deferred", "a@enf.sts.test": "deferred",
                             "a@tst.sts.test": "sent", "a@none.plain.test": "sent",
                             "a@gone.sts.test": "sent"},
                  f"deliveries as expected ({status})")
            c = counts(r.state)

            def pol(dom, ptype):
                return [x for x in c.get(dom, []) if x["policy"]["policy-type"] == ptype]

            def fails(x):
                return sorted((f["result-type"], f.get("receiving-mx-hostname"),
                               f.get("receiving-ip"), f["failed-session-count"])
                              for f in x["failure-details"])

            d1 = pol("dane.sec.test", "tlsa")
            check(len(d1) == 1 and d1[0]["summary"] == {
                "total-successful-session-count": 1, "total-failure-session-count": 0}
                and d1[0]["policy"]["policy-string"] == [f"3 1 1 {dane_spki}"]
                and d1[0]["policy"]["mx-host"] == ["mx1.dane.sec.test"],
                f"1: DANE match: one success under tlsa with the record ({d1})")
            d2 = c.get("fb.sec.test", [])
            bad = [x for x in d2 if x["summary"]["total-failure-session-count"]]
            good = [x for x in d2 if x["summary"]["total-successful-session-count"]]
            check(len(bad) == 1 and fails(bad[0]) == [
                ("tlsa-invalid", "mxbad.fb.sec.test", "127.0.0.42", 1)]
                and all(f.get("sending-mta-ip", "").startswith("127.")
                        for f in bad[0]["failure-details"])
                and len(good) == 1 and good[0]["summary"]["total-successful-session-count"] == 1
                and good[0]["policy"]["policy-type"] == "tlsa",
                f"2: DANE mismatch then match: tlsa-invalid for mxbad, a success "
                f"for mxgood ({d2})")
            d3 = pol("strip.sec.test", "tlsa")
            check(len(d3) == 1 and fails(d3[0]) == [
                ("starttls-not-supported", "mx.strip.sec.test", "127.0.0.44", 1)]
                and d3[0]["summary"]["total-successful-session-count"] == 0,
                f"3: no STARTTLS under DANE: starttls-not-supported ({d3})")
            d4 = pol("enf.sts.test", "sts")
            check(len(d4) == 1 and fails(d4[0]) == [
                ("certificate-not-trusted", "mx.enf.sts.test", "127.0.0.45", 1)]
                and "mode: enforce" in d4[0]["policy"].get("policy-string", [])
                and d4[0]["policy"].get("mx-host") == ["mx.enf.sts.test"],
                f"4: enforce + self-signed: certificate-not-trusted under sts ({d4})")
            d5 = pol("tst.sts.test", "sts")
            check(len(d5) == 1 and fails(d5[0]) == [
                ("certificate-not-trusted", "mx.tst.sts.test", "127.0.0.46", 1)]
                and "mode: testing" in d5[0]["policy"].get("policy-string", []),
                f"5: testing + self-signed: delivered and counted as a failure ({d5})")
            d6 = pol("none.plain.test", "no-policy-found")
            check(len(d6) == 1 and d6[0]["summary"]["total-successful-session-count"] == 1
                  and not d6[0]["failure-details"] and len(c["none.plain.test"]) == 1,
                  f"6: no policy: one success under no-policy-found ({c.get('none.plain.test')})")
            d7 = pol("gone.sts.test", "no-policy-found")
            check(len(d7) == 1 and [f[0] for f in fails(d7[0])] == ["sts-policy-fetch-error"],
                  f"7: policy server down: sts-policy-fetch-error ({c.get('gone.sts.test')})")

            # Each domain's report, as the relay would send it, passes the
            # RFC 8460 schema check and carries the same counts.
            for dom, pols in sorted(c.items()):
                out = subprocess.run([QTOOL, "-c", r.conf, "tlsrpt", "report", dom],
                                     capture_output=True, text=True, timeout=30)
                rep = json.loads(out.stdout) if out.returncode == 0 else {}
                errs = tlsrpt_check.validate(rep, strict=True) if rep else ["no report"]
                check(not errs and len(rep.get("policies", [])) == len(pols)
                      and rep.get("organization-name") == "Postern test",
                      f"report for {dom} passes the schema check ({errs})")

            # 8. kill -9: what was counted stays counted.
            before = counts(r.state)
            r.kill()
            after = counts(r.state)
            check(before == after and len(after) == 7,
                  "8: counts survive kill -9 (%d domains)" % len(after))
            state = r.state
        # 9. the same delivery without a tlsrpt block counts nothing.
        cfg2 = cfg.replace('tlsrpt { organization "Postern test" }', "")
        with Relay(POSTERN, fx.port, delivery=f"port {smtp_port}; connect_timeout 3s",
                   extra=cfg2) as r2:
            r2.send("s@snd.test", ["b@none.plain.test"], msg("off"))
            e = first_delivery(r2, "b@none.plain.test")
            check(e.get("status") == "sent" and counts(r2.state) == {},
                  "9: no tlsrpt block: delivered, nothing counted")
    finally:
        fx.close()
        for s in list(mx.values()) + list(web.values()):
            s.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
