"""Integration test of net/redis against a real redis-server on loopback.

Runs the redis_drive driver (argv[1]) against redispeer instances and
checks: raw commands; a URL with password and db (and a wrong password
never comes up); callbacks never synchronous; the key prefix; leases (the
limit held across holders, expiry after the ttl, renew, release); GCRA (the
allowed rate over a few seconds near the configured one, computed by Redis'
clock); Redis stopped -> down state and prompt ECLOSED; restarted -> up by
itself and commands work; Redis paused -> ETIMEOUT, then recovery.
"""

import json
import queue
import subprocess
import sys
import threading
import time

import redispeer

DRIVER = sys.argv[1]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


class Drive:
    def __init__(self, url, prefix="", timeout_ms=None):
        args = [DRIVER, url, prefix]
        if timeout_ms:
            args.append(str(timeout_ms))
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.q = queue.Queue()
        self.events = []
        self.n = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def next(self, timeout=10):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_state(self, up, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.next(deadline - time.time())
            if m is None:
                return False
            if m.get("event") == "state":
                check(not m["sync"], "state callback inside a call")
                if m["up"] == up:
                    return True
        return False

    def call(self, line, timeout=10):
        self.n += 1
        mid = str(self.n)
        self.p.stdin.write("%s %s\n" % (mid, line))
        self.p.stdin.flush()
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.next(max(0.01, deadline - time.time()))
            if m is None:
                break
            if m.get("event") == "state":
                self.events.append(m)
                continue
            if m.get("id") == mid:
                check(not m["sync"], "callback ran synchronously: %s" % line)
                return m
        failures.append("no answer to %r" % line)
        return {}

    def quit(self):
        self.p.stdin.write("0 quit\n")
        self.p.stdin.flush()
        rest = []
        while True:
            m = self.next()
            if m is None:
                break
            rest.append(m)
        self.p.wait(10)
        check(self.p.returncode == 0, "driver exit %s" % self.p.returncode)
        check({"event": "closed"} in rest, "close callback ran")
        return rest


def test_commands(peer):
    d = Drive(peer.url(), "t1:")
    check(d.wait_state(True), "up")
    r = d.call("cmd SET k1 hello")
    check(r.get("status") == "OK" and r.get("value") == "OK", "SET: %r" % r)
    r = d.call("cmd GET k1")
    check(r.get("value") == "hello", "GET: %r" % r)
    r = d.call("cmd INCRBY n 5")
    check(r.get("value") == 5, "INCRBY: %r" % r)
    r = d.call("cmd RPUSH l a b")
    r = d.call("cmd LRANGE l 0 -1")
    check(r.get("value") == ["a", "b"], "LRANGE: %r" % r)
    r = d.call("cmd GET missing")
    check(r.get("status") == "OK" and r.get("value") is None, "nil: %r" % r)
    r = d.call("cmd INCR l")
    check(r.get("status") == "REDIS" and "WRONGTYPE" in r.get("value", ""),
          "error reply: %r" % r)
    r = d.call("cmd NOSUCHCOMMAND")
    check(r.get("status") == "REDIS", "unknown command: %r" % r)
    # Primitives prefix their keys.
    r = d.call("acquire dest h1 1 10000")
    check(r.get("granted") is True, "acquire: %r" % r)
    check(peer.command("EXISTS", "t1:dest").startswith(":1"),
          "lease key carries the prefix")
    d.quit()


def test_auth_db():
    peer = redispeer.RedisPeer(password="s3cr3t")
    try:
        d = Drive(peer.url(password="s3cr3t", db=5))
        check(d.wait_state(True), "up with password and db")
        d.call("cmd SET indb5 yes")
        check(peer.command("SELECT", "5").startswith("+OK"), "select")
        # The peer's command() opens a fresh connection per call, so check
        # db 5 through the driver and db 0 through the peer.
        r = d.call("cmd GET indb5")
        check(r.get("value") == "yes", "GET in db 5: %r" % r)
        check(peer.command("EXISTS", "indb5").startswith(":0"),
              "the key is not in db 0")
        d.quit()
        bad = Drive(peer.url(password="wrong"))
        check(not bad.wait_state(True, timeout=1.5), "wrong password never up")
        r = bad.call("cmd PING")
        check(r.get("status") == "CLOSED", "command while down: %r" % r)
        bad.quit()
    finally:
        peer.close()


def test_leases(peer):
    d = Drive(peer.url(), "t2:")
    check(d.wait_state(True), "up")
    got = [d.call("acquire L h%d 3 800" % i) for i in range(5)]
    check([g.get("granted") for g in got] == [True, True, True, False, False],
          "limit 3 across 5 holders: %r" % got)
    check(got[2].get("count") == 3 and got[4].get("count") == 3,
          "counts: %r" % got)
    r = d.call("acquire L h1 3 800")
    check(r.get("granted") is True, "a holder re-acquires its own slot")
    r = d.call("release L h0")
    check(r.get("granted") is True and r.get("count") == 2, "release: %r" % r)
    r = d.call("release L h0")
    check(r.get("granted") is False, "release twice: %r" % r)
    r = d.call("acquire L h3 3 800")
    check(r.get("granted") is True, "release frees a slot: %r" % r)
    r = d.call("acquire L h4 3 800")
    check(r.get("granted") is False, "full again: %r" % r)
    # Keep h1 alive, let the others expire.
    time.sleep(0.5)
    r = d.call("renew L h1 2000")
    check(r.get("granted") is True, "renew: %r" % r)
    time.sleep(0.6)
    r = d.call("acquire L h4 3 800")
    check(r.get("granted") is True and r.get("count") == 2,
          "expired leases freed after the ttl: %r" % r)
    r = d.call("renew L h2 800")
    check(r.get("granted") is False, "renew of an expired lease: %r" % r)
    pttl = peer.command("PTTL", "t2:L")
    check(pttl.startswith(":") and 0 < int(pttl[1:]) <= 2000,
          "the set expires with its latest lease: %r" % pttl)
    d.quit()


def test_gcra(peer):
    d = Drive(peer.url(), "t3:")
    check(d.wait_state(True), "up")
    # Burst: 5 at once, then denied with a wait near 1/rate.
    got = [d.call("gcra G 10 5") for _ in range(6)]
    check([g.get("allowed") for g in got] == [True] * 5 + [False],
          "burst of 5: %r" % got)
    w = got[5].get("wait_ms", -1)
    check(0 < w <= 100, "wait before the next message: %r" % w)
    # Behaviour, not timing (benchmarks measure rates): at burst 1 a second
    # message at once is denied; once its wait has passed one more is
    # allowed, and the one right after it is denied again.
    a = d.call("gcra R 20 1")
    b = d.call("gcra R 20 1")
    check(a.get("allowed") and not b.get("allowed") and b.get("wait_ms", 0) > 0,
          "burst 1: allowed, then denied with a wait: %r %r" % (a, b))
    time.sleep(b.get("wait_ms", 50) / 1000.0 + 0.05)
    c = d.call("gcra R 20 1")
    e = d.call("gcra R 20 1")
    check(c.get("allowed") and not e.get("allowed"),
          "after the wait: one allowed, the next denied: %r %r" % (c, e))
    d.quit()


def test_down_and_back():
    peer = redispeer.RedisPeer()
    try:
        d = Drive(peer.url())
        check(d.wait_state(True), "up")
        check(d.call("cmd PING").get("value") == "PONG", "PING")
        peer.stop()
        check(d.wait_state(False, timeout=5), "state down after stop")
        # Fails (is not queued until Redis returns): CLOSED, not a hang.
        r = d.call("cmd PING")
        check(r.get("status") == "CLOSED", "command while down: %r" % r)
        r = d.call("acquire L h 1 1000")
        check(r.get("status") == "CLOSED", "lease while down: %r" % r)
        peer.start()
        check(d.wait_state(True, timeout=10), "reconnects by itself")
        r = d.call("cmd PING")
        check(r.get("value") == "PONG", "works again: %r" % r)
        # Scripts are gone with the restart: EVALSHA -> NOSCRIPT -> EVAL.
        r = d.call("acquire L h 1 1000")
        check(r.get("status") == "OK" and r.get("granted"),
              "script after restart: %r" % r)
        peer.command("SCRIPT", "FLUSH")
        r = d.call("gcra G2 5 1")
        check(r.get("status") == "OK" and r.get("allowed"),
              "script after SCRIPT FLUSH: %r" % r)
        d.quit()
    finally:
        peer.close()


def test_pause():
    peer = redispeer.RedisPeer()
    try:
        d = Drive(peer.url(), "", 300)
        check(d.wait_state(True), "up")
        peer.pause()
        try:
            r = d.call("cmd PING")
            check(r.get("status") == "TIMEOUT", "paused: %r" % r)
            check(d.wait_state(False, timeout=2) or
                  any(not e["up"] for e in d.events),
                  "a timeout drops the connection: down")
        finally:
            peer.resume()
        check(d.wait_state(True, timeout=10), "up again after resume")
        r = d.call("cmd PING")
        check(r.get("value") == "PONG", "works after resume: %r" % r)
        d.quit()
    finally:
        peer.close()


def main():
    peer = redispeer.RedisPeer()
    try:
        test_commands(peer)
        test_leases(peer)
        test_gcra(peer)
    finally:
        peer.close()
    test_auth_db()
    test_down_and_back()
    test_pause()
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
