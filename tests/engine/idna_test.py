"""Internationalized recipient domains (IDNA2008) end to end: a real
`postern` takes mail with SMTPUTF8 for a@bücher.plain.test and routes it
by the A-label form (the MX, address and policy lookups go to
xn--bcher-kva.plain.test); a domain that is not valid IDNA2008 (a
disallowed character) bounces at once with 5.1.2 and a reason; the queue
and the logs keep the address as the client wrote it.

To a next hop without SMTPUTF8 (mü.plain.test's MX): a message whose only
non-ASCII text is the recipient's domain goes with the A-label form and no
SMTPUTF8 (RFC 6531 §3.5); one with a non-ASCII local part bounces 5.6.7.
The bounce of such a message from a UTF-8 sender is a global DSN (RFC
6533), delivered with SMTPUTF8 to the sender's SMTPUTF8 host.

Usage: idna_test.py POSTERN_BINARY
"""

import smtplib
import sys

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


def main():
    p = pki.PKI()
    peer = None
    for _ in range(20):
        port = dnssec_zone._free_port()
        try:
            c, k = p.server_cert("mx.xn--bcher-kva.plain.test")
            peer = smtpd_peer.Peer(host="127.0.0.121", port=port,
                                   hostname="mx.xn--bcher-kva.plain.test",
                                   tls_cert=c, tls_key=k, smtputf8=True)
            break
        except OSError:
            continue
    c2, k2 = p.server_cert("mx.xn--m-eha.plain.test")
    peer2 = smtpd_peer.Peer(host="127.0.0.122", port=port,
                            hostname="mx.xn--m-eha.plain.test",
                            tls_cert=c2, tls_key=k2)
    fx = dnssec_zone.Fixture({"plain.test": {"signed": False, "records": [
        "xn--bcher-kva MX 10 mx.xn--bcher-kva",
        "mx.xn--bcher-kva A 127.0.0.121",
        "xn--m-eha MX 10 mx.xn--m-eha",
        "mx.xn--m-eha A 127.0.0.122"]}})
    good = "a@b\u00fccher.plain.test"
    bad = "a@\u2603.plain.test"
    try:
        with Relay(POSTERN, fx.port, delivery=f"port {port}; connect_timeout 3s",
                   extra=f"tls {{ ca_file {p.ca_file} }}\nqueue {{ retry_initial 1h }}") as r:
            with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                s.ehlo("client.test")
                for rc in (good, bad):
                    s.sendmail("s@snd.test", [rc],
                               "Subject: idna\r\n\r\nhello\r\n".encode(),
                               ["SMTPUTF8"])
            # logfmt writes non-ASCII bytes escaped (\xHH): match on what
            # is ASCII.
            e = r.wait_log(lambda e: e.get("event") == "delivery"
                           and e.get("domain") == "xn--bcher-kva.plain.test",
                           timeout=30)[0]
            check(e.get("status") == "sent" and e.get("domain") == "xn--bcher-kva.plain.test"
                  and e.get("mx") == "mx.xn--bcher-kva.plain.test",
                  f"U-label domain delivered by its A-label form ({e.get('status')} "
                  f"{e.get('domain')} {e.get('mx')}: {e.get('reply')})")
            got = peer.messages
            check(len(got) == 1 and got[0]["rcpt_tos"] == ["a@xn--bcher-kva.plain.test"]
                  and not any(o.upper() == "SMTPUTF8" for o in got[0]["mail_options"]),
                  f"only the domain was non-ASCII: the A-label form, no SMTPUTF8 "
                  f"({got[0]['rcpt_tos'] if got else None})")
            # A non-ASCII local part needs SMTPUTF8: that hop offers it, and
            # gets the address as the client wrote it.
            local = "\u00fc@b\u00fccher.plain.test"
            with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                s.ehlo("client.test")
                s.sendmail("s@snd.test", [local], b"Subject: x\r\n\r\nhi\r\n",
                           ["SMTPUTF8"])
            r.wait_log(lambda e: e.get("event") == "delivery"
                       and e.get("domain") == "xn--bcher-kva.plain.test"
                       and e.get("status") == "sent", count=2, timeout=30)
            got = peer.messages
            check(len(got) == 2 and got[1]["rcpt_tos"] == [local]
                  and any(o.upper() == "SMTPUTF8" for o in got[1]["mail_options"]),
                  f"a UTF-8 local part goes intact with SMTPUTF8 "
                  f"({got[1]['rcpt_tos'] if len(got) > 1 else None})")
            with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                s.ehlo("client.test")
                s.sendmail("s@snd.test", ["b@m\u00fc.plain.test"],
                           b"Subject: ascii header\r\n\r\nhello\r\n", ["SMTPUTF8"])
                s.sendmail("s@snd.test", ["\u00fc@m\u00fc.plain.test"],
                           b"Subject: ascii header\r\n\r\nhello\r\n", ["SMTPUTF8"])
            evs = r.wait_log(lambda e: e.get("event") == "delivery"
                             and e.get("domain") == "xn--m-eha.plain.test",
                             count=2, timeout=30)
            got2 = peer2.messages
            check(len(got2) == 1 and got2[0]["rcpt_tos"] == ["b@xn--m-eha.plain.test"]
                  and not any(o.upper() == "SMTPUTF8" for o in got2[0]["mail_options"]),
                  f"domain-only UTF-8 to a hop without SMTPUTF8: sent with the "
                  f"A-label, no SMTPUTF8 ({[(m['rcpt_tos'], m['mail_options']) for m in got2]})")
            st = sorted((x.get("status"), x.get("dsn")) for x in evs)
            check(st == [("bounced", "5.6.7"), ("sent", "2.0.0")],
                  f"a non-ASCII local part to that hop bounces 5.6.7 ({st})")
            # RFC 6533: the report for a UTF-8 sender is a global one.
            sender = "j\u00f6@b\u00fccher.plain.test"
            with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                s.ehlo("client.test")
                s.sendmail(sender, ["\u00e4@m\u00fc.plain.test"],
                           "Subject: gr\u00fc\u00dfe\r\n\r\nhello\r\n".encode(),
                           ["SMTPUTF8"])
            r.wait_log(lambda e: e.get("event") == "delivery"
                       and e.get("domain") == "xn--bcher-kva.plain.test"
                       and e.get("status") == "sent", count=3, timeout=60)
            got = peer.messages
            dsn = got[2] if len(got) > 2 else {}
            body = dsn.get("data", b"")
            # The peer hands the content over as latin-1 text: back to UTF-8.
            body = (body if isinstance(body, bytes) else body.encode("latin-1")
                    ).decode("utf-8", "replace")
            check(dsn.get("rcpt_tos") == [sender]
                  and any(o.upper() == "SMTPUTF8" for o in dsn.get("mail_options", [])),
                  f"the DSN goes to the UTF-8 sender with SMTPUTF8 ({dsn.get('rcpt_tos')})")
            check("report-type=global-delivery-status" in body
                  and "message/global-delivery-status" in body
                  and "Final-Recipient: utf-8; \u00e4@m\u00fc.plain.test" in body
                  and "message/global-headers" in body
                  and "Subject: gr\u00fc\u00dfe" in body
                  and f"To: <{sender}>" in body,
                  f"a global DSN (RFC 6533) with the addresses intact ({body[:1500]!r})")
            e = r.wait_log(lambda e: e.get("event") == "delivery"
                           and e.get("dsn") == "5.1.2"
                           and "internationalized" in e.get("reply", ""),
                           timeout=30)[0]
            check(e.get("status") == "bounced" and e.get("dsn") == "5.1.2"
                  and "disallowed" in e.get("reply", ""),
                  f"invalid IDNA2008 domain: bounced 5.1.2 with a reason "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
    finally:
        fx.close()
        if peer:
            peer.stop()
        peer2.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
