"""authpeer - SMTP AUTH helpers for integration tests: users files with real
crypt(3) hashes, and clients that log in over STARTTLS.

    import authpeer
    users = authpeer.users_file(dir, POSTERN, {"alice": ("pw", "yescrypt"),
                                               "bob": ("pw2", "python-sha512")})
    with authpeer.tls_session(port) as s:   # smtplib.SMTP after STARTTLS + EHLO
        s.docmd("AUTH", "PLAIN " + authpeer.plain("alice", "pw"))

Hashes come from `postern --hash-password` (yescrypt, bcrypt, sha512-crypt:
libxcrypt's crypt_gensalt_rn) or, for "python-sha512", from Python's crypt
module (also libxcrypt, through another caller). No network.
"""

import base64
import contextlib
import os
import smtplib
import ssl
import subprocess
import warnings


def make_hash(postern, password, method):
    if method == "python-sha512":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
    p = subprocess.run([postern, "--hash-password", "--hash-method", method],
                       input=password.encode() + b"\n", capture_output=True,
                       timeout=60, check=True)
    return p.stdout.decode().strip()


def users_file(directory, postern, users, name="users", extra=""):
    """Writes name:hash lines for {user: (password, method)}; returns the
    path. `extra` is appended as it is (broken lines for tests)."""
    path = os.path.join(directory, name)
    lines = ["# test users"]
    for u, (pw, method) in users.items():
        lines.append(f"{u}:{make_hash(postern, pw, method)}")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n" + extra)
    os.rename(path + ".tmp", path)
    return path


def plain(user, password, authzid=""):
    raw = f"{authzid}\0{user}\0{password}".encode()
    return base64.b64encode(raw).decode()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a test certificate; only TLS matters
    return ctx


@contextlib.contextmanager
def tls_session(port, src=None, timeout=30):
    s = smtplib.SMTP("127.0.0.1", port, timeout=timeout,
                     source_address=(src, 0) if src else None)
    try:
        s.ehlo("client.test")
        s.starttls(context=client_context())
        s.ehlo("client.test")
        yield s
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def reply(code_msg):
    """smtplib's (code, bytes) as the reply line's text."""
    code, msg = code_msg
    return f"{code} {msg.decode('utf-8', 'replace')}"
