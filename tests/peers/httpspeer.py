#!/usr/bin/python3
"""httpspeer - a scripted HTTPS server for Postern's tests (http.server + ssl).

It listens on 127.0.0.1 or another loopback address, ::1 included (port 0
by default) and answers each path from a
config: status, content type, body, delay, redirect, or no answer at all.
Used for MTA-STS policy fetches (GET) and TLS report submissions (POST,
RFC 8460 §5.4) by net/https, and their end-to-end tests.

Use from a test (in-process; threads, stopped on exit):

    import httpspeer, pki
    ca = pki.PKI()                 # test CA (tests/peers/pki.py, openssl CLI)
    cert, key = ca.server_cert("mta-sts.example.org")
    with httpspeer.start(config, cert, key) as p:
        # trust ca.ca_file on the client side
        ... fetch https://mta-sts.example.org:<p.port>/... at 127.0.0.1 ...
        p.requests()     # [{"path": ..., "host": ..., "method": "GET"}, ...]
        p.posts()        # the POSTs only, each also with what was sent:
                         # {"method": "POST", "path", "host",
                         #  "content_type", "content_length" (the header,
                         #  an int or None), "transfer_encoding", "expect"
                         #  (headers or None), "body" (bytes; None when the
                         #  route closed before reading it), "complete"
                         #  (the whole announced body arrived)}
        p.connections()  # TCP connections accepted so far
        p.handshake_errors()  # TLS handshakes that failed (client refused)

or as a separate process (`spawn(config, cert, key)` does this for you and
returns an object with .port and .stop()):

    /usr/bin/python3 tests/peers/httpspeer.py --config c.json \
        --cert C --key K [--port-file F] [--port N] [--address 127.0.0.1]

It prints "port N" on stdout once listening (and writes N to --port-file);
SIGTERM stops it.

Certificates come from pki.py (the shared test PKI): valid, expired,
self-signed or wrongly named leaves, and a second pki.PKI() is an
untrusted CA.

Config (JSON, or a dict for start()):

    {
      "routes": {
        "/.well-known/mta-sts.txt": {
          "status": 200,                 # default 200
          "content_type": "text/plain",  # default text/plain; null: none
          "body": "version: STSv1\\n",   # text (UTF-8) ...
          "body_size": 70000,            # ... or that many bytes of "x"
          "chunked": false,              # no Content-Length, chunked coding
          "delay": 0.0,                  # seconds before answering
          "hang": false,                 # read the request, never answer
          "raw": "garbage\\r\\n",          # send this instead of HTTP, close
          "close_early": false,          # POST: close after the headers,
                                         # without reading the body
          "location": "https://...",     # Location header (for 3xx)
          "wait_for": 2,                 # answer once 2 requests for this
                                         # path are in (503 after 10 s)
          "headers": {"X-A": "b"}        # more headers
        }
      },
      "default": {"status": 404, "body": "not found\\n"},  # other paths
      "handshake": true                  # false: accept TCP, never TLS
    }

A route answers GET and POST alike; a POST's body (Content-Length or
chunked, at most POST_MAX bytes) is read and recorded before the route's
answer (status, delay, hang, raw...) is given.
"""

import argparse
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

# Largest POST body read (a TLS report is at most a few MiB compressed).
POST_MAX = 64 << 20

# ---- Server ---------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpspeer"

    def setup(self):
        peer = self.server.peer
        peer._count("connections")
        if not peer.handshake:
            peer.stopping.wait()
            raise ConnectionAbortedError("peer stopped")
        self.request.settimeout(10)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            peer._count("handshake_errors")
            raise
        super().setup()

    def log_message(self, fmt, *args):
        pass

    def _write(self, data):
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except (OSError, ssl.SSLError):
            return False

    def _read_body(self):
        """Reads a POST body: (bytes, complete). Chunked when the client says
        so, else Content-Length bytes (none without one)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    return b"".join(parts), False
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n",
                                                            b""):
                        pass
                    return b"".join(parts), True
                total += size
                if total > POST_MAX:
                    return b"".join(parts), False
                part = self.rfile.read(size)
                parts.append(part)
                if len(part) < size:
                    return b"".join(parts), False
                self.rfile.readline(1024)
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return b"", False
        if n < 0 or n > POST_MAX:
            return b"", False
        body = self.rfile.read(n) if n else b""
        return body, len(body) == n

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method):
        peer = self.server.peer
        path = self.path.split("?", 1)[0]
        route = peer.routes.get(path, peer.default)
        rec = {"path": self.path, "method": method,
               "host": self.headers.get("Host")}
        if method == "POST":
            cl = self.headers.get("Content-Length")
            rec.update({
                "content_type": self.headers.get("Content-Type"),
                "content_length": int(cl) if cl and cl.isdigit() else None,
                "transfer_encoding": self.headers.get("Transfer-Encoding"),
                "expect": self.headers.get("Expect"),
                "body": None, "complete": False})
            if not route.get("close_early"):
                try:
                    rec["body"], rec["complete"] = self._read_body()
                except (OSError, ssl.SSLError):
                    pass
        with peer.lock:
            peer._requests.append(rec)
            peer._per_path[path] = peer._per_path.get(path, 0) + 1
            peer.cond.notify_all()
        self.close_connection = True
        if route.get("close_early"):
            # The body is left unread in the socket: closing now resets the
            # connection under a client still sending.
            return
        if route.get("hang"):
            peer.stopping.wait()
            return
        if "raw" in route:
            # Not HTTP at all ("" closes without a word).
            self._write(route["raw"].encode())
            try:
                self.request.unwrap()  # a clean TLS close (close_notify)
            except (OSError, ssl.SSLError, ValueError):
                pass
            return
        status = route.get("status", 200)
        want = route.get("wait_for")
        if want:
            with peer.lock:
                if not peer.cond.wait_for(
                        lambda: peer._per_path.get(path, 0) >= want, 10):
                    status = 503
        if route.get("delay"):
            if peer.stopping.wait(route["delay"]):
                return
        if "body_size" in route:
            body = b"x" * route["body_size"]
        else:
            body = route.get("body", "").encode()
        self.send_response(status)
        ctype = route.get("content_type", "text/plain")
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        if route.get("location"):
            self.send_header("Location", route["location"])
        for k, v in route.get("headers", {}).items():
            self.send_header(k, v)
        chunked = route.get("chunked", False)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not chunked:
            self._write(body)
            return
        for i in range(0, len(body), 8192):
            part = body[i:i + 8192]
            if not self._write(b"%x\r\n%s\r\n" % (len(part), part)):
                return
        self._write(b"0\r\n\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        # The TLS handshake runs in the handler's thread (setup), so that a
        # client that never completes it cannot block the accept loop.
        sock, addr = self.socket.accept()
        return (self.peer.ctx.wrap_socket(sock, server_side=True,
                                          do_handshake_on_connect=False),
                addr)

    def handle_error(self, request, client_address):
        pass  # broken clients are the point of many tests


class _Server6(_Server):
    address_family = socket.AF_INET6


class Peer:
    """One scripted HTTPS server; see the module docstring."""

    def __init__(self, config, cert, key, address="127.0.0.1", port=0):
        config = config or {}
        self.routes = config.get("routes", {})
        self.default = config.get("default",
                                  {"status": 404, "body": "not found\n"})
        self.handshake = config.get("handshake", True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self._requests = []
        self._per_path = {}
        self._counts = {"connections": 0, "handshake_errors": 0}
        cls = _Server6 if ":" in address else _Server
        self.server = cls((address, port), _Handler)
        self.server.peer = self
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _count(self, what):
        with self.lock:
            self._counts[what] += 1

    def start(self):
        self._thread.start()
        return self

    def requests(self):
        with self.lock:
            return list(self._requests)

    def posts(self):
        with self.lock:
            return [r for r in self._requests if r["method"] == "POST"]

    def connections(self):
        with self.lock:
            return self._counts["connections"]

    def handshake_errors(self):
        with self.lock:
            return self._counts["handshake_errors"]

    def stop(self):
        self.stopping.set()
        with self.lock:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(config, cert, key, address="127.0.0.1", port=0):
    """Starts a Peer in this process (threads); returns it, listening."""
    return Peer(config, cert, key, address, port).start()


class _Process:
    def __init__(self, proc, port, tmp):
        self.proc, self.port, self._tmp = proc, port, tmp

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in os.listdir(self._tmp):
            os.unlink(os.path.join(self._tmp, f))
        os.rmdir(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def spawn(config, cert, key, address="127.0.0.1"):
    """Runs the peer as a separate process; returns an object with .port,
    .proc and .stop() (also a context manager)."""
    tmp = tempfile.mkdtemp(prefix="httpspeer-")
    cfg, pf = os.path.join(tmp, "config.json"), os.path.join(tmp, "port")
    with open(cfg, "w") as f:
        json.dump(config, f)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                             "--config", cfg, "--cert", cert, "--key", key,
                             "--address", address, "--port-file", pf],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(pf):
            with open(pf) as f:
                text = f.read().strip()
            if text:
                return _Process(proc, int(text), tmp)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _Process(proc, 0, tmp).stop()
    raise RuntimeError("httpspeer did not start")


def main(argv):
    ap = argparse.ArgumentParser(description="scripted HTTPS server")
    ap.add_argument("--config", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    a = ap.parse_args(argv)
    with open(a.config) as f:
        config = json.load(f)
    peer = start(config, a.cert, a.key, a.address, a.port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % peer.port)
        os.rename(tmp, a.port_file)
    print("port %d" % peer.port, flush=True)
    while not done.wait(0.5):
        pass
    peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
