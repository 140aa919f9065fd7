"""The SMTP client checks DSN parameter values with the server's rules.

ENVID is RFC 3461 §4 xtext and ORCPT is addr-type ";" xtext (§4.2), or for
"utf-8" the RFC 6533 forms, as net/smtp_syntax.h defines them for both
sides: a value the server accepted from a client is a value the client
sends on (even with "<" or ">", which are xchars), and one that is no xtext
is refused with POSTERN_EINVAL before anything is sent. Runs
tests/client/smtp_client_driver (argv[1]) against an aiosmtpd peer that
offers DSN. Exits non-zero if any check fails.
"""

import json
import os
import subprocess
import sys
import tempfile

import smtpd_peer

DRIVER = os.path.abspath(sys.argv[1])
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def run(peer, body_file, *args):
    cmd = [DRIVER, "--connect", "127.0.0.1:%d" % peer.port, "--mx", "mx.test",
           "--body-file", body_file] + list(args)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60, text=True)
    check(r.returncode == 0, "driver exit status 0 (%s)" % r.stderr[-500:])
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def ev(events, kind):
    return next((e for e in events if e["event"] == kind), None)


def main():
    with tempfile.TemporaryDirectory(prefix="postern-params-test-") as tmp:
        body = os.path.join(tmp, "body.eml")
        with open(body, "wb") as f:
            f.write(b"Subject: params\r\n\r\nhello\r\n")
        sent_cases = [
            # (what, MAIL args, RCPT args, expected MAIL / RCPT options)
            ("ENVID with '<' and '>' (xchars) is sent",
             ["--envid", "<id+2B1@x.test>"], [],
             "ENVID=<ID+2B1@X.TEST>", None),
            ("ORCPT utf-8 with UTF-8 (RFC 6533) is sent",
             ["--smtputf8"], ["--orcpt", "utf-8;j\u00f6rg@x.test"], None,
             "ORCPT=UTF-8;J\u00d6RG@X.TEST"),
            ("ORCPT rfc822 with a hexchar is sent",
             [], ["--orcpt", "rfc822;a+2Bb@x.test"], None,
             "ORCPT=RFC822;A+2BB@X.TEST"),
        ]
        for what, mail, rcpt, mail_opt, rcpt_opt in sent_cases:
            with smtpd_peer.Peer(dsn=True, smtputf8=True) as peer:
                events = run(peer, body, *mail, "--rcpt", "a@x.test", *rcpt)
                s = ev(events, "sent")
                m = peer.messages[0] if peer.messages else {}
                got_mail = [o.upper() for o in m.get("mail_options", [])]
                got_rcpt = [o.upper() for o in
                            (m.get("rcpt_options") or [[]])[0]]
                check(s is not None and s["accepted"] == 1 and
                      (mail_opt is None or mail_opt in got_mail) and
                      (rcpt_opt is None or rcpt_opt in got_rcpt),
                      what + " (%r %r)" % (got_mail, got_rcpt))
        refused_cases = [
            ("ENVID with '+' not followed by two hex digits",
             ["--envid", "id+zz"], []),
            ("ENVID with lower-case hex after '+'", ["--envid", "id+2b"], []),
            ("ENVID with an 8-bit byte", ["--envid", "id\u00e9"], []),
            ("ENVID with '='", ["--envid", "a=b"], []),
            ("ORCPT without addr-type", [], ["--orcpt", "a@x.test"]),
            ("ORCPT rfc822 with an 8-bit byte",
             [], ["--orcpt", "rfc822;j\u00f6rg@x.test"]),
            ("ORCPT with an empty address", [], ["--orcpt", "rfc822;"]),
        ]
        for what, mail, rcpt in refused_cases:
            with smtpd_peer.Peer(dsn=True) as peer:
                events = run(peer, body, *mail, "--rcpt", "a@x.test", *rcpt)
                e = ev(events, "send_error")
                check(e is not None and e["status"] == "INVAL" and
                      "MAIL" not in peer.commands,
                      what + ": refused with EINVAL, nothing sent")
    if FAILURES:
        print("\n%d check(s) failed:" % len(FAILURES))
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
