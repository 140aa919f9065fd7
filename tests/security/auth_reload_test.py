"""SIGHUP reloads the SMTP AUTH users file with the configuration: a changed
file takes effect (a new password, a new user, a removed user); a broken
one is refused with its file:line:col in the log (reload_rejected), and the
users loaded before still log in.

Usage: auth_reload_test.py POSTERN QTOOL
"""

import os
import signal
import sys
import tempfile
import shutil

import authpeer
import dnspeer
import faultkit as fk
import pki
from relay import Relay

POSTERN = sys.argv[1]


def login(port, user, password):
    with authpeer.tls_session(port) as s:
        return authpeer.reply(s.docmd("AUTH", "PLAIN " + authpeer.plain(user, password)))


def hup(r, event):
    n = len([e for e in r.events() if e.get("event") == event])
    os.kill(r.pid, signal.SIGHUP)
    return r.wait_log(lambda e: e.get("event") == event, count=n + 1, timeout=30)[-1]


def main():
    dns = dnspeer.start({"records": {}})
    work = tempfile.mkdtemp(prefix="postern-authreload-")
    try:
        users = authpeer.users_file(work, POSTERN, {"alice": ("first-pw", "yescrypt"),
                                                    "bob": ("bob-pw", "sha512-crypt")})
        with pki.PKI() as p:
            crt, key = p.server_cert("relay.test")
            with Relay(POSTERN, dns.port, accept_from=None,
                       listen_extra=f"tls_cert {crt}; tls_key {key}; "
                                    f"auth required; users {users}") as r:
                fk.check(login(r.port, "alice", "first-pw").startswith("235"),
                         "alice logs in with the first password")
                fk.check(login(r.port, "carol", "carol-pw").startswith("535"),
                         "carol is not a user yet")
                # A changed file: alice's new password, carol added, bob gone.
                authpeer.users_file(work, POSTERN, {"alice": ("second-pw", "yescrypt"),
                                                    "carol": ("carol-pw", "bcrypt")})
                ev = hup(r, "reloaded")
                fk.check(any(e.get("event") == "auth_users_reloaded" and e.get("users") == "2"
                             for e in r.events()), "the reload logs the new users table")
                fk.check(login(r.port, "alice", "second-pw").startswith("235"),
                         "after SIGHUP: alice's new password works")
                fk.check(login(r.port, "alice", "first-pw").startswith("535"),
                         "after SIGHUP: alice's old password does not")
                fk.check(login(r.port, "carol", "carol-pw").startswith("235"),
                         "after SIGHUP: carol, added, logs in")
                fk.check(login(r.port, "bob", "bob-pw").startswith("535"),
                         "after SIGHUP: bob, removed, cannot")
                # A broken file: line 3 has an MD5 hash.
                authpeer.users_file(work, POSTERN, {"alice": ("third-pw", "yescrypt")},
                                    extra="dave:$1$saltsalt$abcdefghijklmnopqrstuv\n")
                ev = hup(r, "reload_rejected")
                err = ev.get("error", "")
                fk.check(err.startswith(f"{users}:3:6: ") and "weak" in err,
                         f"broken users file: reload_rejected with file:line:col ({err!r})")
                fk.check(login(r.port, "alice", "second-pw").startswith("235"),
                         "after the rejected reload the users before still log in")
                fk.check(login(r.port, "alice", "third-pw").startswith("535"),
                         "nothing of the broken file was taken")
                fk.check(r.stop() == 0, "SIGTERM: exit 0")
    finally:
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    fk.finish()


if __name__ == "__main__":
    main()
