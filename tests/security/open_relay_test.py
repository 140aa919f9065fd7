"""Not an open relay: with `listen { accept_from 127.0.0.1/32 }`, a client
connecting from 127.0.0.2 is refused with 554 5.7.1 whatever it says
next, and nothing is queued; the same transaction from 127.0.0.1 is
accepted (the control).

With `auth required` (any address may connect), nothing is relayed
without a valid login: not in plaintext (AUTH is refused there with 538,
so no password crosses in the clear), not after a failed login, and the
replies for an unknown user and a wrong password are the same bytes.
tests/security/auth_test.py covers AUTH in depth.

Usage: open_relay_test.py POSTERN QTOOL
"""

import smtplib
import sys

import shutil
import tempfile

import authpeer
import dnspeer
import faultkit as fk
import pki
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]


def check_auth_required(dns_port, sink):
    work = tempfile.mkdtemp(prefix="postern-openrelay-")
    try:
        users = authpeer.users_file(work, POSTERN, {"alice": ("s3cret", "yescrypt")})
        with pki.PKI() as p:
            crt, key = p.server_cert("relay.test")
            with Relay(POSTERN, dns_port, accept_from=None,
                       listen_extra=f"tls_cert {crt}; tls_key {key}; "
                                    f"auth required; users {users}",
                       delivery=f"route * 127.0.0.1:{sink.port}") as r:
                body = fk.message("noauth").encode()
                rep = fk.smtp_dialogue(r.port, [
                    b"EHLO outsider.test", b"AUTH PLAIN " + authpeer.plain(
                        "alice", "s3cret").encode(),
                    b"MAIL FROM:<spam@outsider.test>", b"RCPT TO:<victim@far.test>",
                    b"DATA", body + b".", b"QUIT"], src="127.0.0.2")
                fk.check(rep[2].startswith("538 5.7.11"),
                         f"auth required: plaintext AUTH refused ({rep[2]!r})")
                fk.check(rep[3].startswith("530 5.7.0"),
                         f"auth required: MAIL without login refused ({rep[3]!r})")
                fk.check(not any(x.startswith(("250 2.1", "354")) for x in rep[3:]),
                         "auth required: no transaction without a login")
                with authpeer.tls_session(r.port, src="127.0.0.2") as s:
                    a = s.docmd("AUTH", "PLAIN " + authpeer.plain("alice", "guess"))
                    b = s.docmd("AUTH", "PLAIN " + authpeer.plain("nobody", "guess"))
                    fk.check(a == b and a[0] == 535,
                             f"no user name oracle: {a!r} == {b!r}")
                    code, _ = s.mail("spam@outsider.test")
                    fk.check(code == 530, f"auth required: MAIL after failed logins ({code})")
                st = fk.qstats(QTOOL, r.state)
                fk.check(st["messages"] == 0,
                         f"auth required: nothing queued without a login ({st['messages']})")
                fk.check("noauth" not in sink.ids(), "nothing relayed without a login")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    dns = dnspeer.start({"records": {}})
    sink = fk.Sink()
    try:
        with Relay(POSTERN, dns.port, accept_from="127.0.0.1/32",
                   delivery=f"route * 127.0.0.1:{sink.port}") as r:
            body = fk.message("outsider").encode()
            rep = fk.smtp_dialogue(r.port, [
                b"EHLO outsider.test", b"MAIL FROM:<spam@outsider.test>",
                b"RCPT TO:<victim@far.test>", b"DATA", body + b".", b"QUIT"],
                src="127.0.0.2")
            fk.check(rep[0].startswith("554") and "5.7.1" in rep[0],
                     f"127.0.0.2 is greeted with 554 5.7.1 ({rep[0]!r})")
            fk.check(not any(x.startswith(("250", "354")) for x in rep[1:]),
                     f"no command from 127.0.0.2 is accepted ({[x[:20] for x in rep[1:]]})")
            try:
                with smtplib.SMTP("127.0.0.1", r.port, timeout=10,
                                  source_address=("127.0.0.2", 0)) as s:
                    s.ehlo("outsider.test")
                    s.sendmail("spam@outsider.test", ["victim@far.test"], body)
                refused = False
            except (smtplib.SMTPException, OSError) as e:
                refused = True
                print(f"smtplib from 127.0.0.2: {type(e).__name__}: {e}", flush=True)
            fk.check(refused, "smtplib from 127.0.0.2 cannot send")
            st = fk.qstats(QTOOL, r.state)
            fk.check(st["messages"] == 0, f"nothing queued from 127.0.0.2 ({st['messages']})")
            fk.check(any(e.get("event") == "smtpd_reject" and e.get("client") == "127.0.0.2"
                         for e in r.events()), "the refusal is logged with the client address")
            r.send("s@snd.test", ["u@far.test"], fk.message("insider"))
            fk.check(fk.wait_until(lambda: "insider" in sink.ids(), 20),
                     "control: 127.0.0.1 may send, and it is delivered")
            fk.check("outsider" not in sink.ids(), "nothing from 127.0.0.2 was delivered")
            fk.check(r.stop() == 0, "SIGTERM: exit 0")
        check_auth_required(dns.port, sink)
    finally:
        sink.stop()
        dns.stop()
    fk.finish()


if __name__ == "__main__":
    main()
