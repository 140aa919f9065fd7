"""The benchmark's TLS sink (tests/peers/tls_sink.c) counts exactly: two
listeners with their own certificates, clients over STARTTLS with SNI and
in plaintext, several messages and recipients per session, a pipelined
burst, a dot-stuffed body, an over-long command line, and the running
totals of --progress. The statistics it
writes must say exactly what was sent, or a benchmark built on them would
lie.

Usage: tls_sink_test.py TLS_SINK
"""

import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pki

SINK = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port(ips):
    for _ in range(50):
        s = socket.socket()
        s.bind((ips[0], 0))
        port = s.getsockname()[1]
        s.close()
        try:
            for ip in ips[1:]:
                t = socket.socket()
                t.bind((ip, port))
                t.close()
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def main():
    with pki.PKI() as p, tempfile.TemporaryDirectory() as d:
        c1 = p.server_cert("mx1.sink.test")
        c2 = p.server_cert("mx2.sink.test")
        port = free_port(["127.0.0.31", "127.0.0.32"])
        stats = os.path.join(d, "stats.json")
        proc = subprocess.Popen(
            [SINK, "--threads", "2", "--stats", stats, "--progress", "50",
             "--listen", f"127.0.0.31:{port},{c1[0]},{c1[1]}",
             "--listen", f"127.0.0.32:{port},{c2[0]},{c2[1]}"],
            stdout=subprocess.PIPE, text=True)
        try:
            check(proc.stdout.readline().strip() == "ready", "the sink says ready")
            ctx = ssl.create_default_context(cafile=p.ca_file)
            # Two TLS sessions with SNI (verified against each listener's
            # own certificate), three messages of two recipients each.
            for ip, name in (("127.0.0.31", "mx1.sink.test"), ("127.0.0.32", "mx2.sink.test")):
                s = smtplib.SMTP(ip, port, timeout=10)
                s._host = name  # SNI and certificate check against this name
                s.ehlo("client.test")
                check(s.has_extn("starttls") and s.has_extn("pipelining"),
                      f"{name}: STARTTLS and PIPELINING offered")
                s.starttls(context=ctx)
                s.ehlo("client.test")
                check(not s.has_extn("starttls"), f"{name}: no STARTTLS once TLS is on")
                for i in range(3):
                    s.sendmail("a@snd.test", ["x@d1.test", "y@d2.test"],
                               f"Subject: {i}\r\n\r\n.dotted\r\n..\r\n.\r\nend\r\n")
                s.quit()
            # Plaintext, pipelined: two whole transactions in one write.
            raw = socket.create_connection(("127.0.0.31", port), timeout=10)
            raw.recv(512)
            burst = ("EHLO c\r\n" + "MAIL FROM:<a@snd.test>\r\nRCPT TO:<z@d3.test>\r\n"
                     "DATA\r\n" + "x" * 70 + "\r\n.\r\n") * 2 + \
                "NOOP " + "y" * 2000 + "\r\nNOOP\r\nQUIT\r\n"
            raw.sendall(burst.encode())
            got = b""
            deadline = time.time() + 10
            while b"221" not in got and time.time() < deadline:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                got += chunk
            raw.close()
            text = got.decode()
            check(text.count("250 2.0.0 queued") == 2, "pipelined: two messages queued")
            check("500 5.5.6 line too long" in text, "an over-long line gets 500")
            check("221" in text, "QUIT answered after the long line")
            # --progress: running totals, a line only when they changed.
            seen = []
            while not seen or seen[-1] != "progress messages=8 recipients=14":
                line = proc.stdout.readline().strip()
                if not line:
                    break
                seen.append(line)
            check(seen and seen[-1] == "progress messages=8 recipients=14"
                  and len(seen) == len(set(seen)),
                  f"progress lines end at the totals, no repeats ({seen})")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        st = json.load(open(stats))
        print(json.dumps(st), flush=True)
        check(st["messages"] == 8, f"8 messages counted ({st['messages']})")
        check(st["recipients"] == 14, f"14 recipients counted ({st['recipients']})")
        check(st["rcpt"] == {"x@d1.test": 6, "y@d2.test": 6, "z@d3.test": 2},
              f"exact per-recipient counts ({st['rcpt']})")
        check(st["sessions"] == 3 and st["tls_sessions"] == 2,
              f"3 sessions, 2 with TLS ({st['sessions']}, {st['tls_sessions']})")
        check(st["full_handshakes"] == 2 and st["resumed"] == 0, "two full handshakes")
        check(st["sni"] == {"mx1.sink.test": 1, "mx2.sink.test": 1},
              f"the SNI of each session ({st['sni']})")
        check(sum(st["tls"].values()) == 2 and all(k.startswith("TLSv1.") for k in st["tls"]),
              f"version and cipher per session ({st['tls']})")
        check(st["listeners"] == {f"127.0.0.31:{port}": 2, f"127.0.0.32:{port}": 1},
              f"sessions per listener ({st['listeners']})")
        check(st["long_lines"] == 1, "one over-long line counted")
    print("all checks passed" if not failures else f"{len(failures)} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
