#!/usr/bin/python3
"""Writes the seed corpora under tests/fuzz/corpus/ (run once; the bytes
are checked in, so runs never depend on this script or its tools).

Seeds are small, real inputs in each target's own input format (described
at the top of tests/fuzz/fuzz_TARGET.c): configuration files, SMTP sessions
and replies, DNS answers built with dnspython, MTA-STS records and
policies, certificates and TLSA records made with openssl, DSN inputs.

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py   (from the repository root)
Needs python3-dnspython and openssl (both in tools/setup).
"""

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reset(target):
    shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)


# ---- config ---------------------------------------------------------------

def config_seeds():
    reset("config")
    with open(os.path.join(ROOT, "docs", "examples", "postern.conf"), "rb") as f:
        put("config", "example.conf", f.read())
    put("config", "minimal.conf", "listen 127.0.0.1:2525\n")
    put("config", "ipv6-env.conf",
        'hostname {env:FUZZ_HOST}\nstate_dir "/var/lib/postern state"\n'
        "listen [::1]:2525 { accept_from ::1/128 127.0.0.0/8; max_sessions 10 }\n"
        "listen {env:FUZZ_ADDR} { max_message_size 512K }\n")
    put("config", "full.conf", """\
hostname relay.example.net
state_dir /var/lib/postern
user postern
listen 127.0.0.1:2525 {
  accept_from 127.0.0.1/32 10.0.0.0/8
  max_message_size 64M
  max_recipients 50
  max_sessions 100
  tls_cert /etc/postern/cert.pem
  tls_key /etc/postern/key.pem
  timeout 1h30m
}
queue {
  map_size 1G
  retry_initial 1m
  retry_factor 1.5
  retry_max 4h
  max_age 3d
  delay_warning 4h
}
delivery {
  workers 4
  max_connections 500
  per_domain_connections 5
  per_domain_rate 10
  reuse_limit 50
  idle_timeout 10s
  connect_timeout 20s
  command_timeout 2m
  data_timeout 5m
  port 2526
  local_ip 192.0.2.10
  shutdown_timeout 5s
  route example.test 127.0.0.1:2526
  route example.org [relay.example.net]:587
  route * [::1]:25
}
dns {
  servers 127.0.0.1:5353 [::1]:53 192.0.2.53
  timeout 2s
  attempts 3
  trust_ad yes
}
tls {
  ca_file "/etc/ssl/certs/ca-certificates.crt"
  min_version 1.3
}
policy {
  local { min_tls_level encrypted; min_mx_level none }
  mtasts { fetch_timeout 30s; https_port 8443; max_policy_size 32K }
  dnssec
  dane
}
log {
  level debug
  format json
  file "/var/log/postern.log"
}
metrics {
  listen 127.0.0.1:9025
}
""")
    put("config", "quoting.conf",
        'hostname "mail.example.net" # comment\n'
        'state_dir "/tmp/a\\"b\\\\c\\x41"\n'
        "listen 127.0.0.1:25 {\n}\n")
    put("config", "errors.conf", "listen 127.0.0.1:2525 {\n  bogus 1\n")


# ---- SMTP server ----------------------------------------------------------

def smtp_server_seeds():
    reset("smtp_server")
    sessions = {
        "basic": "EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\n"
                 "RCPT TO:<bob@example.net>\r\nDATA\r\nSubject: hi\r\n\r\n"
                 "Hello.\r\n..leading dot\r\n.\r\nQUIT\r\n",
        "params": "EHLO [192.0.2.1]\r\nMAIL FROM:<a@example.org> SIZE=12345 "
                  "BODY=8BITMIME RET=HDRS ENVID=QQ314159+2B\r\nRCPT TO:<b@example.net> "
                  "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.net\r\n"
                  "RCPT TO:<c@example.net> NOTIFY=NEVER\r\nDATA\r\nx\r\n.\r\n",
        "utf8": "EHLO [IPv6:2001:db8::1]\r\nMAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example> "
                "SMTPUTF8\r\nRCPT TO:<\"quoted local\"@example.net>\r\nRSET\r\n",
        "null-sender": "HELO mx.example.org\r\nMAIL FROM:<>\r\n"
                       "RCPT TO:<Postmaster>\r\nRCPT TO:<@a.example,@b.example:u@c.example>\r\n"
                       "NOOP\r\nHELP\r\nVRFY bob\r\nEXPN list\r\nSTARTTLS\r\n",
        "errors": "ehlo\r\nFOO bar\r\nMAIL FROM:a@b\r\nRCPT TO:<>\r\nDATA now\r\n"
                  "MAIL FROM:<a@b> SIZE=99999999999999999999999\r\nbare lf\n"
                  "nul\x00byte\r\nMAIL FROM:<a@b> UNKNOWN=1\r\n",
        "long-line": "EHLO " + "a" * 600 + "\r\nNOOP\r\n",
        "data-long": "EHLO x.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
                     "DATA\r\n" + "y" * 1500 + "\r\nbare\rcr and\nlf\r\n.\r\nQUIT\r\n",
    }
    for name, s in sessions.items():
        put("smtp_server", name, s.encode("latin-1"))


# ---- SMTP replies ---------------------------------------------------------

def smtp_reply_seeds():
    reset("smtp_reply")
    replies = {
        "greeting": "220 mx.example.net ESMTP Postfix (Debian/GNU)\r\n",
        "ehlo-postfix": "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                        "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
                        "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
        "ehlo-gmail": "250-mx.google.com at your service, [192.0.2.7]\r\n"
                      "250-SIZE 157286400\r\n250-8BITMIME\r\n250-STARTTLS\r\n"
                      "250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
                      "250 SMTPUTF8\r\n",
        "pipelined": "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
        "queued": "250 2.0.0 Ok: queued as 4XkQ2T0Zz3z9rxN\r\n",
        "reject-multiline": "550-5.1.1 The email account that you tried to reach does\r\n"
                            "550-5.1.1 not exist. Please try double-checking the recipient's\r\n"
                            "550 5.1.1 email address for typos. https://support.example/mail\r\n",
        "tempfail": "421 4.7.0 Try again later, closing connection.\r\n",
        "greylist": "450 4.2.0 <b@example.net>: Recipient address rejected: Greylisted\r\n",
        "bare-lf": "250-first\n250 second\n",
        "mixed-enh": "451-4.3.0 Local error\r\n451-4.4.1 other code kept as text\r\n451 4.3.0 end\r\n",
        "bare-code": "250\r\n",
        "bad-continuation": "250-ok\r\n251 other code\r\n",
        "starttls": "220 2.0.0 Ready to start TLS\r\n",
    }
    for name, s in replies.items():
        put("smtp_reply", name, s)


# ---- DNS ------------------------------------------------------------------

QTYPE_INDEX = {"A": 0, "AAAA": 1, "MX": 2, "TXT": 3, "TLSA": 4, "CNAME": 5}


def dns_seed(name, qname, qtype, answers=(), authority=(), rcode=dns.rcode.NOERROR,
             ad=False, trust=False, edns=True, qid=None):
    q = dns.message.make_query(qname, qtype, want_dnssec=edns, use_edns=edns)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if ad:
        r.flags |= dns.flags.AD
    for owner, ttl, rtype, text in answers:
        rrset = r.find_rrset(r.answer, dns.name.from_text(owner), dns.rdataclass.IN,
                             dns.rdatatype.from_text(rtype), create=True)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text), ttl)
    for owner, ttl, rtype, text in authority:
        rrset = r.find_rrset(r.authority, dns.name.from_text(owner), dns.rdataclass.IN,
                             dns.rdatatype.from_text(rtype), create=True)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text), ttl)
    wire = r.to_wire()
    mode = QTYPE_INDEX[qtype] | (8 if trust else 0) | (16 if qid else 0)
    put("dns", name, bytes([mode, 0]) + wire)


def dns_seeds():
    reset("dns")
    soa = ("example.org.", 3600, "SOA",
           "ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300")
    dns_seed("a", "mx1.example.org.", "A",
             [("mx1.example.org.", 300, "A", "192.0.2.25"),
              ("mx1.example.org.", 300, "A", "192.0.2.26")], ad=True, trust=True)
    dns_seed("aaaa", "mx1.example.org.", "AAAA",
             [("mx1.example.org.", 300, "AAAA", "2001:db8::25")], qid=True)
    dns_seed("mx", "example.org.", "MX",
             [("example.org.", 3600, "MX", "10 mx1.example.org."),
              ("example.org.", 3600, "MX", "20 mx2.example.org.")], ad=True, trust=True)
    dns_seed("mx-null", "example.com.", "MX", [("example.com.", 3600, "MX", "0 .")])
    dns_seed("mx-cname", "www.example.org.", "MX",
             [("www.example.org.", 60, "CNAME", "web.example.org."),
              ("web.example.org.", 60, "CNAME", "host.example.net."),
              ("host.example.net.", 120, "MX", "5 mx.example.net.")])
    dns_seed("txt-mtasts", "_mta-sts.example.org.", "TXT",
             [("_mta-sts.example.org.", 300, "TXT", '"v=STSv1; id=20240101T000000;"')])
    dns_seed("txt-multi", "example.org.", "TXT",
             [("example.org.", 300, "TXT", '"v=spf1 " "ip4:192.0.2.0/24 " "-all"'),
              ("example.org.", 300, "TXT", '"weird\\000byte\\255"')])
    dns_seed("tlsa", "_25._tcp.mx1.example.org.", "TLSA",
             [("_25._tcp.mx1.example.org.", 300, "TLSA",
               "3 1 1 " + hashlib.sha256(b"spki").hexdigest()),
              ("_25._tcp.mx1.example.org.", 300, "TLSA",
               "2 0 1 " + hashlib.sha256(b"ca").hexdigest())], ad=True, trust=True)
    dns_seed("tlsa-short", "_25._tcp.mx2.example.org.", "TLSA",
             [("_25._tcp.mx2.example.org.", 300, "TLSA", "3 1 2 00")])
    dns_seed("cname", "alias.example.org.", "CNAME",
             [("alias.example.org.", 600, "CNAME", "target.example.org.")])
    dns_seed("nxdomain", "nope.example.org.", "A", authority=[soa],
             rcode=dns.rcode.NXDOMAIN, ad=True, trust=True)
    dns_seed("nodata", "example.org.", "AAAA", authority=[soa])
    dns_seed("servfail", "broken.example.org.", "MX", rcode=dns.rcode.SERVFAIL, edns=False)
    dns_seed("cname-loop", "a.example.org.", "A",
             [("a.example.org.", 60, "CNAME", "b.example.org."),
              ("b.example.org.", 60, "CNAME", "a.example.org.")])


# ---- MTA-STS --------------------------------------------------------------

def txt_input(records, wide=False):
    """TXT records in the layout of fuzz_mtasts_txt.c (one-byte lengths,
    255: NULL) or, wide, of fuzz_tlsrpt_txt.c (two-byte lengths, 0xffff:
    NULL)."""
    out = bytes([len(records) - 1])
    for r in records:
        if r is None:
            out += b"\xff\xff" if wide else b"\xff"
        else:
            b = r.encode()
            out += (struct.pack(">H", len(b)) if wide else bytes([len(b)])) + b
    return out


def mtasts_seeds():
    for t in ("mtasts_txt", "mtasts_policy", "mtasts_mx"):
        reset(t)
    txts = {
        "rfc8461": ["v=STSv1; id=20160831085700Z;"],
        "with-spf": ["v=spf1 -all", "v=STSv1; id=abc123", "google-site-verification=x"],
        "ext-fields": ["v=STSv1;id=1;foo=bar ;  ext.name-1=v@l"],
        "two-sts": ["v=STSv1; id=1", "v=STSv1; id=2"],
        "none": ["v=STSv10; id=1", "v=spf1", None],
        "bad-id": ["v=STSv1; id=not-alnum!"],
    }
    for name, recs in txts.items():
        put("mtasts_txt", name, txt_input(recs))
    policies = {
        "rfc8461": "version: STSv1\nmode: enforce\nmx: mail.example.com\n"
                   "mx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
        "crlf-testing": "version: STSv1\r\nmode: testing\r\nmx: *.mail.example.org\r\n"
                        "max_age: 86400\r\n",
        "none": "version: STSv1\nmode: none\nmax_age: 0",
        "gmail": "version: STSv1\nmode: enforce\nmx: gmail-smtp-in.l.google.com\n"
                 "mx: *.gmail-smtp-in.l.google.com\nmax_age: 86400\n",
        "extensions": "version: STSv1\nmode: enforce\n  mx :  MX1.Example.COM.  \n"
                      "x-ext: whatever value\n\nmax_age: 31557600\nmode: none\n",
        "bad-age": "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
        "not-first": "mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 1\n",
    }
    for name, p in policies.items():
        put("mtasts_policy", name, p)
    mxs = {
        "exact": "mail.example.com\0mail.example.com",
        "wildcard": "*.example.net\0mx1.example.net",
        "wildcard-deep": "*.example.net\0a.b.example.net",
        "case-dot": "MAIL.Example.COM.\0mail.example.com",
        "wildcard-base": "*.example.net\0example.net",
        "self": "mx.example.org",
    }
    for name, m in mxs.items():
        put("mtasts_mx", name, m)


# ---- DANE -----------------------------------------------------------------

BASE_TIME = 1767225600  # 2026-01-01T00:00:00Z, as in fuzz_dane.c


def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def der_of(path, cwd, kind="x509"):
    if kind == "x509":
        return subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"],
                              cwd=cwd, check=True, capture_output=True).stdout
    return subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                          cwd=cwd, check=True, capture_output=True).stdout


def not_before(path, cwd):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-startdate"],
                         cwd=cwd, check=True, capture_output=True, text=True).stdout
    t = datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    return int(t.replace(tzinfo=timezone.utc).timestamp())


def dane_input(recs, chain, names, now_offset, extra=b""):
    mode = len(recs) | ((len(chain) - 1) << 3)
    if "mx" in names:
        mode |= 32
    if "domain" in names:
        mode |= 64
    if extra:
        mode |= 128
    out = bytes([mode]) + struct.pack(">i", now_offset)
    for r in recs + chain:
        out += struct.pack(">H", len(r)) + r
    return out + extra


def tlsa(usage, sel, mtype, data):
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return bytes([usage, sel, mtype]) + data


def dane_seeds():
    reset("dane")
    with tempfile.TemporaryDirectory() as d:
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "3650", "-subj", "/CN=Fuzz CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        run("openssl", "req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", "/CN=mx.example.com", cwd=d)
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:mx.example.com,DNS:*.mail.example.com\n"
                    "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem",
            "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem",
            "-days", "365", "-extfile", "ext.cnf", cwd=d)
        # A self-signed leaf, as many MX hosts use with DANE-EE.
        run("openssl", "req", "-x509", *ec, "-keyout", "self.key", "-out", "self.pem",
            "-days", "365", "-subj", "/CN=mx.example.com", cwd=d)
        ca, leaf, selfc = (der_of(f, d) for f in ("ca.pem", "leaf.pem", "self.pem"))
        ca_spki, leaf_spki = der_of("ca.key", d, "key"), der_of("leaf.key", d, "key")
        now = not_before("leaf.pem", d) + 86400 - BASE_TIME
        expired = now + 2 * 365 * 86400
    put("dane", "ee-311", dane_input([tlsa(3, 1, 1, leaf_spki)], [leaf, ca], ["mx"], now))
    put("dane", "ee-302-self", dane_input([tlsa(3, 0, 2, selfc)], [selfc], [], now))
    put("dane", "ta-201", dane_input([tlsa(2, 0, 1, ca)], [leaf, ca], ["mx"], now))
    put("dane", "ta-211-expired",
        dane_input([tlsa(2, 1, 1, ca_spki)], [leaf, ca], ["mx", "domain"], expired))
    put("dane", "ta-200-not-presented", dane_input([tlsa(2, 0, 0, ca)], [leaf], ["mx"], now))
    put("dane", "ta-210-bare-key", dane_input([tlsa(2, 1, 0, ca_spki)], [leaf], ["mx"], now))
    put("dane", "ta-wrong-name",
        dane_input([tlsa(2, 0, 1, ca)], [leaf, ca], [], now, b"other.example.org"))
    put("dane", "mixed-unusable",
        dane_input([tlsa(0, 0, 1, ca), tlsa(1, 1, 1, leaf_spki), tlsa(3, 1, 1, b"x"),
                    tlsa(2, 0, 1, ca)[:20], tlsa(3, 1, 1, leaf_spki)],
                   [leaf, b"\x30\x03\x02\x01\x00", ca], ["mx"], now))


# ---- DSN ------------------------------------------------------------------

def dsn_input(mode, rcpts, original, sender="alice@example.org", envid="",
              times=(1767225600, 1767312000, 1767311000)):
    out = bytes([mode, len(rcpts) - 1]) + struct.pack(">III", *times)
    out += struct.pack(">H", len(original)) + original
    fields = [sender, envid]
    for r in rcpts:
        fields += list(r)
    return out + b"\0".join(f.encode("latin-1") if isinstance(f, str) else f for f in fields)


def dsn_seeds():
    reset("dsn")
    msg = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
           b"Subject: hello\r\nMessage-ID: <1@example.org>\r\n\r\n"
           b"Hi Bob,\r\n.. a line with a dot\r\nsee you\r\n")
    bounce = ("bob@example.net", "rfc822;bob@example.net", "5.1.1", "mx.example.net",
              "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown")
    put("dsn", "failure-default", dsn_input(0, [bounce], msg))
    put("dsn", "failure-full", dsn_input(4 | 24, [bounce], msg, envid="QQ314159"))
    put("dsn", "failure-full-too-big", dsn_input(4 | 8, [bounce], msg))
    put("dsn", "delay-two", dsn_input(1 | 2, [
        ("c@example.com", "", "4.4.1", "", ""),
        ("d@example.com", "utf-8;d\\x{40}example.com", "4.7.5", "mx.example.com",
         "TLS is required, but the host does not offer STARTTLS")], msg))
    put("dsn", "bare-lf-8bit", dsn_input(4 | 24, [bounce],
        b"Subject: caf\xc3\xa9\nX: y\n\nbody with bare LF\nand CR\rinside\n"))
    put("dsn", "hostile-text", dsn_input(32, [
        ("b@example.net\r\nBcc: victim@example.com", "rfc822;x\r\n\r\n--b",
         "5.0.0\r\nX: 1", "mx\r\n.evil", "550 bad\r\n\r\n--injected\r\nContent-Type: text/html"),
    ], msg, envid="id\nX-Evil: 1"))
    put("dsn", "long-fields", dsn_input(0, [
        ("l" * 300 + "@example.net", "rfc822;" + "o" * 500, "5.0.0", "m" * 250 + ".example",
         "550 " + "d" * 1200)], msg))
    put("dsn", "boundary-in-body", dsn_input(4 | 24, [bounce],
        b"Subject: x\r\n\r\n--01HZX3K5AB.0/mail.example.net\r\n--01HZX3K5AB.1/mail.example.net--\r\n"))
    put("dsn", "no-header-end", dsn_input(0, [bounce], b"Subject: no body and no end"))
    put("dsn", "empty-sender", dsn_input(0, [bounce], msg, sender=""))


# ---- tlsrpt_txt -------------------------------------------------------------

def tlsrpt_seeds():
    reset("tlsrpt_txt")
    txts = {
        "rfc8460-mailto": ["v=TLSRPTv1;rua=mailto:reports@example.com"],
        "rfc8460-https": ["v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt"],
        "several": ["v=spf1 -all",
                    "v=TLSRPTv1; rua=mailto:a@example.com?subject=x , "
                    "HTTPS://R.Example.com:8443/p?q=%2C,ftp://x.example/;ext=1;"],
        "encoded": ["v=TLSRPTv1; rua=mailto:tls%2Brpt@example.com,"
                    "mailto:a@example.com%2Cb@example.com,https://u@h.example/x"],
        "two": ["v=TLSRPTv1; rua=mailto:a@example.com",
                "v=TLSRPTv1; rua=mailto:b@example.com", None],
        "many": ["v=TLSRPTv1; rua=" + ",".join(
            f"mailto:r{i}@example.com" for i in range(10))],
        "long": ["v=TLSRPTv1; rua=https://r.example.com/" + "p" * 500 +
                 ",mailto:x@example.org"],
    }
    for name, recs in txts.items():
        put("tlsrpt_txt", name, txt_input(recs, wide=True))


def main():
    if not shutil.which("openssl"):
        sys.exit("make_seeds.py: openssl is needed")
    config_seeds()
    smtp_server_seeds()
    smtp_reply_seeds()
    dns_seeds()
    mtasts_seeds()
    tlsrpt_seeds()
    dane_seeds()
    dsn_seeds()
    for t in sorted(os.listdir(CORPUS)):
        print(f"{t}: {len(os.listdir(os.path.join(CORPUS, t)))} seeds")


if __name__ == "__main__":
    main()
