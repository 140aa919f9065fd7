"""relay - run a real `postern` process for an integration test.

    import relay
    with relay.Relay(postern_bin, dns_port, extra="delivery { route * 127.0.0.1:2526 }") as r:
        r.port                   # the SMTP port it listens on (port 0 → chosen)
        r.send("a@x.test", ["b@y.test"], "Subject: hi\r\n\r\nbody\r\n")
        r.wait_log(lambda e: e.get("event") == "delivery", count=1)
        r.events()               # every log line so far, parsed (logfmt → dict)
        r.stop()                 # SIGTERM; returns the exit status

The relay logs at debug level in logfmt to a file in its temp directory;
events() parses it. The state directory lives in the same temp directory
and survives stop()/start() until the object is closed.
"""

import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time

_PAIR = re.compile(r'([a-zA-Z0-9_]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line):
    if line.startswith("{"):  # log { format json }
        try:
            return {k: str(v) for k, v in json.loads(line).items()}
        except ValueError:
            return {}
    out = {}
    for k, v in _PAIR.findall(line):
        if v.startswith('"'):
            v = bytes(v[1:-1], "utf-8").decode("unicode_escape")
        out[k] = v
    return out


class Relay:
    def __init__(self, binary, dns_port, extra="", workers=2, listen_extra="",
                 delivery="", accept_from="127.0.0.0/8", listen="127.0.0.1:0",
                 top="", log_extra="", dns_extra=""):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="postern-test-")
        self.state = os.path.join(self.dir, "state")
        self.log = os.path.join(self.dir, "postern.log")
        self.conf = os.path.join(self.dir, "postern.conf")
        with open(self.conf, "w") as f:
            f.write(
                "hostname relay.test\n"
                f"state_dir {self.state}\n"
                f"{top}\n"
                f"listen {listen} {{\n"
                + (f"  accept_from {accept_from}\n" if accept_from else "") +
                f"  {listen_extra}\n"
                "}\n"
                f"dns {{ servers 127.0.0.1:{dns_port}; timeout 1s; attempts 1; "
                f"{dns_extra} }}\n"
                f"log {{ level debug; file {self.log}; {log_extra} }}\n"
                f"delivery {{ workers {workers}; {delivery} }}\n"
                f"{extra}\n"
            )
        self.proc = None
        self.port = None
        self.start()

    def start(self):
        self._log_offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        self.proc = subprocess.Popen([self.binary, "-c", self.conf],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        try:
            ev = self.wait_log(lambda e: e.get("event") == "listening", timeout=20,
                               since_start=True)
            # "started" comes once the queue is open and the workers run.
            self.wait_log(lambda e: e.get("event") == "started", timeout=20,
                          since_start=True)
        except BaseException:
            self.kill()  # never leave a postern behind
            raise
        self.port = int(ev[-1]["port"])

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def lines(self, since_start=False):
        if not os.path.exists(self.log):
            return []
        with open(self.log, "rb") as f:
            if since_start:
                f.seek(self._log_offset)
            data = f.read().decode("utf-8", "replace")
        return [l for l in data.split("\n") if l]

    def events(self, since_start=False):
        return [parse_logfmt(l) for l in self.lines(since_start)]

    def wait_log(self, pred, count=1, timeout=30, since_start=False):
        deadline = time.time() + timeout
        while True:
            got = [e for e in self.events(since_start) if pred(e)]
            if len(got) >= count:
                return got
            if self.proc and self.proc.poll() is not None:
                out = self.proc.stdout.read().decode("utf-8", "replace")
                raise AssertionError(
                    f"postern exited with {self.proc.returncode} while waiting; "
                    f"output:\n{out}\nlog:\n" + "\n".join(self.lines()[-40:]))
            if time.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {count} events (have {len(got)}); log tail:\n"
                    + "\n".join(self.lines()[-40:]))
            time.sleep(0.05)

    def send(self, sender, rcpts, body, port=None, mail_options=(),
             rcpt_options=()):
        with smtplib.SMTP("127.0.0.1", port or self.port, timeout=20) as s:
            s.ehlo("client.test")
            refused = s.sendmail(sender, rcpts, body, list(mail_options),
                                 list(rcpt_options))
            return refused

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("postern did not stop within %ss" % timeout)
        if rc != 0:
            # Show why (a sanitizer report, a crash) in the test log.
            out = self.proc.stdout.read().decode("utf-8", "replace")
            print(f"postern exited with {rc}; its output:\n{out[-20000:]}", flush=True)
        self.proc = None
        return rc

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self):
        try:
            if self.proc is not None:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
