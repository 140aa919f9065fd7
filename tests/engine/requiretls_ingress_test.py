"""REQUIRETLS (RFC 8689) through a real relay: the listener offers it only
after STARTTLS and refuses MAIL ... REQUIRETLS without TLS (530 5.7.0);
a message sent with it under TLS is queued tagged (§4.1), one sent without
it is not, and `qtool show` says which (text and --json).

The recipient domain's DNS answers SERVFAIL, so both messages stay queued
(deferred) for qtool to look at.

Usage: requiretls_ingress_test.py POSTERN QTOOL
"""

import json
import smtplib
import ssl
import subprocess
import sys

import dnspeer
import pki
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
failures = []
BODY = b"From: a@snd.test\r\nSubject: requiretls\r\n\r\nhi\r\n"


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def qtool(r, *args):
    p = subprocess.run([QTOOL, "-c", r.conf] + list(args), capture_output=True,
                       timeout=60)
    check(p.returncode == 0, f"qtool {' '.join(args)}: exit 0 "
          f"({p.stderr.decode(errors='replace')})")
    return p.stdout


def main():
    dns = dnspeer.start({"records": {}, "behaviour": {
        "dst.test": {"rcode": "SERVFAIL"},
        "_mta-sts.dst.test": {"rcode": "SERVFAIL"},
    }})
    try:
        with pki.PKI() as p:
            crt, key = p.server_cert("relay.test")
            ctx = ssl.create_default_context(cafile=p.ca_file)
            ctx.check_hostname = False  # smtplib names the host 127.0.0.1
            with Relay(POSTERN, dns.port,
                       listen_extra=f"tls_cert {crt}; tls_key {key}",
                       extra="queue { retry_initial 1h }") as r:
                # Plaintext: not offered, refused.
                with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                    s.ehlo("client.test")
                    check(s.has_extn("starttls") and
                          not s.has_extn("requiretls"),
                          "plaintext EHLO: STARTTLS offered, REQUIRETLS not")
                    code, msg = s.mail("plain@snd.test", ["REQUIRETLS"])
                    check(code == 530 and msg.startswith(b"5.7.0"),
                          f"plaintext MAIL REQUIRETLS refused: {code} {msg!r}")
                # Under TLS: offered, accepted.
                with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
                    s.ehlo("client.test")
                    s.starttls(context=ctx)
                    s.ehlo("client.test")
                    check(s.has_extn("requiretls"),
                          "EHLO after STARTTLS offers REQUIRETLS")
                    s.sendmail("req@snd.test", ["a@dst.test"], BODY,
                               ["REQUIRETLS"])
                    s.sendmail("opt@snd.test", ["b@dst.test"], BODY)
                r.wait_log(lambda e: e.get("event") == "delivery", count=2,
                           timeout=30)

                msgs = json.loads(qtool(r, "list", "--json"))
                ids = {m["sender"]: m["id"] for m in msgs}
                check(set(ids) == {"req@snd.test", "opt@snd.test"},
                      f"both messages queued ({sorted(ids)})")
                for sender, want in (("req@snd.test", True),
                                     ("opt@snd.test", False)):
                    if sender not in ids:
                        continue
                    show = json.loads(qtool(r, "show", ids[sender], "--json"))
                    check(show.get("requiretls") is want,
                          f"qtool show --json {sender}: requiretls "
                          f"{show.get('requiretls')!r}, want {want}")
                    text = qtool(r, "show", ids[sender]).decode()
                    line = "requiretls: " + ("yes" if want else "no")
                    check(line in text.splitlines(),
                          f"qtool show {sender}: '{line}'")
    finally:
        dns.stop()
    print("all checks passed" if not failures
          else f"{len(failures)} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
