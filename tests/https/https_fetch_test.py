"""Integration test of net/https against the scripted server httpspeer.py.

Runs the https_get driver (argv[1]) against httpspeer instances on loopback
(certificates from pki.py's throw-away test CAs) and checks each outcome: a
200 text/plain policy, content-type parameters, a wrong content type, 404,
500, redirects not followed, the body cap (with and without Content-Length,
and a body exactly at the cap), a non-HTTP answer, no answer, an untrusted
CA, a wrong host name, an expired and a self-signed certificate, a missing
CA file, a server that never answers (after and before the TLS handshake),
connection refused, proxy variables ignored, http:// and other refused URLs
(no connection made), no address, IPv6 and address fallback, two fetches in
parallel on one loop, cancelling a fetch and closing the client with
fetches pending.

POSTs (TLS reports, RFC 8460 §5.4): 200, 201, 202 and 204 succeed and the
server got the exact bytes with the given Content-Type and a Content-Length
(no chunking, no Expect: 100-continue, even for a body over curl's 1 MiB
threshold for it); an empty body; 500 and 3xx fail with HTTP and a
redirect's target gets nothing; the answer body is capped; an untrusted or
wrongly named certificate fails before anything is sent; a slow server hits
the timeout; a server closing early fails cleanly; bad media types, POST
fields on a GET and a body over the limit are refused before connecting.
"""

import gzip

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import httpspeer
import pki

DRIVER = sys.argv[1]
HOST = "mta-sts.example.org"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: *.example.org\r\nmax_age: 86400\r\n"
failures = []


def check(what, cond, detail=""):
    print("%s: %s%s" % ("ok" if cond else "FAIL", what,
                         (" (%s)" % detail) if not cond and detail else ""))
    if not cond:
        failures.append(what)


def run(args, timeout=30, env=None):
    p = subprocess.run([DRIVER] + args, capture_output=True, text=True,
                       timeout=timeout,
                       env=dict(os.environ, **env) if env else None)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    # Every run must end cleanly: exit 0 also means no callback ran inside
    # a call or twice, the client's close callback ran, and (under
    # --config=asan) no sanitizer report.
    if p.returncode != 0 or "Sanitizer" in p.stderr or \
            "runtime error" in p.stderr:
        check("driver %s exits cleanly" % " ".join(args[-1:]), False,
              "exit %d: %s" % (p.returncode, p.stderr[-2000:]))
    return p.returncode, lines, p.stderr


def fetch(peer_port, ca, paths, extra=(), resolve=("127.0.0.1",),
          host=HOST, timeout=None):
    args = []
    for a in resolve:
        args += ["--resolve", a]
    args += ["--port", str(peer_port), "--ca", ca]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    args += list(extra)
    args += ["https://%s%s" % (host, p) for p in paths]
    return run(args)


def one(peer_port, ca, path, **kw):
    rc, lines, err = fetch(peer_port, ca, [path], **kw)
    return rc, (lines[0] if lines else {}), err


def main():
    tmp = tempfile.mkdtemp(prefix="https-test-")
    try:
        with pki.PKI() as trusted, pki.PKI(ca_name="Untrusted CA") as other:
            return tests(tmp, trusted, other)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tests(tmp, trusted, other):
    ca = trusted.ca_file
    good = trusted.server_cert(HOST)
    wrong_name = trusted.server_cert("other.example.net")
    expired = trusted.server_cert(HOST, expired=True)
    self_signed = trusted.server_cert(HOST, self_signed=True)
    untrusted = other.server_cert(HOST)

    routes = {
        "/.well-known/mta-sts.txt": {"body": POLICY},
        "/charset": {"content_type": "text/plain; charset=utf-8",
                     "body": POLICY},
        "/upper": {"content_type": "TEXT/Plain;charset=UTF-8", "body": "x"},
        "/html": {"content_type": "text/html", "body": "<html></html>"},
        "/plainx": {"content_type": "text/plainx", "body": "x"},
        "/notype": {"content_type": None, "body": "x"},
        "/redirect": {"status": 301,
                      "location": "https://%s/.well-known/mta-sts.txt" % HOST},
        "/found": {"status": 302, "location": "/.well-known/mta-sts.txt"},
        "/error": {"status": 500, "body": "oops"},
        "/big": {"body_size": 70000},
        "/bigchunked": {"body_size": 70000, "chunked": True},
        "/exact": {"body_size": 65536},
        "/exactchunked": {"body_size": 65536, "chunked": True},
        "/empty": {"body": ""},
        "/hang": {"hang": True},
        "/garbage": {"raw": "SMTP is not HTTP\r\n\r\n"},
        "/nothing": {"raw": ""},
        "/barrier": {"wait_for": 2, "body": "both here"},
    }
    peer = httpspeer.start({"routes": routes}, *good)
    # A redirect to the same server, so that following it would be seen.
    routes["/redirect"]["location"] = "https://%s:%d/.well-known/mta-sts.txt" % (
        HOST, peer.port)
    peer_wrong = httpspeer.start({"default": {"body": "x"}}, *wrong_name)
    peer_untrusted = httpspeer.start({"default": {"body": "x"}}, *untrusted)
    peer_silent = httpspeer.start({"handshake": False}, *good)
    peer_expired = httpspeer.start({"default": {"body": "x"}}, *expired)
    peer_self = httpspeer.start({"default": {"body": "x"}}, *self_signed)
    # Bound but not listening: connections to it are refused, and the port
    # stays ours for the whole test.
    closed_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed_sock.bind(("127.0.0.1", 0))
    refused_port = closed_sock.getsockname()[1]
    try:
        run_cases(peer, peer_wrong, peer_untrusted, peer_silent,
                  refused_port, ca, good, tmp)
        post_cases(peer_wrong, peer_untrusted, ca, good, tmp)
        for what, p in (("expired certificate", peer_expired),
                        ("self-signed certificate", peer_self)):
            rc, r, _ = one(p.port, ca, "/x", extra=["--text-plain"])
            check("%s: TLS_VERIFY" % what, r.get("status") == "TLS_VERIFY", r)
            check("%s: no request sent" % what, p.requests() == [],
                  p.requests())
    finally:
        for p in (peer, peer_wrong, peer_untrusted, peer_silent,
                  peer_expired, peer_self):
            p.stop()
        closed_sock.close()
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


def run_cases(peer, peer_wrong, peer_untrusted, peer_silent, refused_port,
              ca, good, tmp):
    P = peer.port
    TP = ["--text-plain"]

    # --- Success, content types.
    rc, r, err = one(P, ca, "/.well-known/mta-sts.txt", extra=TP)
    check("200 text/plain: OK", rc == 0 and r.get("status") == "OK", r)
    check("200 text/plain: body intact", r.get("body") == POLICY and
          r.get("body_len") == len(POLICY), r.get("body"))
    check("200 text/plain: code and type reported",
          r.get("code") == 200 and r.get("content_type") == "text/plain", r)
    check("body is NUL-terminated", r.get("nul_terminated") is True, r)
    check("connected to the given address", r.get("ip") == "127.0.0.1", r)
    check("URL carries the request's port",
          r.get("url") == "https://%s:%d/.well-known/mta-sts.txt" % (HOST, P),
          r.get("url"))
    last = peer.requests()[-1]
    check("server saw GET with Host mta-sts.example.org",
          last["path"] == "/.well-known/mta-sts.txt" and
          last["host"] == "%s:%d" % (HOST, P), last)
    check("no error text on success", r.get("error") == "", r)

    rc, r, _ = one(P, ca, "/charset", extra=TP)
    check("text/plain; charset=utf-8 accepted", r.get("status") == "OK" and
          r.get("body") == POLICY, r)
    rc, r, _ = one(P, ca, "/upper", extra=TP)
    check("TEXT/Plain;charset=UTF-8 accepted", r.get("status") == "OK", r)
    for path in ("/html", "/plainx", "/notype"):
        rc, r, _ = one(P, ca, path, extra=TP)
        check("%s with --text-plain: HTTP error" % path,
              r.get("status") == "HTTP" and r.get("code") == 200, r)
        check("%s: reason names the content type" % path,
              "Content-Type" in r.get("error", ""), r.get("error"))
    rc, r, _ = one(P, ca, "/html")
    check("text/html without the check: OK, type reported",
          r.get("status") == "OK" and r.get("content_type") == "text/html", r)
    rc, r, _ = one(P, ca, "/empty", extra=TP)
    check("empty 200 body: OK, length 0",
          r.get("status") == "OK" and r.get("body_len") == 0, r)

    # --- HTTP failures.
    rc, r, _ = one(P, ca, "/missing", extra=TP)
    check("404: HTTP error with code 404",
          r.get("status") == "HTTP" and r.get("code") == 404, r)
    rc, r, _ = one(P, ca, "/error")
    check("500: HTTP error", r.get("status") == "HTTP" and
          r.get("code") == 500, r)
    n = len(peer.requests())
    rc, r, _ = one(P, ca, "/redirect", extra=TP)
    check("301: HTTP error, code 301",
          r.get("status") == "HTTP" and r.get("code") == 301, r)
    check("301: redirect not followed", len(peer.requests()) == n + 1,
          peer.requests()[n:])
    rc, r, _ = one(P, ca, "/found")
    check("302 relative: HTTP error, not followed",
          r.get("status") == "HTTP" and r.get("code") == 302 and
          len(peer.requests()) == n + 2, r)

    # --- Body cap.
    rc, r, _ = one(P, ca, "/big", extra=TP)
    check("70000 bytes with Content-Length: TOOBIG",
          r.get("status") == "TOOBIG", r.get("status"))
    rc, r, _ = one(P, ca, "/bigchunked", extra=TP)
    check("70000 bytes chunked: TOOBIG", r.get("status") == "TOOBIG",
          r.get("status"))
    check("chunked over the cap: kept at most the cap",
          r.get("body_len", 1 << 30) <= 65536, r.get("body_len"))
    rc, r, _ = one(P, ca, "/exact", extra=TP)
    check("exactly 64 KiB: OK", r.get("status") == "OK" and
          r.get("body_len") == 65536, r.get("status"))
    rc, r, _ = one(P, ca, "/exactchunked", extra=TP)
    check("exactly 64 KiB chunked: OK", r.get("status") == "OK" and
          r.get("body_len") == 65536, r.get("status"))
    rc, r, _ = one(P, ca, "/.well-known/mta-sts.txt", extra=["--max", "10"])
    check("smaller --max: TOOBIG", r.get("status") == "TOOBIG", r)
    rc, r, _ = one(P, ca, "/.well-known/mta-sts.txt",
                   extra=["--max", str(64 << 20)])
    check("cap over the 16 MiB limit refused at start",
          r.get("start") == "INVAL", r)

    # --- Certificates.
    rc, r, _ = one(peer_untrusted.port, ca, "/x", extra=TP)
    check("untrusted CA: TLS_VERIFY", r.get("status") == "TLS_VERIFY", r)
    check("untrusted CA: no request sent", peer_untrusted.requests() == [],
          peer_untrusted.requests())
    rc, r, _ = one(peer_wrong.port, ca, "/x", extra=TP)
    check("wrong host name in certificate: TLS_VERIFY",
          r.get("status") == "TLS_VERIFY", r)
    check("wrong name: no request sent", peer_wrong.requests() == [],
          peer_wrong.requests())
    rc, r, _ = one(peer_wrong.port, ca, "/x", extra=TP,
                   host="other.example.net")
    check("same server under its certificate's name: OK",
          r.get("status") == "OK", r)
    rc, r, _ = one(P, os.path.join(tmp, "no-such-ca.pem"), "/x")
    check("missing CA file: TLS failure, not success",
          r.get("status") == "TLS", r)

    # --- Broken servers.
    rc, r, _ = one(P, ca, "/garbage")
    check("non-HTTP answer: PROTO", r.get("status") == "PROTO", r)
    rc, r, _ = one(P, ca, "/nothing")
    check("closed without an answer: CLOSED", r.get("status") == "CLOSED", r)

    # --- Silence and refusal.
    rc, r, _ = one(P, ca, "/hang", timeout=700)
    check("server never answers: TIMEOUT", r.get("status") == "TIMEOUT", r)
    rc, r, _ = one(peer_silent.port, ca, "/x", timeout=700)
    check("server never completes TLS: TIMEOUT",
          r.get("status") == "TIMEOUT", r)
    rc, r, _ = one(refused_port, ca, "/x")
    check("connection refused: CONNREFUSED",
          r.get("status") == "CONNREFUSED", r)
    # Address fallback: the first address refuses, the second serves. The
    # refusing one is 127.0.0.2 on the peer's port (the peer listens on
    # 127.0.0.1 only).
    rc, r, _ = one(P, ca, "/.well-known/mta-sts.txt",
                   resolve=("127.0.0.2", "127.0.0.1"))
    check("second address used when the first refuses",
          r.get("status") == "OK" and r.get("ip") == "127.0.0.1", r)

    # A proxy in the environment is ignored (it would need the system
    # resolver, and would see the request): the fetch goes straight to the
    # given address.
    rc, lines, _ = run(["--resolve", "127.0.0.1", "--port", str(P), "--ca", ca,
                        "https://%s/.well-known/mta-sts.txt" % HOST],
                       env={"https_proxy": "http://127.0.0.1:%d" % refused_port,
                            "HTTPS_PROXY": "http://127.0.0.1:%d" % refused_port,
                            "ALL_PROXY": "http://127.0.0.1:%d" % refused_port})
    r = lines[0] if lines else {}
    check("proxy variables in the environment ignored",
          r.get("status") == "OK", r)

    # --- Refused before any connection.
    n_conn = peer.connections()
    for url_case, url in [
        ("http:// URL", "http://%s:%d/x" % (HOST, P)),
        ("ftp:// URL", "ftp://%s:%d/x" % (HOST, P)),
        ("user in URL", "https://u:p@%s:%d/x" % (HOST, P)),
        ("IPv4 literal host", "https://127.0.0.1:%d/x" % P),
        ("IPv6 literal host", "https://[::1]:%d/x" % P),
        ("conflicting port", "https://%s:%d/x" % (HOST, P + 1 if P < 65535
                                                  else P - 1)),
        ("not a URL", "mta-sts.example.org/x"),
        ("space in URL", "https://%s/a b" % HOST),
    ]:
        rc, lines, _ = run(["--resolve", "127.0.0.1", "--port", str(P),
                            "--ca", ca, url])
        r = lines[0] if lines else {}
        check("%s refused at start (INVAL)" % url_case,
              r.get("start") == "INVAL", r)
    rc, lines, _ = run(["--port", str(P), "--ca", ca,
                        "https://%s/.well-known/mta-sts.txt" % HOST])
    r = lines[0] if lines else {}
    check("no address given: INVAL", r.get("start") == "INVAL", r)
    check("refused URLs made no connection", peer.connections() == n_conn,
          "%d new" % (peer.connections() - n_conn))

    # --- IPv6 (skipped when the machine has no ::1).
    try:
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s6.bind(("::1", 0))
        s6.close()
        have_v6 = True
    except OSError:
        have_v6 = False
    if have_v6:
        with httpspeer.start({"default": {"body": "six"}}, *good,
                             address="::1") as p6:
            rc, r, _ = one(p6.port, ca, "/x", resolve=("::1",))
            check("IPv6 address: OK", r.get("status") == "OK" and
                  r.get("ip") == "::1" and r.get("body") == "six", r)
    else:
        print("skip: no IPv6 loopback")

    # --- Several fetches on one loop.
    rc, lines, _ = fetch(P, ca, ["/barrier", "/barrier"], extra=TP,
                         timeout=20000)
    check("two fetches in parallel: both OK (the server answers only once "
          "both requests are in)",
          len(lines) == 2 and all(l.get("status") == "OK" and
                                  l.get("body") == "both here"
                                  for l in lines), lines)
    check("driver exit 0 (no synchronous or double callback, client closed)",
          rc == 0, rc)
    rc, lines, _ = fetch(P, ca, ["/.well-known/mta-sts.txt", "/missing",
                                 "/big", "/charset"], extra=TP)
    check("mixed fetches on one loop keep their own results",
          [l.get("status") for l in lines] == ["OK", "HTTP", "TOOBIG", "OK"],
          [l.get("status") for l in lines])

    # --- Cancellation and close.
    rc, lines, _ = fetch(P, ca, ["/hang", "/.well-known/mta-sts.txt"],
                         extra=["--cancel-first"])
    check("cancelled fetch: CANCELED, the other completes",
          [l.get("status") for l in lines] == ["CANCELED", "OK"], lines)
    check("cancel: driver exit 0", rc == 0, rc)
    rc, lines, _ = fetch(P, ca, ["/hang", "/hang"],
                         extra=["--close-after", "300"], timeout=20000)
    check("close with fetches pending: both CANCELED",
          [l.get("status") for l in lines] == ["CANCELED", "CANCELED"],
          lines)
    check("close: callbacks asynchronous, close callback ran (exit 0)",
          rc == 0, rc)
    rc, lines, _ = fetch(P, ca, ["/.well-known/mta-sts.txt"],
                         extra=["--close-after", "0"])
    check("close right after start: CANCELED, exit 0",
          rc == 0 and lines and lines[0].get("status") == "CANCELED",
          (rc, lines))


REPORT_TYPE = "application/tlsrpt+gzip"


def post(peer_port, ca, path, body_file, content_type=REPORT_TYPE, extra=(),
         timeout=None, host=HOST):
    args = ["--post", body_file]
    if content_type is not None:
        args += ["--content-type", content_type]
    return one(peer_port, ca, path, extra=args + list(extra), timeout=timeout,
               host=host)


def post_cases(peer_wrong, peer_untrusted, ca, good, tmp):
    # A gzip'd report: binary, with bytes a text path would mangle.
    report = gzip.compress(json.dumps(
        {"organization-name": "Postern test", "report-id": "r1"}).encode() +
        b"\x00\r\n\xff", mtime=0)
    report_file = os.path.join(tmp, "report.json.gz")
    with open(report_file, "wb") as f:
        f.write(report)
    empty_file = os.path.join(tmp, "empty")
    open(empty_file, "wb").close()
    # Over curl's threshold (1 MiB) for asking "Expect: 100-continue".
    big = os.urandom(2 << 20)
    big_file = os.path.join(tmp, "big")
    with open(big_file, "wb") as f:
        f.write(big)

    routes = {
        "/ok": {"status": 200, "body": "thanks"},
        "/created": {"status": 201, "body": "created"},
        "/accepted": {"status": 202, "content_type": None, "body": ""},
        "/nocontent": {"status": 204, "content_type": None, "body": ""},
        "/error": {"status": 500, "body": "oops"},
        "/found": {"status": 302, "location": "/target"},
        "/temporary": {"status": 307},
        "/permanent": {"status": 308},
        "/target": {"status": 200, "body": "should not be reached"},
        "/bigreply": {"status": 200, "body_size": 70000},
        "/slow": {"status": 200, "delay": 5, "body": "late"},
        "/hang": {"hang": True},
        "/nothing": {"raw": ""},
        "/close-early": {"close_early": True},
    }
    peer = httpspeer.start({"routes": routes}, *good)
    P = peer.port
    # Absolute redirects to the same server, so that following one would
    # show up as a request for /target.
    for r in ("/temporary", "/permanent"):
        routes[r]["location"] = "https://%s:%d/target" % (HOST, P)
    try:
        post_cases_on(peer, peer_wrong, peer_untrusted, ca, tmp, report,
                      report_file, empty_file, big, big_file)
    finally:
        peer.stop()


def post_cases_on(peer, peer_wrong, peer_untrusted, ca, tmp, report,
                  report_file, empty_file, big, big_file):
    P = peer.port

    # --- Success: any 2xx, the exact bytes and type arrived.
    for path, code, body in (("/ok", 200, "thanks"),
                             ("/created", 201, "created"),
                             ("/accepted", 202, ""),
                             ("/nocontent", 204, "")):
        n = len(peer.posts())
        rc, r, _ = post(P, ca, path, report_file)
        check("POST %d: OK" % code, r.get("status") == "OK" and
              r.get("code") == code and r.get("error") == "", r)
        check("POST %d: answer body given" % code,
              r.get("body") == body and r.get("body_len") == len(body), r)
        got = peer.posts()[n:]
        g = got[0] if len(got) == 1 else {}
        check("POST %d: server got one POST to %s" % (code, path),
              len(got) == 1 and g.get("path") == path and
              g.get("host") == "%s:%d" % (HOST, P), got)
        check("POST %d: exact bytes, complete" % code,
              g.get("body") == report and g.get("complete") is True,
              (len(g.get("body") or b""), len(report)))
        check("POST %d: Content-Type as given" % code,
              g.get("content_type") == REPORT_TYPE, g.get("content_type"))
        check("POST %d: Content-Length, not chunked" % code,
              g.get("content_length") == len(report) and
              g.get("transfer_encoding") is None, g)
    check("POST result carries the URL and address",
          r.get("url") == "https://%s:%d/nocontent" % (HOST, P) and
          r.get("ip") == "127.0.0.1", r)

    n = len(peer.posts())
    rc, r, _ = post(P, ca, "/ok", empty_file,
                    content_type="application/tlsrpt+json")
    g = (peer.posts()[n:] or [{}])[0]
    check("empty POST body: OK, Content-Length 0",
          r.get("status") == "OK" and g.get("body") == b"" and
          g.get("content_length") == 0 and
          g.get("content_type") == "application/tlsrpt+json", (r, g))

    n = len(peer.posts())
    rc, r, _ = post(P, ca, "/ok", big_file, timeout=20000)
    g = (peer.posts()[n:] or [{}])[0]
    check("2 MiB POST: OK, all bytes", r.get("status") == "OK" and
          g.get("body") == big and g.get("content_length") == len(big),
          (r.get("status"), len(g.get("body") or b"")))
    check("2 MiB POST: no Expect: 100-continue", "expect" in g and
          g.get("expect") is None, g.get("expect"))

    # --- Failures by status; redirects are never followed.
    rc, r, _ = post(P, ca, "/error", report_file)
    check("POST 500: HTTP error with code 500",
          r.get("status") == "HTTP" and r.get("code") == 500, r)
    for path, code in (("/found", 302), ("/temporary", 307),
                       ("/permanent", 308)):
        n = len(peer.requests())
        rc, r, _ = post(P, ca, path, report_file)
        check("POST %d: HTTP error with code %d" % (code, code),
              r.get("status") == "HTTP" and r.get("code") == code, r)
        later = peer.requests()[n:]
        check("POST %d: not followed, the target got nothing" % code,
              [q["path"] for q in later] == [path], later)
    rc, r, _ = post(P, ca, "/bigreply", report_file)
    check("POST answered with 70000 bytes: TOOBIG",
          r.get("status") == "TOOBIG", r.get("status"))

    # --- Certificates: nothing is sent before the peer is verified.
    for what, p in (("untrusted CA", peer_untrusted),
                    ("wrong host name", peer_wrong)):
        conns, n = p.connections(), len(p.requests())
        rc, r, _ = post(p.port, ca, "/ok", report_file)
        check("POST, %s: TLS_VERIFY" % what,
              r.get("status") == "TLS_VERIFY", r)
        # curl (GnuTLS) completes the handshake, checks the certificate,
        # and closes: the server sees a connection and never a request.
        check("POST, %s: connected, but no request and no body" % what,
              p.connections() > conns and p.requests()[n:] == [] and
              p.posts() == [], p.requests()[n:])

    # --- Slow and broken servers.
    rc, r, _ = post(P, ca, "/slow", report_file, timeout=700)
    check("POST to a slow server: TIMEOUT", r.get("status") == "TIMEOUT", r)
    rc, r, _ = post(P, ca, "/hang", report_file, timeout=700)
    check("POST to a server that never answers: TIMEOUT",
          r.get("status") == "TIMEOUT", r)
    rc, r, _ = post(P, ca, "/nothing", report_file)
    check("POST read, then closed without an answer: CLOSED",
          r.get("status") == "CLOSED" and r.get("code") == 0, r)
    n = len(peer.posts())
    rc, r, _ = post(P, ca, "/close-early", big_file, timeout=20000)
    check("POST cut off by the server mid-body: fails with IO or CLOSED",
          r.get("status") in ("IO", "CLOSED") and r.get("code") == 0, r)
    got = peer.posts()[n:]
    check("close-early: the server read no body",
          len(got) == 1 and got[0].get("body") is None, got)

    # --- Refused before any connection.
    n_conn = peer.connections()
    for what, args in (
            ("CR LF in the Content-Type",
             ["--post", report_file, "--content-type",
              REPORT_TYPE + "\r\nX-Evil: 1"]),
            ("Content-Type not a media type",
             ["--post", report_file, "--content-type", "tlsrpt"]),
            ("POST without a Content-Type", ["--post", report_file]),
            ("Content-Type on a GET", ["--content-type", REPORT_TYPE]),
            ("text/plain check on a POST",
             ["--post", report_file, "--content-type", REPORT_TYPE,
              "--text-plain"])):
        rc, r, _ = one(P, ca, "/ok", extra=args)
        check("%s: refused at start (INVAL)" % what,
              r.get("start") == "INVAL", r)
    over = os.path.join(tmp, "over")
    with open(over, "wb") as f:
        f.truncate((16 << 20) + 1)
    rc, r, _ = post(P, ca, "/ok", over)
    check("POST body of 16 MiB + 1: refused at start (INVAL)",
          r.get("start") == "INVAL", r)
    check("refused POSTs made no connection", peer.connections() == n_conn,
          "%d new" % (peer.connections() - n_conn))
    os.unlink(over)


if __name__ == "__main__":
    sys.exit(main())
