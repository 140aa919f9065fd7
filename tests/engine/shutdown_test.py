"""Graceful shutdown with observers attached: SIGTERM while a message is
being sent and a metrics scraper is around.

 1. A scrape while the relay drains (listeners already closed, a message
    still in flight) is answered, and the in-flight message is delivered
    exactly once before the relay exits 0. (The inbound-session gauge used
    to read the SMTP servers after smtp_server_close had freed them: a use
    after free that ASan reports.)
 2. A scraper that connected and never sent a request does not keep the
    process alive: the relay exits 0 within shutdown_timeout. (Open scrape
    connections used to survive metrics_server_close and hold the main loop
    forever.)
 3. A message still being sent when shutdown_timeout expires is abandoned:
    exit 0 at the timeout, and a restart delivers it exactly once.

Usage: shutdown_test.py POSTERN_BINARY
"""

import signal
import socket
import sys
import threading
import time
import urllib.request

import dnspeer
import rawmx
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


MSG = "From: s@snd.test\r\nTo: r@x.test\r\nSubject: drain\r\n\r\nbody\r\n"


def metrics_port(r):
    return int(r.wait_log(lambda e: e.get("event") == "metrics_listening")[-1]["port"])


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def main():
    dns = dnspeer.start({"ad": False, "records": {}})
    mx = rawmx.RawMX("127.0.0.1", 0)
    try:
        # 1. Scrape while draining.
        delivery = f"route * 127.0.0.1:{mx.port}; shutdown_timeout 20s"
        with Relay(POSTERN, dns.port, delivery=delivery,
                   extra="metrics { listen 127.0.0.1:0 }") as r:
            mport = metrics_port(r)
            mx.hold = threading.Event()
            r.send("s@snd.test", ["a@x.test"], MSG)
            mx.wait_for(lambda: mx.held >= 1, what="held message")
            r.proc.send_signal(signal.SIGTERM)
            r.wait_log(lambda e: e.get("event") == "stopping")
            # The listeners close at once; wait until they are gone.
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", r.port), timeout=1).close()
                    time.sleep(0.05)
                except OSError:
                    break
            time.sleep(0.3)
            text = ""
            try:
                text = scrape(mport)
            except Exception as e:  # noqa: BLE001 - reported as a failure
                print("scrape failed:", e)
            check("postern_inflight_messages 1" in text,
                  "drain: a scrape during the drain is answered (1 in flight)")
            check(r.proc.poll() is None, "drain: the relay waits for the in-flight message")
            mx.hold.set()
            rc = r.proc.wait(30)
            r.proc = None
            check(rc == 0, f"drain: exit status 0 after the message (got {rc})")
            check(len(mx.messages) == 1, "drain: the in-flight message was delivered once")
            mx.hold = None

        # 2. An idle scraper connection does not hold the process.
        delivery = f"route * 127.0.0.1:{mx.port}; shutdown_timeout 2s"
        with Relay(POSTERN, dns.port, delivery=delivery,
                   extra="metrics { listen 127.0.0.1:0 }") as r:
            mport = metrics_port(r)
            idle = socket.create_connection(("127.0.0.1", mport))
            time.sleep(0.2)
            t0 = time.time()
            r.proc.send_signal(signal.SIGTERM)
            try:
                rc = r.proc.wait(15)
            except Exception:  # noqa: BLE001
                r.proc.kill()
                rc = "hung"
            if rc != 0:
                print(r.proc.stdout.read().decode("utf-8", "replace")[-4000:])
            r.proc = None
            check(rc == 0, f"idle scraper: exit status 0 (got {rc}) "
                           f"after {time.time() - t0:.1f}s")
            idle.close()

        # 3. In-flight work that outlives shutdown_timeout is abandoned:
        #    exit 0 at the timeout, the message stays queued and a restart
        #    delivers it.
        delivery = f"route * 127.0.0.1:{mx.port}; shutdown_timeout 1s"
        with Relay(POSTERN, dns.port, delivery=delivery,
                   extra="queue { retry_initial 1s }") as r:
            mx.hold = threading.Event()
            before = len(mx.messages)
            r.send("s@snd.test", ["late@x.test"], MSG)
            mx.wait_for(lambda: mx.held >= 2, what="held message")
            t0 = time.time()
            r.proc.send_signal(signal.SIGTERM)
            try:
                rc = r.proc.wait(15)
            except Exception:  # noqa: BLE001
                r.proc.kill()
                rc = "hung"
            took = time.time() - t0
            if rc != 0:
                print(r.proc.stdout.read().decode("utf-8", "replace")[-4000:])
            r.proc = None
            check(rc == 0 and took < 10,
                  f"timeout: exit status 0 (got {rc}) after {took:.1f}s")
            check(any(e.get("event") == "shutdown_timeout" for e in r.events()),
                  "timeout: logged shutdown_timeout")
            mx.hold.set()
            mx.hold = None
            time.sleep(0.5)  # the held session ends; its message is not ours
            with mx.lock:
                del mx.messages[before:]
            r.start()
            mx.wait(before + 1, timeout=30)
            time.sleep(1)
            check(len(mx.messages) == before + 1,
                  "timeout: the abandoned message is delivered once after restart")
            check(r.stop() == 0, "timeout: second run exits 0")
    finally:
        mx.stop()
        dns.stop()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
