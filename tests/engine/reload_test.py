"""SIGHUP reload, end to end.

 1. Routes swapped while mail flows: a sender thread keeps submitting while
    the file is rewritten to route everything to another MX and SIGHUP is
    sent. Every message arrives exactly once (at the old or the new MX),
    and mail submitted after "reloaded" goes to the new MX.
 2. A broken file on SIGHUP is rejected with its error (file:line:col) and
    the running configuration stays: mail still goes to the new MX.
 3. A bad policy block is rejected the same way.
 4. SIGTERM afterwards: exit 0 (under ASan, no leak of the retired
    configurations and chains).

Usage: reload_test.py POSTERN_BINARY
"""

import re
import signal
import sys
import threading
import time

import dnspeer
import mxpeer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def msg(subject):
    return f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def subjects(mx):
    with mx.lock:
        return [d.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for _, _, d in mx.messages]


def rewrite(r, fn):
    with open(r.conf) as f:
        text = f.read()
    with open(r.conf, "w") as f:
        f.write(fn(text))


def count(r, event):
    return len([e for e in r.events() if e.get("event") == event])


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    old = mxpeer.MX("127.0.0.1", 0)
    new = mxpeer.MX("127.0.0.1", 0)
    try:
        with Relay(POSTERN, dns.port, delivery=f"route * 127.0.0.1:{old.port}") as r:
            # 1. Swap the route while a sender keeps going.
            stop = threading.Event()
            sent = []

            def sender():
                i = 0
                while not stop.is_set() and i < 200:
                    r.send("s@snd.test", [f"u{i}@any.test"], msg(f"flow{i}"))
                    sent.append(f"flow{i}")
                    i += 1
            t = threading.Thread(target=sender)
            t.start()
            old.wait(5)
            rewrite(r, lambda s: s.replace(f"127.0.0.1:{old.port}", f"127.0.0.1:{new.port}"))
            r.proc.send_signal(signal.SIGHUP)
            r.wait_log(lambda e: e.get("event") == "reloaded")
            new.wait(5)
            stop.set()
            t.join()
            r.send("s@snd.test", ["after@any.test"], msg("after-reload"))
            total = len(sent) + 1
            deadline = time.time() + 30
            while time.time() < deadline and len(subjects(old)) + len(subjects(new)) < total:
                time.sleep(0.05)
            got = subjects(old) + subjects(new)
            check(len(got) == total and sorted(set(got)) == sorted(sent + ["after-reload"]),
                  f"reload under load: {total} messages, each delivered once "
                  f"(old {len(subjects(old))}, new {len(subjects(new))})")
            check("after-reload" in subjects(new), "reload: mail after it uses the new route")

            # 2. A broken file is rejected; the running config stays.
            good = open(r.conf).read()
            rewrite(r, lambda s: s + "delivery { workers }\nnonsense_directive 1\n")
            r.proc.send_signal(signal.SIGHUP)
            rej = r.wait_log(lambda e: e.get("event") == "reload_rejected")
            check(re.search(r"postern\.conf:\d+:\d+:", rej[-1].get("error", "")) is not None,
                  f"broken file: rejected with file:line:col ({rej[-1].get('error')})")
            before = len(subjects(new))
            r.send("s@snd.test", ["x@any.test"], msg("after-broken"))
            new.wait(before + 1)
            check(subjects(new)[-1] == "after-broken" and r.proc.poll() is None,
                  "broken file: the relay keeps running with the previous routes")

            # 3. A bad policy block is rejected the same way.
            with open(r.conf, "w") as f:
                f.write(good + "policy { local { min_tls_level bogus } }\n")
            r.proc.send_signal(signal.SIGHUP)
            r.wait_log(lambda e: e.get("event") == "reload_rejected", count=2)
            before = len(subjects(new))
            r.send("s@snd.test", ["y@any.test"], msg("after-bad-policy"))
            new.wait(before + 1)
            check(count(r, "reloaded") == 1, "bad policy: rejected, still one reload")

            # 4. Reload back to a good file, then stop.
            with open(r.conf, "w") as f:
                f.write(good)
            r.proc.send_signal(signal.SIGHUP)
            r.wait_log(lambda e: e.get("event") == "reloaded", count=2)
            rc = r.stop()
            check(rc == 0, f"SIGTERM after reloads: exit status 0 (got {rc})")
    finally:
        old.stop()
        new.stop()
        dns.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
