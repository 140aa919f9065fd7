"""postern-probe --tlsa-verify against a PKI made with the openssl CLI.

Makes a root CA, an intermediate CA and a leaf for mx.example.com with the
openssl command, computes TLSA association data independently (hashlib over
the DER the openssl CLI prints), and checks the probe's output and exit
status: `ok depth=N` with 0, the failure reason with 1, usage errors and
malformed files with 2.

Usage: probe_tlsa_test.py PATH-TO-postern-probe
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time

PROBE = os.path.abspath(sys.argv[1])
failures = 0


def check(what, cond, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else ": " + detail))
    if not cond:
        failures += 1


def openssl(*args, stdin=None):
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    if r.returncode != 0:
        sys.exit("openssl %s failed: %s" % (" ".join(args), r.stderr.decode()))
    return r.stdout


def make_pki(d):
    """Root -> intermediate -> leaf, P-256, written to d as PEM files."""

    def key(name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-out", f"{d}/{name}.key")

    def ext(name, text):
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(text)
        return f"{d}/{name}.ext"

    for n in ("root", "int", "leaf", "other"):
        key(n)
    ca_ext = ("basicConstraints=critical,CA:TRUE\n"
              "keyUsage=critical,keyCertSign,cRLSign\n"
              "subjectKeyIdentifier=hash\n")
    openssl("req", "-x509", "-new", "-key", f"{d}/root.key", "-subj",
            "/CN=Probe Test Root", "-days", "3650", "-out", f"{d}/root.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
            "keyUsage=critical,keyCertSign,cRLSign")

    def issue(name, subj, issuer, days, extfile):
        openssl("req", "-new", "-key", f"{d}/{name}.key", "-subj", subj,
                "-out", f"{d}/{name}.csr")
        openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA",
                f"{d}/{issuer}.pem", "-CAkey", f"{d}/{issuer}.key",
                "-set_serial", {"int": "2", "leaf": "3"}[name], "-days",
                str(days), "-extfile", extfile, "-out", f"{d}/{name}.pem")

    issue("int", "/CN=Probe Test Issuer", "root", 3000, ext("int", ca_ext))
    issue("leaf", "/CN=mx.example.com", "int", 30,
          ext("leaf", "basicConstraints=critical,CA:FALSE\n"
              "subjectAltName=DNS:mx.example.com\n"
              "extendedKeyUsage=serverAuth\n"))
    # A CA with the intermediate's name but its own key: it signed nothing.
    openssl("req", "-x509", "-new", "-key", f"{d}/other.key", "-subj",
            "/CN=Probe Test Issuer", "-days", "3650", "-out",
            f"{d}/other.pem", "-addext", "basicConstraints=critical,CA:TRUE")


def der(d, name):
    return openssl("x509", "-in", f"{d}/{name}.pem", "-outform", "DER")


def spki(d, name):
    pub = openssl("x509", "-in", f"{d}/{name}.pem", "-pubkey", "-noout")
    return openssl("pkey", "-pubin", "-outform", "DER", stdin=pub)


def tlsa(d, usage, selector, mtype, name, flip=False):
    data = der(d, name) if selector == 0 else spki(d, name)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    if flip:
        data = data[:-1] + bytes([data[-1] ^ 0x5A])
    return "%d %d %d %s" % (usage, selector, mtype, data.hex())


def cat(d, out, *names):
    with open(f"{d}/{out}", "w") as f:
        for n in names:
            with open(f"{d}/{n}.pem") as g:
                f.write(g.read())
    return f"{d}/{out}"


def probe(*args):
    r = subprocess.run([PROBE, *args], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout, r.stderr


def verify(d, records, chain, base="mx.example.com", extra=()):
    path = f"{d}/records.tlsa"
    with open(path, "w") as f:
        f.write(records if isinstance(records, str) else "\n".join(records))
    return probe("--tlsa-verify", "--base-domain", base, "--tlsa", path,
                 "--chain", chain, *extra)


def expect(what, result, code, out_prefix=None, err_part=None):
    rc, out, err = result
    detail = "rc=%d out=%r err=%r" % (rc, out, err)
    good = rc == code
    if out_prefix is not None:
        good = good and out.startswith(out_prefix)
    if err_part is not None:
        good = good and err_part in err
    check(what, good, detail)


def main():
    with tempfile.TemporaryDirectory() as d:
        make_pki(d)
        li = cat(d, "li.pem", "leaf", "int")
        lir = cat(d, "lir.pem", "leaf", "int", "root")
        lonly = cat(d, "l.pem", "leaf")
        lother = cat(d, "lo.pem", "leaf", "other")

        # Successes: EE at depth 0, TA at depths 1 and 2, TA from DNS.
        for s in (0, 1):
            for m in (0, 1, 2):
                expect("DANE-EE 3 %d %d" % (s, m),
                       verify(d, [tlsa(d, 3, s, m, "leaf")], li), 0,
                       "ok depth=0")
        expect("DANE-TA 2 0 1 intermediate",
               verify(d, [tlsa(d, 2, 0, 1, "int")], li), 0, "ok depth=1")
        expect("DANE-TA 2 1 2 intermediate",
               verify(d, [tlsa(d, 2, 1, 2, "int")], lir), 0, "ok depth=1")
        expect("DANE-TA 2 1 1 root",
               verify(d, [tlsa(d, 2, 1, 1, "root")], lir), 0, "ok depth=2")
        expect("DANE-TA 2 0 0 root given only in DNS",
               verify(d, [tlsa(d, 2, 0, 0, "root")], li), 0, "ok depth=2")
        expect("DANE-TA 2 1 0 intermediate key given only in DNS",
               verify(d, [tlsa(d, 2, 1, 0, "int")], lonly), 0, "ok depth=0")
        expect("EE beats TA", verify(
            d, [tlsa(d, 2, 0, 1, "root"), tlsa(d, 3, 1, 1, "leaf")], lir),
            0, "ok depth=0")

        # File syntax: comments, blank lines, upper-case and split hex.
        rec = tlsa(d, 3, 1, 1, "leaf").split()
        hx = rec[3].upper()
        text = ("# TLSA for _25._tcp.mx.example.com\n\n"
                "   \n%s %s %s %s %s   # split hex, upper case\n"
                % (rec[0], rec[1], rec[2], hx[:20], hx[20:]))
        expect("comments, blank lines, split hex", verify(d, text, li), 0,
               "ok depth=0")

        # Failures: exit 1 with the reason.
        expect("wrong EE digest",
               verify(d, [tlsa(d, 3, 1, 1, "leaf", flip=True)], li), 1,
               "fail: mismatch")
        expect("wrong TA digest",
               verify(d, [tlsa(d, 2, 0, 2, "int", flip=True)], li), 1,
               "fail: mismatch")
        expect("name mismatch under TA",
               verify(d, [tlsa(d, 2, 0, 1, "int")], li,
                      base="other.example.com"), 1, "fail: name")
        expect("second reference name matches",
               verify(d, [tlsa(d, 2, 0, 1, "int")], li,
                      base="other.example.com",
                      extra=("--name", "mx.example.com")), 0, "ok depth=1")
        expect("EE ignores the name",
               verify(d, [tlsa(d, 3, 0, 1, "leaf")], li,
                      base="other.example.com"), 0, "ok depth=0")
        later = str(int(time.time()) + 60 * 86400)
        expect("expired leaf under TA (--now in 60 days)",
               verify(d, [tlsa(d, 2, 0, 1, "int")], li, extra=("--now", later)),
               1, "fail: expired")
        expect("EE ignores expiry (--now in 60 days)",
               verify(d, [tlsa(d, 3, 1, 2, "leaf")], li, extra=("--now", later)),
               0, "ok depth=0")
        expect("TA that did not sign the leaf",
               verify(d, [tlsa(d, 2, 0, 1, "other")], lother), 1,
               "fail: chain")
        expect("PKIX-only records are unusable for SMTP",
               verify(d, [tlsa(d, 1, 1, 1, "leaf"), tlsa(d, 0, 0, 1, "int")],
                      li), 1, "fail: no-usable")
        expect("unknown parameters are unusable",
               verify(d, ["4 0 1 " + "ab" * 32, "3 2 1 " + "ab" * 32,
                          "3 1 7 abcd", "3 1 1 abcd"], li), 1,
               "fail: no-usable")
        expect("empty TLSA file", verify(d, "# nothing\n", li), 1,
               "fail: no-usable")

        # Malformed files: exit 2 with file:line.
        path = f"{d}/records.tlsa"
        for what, body, line in (
                ("too few fields", "3 1 1 %s\n\n3 1\n" % ("ab" * 32), 3),
                ("odd hex", "# c\n3 1 1 abc\n", 2),
                ("non-hex data", "3 1 1 zz\n", 1),
                ("usage out of range", "256 1 1 ab\n", 1),
                ("selector not a number", "3 x 1 ab\n", 1),
                ("negative mtype", "3 1 -1 ab\n", 1)):
            expect("malformed TLSA file: " + what, verify(d, body, li), 2,
                   "", "%s:%d:" % (path, line))

        # Usage errors: exit 2.
        rc, out, err = probe("--help")
        check("--help exits 2 and lists --tlsa-verify",
              rc == 2 and "--tlsa-verify" in out, "rc=%d" % rc)
        expect("no arguments", probe(), 2, "", "usage:")
        expect("DOMAIN mode without a readable config", probe(
            "-c", "/nonexistent/postern.conf", "example.com"), 2, "",
               "/nonexistent/postern.conf")
        expect("--json with --tlsa-verify", probe(
            "--tlsa-verify", "--json", "--base-domain", "mx.example.com",
            "--tlsa", path, "--chain", path), 2, "", "go with DOMAIN")
        expect("missing --chain", probe("--tlsa-verify", "--base-domain",
                                        "mx.example.com", "--tlsa", path), 2,
               "", "usage:")
        expect("unknown option", probe("--tlsa-verify", "--bogus"), 2, "",
               "usage:")
        expect("bad --now", probe("--tlsa-verify", "--now", "soon"), 2, "",
               "--now")
        with open(path, "w") as f:
            f.write(tlsa(d, 3, 1, 1, "leaf") + "\n")
        expect("missing chain file",
               probe("--tlsa-verify", "--base-domain", "mx.example.com",
                     "--tlsa", path, "--chain", f"{d}/nope.pem"), 2, "",
               "nope.pem")
        expect("missing TLSA file",
               probe("--tlsa-verify", "--base-domain", "mx.example.com",
                     "--tlsa", f"{d}/nope.tlsa", "--chain", li), 2, "",
               "nope.tlsa")
        with open(f"{d}/junk.pem", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nAAAA\n"
                    "-----END CERTIFICATE-----\n")
        expect("damaged PEM chain",
               probe("--tlsa-verify", "--base-domain", "mx.example.com",
                     "--tlsa", path, "--chain", f"{d}/junk.pem"), 2, "",
               "malformed")
        expect("PEM file without certificates",
               probe("--tlsa-verify", "--base-domain", "mx.example.com",
                     "--tlsa", path, "--chain", path), 2, "",
               "no certificates")

    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
