"""qtool changing the queue while the relay delivers the same message.

 1. delete while in flight: the MX holds its reply to the final dot while
    `qtool delete` removes the message. After the MX accepts it, the
    relay's result finds nothing to update: it says so at info level
    (it used to log an error, result_commit_failed, as if the disk had
    failed); the message is not attempted again, the queue is empty, and
    the relay goes on delivering new mail.
 2. hold while in flight: the message is held during the attempt, which
    then defers (451). It stays held - not retried although retry_initial
    is 1s - until `qtool release`, after which it is delivered.

Usage: qtool_race_test.py POSTERN_BINARY QTOOL_BINARY
"""

import subprocess
import sys
import threading
import time

import dnspeer
import rawmx
from relay import Relay

POSTERN, QTOOL = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def qtool(r, *args):
    p = subprocess.run([QTOOL, "-d", r.state] + list(args), capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def queued_id(r, rcpt_count):
    evs = r.wait_log(lambda e: e.get("event") == "smtpd_queued", count=rcpt_count)
    return evs[-1]["id"]


def attempts(r, mid):
    return [e for e in r.events() if e.get("event") == "delivery" and e.get("id") == mid]


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    mx = rawmx.RawMX("127.0.0.1", 0)
    try:
        with Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{mx.port}",
                   extra="queue { retry_initial 1s; retry_max 1s }") as r:
            # 1. delete while in flight.
            mx.hold = threading.Event()
            r.send("s@snd.test", ["a@del.test"], msg("deleted"))
            mid = queued_id(r, 1)
            mx.wait_for(lambda: mx.held >= 1, what="held message")
            rc, out = qtool(r, "delete", mid)
            check(rc == 0, f"delete: qtool deleted the in-flight message ({out.strip()})")
            mx.hold.set()
            mx.hold = None
            mx.wait(1)
            r.wait_log(lambda e: e.get("event") == "delivery" and e.get("id") == mid)
            time.sleep(2.5)  # two retry periods
            check(len(attempts(r, mid)) == 1 and len(mx.messages) == 1,
                  "delete: the message is not attempted again")
            rc, out = qtool(r, "list")
            check(rc == 0 and mid not in out, "delete: the queue does not list it")
            check(not [e for e in r.events() if e.get("event") == "result_commit_failed"],
                  "delete: no result_commit_failed error (nothing failed)")
            check(any(e.get("event") == "result_dropped" and e.get("id") == mid
                      for e in r.events()), "delete: the dropped result is logged")
            r.send("s@snd.test", ["b@del.test"], msg("next"))
            mx.wait(2)
            check(True, "delete: the relay goes on delivering")

            # 2. hold while in flight, then a deferral.
            mx.hold = threading.Event()
            mx.dot_reply = "451 4.3.0 later"
            r.send("s@snd.test", ["c@hold.test"], msg("held"))
            mid = queued_id(r, 3)
            mx.wait_for(lambda: mx.held >= 2, what="second held message")
            rc, out = qtool(r, "hold", mid)
            check(rc == 0, "hold: qtool held the in-flight message")
            mx.hold.set()
            mx.hold = None
            r.wait_log(lambda e: e.get("event") == "delivery" and e.get("id") == mid and
                       e.get("status") == "deferred")
            mx.dot_reply = "250 2.0.0 queued"
            time.sleep(3)
            check(len(attempts(r, mid)) == 1, "hold: a held message is not retried")
            rc, out = qtool(r, "list", "--state", "held")
            check(mid in out, "hold: it is listed as held after the attempt")
            rc, out = qtool(r, "release", mid)
            check(rc == 0, "release: qtool released it")
            r.wait_log(lambda e: e.get("event") == "delivery" and e.get("id") == mid and
                       e.get("status") == "sent", timeout=20)
            check(len(mx.messages) == 3, "release: delivered after release")
            check(r.stop() == 0, "clean exit")
    finally:
        mx.stop()
        dns.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
