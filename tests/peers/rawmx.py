"""rawmx - a small hand-written SMTP server for behaviour aiosmtpd cannot
script: a server that drops the connection right after accepting STARTTLS,
or one that holds its reply to the final "." until the test releases it.

    import rawmx
    mx = rawmx.RawMX("127.0.0.1", 0, starttls_drop=True)
    mx = rawmx.RawMX(greetings=[(0.5, "421 4.3.2 busy")])  # scripted greetings
    mx.port, mx.messages          # [(mail_from, [rcpt, ...], data_bytes)]
    mx.sessions, mx.starttls      # sessions seen, STARTTLS commands seen
    mx.hold = threading.Event()   # set before a message: the "." reply waits
    mx.greet_gate = threading.Event()  # greetings wait until it is set
    mx.dot_reply = "451 4.3.0 later"  # the reply to "." (250: recorded)
    mx.active, mx.max_active      # sessions open now, and at most so far
    mx.times                      # when each message was accepted (monotonic)
    mx.subjects()                 # the Subject of each message, in order
    mx.dot_delay = 0.05           # wait this long before a 250 to "."
    mx.wait(count, timeout)       # until `count` messages arrived
    mx.wait_for(lambda: mx.held >= 1)
    mx.stop()

Plaintext only; listens on loopback; one thread per session.
"""

import socket
import socketserver
import threading
import time


class _Session(socketserver.StreamRequestHandler):
    def send(self, line):
        mx = self.server.mx
        if line == mx.dot_reply and line.startswith("250"):
            if mx.dot_delay:
                time.sleep(mx.dot_delay)  # connections overlap
            with mx.lock:
                mx.times.append(time.monotonic())
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def setup(self):
        super().setup()
        mx = self.server.mx
        with mx.lock:
            mx.active += 1
            mx.max_active = max(mx.max_active, mx.active)

    def finish(self):
        try:
            super().finish()
        finally:
            mx = self.server.mx
            with mx.lock:
                mx.active -= 1

    def handle(self):
        mx = self.server.mx
        with mx.lock:
            mx.sessions += 1
            script = mx.greetings.pop(0) if mx.greetings else None
        gate = mx.greet_gate
        if gate is not None:
            gate.wait(60)
        if script is not None:
            delay, reply = script
            time.sleep(delay)
            self.send(reply)
            if not reply.startswith("220"):
                self.rfile.readline(1024)  # QUIT, or the client hangs up
                return
        else:
            self.send("220 rawmx.test ESMTP")
        sender, rcpts = None, []
        while True:
            line = self.rfile.readline(1024)
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                ext = ["250-rawmx.test", "250-PIPELINING", "250-8BITMIME"]
                if mx.starttls_drop:
                    ext.append("250-STARTTLS")
                ext.append("250 ENHANCEDSTATUSCODES")
                self.send("\r\n".join(ext))
            elif verb == "STAR":
                with mx.lock:
                    mx.starttls += 1
                # Accept, then hang up before any handshake byte.
                self.send("220 2.0.0 go ahead")
                return
            elif verb == "MAIL":
                sender, rcpts = cmd[10:].split(">")[0].lstrip("<"), []
                self.send("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].split(">")[0].lstrip("<"))
                self.send("250 2.1.5 ok")
            elif verb == "DATA":
                self.send("354 go on")
                data = b""
                while True:
                    l = self.rfile.readline(2000)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l
                hold = mx.hold
                if hold is not None:
                    with mx.lock:
                        mx.held += 1
                    hold.wait(120)
                reply = mx.dot_reply
                if reply.startswith("250"):
                    with mx.lock:
                        mx.messages.append((sender, rcpts, data))
                self.send(reply)
            elif verb == "RSET":
                sender, rcpts = None, []
                self.send("250 2.0.0 ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("502 5.5.1 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RawMX:
    def __init__(self, host="127.0.0.1", port=0, starttls_drop=False,
                 greetings=None):
        self.lock = threading.Lock()
        self.messages = []
        self.sessions = 0
        self.starttls = 0
        self.held = 0  # messages whose "." reply is (or was) being held
        self.hold = None
        self.greet_gate = None
        self.active = 0  # sessions open now
        self.max_active = 0
        self.times = []  # monotonic times of the accepted messages
        self.dot_delay = 0.0
        self.dot_reply = "250 2.0.0 queued"  # e.g. "451 4.3.0 later"
        self.starttls_drop = starttls_drop
        # [(delay_s, "421 4.3.2 busy"), ...]: the greetings of the first
        # sessions, in order of arrival; later sessions get a normal 220.
        self.greetings = list(greetings or [])
        self.srv = _Server((host, port), _Session)
        self.srv.mx = self
        self.host = host
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def subjects(self):
        """The Subject of each message received, in order of arrival."""
        out = []
        # No lock: wait_for() calls predicates with it held; copying the
        # list is atomic under the GIL.
        for _, _, data in list(self.messages):
            for line in data.decode("latin-1").split("\r\n"):
                if line.startswith("Subject: "):
                    out.append(line[9:])
        return out

    def wait(self, count, timeout=30):
        """Until `count` messages arrived; returns them."""
        self.wait_for(lambda: len(self.messages) >= count, timeout,
                      f"{count} messages")
        with self.lock:
            return list(self.messages)

    def wait_for(self, pred, timeout=30, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if pred():
                    return
            time.sleep(0.05)
        raise AssertionError(f"rawmx {self.host}:{self.port}: no {what}")

    def stop(self):
        if self.hold is not None:
            self.hold.set()
        self.srv.shutdown()
        self.srv.server_close()
