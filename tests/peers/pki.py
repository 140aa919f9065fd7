"""Test PKI for Postern's integration tests, made with the openssl CLI.

Usage (as a module; tests/peers is on PYTHONPATH under Bazel):

    import pki
    with pki.PKI() as p:                    # temp dir + a test root CA
        p.ca_file                           # PEM of the root: `tls { ca_file }`
        cert, key = p.server_cert("mx.test")                  # valid leaf
        cert, key = p.server_cert("mx.test", names=["mx.test", "*.mx.test"])
        cert, key = p.server_cert("mx.test", expired=True)    # expired leaf
        cert, key = p.server_cert("mx.test", self_signed=True)
        cert, key = p.server_cert("other.test")  # "wrong name" for mx.test
        cert, key = p.server_cert("mx.test", chain=True)  # leaf+CA in cert file
        cert, key = p.server_cert("mx.test", san=False)   # CN only, no SAN
    # the directory is removed on exit (or call p.cleanup())

From the shell (prints the paths as JSON, files stay in DIR):

    /usr/bin/python3 tests/peers/pki.py DIR mx.test [other.test ...]

Keys are ECDSA P-256 (fast to make). Every leaf carries subjectAltName DNS
entries for its names (unless san=False: then the name is only in the
subject CN), serverAuth EKU, and CN = the first name. Files are named after
the name and variant: <name>[-expired|-selfsigned|-chain|-cnonly].{crt,key}.
"""

import json
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

_CA_CNF = """\
[ ca ]
default_ca = test_ca

[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
certificate = $dir/ca.pem
private_key = $dir/ca.key

[ policy_any ]
commonName = supplied
"""


def _run(args, cwd):
    r = subprocess.run([OPENSSL] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))
    return r.stdout



def spki_sha256(cert_pem):
    """SHA-256 (hex) of a PEM certificate's SubjectPublicKeyInfo, as in a
    TLSA 3 1 1 or x 1 1 record."""
    der = subprocess.run(["sh", "-c", "openssl x509 -in '%s' -pubkey -noout | "
                          "openssl pkey -pubin -outform DER" % cert_pem],
                         check=True, stdout=subprocess.PIPE).stdout
    return hashlib.sha256(der).hexdigest()

class PKI:
    """A throw-away certificate authority in a directory."""

    def __init__(self, directory=None, ca_name="Postern Test CA"):
        self._own = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="postern-pki-")
        os.makedirs(os.path.join(self.dir, "newcerts"), exist_ok=True)
        with open(os.path.join(self.dir, "index.txt"), "w"):
            pass
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(self.dir, "ca.cnf"), "w") as f:
            f.write(_CA_CNF.format(dir=self.dir))
        self.ca_file = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        _run(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.ca_key,
              "-out", self.ca_file, "-subj", "/CN=" + ca_name, "-days", "3650",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        if self._own:
            shutil.rmtree(self.dir, ignore_errors=True)

    def server_cert(self, name, names=None, expired=False, self_signed=False,
                    chain=False, san=True, client=False):
        """Makes a server certificate; returns (cert_path, key_path).

        names: DNS names for subjectAltName (default [name]).
        expired: valid 2020-01-01 .. 2020-02-01 only.
        self_signed: not issued by the CA at all.
        chain: the cert file holds the leaf followed by the CA certificate.
        san: False makes a certificate without subjectAltName, naming its
            host only in the subject CN (RFC 6125 §6.4.4: a client that sees
            no DNS-ID may not fall back to the CN for SMTP, RFC 8461 §4.2).
        client: a client certificate (extendedKeyUsage clientAuth).
        """
        names = names or [name]
        variant = ("-client" if client else "") + \
            ("-expired" if expired else "") + \
            ("-selfsigned" if self_signed else "") + ("-chain" if chain else "") + \
            ("" if san else "-cnonly")
        base = os.path.join(self.dir, name.replace("*", "_") + variant)
        crt, key = base + ".crt", base + ".key"
        san_text = ",".join("DNS:" + n for n in names)
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", key]
        if self_signed:
            _run(["req", "-x509", "-new"] + newkey +
                 ["-out", crt, "-subj", "/CN=" + names[0], "-days", "365",
                  "-addext", "extendedKeyUsage=serverAuth"] +
                 (["-addext", "subjectAltName=" + san_text] if san else []),
                 self.dir)
            return crt, key
        csr = base + ".csr"
        ext = base + ".ext"
        _run(["req", "-new"] + newkey + ["-out", csr, "-subj", "/CN=" + names[0]],
             self.dir)
        with open(ext, "w") as f:
            f.write("[ leaf ]\nbasicConstraints = CA:FALSE\n"
                    "keyUsage = critical, digitalSignature, keyEncipherment\n"
                    "extendedKeyUsage = %s\n"
                    % ("clientAuth" if client else "serverAuth"))
            if san:
                f.write("subjectAltName = %s\n" % san_text)
        dates = (["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"]
                 if expired else ["-days", "365"])
        _run(["ca", "-batch", "-config", os.path.join(self.dir, "ca.cnf"),
              "-in", csr, "-out", crt, "-notext", "-extfile", ext,
              "-extensions", "leaf"] + dates, self.dir)
        if chain:
            with open(crt, "a") as out, open(self.ca_file) as ca:
                out.write(ca.read())
        return crt, key


def main(argv):
    if len(argv) < 3:
        sys.stderr.write("usage: pki.py DIR NAME...\n")
        return 2
    os.makedirs(argv[1], exist_ok=True)
    p = PKI(argv[1])
    out = {"ca_file": p.ca_file, "certs": {}}
    for n in argv[2:]:
        out["certs"][n] = {
            "valid": p.server_cert(n),
            "expired": p.server_cert(n, expired=True),
            "self_signed": p.server_cert(n, self_signed=True),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
