"""REQUIRETLS (RFC 8689) delivery end to end: a real `postern` (STARTTLS on
its listener) takes messages with MAIL FROM ... REQUIRETLS and delivers them
through a validating unbound (a signed and an unsigned zone) to aiosmtpd MX
hosts, some offering REQUIRETLS, some not:

 1. ok.sec.test (DNSSEC MX, CA-valid certificate, REQUIRETLS offered) ->
    sent; the MX got REQUIRETLS on MAIL FROM; the log says requiretls=yes;
 2. noext.sec.test (no REQUIRETLS offered) -> bounced 5.7.30, and its DSN,
    delivered to the sender's MX, carries none of the message's content
    (RFC 8689 §5);
 3. insec.plain.test (MX lookup not DNSSEC-validated, no MTA-STS, though
    the MX offers REQUIRETLS) -> bounced 5.7.30;
 4. two.sec.test: the first MX offers no REQUIRETLS, the second does ->
    sent via the second;
 5. self.sec.test: REQUIRETLS offered but a self-signed certificate ->
    bounced 5.7.30 (TLS must be authenticated);
 6. down.sec.test: nothing listens at its MX -> deferred (a temporary
    failure keeps hope, §4.2.1), not bounced;
 7. a REQUIRETLS message with "TLS-Required: No" to noext.sec.test -> the
    header is ignored (§4.3): bounced 5.7.30;
 8. the same message without REQUIRETLS to noext.sec.test -> sent: only the
    flag makes the difference;
 9. metrics: postern_requiretls_deliveries_total by status.

Usage: requiretls_test.py POSTERN_BINARY
"""

import re
import smtplib
import ssl
import sys
import time
import urllib.request

import dnssec_zone
import pki
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)




def metric(port, family, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(family), re.escape(want)), text, re.M)
    return int(m.group(1)) if m else None


def main():
    p = pki.PKI()
    mx = {  # name -> (octet, certificate kind, offers REQUIRETLS)
        "mx.ok.sec.test": (101, "ca", True),
        "mx.noext.sec.test": (102, "ca", False),
        "mx.insec.plain.test": (103, "ca", True),
        "mxa.two.sec.test": (104, "ca", False),
        "mxb.two.sec.test": (105, "ca", True),
        "mx.self.sec.test": (106, "self", True),
        "mx.snd.plain.test": (108, "ca", False),
    }

    def starter(name):
        last, kind, req = mx[name]
        c, k = p.server_cert(name, self_signed=(kind == "self"))
        return lambda port: smtpd_peer.Peer(host=f"127.0.0.{last}", port=port,
                                            hostname=name, tls_cert=c, tls_key=k,
                                            requiretls=req)

    port, peers = dnssec_zone.on_common_port([(n, starter(n)) for n in mx])
    sec = ["ok MX 10 mx.ok", "mx.ok A 127.0.0.101",
           "noext MX 10 mx.noext", "mx.noext A 127.0.0.102",
           "two MX 10 mxa.two", "two MX 20 mxb.two",
           "mxa.two A 127.0.0.104", "mxb.two A 127.0.0.105",
           "self MX 10 mx.self", "mx.self A 127.0.0.106",
           "down MX 10 mx.down", "mx.down A 127.0.0.107"]
    plain = ["insec MX 10 mx.insec", "mx.insec A 127.0.0.103",
             "snd MX 10 mx.snd", "mx.snd A 127.0.0.108"]
    fx = dnssec_zone.Fixture({"sec.test": {"signed": True, "records": sec},
                              "plain.test": {"signed": False, "records": plain}})
    crt, key = p.server_cert("relay.test")
    ctx = ssl.create_default_context(cafile=p.ca_file)
    ctx.check_hostname = False

    def body(subject, extra=""):
        return (f"From: s@snd.plain.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
                f"{extra}\r\nsecret content of {subject}\r\n")

    try:
        with Relay(POSTERN, fx.port, listen_extra=f"tls_cert {crt}; tls_key {key}",
                   delivery=f"port {port}; connect_timeout 3s",
                   extra=(f"tls {{ ca_file {p.ca_file} }}\n"
                          "queue { retry_initial 1h }\n"
                          "metrics { listen 127.0.0.1:0 }")) as r:
            mport = int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])
            sends = [("a@ok.sec.test", "s1", "", True),
                     ("a@noext.sec.test", "s2", "", True),
                     ("a@insec.plain.test", "s3", "", True),
                     ("a@two.sec.test", "s4", "", True),
                     ("a@self.sec.test", "s5", "", True),
                     ("a@down.sec.test", "s6", "", True),
                     ("b@noext.sec.test", "s7", "TLS-Required: No\r\n", True),
                     ("c@noext.sec.test", "s8", "", False)]
            with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                s.ehlo("client.test")
                s.starttls(context=ctx)
                s.ehlo("client.test")
                for rc, subj, extra, req in sends:
                    s.sendmail("s@snd.plain.test", [rc], body(subj, extra),
                               ["REQUIRETLS"] if req else [])

            def first(rc):
                return r.wait_log(lambda e: e.get("event") == "delivery"
                                  and e.get("rcpt") == rc, timeout=40)[0]

            e = first("a@ok.sec.test")
            got = peers["mx.ok.sec.test"].messages
            check(e.get("status") == "sent" and e.get("requiretls") == "yes"
                  and got and "REQUIRETLS" in [o.upper() for o in got[0]["mail_options"]],
                  f"1: sent with REQUIRETLS on MAIL FROM ({e.get('status')} "
                  f"{got[0]['mail_options'] if got else None})")
            for rc, what in (("a@noext.sec.test", "2: MX without REQUIRETLS"),
                             ("a@insec.plain.test", "3: MX not authenticated"),
                             ("a@self.sec.test", "5: self-signed certificate"),
                             ("b@noext.sec.test", "7: TLS-Required: No ignored")):
                e = first(rc)
                check(e.get("status") == "bounced" and e.get("dsn") == "5.7.30",
                      f"{what}: bounced 5.7.30 ({e.get('status')} {e.get('dsn')}: "
                      f"{e.get('reply')})")
            check(not peers["mx.noext.sec.test"].messages or
                  all("s2" not in m["data"] and "s7" not in m["data"]
                      for m in peers["mx.noext.sec.test"].messages),
                  "2: nothing of the REQUIRETLS messages reached the MX without it")
            e = first("a@two.sec.test")
            check(e.get("status") == "sent" and e.get("mx") == "mxb.two.sec.test",
                  f"4: sent via the MX offering REQUIRETLS ({e.get('mx')})")
            e = first("a@down.sec.test")
            check(e.get("status") == "deferred" and e.get("dsn", "").startswith("4"),
                  f"6: MX down: deferred ({e.get('status')} {e.get('dsn')})")
            e = first("c@noext.sec.test")
            check(e.get("status") == "sent",
                  f"8: without REQUIRETLS the same MX takes it ({e.get('status')})")
            # 2. the DSNs reach the sender's MX without the content
            deadline = time.time() + 30
            dsns = []
            while time.time() < deadline:
                dsns = [m for m in peers["mx.snd.plain.test"].messages
                        if m["mail_from"] in ("", "<>")]
                if len(dsns) >= 4:
                    break
                time.sleep(0.2)
            check(len(dsns) >= 4 and all("secret content" not in m["data"]
                                         and "Subject: s" not in m["data"]
                                         for m in dsns)
                  and all("5.7.30" in m["data"] for m in dsns),
                  f"2: {len(dsns)} DSNs, 5.7.30, no original content (RFC 8689 §5)")
            check((metric(mport, "postern_requiretls_deliveries_total", status="sent") or 0) >= 2
                  and (metric(mport, "postern_requiretls_deliveries_total",
                              status="bounced") or 0) >= 4
                  and (metric(mport, "postern_requiretls_deliveries_total",
                              status="deferred") or 0) >= 1,
                  "9: metrics count REQUIRETLS deliveries by status")
    finally:
        fx.close()
        for s in peers.values():
            s.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
