"""TLS reporting (RFC 8460), the reports: a real `postern` with a
`tlsrpt { }` block counts some deliveries, `qtool tlsrpt send` asks for
today's reports, and after a restart (the relay checks for due reports two
seconds after it starts, then every minute) they go out:

 1. https.plain.test publishes rua=https://... : the HTTPS receiver (loopback,
    test CA) gets a POST with Content-Type application/tlsrpt+gzip whose
    body decompresses to a report that passes the RFC 8460 schema check
    (tests/peers/tlsrpt_check.py, strict) and holds exactly what happened
    (one starttls-not-supported failure, with both addresses);
 2. mail.plain.test publishes rua=mailto:reports@rcv.sec.test, whose MX fails
    DANE (a TLSA record that does not match): the report is still delivered
    (§3), as a well-formed multipart/report with the §5.3 headers and the
    gzip part, DKIM-signed by the submitter's domain (verified by dkimpy
    against the key's TXT record, §3); the sessions of that delivery are
    not counted (§3);
 3. `qtool tlsrpt report mail.plain.test` prints the very JSON mailed;
 4. bad.plain.test publishes a record without a usable URI: no report, a
    log line (tlsrpt_record_invalid);
 5. the reports sent are recorded: another restart sends nothing again.

Usage: tlsrpt_send_test.py POSTERN QTOOL
"""

import base64
import dkim
import email
import os
import email.policy
import hashlib
import json
import subprocess
import sys

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


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")




def qtool(state, *args):
    return subprocess.run([QTOOL, "-d", state, "tlsrpt"] + list(args),
                          capture_output=True, text=True, timeout=30)


def main():
    p = pki.PKI()
    certs = {"mx.https.plain.test": None,  # no STARTTLS: a failure to report
             "mx.mail.plain.test": p.server_cert("mx.mail.plain.test"),
             "mx.rcv.sec.test": p.server_cert("mx.rcv.sec.test")}
    ips = {"mx.https.plain.test": 63, "mx.mail.plain.test": 64, "mx.rcv.sec.test": 62}

    def mx_starter(name):
        ck = certs[name]
        kw = {"tls_cert": ck[0], "tls_key": ck[1]} if ck else {}
        return lambda port: smtpd_peer.Peer(host=f"127.0.0.{ips[name]}", port=port,
                                            hostname=name, **kw)

    smtp_port, mx = dnssec_zone.on_common_port([(n, mx_starter(n)) for n in certs])
    c, k = p.server_cert("rpt.plain.test")
    rpt_cfg = {"routes": {"/v1/tlsrpt": {"status": 201, "body": ""}}}
    https_port, web = dnssec_zone.on_common_port(
        [("rpt", lambda port: httpspeer.start(rpt_cfg, c, k, address="127.0.0.61",
                                              port=port))])
    t = f"_{smtp_port}._tcp"
    wrong = hashlib.sha256(b"no such key").hexdigest()
    zones = {
        "sec.test": {"signed": True, "records": [
            "rcv MX 10 mx.rcv", "mx.rcv A 127.0.0.62",
            f"{t}.mx.rcv TLSA 3 1 1 {wrong}",
        ]},
        "plain.test": {"signed": False, "records": [
            "https MX 10 mx.https", "mx.https A 127.0.0.63",
            f'_smtp._tls.https TXT "v=TLSRPTv1; rua=https://rpt.plain.test:{https_port}/v1/tlsrpt"',
            "rpt A 127.0.0.61",
            "mail MX 10 mx.mail", "mx.mail A 127.0.0.64",
            '_smtp._tls.mail TXT "v=TLSRPTv1;rua=mailto:reports@rcv.sec.test"',
            "bad MX 10 mx.mail",
            '_smtp._tls.bad TXT "v=TLSRPTv1; rua=ftp://rpt.plain.test/x"',
        ]},
    }
    fx = dnssec_zone.Fixture(zones)
    # The DKIM key that signs mailed reports, and its public half as the
    # TXT record a verifier would find at sel._domainkey.relay.test.
    key = os.path.join(p.dir, "dkim.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", key], check=True,
                   capture_output=True)
    spki = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform",
                           "DER"], check=True, capture_output=True).stdout
    dkim_txt = b"v=DKIM1; k=rsa; s=tlsrpt; p=" + base64.b64encode(spki)
    cfg = (f"tls {{ ca_file {p.ca_file} }}\n"
           "queue { retry_initial 1h }\n"
           "tlsrpt { organization \"Postern test\"; submitter relay.test; "
           f"from tlsrpt@relay.test; https_timeout 10s; dkim_key {key}; "
           "dkim_selector sel }")
    delivery = f"port {smtp_port}; connect_timeout 3s"
    try:
        r = Relay(POSTERN, fx.port, delivery=delivery, extra=cfg)
        try:
            for i, dom in enumerate(["https", "mail", "bad"]):
                r.send("s@snd.test", [f"a@{dom}.plain.test"], msg(f"m{i}"))
            for dom in ["https", "mail", "bad"]:
                e = r.wait_log(lambda e: e.get("event") == "delivery"
                               and e.get("rcpt") == f"a@{dom}.plain.test")[0]
                check(e.get("status") == "sent", f"delivered to {dom}.plain.test")
            out = qtool(r.state, "send")
            check(out.returncode == 0 and "3 reports" in out.stdout,
                  f"qtool tlsrpt send asks for 3 reports ({out.stdout.strip()} "
                  f"{out.stderr.strip()})")
            r.stop()
            r.start()
            # 1. HTTPS
            r.wait_log(lambda e: e.get("event") == "tlsrpt_report_sent", timeout=30)
            posts = web["rpt"].posts()
            check(len(posts) == 1 and posts[0]["path"] == "/v1/tlsrpt"
                  and posts[0]["content_type"] == "application/tlsrpt+gzip",
                  f"1: one POST of application/tlsrpt+gzip ({[(x['path'], x['content_type']) for x in posts]})")
            rep = tlsrpt_check.load_gzip(posts[0]["body"]) if posts else {}
            errs = tlsrpt_check.validate(rep, strict=True)
            check(not errs, f"1: the report passes the schema check ({errs})")
            pol = rep.get("policies", [{}])
            fd = pol[0].get("failure-details", [{}])
            check(rep.get("organization-name") == "Postern test"
                  and len(pol) == 1
                  and pol[0]["policy"] == {"policy-type": "no-policy-found",
                                           "policy-domain": "https.plain.test"}
                  and pol[0]["summary"] == {"total-successful-session-count": 0,
                                            "total-failure-session-count": 1}
                  and len(fd) == 1 and fd[0]["result-type"] == "starttls-not-supported"
                  and fd[0]["receiving-ip"] == "127.0.0.63"
                  and fd[0]["receiving-mx-hostname"] == "mx.https.plain.test"
                  and fd[0]["sending-mta-ip"].startswith("127."),
                  f"1: the report says what happened ({json.dumps(rep)[:600]})")
            # 2. mailto, to a domain whose MX fails DANE
            r.wait_log(lambda e: e.get("event") == "delivery"
                       and e.get("rcpt") == "reports@rcv.sec.test"
                       and e.get("status") == "sent", timeout=30)
            got = [m for m in mx["mx.rcv.sec.test"].messages
                   if "reports@rcv.sec.test" in m["rcpt_tos"]]
            check(len(got) == 1 and got[0]["mail_from"] == "tlsrpt@relay.test",
                  "2: the mailed report reached the MX that fails DANE")
            check(any(e.get("event") == "tlsrpt_report_policy_overridden"
                      for e in r.events()),
                  "2: the DANE failure was passed over for the report (logged)")
            mailed = None
            if got:
                raw = got[0]["data"].encode("latin-1")
                seen = []

                def dnsfunc(name, timeout=5):
                    seen.append(name)
                    return dkim_txt if name in (b"sel._domainkey.relay.test.",
                                                "sel._domainkey.relay.test.") else None
                # strict: the key record must say s=tlsrpt (RFC 8460 §3)
                ok = dkim.verify(raw, dnsfunc=dnsfunc, tlsrpt="strict")
                check(ok and b"d=relay.test" in raw and b"s=sel" in raw,
                      f"2: the mailed report carries a valid DKIM signature of "
                      f"relay.test (dkimpy: {ok}, asked {seen})")
                tampered = raw.replace(b"TLS-Report-Domain: mail.plain.test",
                                       b"TLS-Report-Domain: evil.plain.test")
                check(not dkim.verify(tampered, dnsfunc=dnsfunc, tlsrpt="strict"),
                      "2: a changed signed field fails the DKIM check")
                m = email.message_from_string(got[0]["data"], policy=email.policy.default)
                check(m.get_content_type() == "multipart/report"
                      and m.get_param("report-type") == "tlsrpt"
                      and m["TLS-Report-Domain"] == "mail.plain.test"
                      and m["TLS-Report-Submitter"] == "relay.test"
                      and "Report Domain: mail.plain.test" in m["Subject"]
                      and "Submitter: relay.test" in m["Subject"],
                      f"2: multipart/report with the §5.3 headers ({m['Subject']})")
                parts = [x for x in m.iter_parts()
                         if x.get_content_type() == "application/tlsrpt+gzip"]
                check(len(parts) == 1 and parts[0].get_filename()
                      and parts[0].get_filename().startswith("relay.test!mail.plain.test!")
                      and parts[0].get_filename().endswith(".json.gz"),
                      "2: one application/tlsrpt+gzip part with the §5.3 file name")
                if parts:
                    mailed = tlsrpt_check.load_gzip(parts[0].get_payload(decode=True))
                    errs = tlsrpt_check.validate(mailed, strict=True)
                    check(not errs and mailed["policies"][0]["summary"][
                        "total-successful-session-count"] == 1,
                          f"2: the mailed report passes the schema check ({errs})")
            lst = json.loads(qtool(r.state, "list", "--json").stdout or "[]")
            check(sorted(d["policy-domain"] for d in lst) ==
                  ["bad.plain.test", "https.plain.test", "mail.plain.test"],
                  f"2: the report's own delivery was not counted ({[d['policy-domain'] for d in lst]})")
            # 3. qtool prints the report that was mailed
            out = subprocess.run([QTOOL, "-c", r.conf, "tlsrpt", "report",
                                  "mail.plain.test"],
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 0 and mailed is not None
                  and json.loads(out.stdout) == mailed,
                  "3: qtool tlsrpt report prints the report that was mailed")
            # 4. no usable URI
            check(any(e.get("event") == "tlsrpt_record_invalid"
                      and e.get("domain") == "bad.plain.test" for e in r.events()),
                  "4: bad.plain.test: no report, tlsrpt_record_invalid logged")
            # 5. nothing is sent twice
            r.stop()
            r.start()
            r.wait_log(lambda e: e.get("event") == "started", timeout=20,
                       since_start=True)
            import time
            time.sleep(4)
            again = [e for e in r.events(since_start=True)
                     if e.get("event", "").startswith("tlsrpt_report")]
            check(not again and len(web["rpt"].posts()) == 1,
                  f"5: after another restart nothing is sent again ({again})")
        finally:
            r.kill()
    finally:
        fx.close()
        for s in list(mx.values()) + list(web.values()):
            s.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
