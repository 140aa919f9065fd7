"""Internationalized recipient domains (IDNA2008) end to end: a real
`postern` takes mail with SMTPUTF8 for a@bücher.plain.test and routes it
by the A-label form (the MX, address and policy lookups go to
xn--bcher-kva.plain.test); a domain that is not valid IDNA2008 (a
disallowed character) bounces at once with 5.1.2 and a reason; the queue
and the logs keep the address as the client wrote it.

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
    fx = dnssec_zone.Fixture({"plain.test": {"signed": False, "records": [
        "xn--bcher-kva MX 10 mx.xn--bcher-kva",
        "mx.xn--bcher-kva A 127.0.0.121"]}})
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
            check(len(got) == 1 and got[0]["rcpt_tos"] == [good],
                  f"the next hop got the address as the client wrote it "
                  f"({got[0]['rcpt_tos'] if got else None})")
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
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
