"""The SMTP AUTH limiter against a brute-force run: a background process
guesses alice's password from 127.0.0.1 in a loop (several guesses per
session, new sessions when one ends). The limiter engages: the log shows
its attempts delayed (auth_throttled reason=delayed) and then refused
(421 4.7.0, the session closed, reason=refused), and every later session
from that address is refused at once. Meanwhile a real client from
127.0.0.2 logs in as alice with the right password and relays: the name
under attack is delayed for it too (the per-name tarpit), never locked. Behaviour
only: no timing is asserted.

Usage: auth_bruteforce_test.py POSTERN QTOOL
       auth_bruteforce_test.py --brute PORT ROUNDS  (the background process)
"""

import json
import shutil
import smtplib
import subprocess
import sys
import tempfile

import authpeer
import dnspeer
import faultkit as fk
import pki
from relay import Relay

MAX_FAILURES = 6


def brute(port, rounds):
    """Guesses until `rounds` sessions were refused; prints one JSON line
    per reply."""
    refused = 0
    for attempt in range(200):
        try:
            with authpeer.tls_session(port, src="127.0.0.1") as s:
                for k in range(5):
                    code, msg = s.docmd("AUTH", "PLAIN " + authpeer.plain(
                        "alice", f"guess-{attempt}-{k}"))
                    print(json.dumps({"code": code,
                                      "msg": msg.decode("utf-8", "replace")}),
                          flush=True)
                    if code == 421:
                        refused += 1
                        break
        except (smtplib.SMTPException, OSError) as e:
            print(json.dumps({"code": 0, "msg": f"{type(e).__name__}: {e}"}),
                  flush=True)
        if refused >= rounds:
            return


def main():
    if sys.argv[1] == "--brute":
        brute(int(sys.argv[2]), int(sys.argv[3]))
        return
    POSTERN, QTOOL = sys.argv[1], sys.argv[2]
    dns = dnspeer.start({"records": {}, "behaviour": {
        "dst.test": {"rcode": "SERVFAIL"},
        "_mta-sts.dst.test": {"rcode": "SERVFAIL"},
    }})
    work = tempfile.mkdtemp(prefix="postern-authbrute-")
    try:
        users = authpeer.users_file(work, POSTERN, {"alice": ("the-real-one", "yescrypt")})
        with pki.PKI() as p:
            crt, key = p.server_cert("relay.test")
            with Relay(POSTERN, dns.port, accept_from=None,
                       listen_extra=f"tls_cert {crt}; tls_key {key}; auth required; "
                                    f"users {users}; auth_max_failures {MAX_FAILURES}",
                       extra="queue { retry_initial 1h }") as r:
                bg = subprocess.Popen([sys.executable, __file__, "--brute", str(r.port), "3"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                try:
                    # The limiter engages: delays first, then refusals.
                    r.wait_log(lambda e: e.get("event") == "auth_throttled" and
                               e.get("reason") == "refused", timeout=120)
                    # The real client, from its own address, while the
                    # attack runs against the same user name.
                    with authpeer.tls_session(r.port, src="127.0.0.2", timeout=60) as s:
                        s.login("alice", "the-real-one")
                        s.sendmail("alice@snd.test", ["a@dst.test"],
                                   b"Subject: real\r\n\r\nstill works\r\n")
                    fk.check(True, "the real client from 127.0.0.2 logs in and relays")
                    out, _ = bg.communicate(timeout=240)
                finally:
                    if bg.poll() is None:
                        bg.kill()
                        bg.wait()
                replies = [json.loads(l) for l in out.decode().splitlines()
                           if l.startswith("{")]
                codes = [x["code"] for x in replies]
                fk.check(codes.count(535) == MAX_FAILURES,
                         f"exactly {MAX_FAILURES} guesses were checked ({codes.count(535)})")
                fk.check(codes.count(235) == 0, "no guess succeeded")
                fk.check(codes.count(421) >= 3 and all(
                    x["msg"].startswith("4.7.0") for x in replies if x["code"] == 421),
                         f"then every session is refused with 421 4.7.0 ({codes[-6:]})")
                ev = r.events()
                delayed = [e for e in ev if e.get("event") == "auth_throttled" and
                           e.get("reason") == "delayed"]
                fk.check(len([e for e in delayed if e.get("client") == "127.0.0.1"]) >= 3
                         and all(int(e.get("delay_ms", "0")) > 0 for e in delayed),
                         f"the log shows the attacker's attempts delayed ({len(delayed)})")
                # The name under attack is slowed down for everyone, never
                # locked: the real client was delayed, then let in.
                fk.check(any(e.get("client") == "127.0.0.2" and e.get("user") == "alice"
                             for e in delayed),
                         "the real client's login for the attacked name was delayed")
                refused = [e for e in ev if e.get("event") == "auth_throttled" and
                           e.get("reason") == "refused"]
                fk.check(len(refused) >= 3 and all(e.get("client") == "127.0.0.1"
                                                   for e in refused),
                         f"the log shows refusals for 127.0.0.1 ({len(refused)})")
                failed = [e for e in ev if e.get("event") == "auth_failed"]
                fk.check(len(failed) == MAX_FAILURES and all(
                    e.get("user") == "alice" and e.get("client") == "127.0.0.1"
                    for e in failed), "each failure is logged with client and user")
                fk.check(any(e.get("event") == "auth_ok" and e.get("client") == "127.0.0.2"
                             for e in ev), "auth_ok for the real client")
                st = fk.qstats(QTOOL, r.state)
                fk.check(st["messages"] == 1, f"only the real client's message is queued "
                         f"({st['messages']})")
                fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    fk.finish()


if __name__ == "__main__":
    main()
