"""Helpers for the SMTP server integration tests: start smtpd_driver, talk
raw SMTP over a socket, read the spool the driver's stand-in engine writes.

Every process started here is stopped by Driver.stop() (SIGTERM, then a
check that the driver shut down cleanly and exited 0)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

FAILURES = []


def check(cond, what):
    """Prints what is checked; remembers failures so one run shows them all."""
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def finish():
    if FAILURES:
        print("%d check(s) failed:" % len(FAILURES))
        for f in FAILURES:
            print("  " + f)
        sys.exit(1)
    print("all checks passed")


class Driver:
    def __init__(self, path, *args, loops=2, listen="127.0.0.1:0"):
        self.spool = tempfile.mkdtemp(prefix="smtpd-spool-")
        self.errlog = open(os.path.join(self.spool, "..", os.path.basename(self.spool) + ".log"), "w+b")
        cmd = [path, "--spool", self.spool, "--loops", str(loops),
               "--listen", listen] + [str(a) for a in args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=self.errlog)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("driver did not start: %r\n%s" % (line, self.log()))
        self.port = int(line.split()[1])
        self.host = listen.rsplit(":", 1)[0].strip("[]")

    def log(self):
        self.errlog.flush()
        self.errlog.seek(0)
        return self.errlog.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def terminate(self):
        """Sends SIGTERM once (a second one would kill the driver outright)."""
        if not getattr(self, "signalled", False) and self.proc.poll() is None:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        """SIGTERM; the driver must close every session and exit 0."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                check(False, "driver shut down within 20s of SIGTERM")
                return
        rc = self.proc.returncode
        if not check(rc == 0, "driver exited cleanly (rc=%s)" % rc):
            print(self.log()[-4000:])

    def messages(self):
        """Stored messages: list of (envelope dict, body bytes), by id."""
        out = []
        for name in sorted(os.listdir(self.spool)):
            if not name.endswith(".env"):
                continue
            env = {"rcpt": []}
            with open(os.path.join(self.spool, name), encoding="utf-8") as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition(" ")
                    if k == "rcpt":
                        env["rcpt"].append(v)
                    else:
                        env[k] = v
            with open(os.path.join(self.spool, name[:-4] + ".eml"), "rb") as f:
                out.append((env, f.read()))
        return out

    def wait_messages(self, n, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            m = self.messages()
            if len(m) >= n:
                return m
            time.sleep(0.05)
        return self.messages()

    def set_qfull(self):
        open(os.path.join(self.spool, "QFULL"), "w").close()

    def client(self, **kw):
        return Client(self.host, self.port, **kw)


class Client:
    """A raw SMTP client that sends exactly the bytes it is given."""

    def __init__(self, host, port, source=None, timeout=10):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def reply(self):
        """One (possibly multi-line) reply: (code, [lines]). (None, []) on
        EOF or timeout."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    d = self.sock.recv(65536)
                except (socket.timeout, ConnectionResetError):
                    return None, lines
                if not d:
                    return None, lines
                self.buf += d
            line, _, self.buf = self.buf.partition(b"\r\n")
            line = line.decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                try:
                    return int(line[:3]), lines
                except ValueError:
                    return None, lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect(self, code, what, text=None):
        c, lines = self.reply()
        ok = c == code and (text is None or text in "\n".join(lines))
        check(ok, "%s -> %s%s (got %s %s)" % (what, code,
                                              " '%s'" % text if text else "",
                                              c, lines[-1:] if lines else ""))
        return lines

    def closed(self, timeout=5):
        """Whether the server closes the connection (EOF) within timeout,
        after any remaining replies."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def greet_ehlo(c, name="client.test.example"):
    c.expect(220, "greeting")
    c.send("EHLO %s\r\n" % name)
    return c.expect(250, "EHLO")


def send_message(c, mail="a@example.net", rcpts=("b@example.org",),
                 body="Subject: t\r\n\r\nhello\r\n"):
    c.send("MAIL FROM:<%s>\r\n" % mail)
    c.expect(250, "MAIL FROM")
    for r in rcpts:
        c.send("RCPT TO:<%s>\r\n" % r)
        c.expect(250, "RCPT TO")
    c.send("DATA\r\n")
    c.expect(354, "DATA")
    c.send(body + ".\r\n")
    return c.reply()
