"""A throwaway redis-server on loopback for tests (never the machine's).

RedisPeer(password=None) writes its own config in a temporary directory
(port 0 is not allowed by Redis, so a free port is picked by binding one
first), starts redis-server in the foreground, waits for it to answer PING,
and stops it by pid. restart() starts it again on the same port; pause() and
resume() send SIGSTOP/SIGCONT; cli(...) runs one command with redis-cli and
returns its --raw output (whole replies, several lines too). No persistence,
no protected mode surprises.
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RedisPeer:
    def __init__(self, password=None, tls=None):
        """tls: None, or {"cert", "key", "ca", "auth_clients" (bool),
        "client_cert", "client_key", "check_hostname"}: Redis listens with TLS only (on
        127.0.0.1 and, if there is one, ::1, for rediss://localhost); the
        client_* files are what command() presents."""
        self.dir = tempfile.mkdtemp(prefix="redispeer-")
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.proc = None
        if tls:
            conf = [
                "bind 127.0.0.1 -::1",
                "port 0",
                "tls-port %d" % self.port,
                "tls-cert-file %s" % tls["cert"],
                "tls-key-file %s" % tls["key"],
                "tls-ca-cert-file %s" % tls["ca"],
                "tls-auth-clients %s" % ("yes" if tls.get("auth_clients") else "no"),
            ]
        else:
            conf = [
                "bind 127.0.0.1",
                "port %d" % self.port,
            ]
        conf += [
            "daemonize no",
            "save \"\"",
            "appendonly no",
            "dir %s" % self.dir,
            "logfile %s" % os.path.join(self.dir, "redis.log"),
            "databases 16",
        ]
        if password:
            conf.append("requirepass %s" % password)
        self.conf = os.path.join(self.dir, "redis.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.start()

    def url(self, password=None, db=None):
        auth = ":%s@" % password if password else ""
        path = "/%d" % db if db is not None else ""
        if self.tls:
            return "rediss://%slocalhost:%d%s" % (auth, self.port, path)
        return "redis://%s127.0.0.1:%d%s" % (auth, self.port, path)

    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if not self.tls:
            return s
        ctx = ssl.create_default_context(cafile=self.tls["ca"])
        # A peer whose certificate names another host on purpose.
        ctx.check_hostname = self.tls.get("check_hostname", True)
        if self.tls.get("client_cert"):
            ctx.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        return ctx.wrap_socket(s, server_hostname="localhost")

    def start(self):
        self.proc = subprocess.Popen([REDIS_SERVER, self.conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.command("PING").startswith(("+PONG", "-NOAUTH")):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                tail = f.read()[-2000:]
        except OSError:
            tail = "(no log)"
        raise RuntimeError("redis-server did not start; its log:\n" + tail)

    def command(self, *args):
        """One command over a fresh connection (AUTH first if needed); the
        raw first reply line."""
        with self._connect() as s:
            def send(words):
                out = "*%d\r\n" % len(words)
                for w in words:
                    w = str(w)
                    out += "$%d\r\n%s\r\n" % (len(w.encode()), w)
                s.sendall(out.encode())
            buf = b""
            if self.password:
                send(["AUTH", self.password])
                while b"\r\n" not in buf:
                    buf += s.recv(4096)
                buf = buf.split(b"\r\n", 1)[1]
            send(list(args))
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return buf.decode(errors="replace")

    def cli(self, *args):
        """redis-cli --raw output of one command (whole replies)."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        if self.tls:
            auth += ["--tls", "--cacert", self.tls["ca"]]
            if self.tls.get("client_cert"):
                auth += ["--cert", self.tls["client_cert"], "--key",
                         self.tls["client_key"]]
        return subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)]
                              + auth + ["--raw"] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=10).stdout

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
