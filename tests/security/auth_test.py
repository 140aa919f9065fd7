"""SMTP AUTH (RFC 4954) through a real relay with `auth required`: a users
file of real yescrypt, bcrypt and sha512-crypt hashes (postern
--hash-password and Python's crypt module); swaks and smtplib log in with
PLAIN and LOGIN over STARTTLS and relay; before STARTTLS AUTH is not
offered and gets 538; nothing is relayed without a login (530); a wrong
password and an unknown user get the same reply bytes; the RFC 4954 error
replies; the Received header says ESMTPSA and the queue record, qtool show
and the logs name the user; the password is in no log; the metrics count.
Then the accept_from combinations: `optional` (login OR address) and
`required` with accept_from (login AND address).

Recipients' DNS answers SERVFAIL: accepted messages stay queued for qtool.

Usage: auth_test.py POSTERN QTOOL
"""

import json
import os
import smtplib
import subprocess
import sys
import tempfile
import urllib.request

import authpeer
import dnspeer
import faultkit as fk
import pki
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
BODY = b"From: a@snd.test\r\nSubject: auth\r\n\r\nhi\r\n"
PASSWORDS = {"alice": "correct horse", "bob": "b0b-s3cret!", "carol": "c4rol pw"}
# A login whose AUTH PLAIN line is longer than other commands may be
# (RFC 4954 §4): 200 + 250 bytes, over 600 octets in base64.
LONG_USER, LONG_PW = "l" * 200, "P4ss " * 50
WRONG = "not-the-password-xyzzy"


def qtool(r, *args):
    p = subprocess.run([QTOOL, "-c", r.conf] + list(args), capture_output=True,
                       timeout=60)
    fk.check(p.returncode == 0, f"qtool {' '.join(args)}: exit 0 "
             f"({p.stderr.decode(errors='replace')})")
    return p.stdout.decode("utf-8", "replace")


def swaks(port, mech, user, password, sender, tls=True):
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(port),
           "--helo", "client.test", "--from", sender, "--to", "x@dst.test",
           "--auth", mech, "--auth-user", user, "--auth-password", password,
           "--timeout", "30", "--body", "swaks auth test"]
    if tls:
        cmd.append("--tls")
    p = subprocess.run(cmd, capture_output=True, timeout=90)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("postern_auth_total{"):
            k, v = line.split()
            out[k.split('"')[1]] = int(v)
    return out


def check_required(r, users_path):
    # Plaintext: AUTH neither offered nor accepted; MAIL needs a login.
    with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
        s.ehlo("client.test")
        fk.check(s.has_extn("starttls") and not s.has_extn("auth"),
                 "plaintext EHLO: STARTTLS offered, AUTH not")
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain(
            "alice", PASSWORDS["alice"])))
        fk.check(rep == "538 5.7.11 Encryption required for requested "
                 "authentication mechanism", f"AUTH before STARTTLS: {rep}")
        rep = authpeer.reply(s.docmd("AUTH", "LOGIN"))
        fk.check(rep.startswith("538 5.7.11"), f"AUTH LOGIN before STARTTLS: {rep}")
        code, msg = s.mail("spam@snd.test")
        fk.check(code == 530 and msg.startswith(b"5.7.0"),
                 f"plaintext MAIL without login: {code} {msg!r}")
    # swaks without --tls cannot log in.
    rc, out = swaks(r.port, "PLAIN", "alice", PASSWORDS["alice"],
                    "plain@snd.test", tls=False)
    fk.check(rc != 0, f"swaks AUTH PLAIN without TLS fails (exit {rc})")

    with authpeer.tls_session(r.port) as s:
        fk.check(s.has_extn("auth") and
                 set(s.esmtp_features["auth"].upper().split()) == {"PLAIN", "LOGIN"},
                 f"EHLO after STARTTLS: AUTH PLAIN LOGIN "
                 f"({s.esmtp_features.get('auth')!r})")
        code, msg = s.mail("nologin@snd.test")
        fk.check(code == 530, f"TLS but no login: MAIL refused ({code} {msg!r})")
        # No user name oracle: the same bytes for an unknown user and a
        # wrong password, PLAIN and LOGIN.
        wrong = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain("alice", WRONG)))
        unknown = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain("mallory", WRONG)))
        fk.check(wrong == "535 5.7.8 Authentication credentials invalid",
                 f"wrong password: {wrong}")
        fk.check(unknown == wrong, f"unknown user gets the same reply: {unknown}")
        s.docmd("AUTH", "LOGIN")
        s.docmd(authpeer.b64("mallory"))
        l_unknown = authpeer.reply(s.docmd(authpeer.b64(WRONG)))
        s.docmd("AUTH", "LOGIN")
        s.docmd(authpeer.b64("bob"))
        l_wrong = authpeer.reply(s.docmd(authpeer.b64(WRONG)))
        fk.check(l_unknown == l_wrong == wrong,
                 f"LOGIN: same reply for unknown user and wrong password "
                 f"({l_unknown} / {l_wrong})")
        # A hostile user name is logged escaped: it cannot forge a line or
        # a key.
        evil = 'x" event=auth_ok user=admin\r\nts=0 event=auth_ok user=root'
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain(evil, WRONG)))
        fk.check(rep == wrong, f"hostile user name: the usual 535 ({rep})")
        # RFC 4954 replies.
        rep = authpeer.reply(s.docmd("AUTH", "CRAM-MD5"))
        fk.check(rep.startswith("504 5.5.4"), f"unknown mechanism: {rep}")
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN not-base64!"))
        fk.check(rep.startswith("501 5.5.2"), f"bad base64: {rep}")
        rep = authpeer.reply(s.docmd("AUTH", "LOGIN"))
        fk.check(rep == "334 VXNlcm5hbWU6", f"LOGIN asks for the user name: {rep}")
        rep = authpeer.reply(s.docmd("*"))
        fk.check(rep.startswith("501 5.7.0"), f"'*' cancels: {rep}")
        # A response line over the limit (hostile input): 500 5.5.6, the
        # rest of the line is dropped and the session goes on.
        s.docmd("AUTH", "PLAIN")
        rep = authpeer.reply(s.docmd("QUFB" * 1000))
        fk.check(rep.startswith("500 5.5.6"), f"overlong response line: {rep[:60]}")
        rep = authpeer.reply(s.docmd("NOOP"))
        fk.check(rep.startswith("250"), f"the session goes on after it: {rep}")
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN"))
        fk.check(rep.startswith("334"), f"PLAIN without initial response: {rep}")
        rep = authpeer.reply(s.docmd(authpeer.plain("alice", PASSWORDS["alice"],
                                                    authzid="bob")))
        fk.check(rep == wrong, f"authzid other than the user: 535 ({rep})")
        # A good login, then the transaction rules.
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain(
            "alice", PASSWORDS["alice"], authzid="alice")))
        fk.check(rep.startswith("235 2.7.0"), f"alice logs in (authzid=authcid): {rep}")
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain(
            "alice", PASSWORDS["alice"])))
        fk.check(rep.startswith("503 5.5.1"), f"AUTH after AUTH: {rep}")
        code, _ = s.mail("alice@snd.test", ["AUTH=<>"])
        fk.check(code == 250, f"MAIL with AUTH=<> after login: {code}")
        rep = authpeer.reply(s.docmd("AUTH", "LOGIN"))
        fk.check(rep.startswith("503 5.5.1"), f"AUTH inside a transaction: {rep}")
        code, _ = s.rcpt("a@dst.test")
        fk.check(code == 250, "RCPT after login")
        code, _ = s.data(BODY)
        fk.check(code == 250, f"alice's message queued ({code})")

    # Clients that leave while their password is being checked (on the
    # thread pool): the sessions end cleanly and the relay goes on.
    before = len([e for e in r.events() if e.get("event") == "smtpd_disconnect"])
    for k in range(5):
        with authpeer.tls_session(r.port) as s:
            s.send(("AUTH PLAIN " + authpeer.plain("alice", PASSWORDS["alice"]) +
                    "\r\nMAIL FROM:<gone@snd.test>\r\n").encode())
            s.sock.close()
    r.wait_log(lambda e: e.get("event") == "smtpd_disconnect", count=before + 5,
               timeout=30)
    fk.check(True, "5 sessions that left during verification were closed")
    with authpeer.tls_session(r.port) as s:
        s.login("bob", PASSWORDS["bob"])
    fk.check(r.proc.poll() is None, "the relay still serves logins after that")

    with authpeer.tls_session(r.port) as s:
        ir = authpeer.plain(LONG_USER, LONG_PW)
        fk.check(len("AUTH PLAIN " + ir) > 512, "a long AUTH PLAIN line")
        rep = authpeer.reply(s.docmd("AUTH", "PLAIN " + ir))
        fk.check(rep.startswith("235 2.7.0"),
                 f"a {len(ir) + 13}-octet AUTH line logs in: {rep[:60]}")

    # swaks: PLAIN and LOGIN over STARTTLS.
    rc, out = swaks(r.port, "PLAIN", "alice", PASSWORDS["alice"], "swaks-plain@snd.test")
    fk.check(rc == 0 and "235 2.7.0" in out, f"swaks AUTH PLAIN alice (exit {rc})")
    if rc != 0:
        print(out[-3000:], flush=True)
    rc, out = swaks(r.port, "LOGIN", "bob", PASSWORDS["bob"], "swaks-login@snd.test")
    fk.check(rc == 0 and "235 2.7.0" in out, f"swaks AUTH LOGIN bob (exit {rc})")
    if rc != 0:
        print(out[-3000:], flush=True)
    rc, out = swaks(r.port, "PLAIN", "bob", WRONG, "swaks-wrong@snd.test")
    fk.check(rc != 0 and "535 5.7.8" in out, f"swaks with a wrong password fails ({rc})")
    # smtplib's own login (it picks PLAIN), with a bcrypt hash.
    with authpeer.tls_session(r.port) as s:
        s.login("carol", PASSWORDS["carol"])
        s.sendmail("carol@snd.test", ["c@dst.test"], BODY, ["AUTH=carol@snd.test"])
    fk.check(True, "smtplib login carol and sendmail with AUTH=")

    r.wait_log(lambda e: e.get("event") == "smtpd_queued", count=4, timeout=30)
    msgs = json.loads(qtool(r, "list", "--json"))
    by_sender = {m["sender"]: m["id"] for m in msgs}
    want = {"alice@snd.test": "alice", "swaks-plain@snd.test": "alice",
            "swaks-login@snd.test": "bob", "carol@snd.test": "carol"}
    fk.check(set(by_sender) == set(want),
             f"exactly the logged-in messages are queued ({sorted(by_sender)})")
    for sender, user in want.items():
        if sender not in by_sender:
            continue
        show = json.loads(qtool(r, "show", by_sender[sender], "--json", "--body"))
        fk.check(show.get("auth_user") == user,
                 f"qtool show --json {sender}: auth_user {show.get('auth_user')!r}")
        text = qtool(r, "show", by_sender[sender])
        fk.check(f"auth_user: {user}" in text.splitlines(),
                 f"qtool show {sender}: 'auth_user: {user}'")
        body = show.get("body", "")
        first = body.split("\r\n\r\n")[0]
        fk.check(first.startswith("Received: ") and " with ESMTPSA id " in first,
                 f"{sender}: Received ... with ESMTPSA ({first[:160]!r})")
        fk.check(user not in first, f"{sender}: the user is not in the header")
    queued = [e for e in r.events() if e.get("event") == "smtpd_queued"]
    fk.check(sorted(e.get("user") for e in queued) == ["alice", "alice", "bob", "carol"],
             f"smtpd_queued logs user= ({[e.get('user') for e in queued]})")
    ev = r.events()
    ok = [e for e in ev if e.get("event") == "auth_ok"]
    failed = [e for e in ev if e.get("event") == "auth_failed"]
    fk.check({e.get("user") for e in ok} == {"alice", "bob", "carol", LONG_USER} and
             all(e.get("client") == "127.0.0.1" and e.get("mechanism") in ("PLAIN", "LOGIN")
                 for e in ok), "auth_ok logs client, user and mechanism")
    fk.check(any(e.get("user") == "mallory" and e.get("reason") for e in failed),
             "auth_failed logs the unknown user name with a reason")
    fk.check(not any(e.get("user") in ("admin", "root") for e in ok),
             "a hostile user name forges no auth_ok line")
    fk.check(any(e.get("user", "").startswith('x" event=auth_ok') for e in failed),
             "the hostile user name is in auth_failed, escaped, as sent")
    with open(r.log, "rb") as f:
        log = f.read()
    for pw in list(PASSWORDS.values()) + [WRONG]:
        fk.check(pw.encode() not in log, f"the password {pw!r} is in no log line")
    m = metrics(int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"]))
    fk.check(m.get("ok", 0) >= 5 and m.get("failed", 0) >= 5 and "throttled" in m,
             f"postern_auth_total counts ({m})")


def check_combinations(dns_port, crt, key, users_path):
    tls = f"tls_cert {crt}; tls_key {key}; users {users_path};"
    # optional + accept_from 127.0.0.1: the address OR a login.
    with Relay(POSTERN, dns_port, accept_from="127.0.0.1/32",
               listen_extra=tls + " auth optional",
               extra="queue { retry_initial 1h }") as r:
        with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
            s.ehlo("client.test")
            code, _ = s.mail("local@snd.test")
            fk.check(code == 250, f"optional: 127.0.0.1 relays without login ({code})")
        with authpeer.tls_session(r.port) as s:
            code, _ = s.mail("local@snd.test")
            rep = authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain(
                "alice", PASSWORDS["alice"])))
            fk.check(rep.startswith("503 5.5.1") and "transaction" in rep,
                     f"optional: AUTH inside a transaction: {rep}")
        rep = fk.smtp_dialogue(r.port, [b"EHLO outsider.test",
                                        b"MAIL FROM:<out@snd.test>", b"QUIT"],
                               src="127.0.0.2")
        fk.check(rep[0].startswith("220"), "optional: 127.0.0.2 may connect (to log in)")
        fk.check(rep[2].startswith("530 5.7.0"),
                 f"optional: 127.0.0.2 without login is refused at MAIL ({rep[2]})")
        with authpeer.tls_session(r.port, src="127.0.0.2") as s:
            s.login("alice", PASSWORDS["alice"])
            code, _ = s.mail("out@snd.test")
            fk.check(code == 250, f"optional: 127.0.0.2 with a login relays ({code})")
    # required + accept_from 127.0.0.1: the address AND a login.
    with Relay(POSTERN, dns_port, accept_from="127.0.0.1/32",
               listen_extra=tls + " auth required",
               extra="queue { retry_initial 1h }") as r:
        rep = fk.smtp_dialogue(r.port, [b"EHLO outsider.test", b"QUIT"], src="127.0.0.2")
        fk.check(rep[0].startswith("554 5.7.1"),
                 f"required+accept_from: 127.0.0.2 refused at connect ({rep[0]})")
        with smtplib.SMTP("127.0.0.1", r.port, timeout=20) as s:
            s.ehlo("client.test")
            code, _ = s.mail("local@snd.test")
            fk.check(code == 530, f"required+accept_from: 127.0.0.1 needs a login ({code})")
        with authpeer.tls_session(r.port) as s:
            s.login("bob", PASSWORDS["bob"])
            code, _ = s.mail("local@snd.test")
            fk.check(code == 250, f"required+accept_from: 127.0.0.1 with login ({code})")
        st = fk.qstats(QTOOL, r.state)
        fk.check(st["messages"] == 0, "nothing queued by the combination checks")


def main():
    dns = dnspeer.start({"records": {}, "behaviour": {
        "dst.test": {"rcode": "SERVFAIL"},
        "_mta-sts.dst.test": {"rcode": "SERVFAIL"},
    }})
    work = tempfile.mkdtemp(prefix="postern-auth-")
    try:
        users = authpeer.users_file(work, POSTERN, {
            "alice": (PASSWORDS["alice"], "yescrypt"),
            "bob": (PASSWORDS["bob"], "python-sha512"),
            "carol": (PASSWORDS["carol"], "bcrypt"),
            LONG_USER: (LONG_PW, "sha512-crypt"),
        })
        with open(users) as f:
            text = f.read()
        fk.check("alice:$y$" in text and "bob:$6$" in text and "carol:$2b$" in text,
                 "users file with yescrypt, sha512-crypt and bcrypt hashes")
        with pki.PKI() as p:
            crt, key = p.server_cert("relay.test")
            with Relay(POSTERN, dns.port, accept_from=None,
                       listen_extra=f"tls_cert {crt}; tls_key {key}; "
                                    f"auth required; users {users}",
                       extra="queue { retry_initial 1h }\n"
                             "metrics { listen 127.0.0.1:0 }") as r:
                check_required(r, users)
                fk.check(r.stop() == 0, "SIGTERM: exit 0")
            check_combinations(dns.port, crt, key, users)
    finally:
        dns.stop()
        subprocess.run(["rm", "-rf", work])
    fk.finish()


if __name__ == "__main__":
    main()
