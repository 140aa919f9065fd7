"""hostile_mx - scripted TCP servers that play broken or malicious MX hosts.

    import hostile_mx
    h = hostile_mx.Hostile({"127.0.0.10": "trickle", "127.0.0.11": "silent"})
    h.port                    # the same port on every address
    h.sessions[addr]          # number of connections each one accepted
    h.stop()

Behaviours (one per listening address):
    trickle    the greeting comes one byte every TRICKLE seconds (20 s)
    silent     accepts and never says anything
    endless    normal greeting, then an endless multi-line EHLO reply
    longline   a 10 MB greeting line without an end
    dropdata   a normal dialogue up to 354, reads part of the body, hangs up
    badreply   greeting, then an EHLO reply that is not SMTP at all
    onlyone    serves one session at a time, slowly (0.3 s per reply, RCPT
               250, DATA 250); every other concurrent session is greeted
               with "421 4.7.0 too many connections" and closed
    inject     replies full of control bytes and forged log keys
               (INJECT below); RCPT is refused with 550 and one of them
"""

import socket
import threading
import time

TRICKLE = 20.0
INJECT = (b"x\x00\x01\x1b[2J\r event=delivery status=sent dsn=2.0.0 "
          b"\x7f\x80\xff\\\" level=error")


class Hostile:
    def __init__(self, modes, port=0):
        self.modes = dict(modes)
        self.sessions = {a: 0 for a in modes}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = []
        self._conns = []
        for attempt in range(50):
            try:
                self._bind_all(port)
                break
            except OSError:
                for s in self._socks:
                    s.close()
                self._socks = []
                if port:
                    raise
        else:
            raise OSError("no common free port")
        for s, addr in self._socks:
            threading.Thread(target=self._accept, args=(s, addr), daemon=True).start()

    def _bind_all(self, port):
        for addr in self.modes:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            port = s.getsockname()[1]
            s.listen(64)
            self._socks.append((s, addr))
        self.port = port

    def _accept(self, s, addr):
        s.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.sessions[addr] += 1
                self._conns.append(c)
            threading.Thread(target=self._serve, args=(c, self.modes[addr]),
                             daemon=True).start()

    def _sleep(self, t):
        return self._stop.wait(t)

    def _serve(self, c, mode):
        try:
            getattr(self, "_" + mode)(c, c.makefile("rb"))
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _trickle(self, c, f):
        for b in b"220 mx.test slow\r\n":
            c.sendall(bytes([b]))
            if self._sleep(TRICKLE):
                return

    def _silent(self, c, f):
        c.settimeout(0.5)
        while not self._stop.is_set():
            try:
                if c.recv(4096) == b"":
                    return
            except socket.timeout:
                pass

    def _endless(self, c, f):
        c.sendall(b"220 mx.test ESMTP\r\n")
        f.readline()
        line = b"250-" + b"x" * 60 + b"\r\n"
        while not self._stop.is_set():
            c.sendall(line * 100)

    def _longline(self, c, f):
        chunk = b"220 " + b"y" * 65532
        c.settimeout(5)
        for _ in range(160):  # 10 MB, no CRLF
            c.sendall(chunk)
        self._silent(c, f)

    def _badreply(self, c, f):
        c.sendall(b"220 mx.test ESMTP\r\n")
        f.readline()
        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self._silent(c, f)

    def _onlyone(self, c, f):
        with self.lock:
            busy = getattr(self, "_busy", 0)
            self._busy = busy + 1
        try:
            if busy:
                c.sendall(b"421 4.7.0 too many connections from you\r\n")
                return
            c.sendall(b"220 mx.test ESMTP\r\n")
            while True:
                l = f.readline()
                if not l:
                    return
                cmd = l[:4].upper()
                if self._sleep(0.3):
                    return
                if cmd == b"EHLO":
                    c.sendall(b"250-mx.test\r\n250 8BITMIME\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    with self.lock:
                        self.delivered = getattr(self, "delivered", 0) + 1
                    c.sendall(b"250 2.0.0 ok\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"250 ok\r\n")
        finally:
            with self.lock:
                self._busy -= 1

    def _inject(self, c, f):
        c.sendall(b"220 mx.test " + INJECT + b"\r\n")
        while True:
            l = f.readline()
            if not l:
                return
            cmd = l[:4].upper()
            if cmd == b"EHLO":
                c.sendall(b"250-mx.test " + INJECT + b"\r\n250 8BITMIME\r\n")
            elif cmd == b"RCPT":
                c.sendall(b"550 5.1.1 " + INJECT + b"\r\n")
            elif cmd == b"QUIT":
                c.sendall(b"221 " + INJECT + b"\r\n")
                return
            elif cmd == b"DATA":
                c.sendall(b"554 5.5.1 no valid recipients " + INJECT + b"\r\n")
            else:
                c.sendall(b"250 ok " + INJECT + b"\r\n")

    def _dropdata(self, c, f):
        c.sendall(b"220 mx.test ESMTP\r\n")
        while True:
            l = f.readline()
            if not l:
                return
            cmd = l[:4].upper()
            if cmd == b"EHLO":
                c.sendall(b"250-mx.test\r\n250 8BITMIME\r\n")
            elif cmd == b"DATA":
                c.sendall(b"354 go ahead\r\n")
                f.read(20)
                c.shutdown(socket.SHUT_RDWR)
                return
            elif cmd == b"QUIT":
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 ok\r\n")

    def stop(self):
        self._stop.set()
        for s, _ in self._socks:
            s.close()
        with self.lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
