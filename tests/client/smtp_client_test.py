"""Integration tests of Postern's SMTP client and TLS layer.

Runs tests/client/smtp_client_driver (argv[1]) against scripted aiosmtpd
peers (tests/peers/smtpd_peer.py) with certificates from tests/peers/pki.py,
and checks both what the client reports and what the server received.
Everything listens on loopback, port 0. Exits non-zero if any check fails.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

import pki
import smtpd_peer

DRIVER = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="postern-client-test-")
FAILURES = []
SANITIZED = bool(os.environ.get("POSTERN_SANITIZED"))


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def body_file(name, data):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# A body with every dot-stuffing case: leading dots, a lone ".", "..",
# dots not at line start, and an empty line.
BODY = (b"Subject: dot stuffing\r\n\r\n.starts with a dot\r\n.\r\n..\r\n"
        b"middle . dot\r\n\r\n...three\r\nlast line\r\n")
BODY_FILE = body_file("body.eml", BODY)
# A large body (about 1.2 MB) whose dot lines fall across chunk borders.
BIG = b"Subject: big\r\n\r\n" + b"".join(
    (b"." if i % 7 == 0 else b"") + (b"line %06d " % i) + b"x" * 50 + b"\r\n"
    for i in range(20000))
BIG_FILE = body_file("big.eml", BIG)


def run(peer, *args, host="127.0.0.1", timeout=90):
    cmd = [DRIVER, "--connect", "%s:%d" % (
        "[%s]" % host if ":" in host else host, peer.port)] + list(args)
    if "--mx" not in args:
        cmd += ["--mx", "mx.test"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, text=True)
    events = []
    for line in r.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            check(False, "driver printed valid JSON: %r" % line)
    if r.returncode != 0:
        check(False, "driver exit status 0 (got %d): %s" % (
            r.returncode, r.stderr[-2000:]))
    return events, r.stderr


def ev(events, kind, n=0):
    found = [e for e in events if e["event"] == kind]
    return found[n] if len(found) > n else None


def rcpt(sent, addr):
    for r in sent["rcpts"]:
        if r["addr"] == addr:
            return r
    return None


# ---------------------------------------------------------------------------

def test_plaintext(p):
    with smtpd_peer.Peer() as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        ready, sent = ev(events, "ready"), ev(events, "sent")
        check(ready and ready["status"] == "OK", "plaintext: session ready")
        check(ready and ready["tls"] == "none" and
              ready["starttls"] == "not_offered",
              "plaintext: TLS level none, STARTTLS not offered")
        check(sent and sent["status"] == "OK" and sent["accepted"] == 1,
              "plaintext: recipient accepted")
        r = sent and rcpt(sent, "a@x.test")
        check(r and r["outcome"] == "ok" and r["reply"]["code"] == 250 and
              r["reply"]["enh"] == "2.0.0" and r["stage"] == "end of DATA",
              "plaintext: result is the final 250 2.0.0 reply")
        check(len(peer.messages) == 1 and not peer.messages[0]["tls"],
              "plaintext: server got one message without TLS")
        check(peer.messages and peer.messages[0]["data"].encode("latin-1") ==
              BODY, "plaintext: body arrives intact (dot-stuffing undone)")
        check(ev(events, "closed") is not None and "QUIT" in peer.commands,
              "plaintext: session closed with QUIT")


def test_big_body(p):
    with smtpd_peer.Peer() as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BIG_FILE)
        sent = ev(events, "sent")
        check(sent and sent["accepted"] == 1, "big body: accepted")
        check(peer.messages and peer.messages[0]["data"].encode("latin-1") ==
              BIG, "big body: %d bytes with dot lines across chunks intact"
              % len(BIG))
        check(peer.messages and "SIZE=%d" % len(BIG) in
              peer.messages[0]["mail_options"], "big body: SIZE= sent")


def test_starttls_valid(p):
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE, "--sessions", "2")
        r0, r1 = ev(events, "ready", 0), ev(events, "ready", 1)
        check(r0 and r0["status"] == "OK" and r0["tls"] == "authenticated" and
              r0["starttls"] == "done" and r0["tls_error"] == "",
              "valid cert: TLS level authenticated")
        check(r0 and r0["pkix_ok"] and r0["name_ok"],
              "valid cert: PKIX and name both verified")
        check(r0 and r0["chain_len"] >= 1 and r0["leaf_der_len"] > 100,
              "valid cert: peer chain exposed as DER")
        check(r0 and r0["version"] in ("TLSv1.2", "TLSv1.3"),
              "valid cert: TLS 1.2 or newer (%s)" % (r0 and r0["version"]))
        check(r0 and not r0["resumed"] and r1 and r1["resumed"] and
              r1["tls"] == "authenticated",
              "valid cert: second session resumed and still authenticated")
        check(len(peer.messages) == 2 and all(m["tls"] for m in peer.messages)
              and all(m["data"].encode("latin-1") == BODY
                      for m in peer.messages),
              "valid cert: both messages received over TLS, intact")


def tls_case(p, label, crt, key, want_pkix, want_name, err_part):
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        r = ev(events, "ready")
        check(r and r["status"] == "OK" and r["tls"] == "encrypted" and
              r["starttls"] == "done",
              "%s: TLS level encrypted (not authenticated)" % label)
        check(r and r["pkix_ok"] == want_pkix and r["name_ok"] == want_name,
              "%s: pkix_ok=%s name_ok=%s" % (label, want_pkix, want_name))
        check(r and err_part in r["tls_error"],
              "%s: verification error says %r (%r)" % (
                  label, err_part, r and r["tls_error"]))
        check(len(peer.messages) == 1 and peer.messages[0]["tls"],
              "%s: the caller may still send; message arrived over TLS"
              % label)


def test_self_signed(p):
    crt, key = p.server_cert("mx.test", self_signed=True)
    tls_case(p, "self-signed", crt, key, False, True, "self")


def test_wrong_name(p):
    crt, key = p.server_cert("other.test")
    tls_case(p, "wrong name", crt, key, True, False, "does not match mx.test")


def test_expired(p):
    crt, key = p.server_cert("mx.test", expired=True)
    tls_case(p, "expired", crt, key, False, True, "expired")


def test_starttls_refused(p):
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key,
                         starttls_refuse=True) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        r = ev(events, "ready")
        check(r and r["status"] == "OK" and r["tls"] == "none" and
              r["starttls"] == "refused",
              "STARTTLS refused: ready in plaintext, reported as refused")
        check(r and "454 4.7.0" in r["tls_error"] and
              r["last_reply"]["code"] == 454,
              "STARTTLS refused: the 454 reply is kept")
        check(len(peer.messages) == 1 and not peer.messages[0]["tls"],
              "STARTTLS refused: the caller chose to send in plaintext")


def test_handshake_failure(p):
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key,
                         starttls_garbage=True) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        r = ev(events, "ready")
        check(r and r["status"] in ("TLS", "PROTO") and
              r["starttls"] == "failed" and r["tls_error"] != "",
              "handshake failure: reported with a reason (%r)" % (
                  r and r["tls_error"]))
        check(ev(events, "sent") is None and not peer.messages and
              peer.commands.count("EHLO") == 1,
              "handshake failure: no plaintext retry by the client")


def test_no_starttls_wanted(p):
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--no-starttls", "--rcpt",
                        "a@x.test", "--body-file", BODY_FILE)
        r = ev(events, "ready")
        check(r and r["tls"] == "none" and r["starttls"] == "not_wanted" and
              "STARTTLS" not in peer.commands,
              "STARTTLS offered but not wanted: not used")


def test_multiline(p):
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key, multiline=True,
                         rcpt_replies={"c@x.test": "550 5.1.1 no such user"}
                         ) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--rcpt", "c@x.test", "--body-file", BODY_FILE)
        r, s = ev(events, "ready"), ev(events, "sent")
        check(r and r["status"] == "OK" and r["tls"] == "authenticated",
              "multi-line: greeting, EHLO and STARTTLS replies understood")
        ra, rc = s and rcpt(s, "a@x.test"), s and rcpt(s, "c@x.test")
        check(ra and ra["outcome"] == "ok" and ra["reply"]["lines"] == 3 and
              ra["reply"]["enh"] == "2.0.0",
              "multi-line: 3-line final reply parsed with its enhanced code")
        check(rc and rc["outcome"] == "perm" and rc["reply"]["lines"] == 3 and
              rc["reply"]["enh"] == "5.1.1" and
              rc["reply"]["text"].startswith("no such user"),
              "multi-line: 3-line 550 5.1.1 kept for the DSN")
        check(len(peer.messages) == 1, "multi-line: message delivered")


def mixed(p, pipelining):
    label = "mixed RCPT (%s)" % ("PIPELINING" if pipelining else "no pipelining")
    with smtpd_peer.Peer(pipelining=pipelining, rcpt_replies={
            "b@x.test": "451 4.2.0 mailbox busy, try later",
            "c@x.test": "550 5.1.1 user unknown"}) as peer:
        events, err = run(peer, "--debug", "--rcpt", "a@x.test", "--rcpt",
                          "b@x.test", "--rcpt", "c@x.test", "--rcpt",
                          "d@x.test", "--body-file", BODY_FILE)
        s = ev(events, "sent")
        if not check(s is not None, "%s: got a result" % label):
            return
        want = {"a@x.test": ("ok", "2.0.0", "end of DATA"),
                "b@x.test": ("temp", "4.2.0", "RCPT"),
                "c@x.test": ("perm", "5.1.1", "RCPT"),
                "d@x.test": ("ok", "2.0.0", "end of DATA")}
        for addr, (outcome, enh, stage) in want.items():
            r = rcpt(s, addr)
            check(r and r["outcome"] == outcome and r["reply"]["enh"] == enh
                  and r["stage"] == stage and r["remote"],
                  "%s: %s -> %s %s in reply to %s" % (label, addr, outcome,
                                                      enh, stage))
        check(s["status"] == "OK" and s["accepted"] == 2,
              "%s: session still usable, 2 accepted" % label)
        check(peer.messages and
              peer.messages[0]["rcpt_tos"] == ["a@x.test", "d@x.test"],
              "%s: server delivered to the accepted recipients only" % label)
        grouped = any("event=smtp_client_send" in line and "MAIL FROM" in line
                      and "RCPT TO:<d@x.test>" in line and "DATA" in line
                      for line in err.splitlines())
        check(grouped == pipelining,
              "%s: MAIL, RCPTs and DATA %s one write" % (
                  label, "in" if pipelining else "not in"))


def test_mixed_pipelining(p):
    mixed(p, True)


def test_mixed_no_pipelining(p):
    mixed(p, False)


def test_mail_refused(p):
    with smtpd_peer.Peer(mail_reply="553 5.7.1 sender rejected") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--rcpt", "b@x.test",
                        "--body-file", BODY_FILE, "--body-file", BODY_FILE)
        s0, s1 = ev(events, "sent", 0), ev(events, "sent", 1)
        check(s0 and s0["status"] == "OK" and all(
            r["outcome"] == "perm" and r["stage"] == "MAIL" and
            r["reply"]["enh"] == "5.7.1" for r in s0["rcpts"]),
            "MAIL refused: every recipient gets the MAIL reply")
        check(s1 is not None and not peer.messages,
              "MAIL refused: session reused for the next message, nothing sent")


def test_421_mid_session(p):
    with smtpd_peer.Peer(reply_421={"command": "RCPT", "nth": 2}) as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--rcpt", "b@x.test",
                        "--rcpt", "c@x.test", "--body-file", BODY_FILE,
                        "--body-file", BODY_FILE)
        s = ev(events, "sent")
        check(s and s["status"] == "CLOSED", "421: session ended")
        check(s and all(r["outcome"] == "temp" for r in s["rcpts"]),
              "421: every recipient is a temporary failure")
        check(s and all(r["reply"]["code"] == 421 and r["remote"] and
                        r["reply"]["enh"] == "4.3.2" for r in s["rcpts"]),
              "421: results carry the server's 421 4.3.2 reply")
        check(ev(events, "sent", 1) is None and not peer.messages,
              "421: no second message attempted, nothing delivered")
        check(ev(events, "closed") is not None, "421: closed cleanly")


def test_drop_after_354(p):
    with smtpd_peer.Peer(drop_in_data="after_354") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--rcpt", "b@x.test",
                        "--body-file", BIG_FILE)
        s = ev(events, "sent")
        check(s and s["status"] in ("CLOSED", "IO") and
              all(r["outcome"] == "temp" and r["reply"]["enh"] == "4.4.2" and
                  not r["remote"] for r in s["rcpts"]),
              "drop during DATA: all recipients temporary 4.4.2 (%s)" % (
                  s and s["status"]))
        check(peer.dropped == 1 and not peer.messages,
              "drop during DATA: the server hung up mid-body")


def test_drop_before_final_reply(p):
    with smtpd_peer.Peer(drop_in_data="before_reply") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE)
        s = ev(events, "sent")
        r = s and rcpt(s, "a@x.test")
        check(r and r["outcome"] == "temp" and r["reply"]["enh"] == "4.4.2" and
              r["stage"] == "end of DATA",
              "drop before the final reply: temporary 4.4.2 at end of DATA")


def test_two_messages(p):
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key) as peer:
        other = body_file("second.eml", b"Subject: second\r\n\r\n.x\r\n")
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE, "--body-file", other)
        s0, s1 = ev(events, "sent", 0), ev(events, "sent", 1)
        check(s0 and s1 and s0["accepted"] == 1 and s1["accepted"] == 1 and
              s1["messages"] == 2, "reuse: two messages on one session")
        # RFC 5321 §4.1.1.4: the reply to "." ends the transaction, so the
        # second MAIL follows without RSET.
        check(peer.commands.count("EHLO") == 2 and
              peer.commands.count("RSET") == 0 and
              peer.commands.count("STARTTLS") == 1,
              "reuse: one connection, no RSET after a completed message")
        check([m["data"].encode("latin-1") for m in peer.messages] ==
              [BODY, b"Subject: second\r\n\r\n.x\r\n"],
              "reuse: both bodies intact, in order")


def test_rset_after_refused(p):
    # Every recipient refused: DATA is refused too and the transaction never
    # reached its ".", so the next message on the session starts with RSET.
    with smtpd_peer.Peer(rcpt_replies={"a@x.test": "550 5.1.1 no such user"}
                         ) as peer:
        other = body_file("third.eml", b"Subject: third\r\n\r\nx\r\n")
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE,
                        "--body-file", other)
        s0, s1 = ev(events, "sent", 0), ev(events, "sent", 1)
        check(s0 and s1 and s0["accepted"] == 0 and s1["accepted"] == 0,
              "refused twice: both messages report the 550")
        check(peer.commands.count("RSET") == 1 and
              peer.commands.count("MAIL") == 2,
              "refused transaction: RSET before the next MAIL (%s)" %
              peer.commands)


def sent_by_message(events):
    return {e["message"]: e for e in events if e["event"] == "sent"}


def test_chain(p):
    # smtp_client_send_next: each message's MAIL/RCPT/DATA ride behind the
    # previous "." (RFC 2920 §3.1); every body arrives intact, in order, and
    # no RSET is needed between completed messages.
    bodies = [BODY, b"Subject: two\r\n\r\n.dot\r\n", BIG,
              b"Subject: four\r\n\r\nx\r\n"]
    files = [body_file("chain%d.eml" % i, b) for i, b in enumerate(bodies)]
    for tls in (False, True):
        kw = {}
        args = ["--rcpt", "a@x.test", "--chain"]
        if tls:
            crt, key = p.server_cert("mx.test")
            kw = dict(tls_cert=crt, tls_key=key)
            args += ["--ca", p.ca_file]
        else:
            args += ["--no-starttls"]
        for f in files:
            args += ["--body-file", f]
        what = "chain (%s)" % ("tls" if tls else "plaintext")
        with smtpd_peer.Peer(**kw) as peer:
            events, _ = run(peer, *args)
            sent = sent_by_message(events)
            check(sorted(sent) == [0, 1, 2, 3] and
                  all(e["status"] == "OK" and e["accepted"] == 1
                      for e in sent.values()),
                  "%s: four messages sent, each accepted (%s)" % (
                      what, [(e["message"], e["status"]) for e in events
                             if e["event"] == "sent"]))
            check(not ev(events, "send_error"),
                  "%s: every message could be chained" % what)
            check([m["data"].encode("latin-1") for m in peer.messages] ==
                  bodies, "%s: bodies intact, in order" % what)
            check(peer.commands.count("MAIL") == 4 and
                  peer.commands.count("RSET") == 0,
                  "%s: four MAIL, no RSET (%s)" % (what, peer.commands))


def test_chain_refused(p):
    # Every recipient refused: no transaction reaches its ".", so each
    # chained message goes out after the previous one ended, with RSET.
    with smtpd_peer.Peer(rcpt_replies={"a@x.test": "550 5.1.1 no such user"}
                         ) as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--no-starttls",
                        "--chain", "--body-file", BODY_FILE,
                        "--body-file", BODY_FILE, "--body-file", BODY_FILE)
        sent = sent_by_message(events)
        check(sorted(sent) == [0, 1, 2] and
              all(e["status"] == "OK" and e["accepted"] == 0 and
                  e["rcpts"][0]["outcome"] == "perm" for e in sent.values()),
              "chain refused: three messages, each 550")
        check(peer.commands.count("MAIL") == 3 and
              peer.commands.count("RSET") == 2 and not peer.messages,
              "chain refused: RSET before each later MAIL (%s)" %
              peer.commands)


def test_chain_drop(p):
    # The server hangs up before answering the first ".": the chained
    # message never reached DATA and reports the same temporary failure.
    with smtpd_peer.Peer(drop_in_data="before_reply") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--no-starttls",
                        "--chain", "--body-file", BODY_FILE,
                        "--body-file", BODY_FILE)
        sent = sent_by_message(events)
        ok = sorted(sent) == [0, 1] and all(
            e["status"] != "OK" and e["rcpts"][0]["outcome"] == "temp" and
            e["rcpts"][0]["reply"]["enh"].startswith("4.")
            for e in sent.values())
        check(ok, "chain drop: both messages fail temporarily (%s)" % (
            [(e["message"], e["status"]) for e in events
             if e["event"] == "sent"]))
        check(ev(events, "closed") is not None, "chain drop: closed")


def test_chain_needs_pipelining(p):
    with smtpd_peer.Peer(pipelining=False) as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--no-starttls",
                        "--chain", "--body-file", BODY_FILE,
                        "--body-file", BODY_FILE)
        err = ev(events, "send_error")
        check(err and err["status"] == "STATE",
              "no PIPELINING: chaining is refused (POSTERN_ESTATE)")
        check(len(peer.messages) <= 1,
              "no PIPELINING: nothing was pipelined")


def test_timeouts(p):
    with smtpd_peer.Peer(hang_on="MAIL") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE,
                        "--command-timeout", "700")
        s = ev(events, "sent")
        r = s and rcpt(s, "a@x.test")
        check(s and s["status"] == "TIMEOUT" and r and
              r["outcome"] == "temp" and r["reply"]["enh"] == "4.4.1" and
              not r["remote"],
              "command timeout: temporary 4.4.1, session over")
    with smtpd_peer.Peer(hang_on="GREETING") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE,
                        "--command-timeout", "700")
        r = ev(events, "ready")
        check(r and r["status"] == "TIMEOUT" and r["failed_state"] ==
              "greeting", "greeting timeout: reported before ready")
    with smtpd_peer.Peer(hang_on="DATA_END") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE,
                        "--command-timeout", "60000", "--data-timeout", "700")
        s = ev(events, "sent")
        r = s and rcpt(s, "a@x.test")
        check(s and s["status"] == "TIMEOUT" and r and
              r["outcome"] == "temp" and r["reply"]["enh"] == "4.4.1" and
              r["stage"] == "end of DATA",
              "data timeout after the body: temporary 4.4.1 at end of DATA")
    with smtpd_peer.Peer(delay={"DATA": 0.2}) as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE,
                        "--command-timeout", "5000")
        s = ev(events, "sent")
        check(s and s["accepted"] == 1, "slow server within timeout: fine")


def test_helo_fallback(p):
    with smtpd_peer.Peer(ehlo_refuse=True) as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE)
        r, s = ev(events, "ready"), ev(events, "sent")
        check(r and r["status"] == "OK" and not r["esmtp"] and
              "HELO" in peer.commands, "EHLO refused: HELO fallback")
        check(s and s["accepted"] == 1 and peer.messages and
              peer.messages[0]["mail_options"] == [],
              "HELO session: delivered without ESMTP parameters")


def test_greeting_refused(p):
    with smtpd_peer.Peer(greeting="554 5.3.2 not accepting mail") as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BODY_FILE)
        r = ev(events, "ready")
        check(r and r["status"] == "PROTO" and r["last_reply"]["code"] == 554
              and r["failed_state"] == "greeting",
              "554 greeting: session fails with the server's reply")


def test_hostile_replies(p):
    cases = [
        ("garbage greeting", "HTTP/1.1 400 Bad Request", "malformed"),
        ("overlong reply line", "220 " + "x" * 5000, "too long"),
        ("mixed codes", "220-hello\r\n250 there", "code changes"),
        ("too many lines", "220-x\r\n" * 300 + "220 x", "too many"),
    ]
    for label, greeting, why in cases:
        with smtpd_peer.Peer(greeting=greeting) as peer:
            events, _ = run(peer, "--rcpt", "a@x.test", "--body-file",
                            BODY_FILE)
            r = ev(events, "ready")
            check(r and r["status"] == "PROTO" and
                  why in r["last_reply"]["text"] and
                  r["last_reply"]["code"] == 0,
                  "hostile server, %s: protocol error (%r)" % (
                      label, r and r["last_reply"]["text"]))


def test_local_refusals(p):
    with smtpd_peer.Peer(size_limit=1000) as peer:
        events, _ = run(peer, "--rcpt", "a@x.test", "--body-file", BIG_FILE,
                        "--body-file", BODY_FILE)
        s0, s1 = ev(events, "sent", 0), ev(events, "sent", 1)
        r = s0 and rcpt(s0, "a@x.test")
        check(r and r["outcome"] == "perm" and r["reply"]["enh"] == "5.3.4" and
              not r["remote"] and s0["status"] == "OK",
              "over the server's SIZE: 5.3.4 without sending")
        check(s1 and s1["accepted"] == 1 and len(peer.messages) == 1 and
              peer.commands.count("MAIL") == 1,
              "over SIZE: session still used for the next (small) message")
    with smtpd_peer.Peer() as peer:
        events, _ = run(peer, "--smtputf8", "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        s = ev(events, "sent")
        r = s and rcpt(s, "a@x.test")
        check(r and r["outcome"] == "perm" and r["reply"]["enh"] == "5.6.7" and
              "MAIL" not in peer.commands,
              "SMTPUTF8 needed but not offered: 5.6.7 without sending")
    with smtpd_peer.Peer(smtputf8=True) as peer:
        events, _ = run(peer, "--smtputf8", "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        check(peer.messages and "SMTPUTF8" in peer.messages[0]["mail_options"],
              "SMTPUTF8 offered: MAIL carries SMTPUTF8")


CAP_REQUIRETLS = 1 << 8  # SMTP_CAP_REQUIRETLS


def test_requiretls(p):
    """RFC 8689: MAIL carries REQUIRETLS when the message has it and the
    server offered it after STARTTLS; otherwise nothing is sent and every
    recipient fails locally with 550 5.7.30 (§4.2.1, §5)."""
    crt, key = p.server_cert("mx.test")
    args = ["--ca", p.ca_file, "--rcpt", "a@x.test", "--rcpt", "b@x.test",
            "--body-file", BODY_FILE]
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key, requiretls=True) as peer:
        events, _ = run(peer, "--requiretls", *args)
        r, s = ev(events, "ready"), ev(events, "sent")
        check(r and r["tls"] == "authenticated" and
              r["caps"] & CAP_REQUIRETLS,
              "REQUIRETLS offered after STARTTLS: capability set")
        m = peer.messages[0] if peer.messages else {}
        check(s and s["accepted"] == 2 and m.get("tls") and
              "REQUIRETLS" in m.get("mail_options", []),
              "REQUIRETLS message: MAIL carries REQUIRETLS (%r)" % (
                  m.get("mail_options"),))
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key, requiretls=True) as peer:
        events, _ = run(peer, *args)
        m = peer.messages[0] if peer.messages else {}
        check(m and "REQUIRETLS" not in m.get("mail_options", []),
              "message without REQUIRETLS: MAIL without it")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key) as peer:
        events, _ = run(peer, "--requiretls", *args, "--body-file", BODY_FILE)
        r = ev(events, "ready")
        s0, s1 = ev(events, "sent", 0), ev(events, "sent", 1)
        check(r and r["tls"] == "authenticated" and
              not r["caps"] & CAP_REQUIRETLS,
              "TLS without REQUIRETLS offered: capability clear")
        res = [rcpt(s0, a) for a in ("a@x.test", "b@x.test")] if s0 else []
        check(s0 and s0["status"] == "OK" and s0["accepted"] == 0 and
              all(x and x["outcome"] == "perm" and not x["remote"] and
                  x["reply"]["code"] == 550 and
                  x["reply"]["enh"] == "5.7.30" and x["stage"] == "MAIL"
                  for x in res),
              "REQUIRETLS not offered: every recipient 550 5.7.30, locally "
              "(%r)" % (res,))
        check("MAIL" not in peer.commands and not peer.messages,
              "REQUIRETLS not offered: no MAIL sent")
        check(s1 and s1["status"] == "OK" and ev(events, "closed") and
              "QUIT" in peer.commands,
              "REQUIRETLS not offered: the session stays usable, then QUIT")
    # A server offering it in plaintext does not count (§4.2.1: the EHLO
    # reply after TLS).
    with smtpd_peer.Peer(requiretls=True, requiretls_plaintext=True) as peer:
        events, _ = run(peer, "--requiretls", *args)
        r, s = ev(events, "ready"), ev(events, "sent")
        x = s and rcpt(s, "a@x.test")
        check(r and r["tls"] == "none" and not r["caps"] & CAP_REQUIRETLS,
              "REQUIRETLS offered in plaintext: capability clear")
        check(x and x["reply"]["enh"] == "5.7.30" and not x["remote"] and
              "MAIL" not in peer.commands,
              "REQUIRETLS offered in plaintext only: 5.7.30, no MAIL sent")
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key, requiretls=True) as peer:
        events, _ = run(peer, "--requiretls", "--no-starttls", *args)
        s = ev(events, "sent")
        x = s and rcpt(s, "a@x.test")
        check(x and x["reply"]["enh"] == "5.7.30" and
              "MAIL" not in peer.commands,
              "STARTTLS not used: REQUIRETLS message fails with 5.7.30")


def test_dsn(p):
    args = ["--rcpt", "a@x.test", "--notify", "SUCCESS,FAILURE", "--orcpt",
            "rfc822;a@x.test", "--ret", "HDRS", "--envid", "Q123",
            "--body-file", BODY_FILE]
    with smtpd_peer.Peer(dsn=True) as peer:
        events, _ = run(peer, *args)
        m = peer.messages[0] if peer.messages else {}
        check("RET=HDRS" in m.get("mail_options", []) and
              "ENVID=Q123" in m.get("mail_options", []) and
              m.get("rcpt_options") == [["NOTIFY=SUCCESS,FAILURE",
                                         "ORCPT=RFC822;A@X.TEST"]],
              "DSN offered: RET, ENVID, NOTIFY, ORCPT sent")
    with smtpd_peer.Peer() as peer:
        events, _ = run(peer, *args)
        s = ev(events, "sent")
        check(s and s["accepted"] == 1 and peer.messages and
              peer.messages[0]["rcpt_options"] == [[]],
              "DSN not offered: parameters left out")


def test_local_ip(p):
    with smtpd_peer.Peer(host="127.0.0.1") as peer:
        events, _ = run(peer, "--local-ip", "127.0.0.2", "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        check(peer.messages and peer.messages[0]["peer"] == "127.0.0.2",
              "local_ip: connection comes from 127.0.0.2")


def test_local_ip_unusable(p):
    with smtpd_peer.Peer(host="127.0.0.1") as peer:
        events, _ = run(peer, "--local-ip", "192.0.2.1", "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE)
        r = ev(events, "ready")
        check(r and r["status"] != "OK" and r["failed_state"] == "connecting"
              and r["last_reply"]["enh"] == "4.4.1" and
              ("bind" in r["last_reply"]["text"] or
               "connect" in r["last_reply"]["text"]) and
              ev(events, "closed") is not None,
              "local_ip not on this host: reported later by ready_cb (%r)" % (
                  r and r["last_reply"]["text"]))


def test_ipv6(p):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        print("skip IPv6: ::1 not available")
        return
    crt, key = p.server_cert("mx.test")
    with smtpd_peer.Peer(host="::1", tls_cert=crt, tls_key=key) as peer:
        events, _ = run(peer, "--ca", p.ca_file, "--rcpt", "a@x.test",
                        "--body-file", BODY_FILE, host="::1")
        r = ev(events, "ready")
        check(r and r["tls"] == "authenticated" and len(peer.messages) == 1,
              "IPv6: delivered over [::1] with STARTTLS")


def test_connect_refused(p):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    class Closed:
        pass
    closed = Closed()
    closed.port = port
    events, _ = run(closed, "--rcpt", "a@x.test", "--body-file", BODY_FILE)
    r = ev(events, "ready")
    check(r and r["status"] == "CONNREFUSED" and
          r["failed_state"] == "connecting" and ev(events, "closed"),
          "connection refused: reported by ready_cb, then closed")


def main():
    tests = [v for k, v in sorted(globals().items())
             if k.startswith("test_") and callable(v)]
    with pki.PKI() as p:
        for t in tests:
            print("--- " + t.__name__)
            try:
                t(p)
            except Exception as e:  # a crashing test is a failing test
                check(False, "%s raised %r" % (t.__name__, e))
    if FAILURES:
        print("\n%d check(s) failed:" % len(FAILURES))
        for f in FAILURES:
            print("  " + f)
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
