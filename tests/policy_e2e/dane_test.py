"""DNSSEC and DANE end to end: a real `postern` with `policy { dnssec; dane }`
resolving through a validating unbound in front of nsd serving a signed and
an unsigned zone, delivering to aiosmtpd MX hosts on 127.0.0.x.

Scenarios (each checks the outcome at the MX peers and the delivery log):
 1. secure MX + matching DANE-EE TLSA -> sent, mx_level=dnssec
    tls_level=authenticated (the dane module vouched: dane_ok logged);
 2. secure TLSA but the MX offers no STARTTLS -> nothing sent in plaintext,
    deferred 4.7.5;
 3. TLSA mismatch on the first MX (whose certificate is PKIX-valid: DANE
    governs, RFC 8461 §2), DANE-TA match on the second -> sent via the second;
 4. bogus signature on the TLSA RRset (unbound answers SERVFAIL) -> deferred;
 5. unsigned zone (TLSA present but insecure) -> opportunistic delivery to a
    self-signed MX: mx_level=none tls_level=encrypted, no DANE;
 6. CNAME: the MX name is an alias, TLSA only at the expanded name; the
    certificate names only the expanded name (DANE-TA name check against
    the TLSA base domain, RFC 7672 §2.2.2) -> sent, authenticated;
 7. `local { min_tls_level authenticated }` against a self-signed MX ->
    deferred (a second relay);
 8. implicit MX (no MX records, validated denial): mx_level=dnssec and the
    domain's own TLSA records apply;
 9. TLSA records and a STARTTLS handshake that fails: no plaintext retry,
    deferred;
10. only unusable TLSA records (PKIX-EE, unknown usage): TLS is still
    mandatory, an unauthenticated session is acceptable: sent, encrypted.
11. a CA-signed certificate that names the MX only in its subject CN (no
    subjectAltName) under `local { min_tls_level authenticated }` ->
    deferred (RFC 8461 §4.2: DNS-IDs only); the same relay delivers to a
    certificate with a DNS-ID;
12. a 5xx greeting on the first MX, a good second MX -> sent via the second;
    only MX hosts answering the greeting or EHLO with 5xx -> deferred 4.x.x,
    never bounced (an attacker can inject such replies before TLS);
13. a route whose target is looked up by MX (an unsigned zone) to an MX host
    with secure TLSA records: an ordinary insecure MX lookup, no DANE ->
    sent; a literal `[host]` route to a host with secure addresses and a
    matching TLSA record: DANE applies (non-MX destination, RFC 7672
    §2.2.2), and the MX level stays `none`;
14. `policy { local; dane }` (no dnssec module): a DANE-authenticated
    delivery logs mx_level=dnssec, as postern-probe shows;
15. an MX host whose A RRset is secure and whose AAAA RRset is bogus: DANE
    still applies with the A addresses (RFC 7672 §2.1.1): a match is sent
    authenticated, a mismatch deferred;
16. a secure CNAME from the signed zone into the unsigned one with TLSA
    records at the original name (RFC 7672 §2.2.2): DANE applies (match:
    sent authenticated; mismatch: deferred) and the SNI is the TLSA base
    domain (§8.1), also in scenario 6 where that is the expanded name;
17. 40 TLSA records of which only the last two are DANE-EE: all are kept
    (match: authenticated; no match: deferred).

Usage: dane_test.py POSTERN_BINARY POSTERN_PROBE_BINARY
"""

import hashlib
import json
import subprocess
import sys

import dnssec_zone
import pki
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
PROBE = sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def der(cert_pem, what="x509"):
    args = (["openssl", "x509", "-in", cert_pem, "-outform", "DER"] if what == "x509"
            else ["sh", "-c", "openssl x509 -in '%s' -pubkey -noout | "
                  "openssl pkey -pubin -outform DER" % cert_pem])
    return subprocess.run(args, check=True, stdout=subprocess.PIPE).stdout


def spki_sha256(cert_pem):
    return hashlib.sha256(der(cert_pem, "spki")).hexdigest()


def cert_sha256(cert_pem):
    return hashlib.sha256(der(cert_pem)).hexdigest()


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")


def first_delivery(r, rcpt, timeout=30):
    return r.wait_log(lambda e: e.get("event") == "delivery" and e.get("rcpt") == rcpt,
                      timeout=timeout)[0]


def start_peers(hosts, tls, extra):
    """One smtpd_peer per 127.0.0.x on a common port (delivery { port N })."""
    for _ in range(20):
        port = dnssec_zone._free_port()
        peers = {}
        try:
            for name, ip in hosts.items():
                crt_key = tls.get(name)
                kw = {"tls_cert": crt_key[0], "tls_key": crt_key[1]} if crt_key else {}
                kw.update(extra.get(name, {}))
                peers[name] = smtpd_peer.Peer(host=ip, port=port, hostname=name, **kw)
            return port, peers
        except OSError:
            for p in peers.values():
                p.stop()
    raise RuntimeError("no common free port on the MX addresses")


def main():
    p = pki.PKI()
    hosts = {
        "mx1.secure.test": "127.0.0.11",     # 1: DANE-EE match
        "mx2.secure.test": "127.0.0.12",     # 2: no STARTTLS
        "mxbad.secure.test": "127.0.0.13",   # 3: TLSA mismatch, PKIX-valid
        "mxgood.secure.test": "127.0.0.14",  # 3, 6: DANE-TA match
        "mxbogus.secure.test": "127.0.0.15",  # 4: bogus TLSA signature
        "mx.plain.test": "127.0.0.16",       # 5, 7: unsigned zone, self-signed
        "mxgarb.secure.test": "127.0.0.17",  # 9: STARTTLS answered with junk
        "mxunus.secure.test": "127.0.0.18",  # 10: only unusable TLSA records
        "mxcn.plain.test": "127.0.0.19",     # 11: CN-only certificate
        "mx5g.plain.test": "127.0.0.20",     # 12: 554 greeting
        "mx5e.plain.test": "127.0.0.21",     # 12: 554 to EHLO
        "mxr.secure.test": "127.0.0.22",     # 13: MX of a routed target
        "mx6ok.secure.test": "127.0.0.23",   # 15: bogus AAAA, TLSA match
        "mx6bad.secure.test": "127.0.0.24",  # 15: bogus AAAA, TLSA mismatch
        "mxc.plain.test": "127.0.0.25",      # 16: secure CNAME target, match
        "mxc2.plain.test": "127.0.0.26",     # 16: secure CNAME target, mismatch
        "mx40.secure.test": "127.0.0.27",    # 17: 40 records, last matches
        "mx40b.secure.test": "127.0.0.28",   # 17: 40 records, none matches
    }
    tls = {
        "mx1.secure.test": p.server_cert("mx1.secure.test"),
        "mxbad.secure.test": p.server_cert("mxbad.secure.test"),
        "mxgood.secure.test": p.server_cert("mxgood.secure.test", chain=True),
        "mxbogus.secure.test": p.server_cert("mxbogus.secure.test"),
        "mx.plain.test": p.server_cert("mx.plain.test", self_signed=True),
        "mxunus.secure.test": p.server_cert("mxunus.secure.test", self_signed=True),
        "mxgarb.secure.test": p.server_cert("mxgarb.secure.test"),
        "mxcn.plain.test": p.server_cert("mxcn.plain.test", san=False),
        "mxr.secure.test": p.server_cert("mxr.secure.test", self_signed=True),
        # self-signed: only DANE can make the session authenticated
        "mx6ok.secure.test": p.server_cert("mx6ok.secure.test", self_signed=True),
        "mx6bad.secure.test": p.server_cert("mx6bad.secure.test"),
        "mxc.plain.test": p.server_cert("mxc.plain.test", self_signed=True),
        "mxc2.plain.test": p.server_cert("mxc2.plain.test", self_signed=True),
        "mx40.secure.test": p.server_cert("mx40.secure.test", self_signed=True),
        "mx40b.secure.test": p.server_cert("mx40b.secure.test", self_signed=True),
    }
    port, peers = start_peers(hosts, tls, {
        "mxgarb.secure.test": {"starttls_garbage": True},
        "mx5g.plain.test": {"greeting": "554 5.3.2 mx5g.plain.test go away"},
        "mx5e.plain.test": {"ehlo_reply": "554 5.7.1 mx5e.plain.test not you"},
    })
    mx1_spki = spki_sha256(tls["mx1.secure.test"][0])
    other = p.server_cert("unrelated.test")
    wrong = spki_sha256(other[0])
    ca_digest = cert_sha256(p.ca_file)
    t = f"_{port}._tcp"
    # 17: 38 PKIX-EE(1) records (unusable for SMTP) sort before the DANE-EE
    # ones in the canonical order nsd serves and unbound keeps.
    filler = [hashlib.sha256(b"filler %d" % i).hexdigest() for i in range(38)]
    zones = {
        "secure.test": {"signed": True, "records": [
            "dane MX 10 mx1",
            "mx1 A 127.0.0.11",
            f"{t}.mx1 TLSA 3 1 1 {mx1_spki}",
            "nostls MX 10 mx2",
            "mx2 A 127.0.0.12",
            f"{t}.mx2 TLSA 3 1 1 {mx1_spki}",
            "fallback MX 10 mxbad",
            "fallback MX 20 mxgood",
            "mxbad A 127.0.0.13",
            f"{t}.mxbad TLSA 3 1 1 {wrong}",
            "mxgood A 127.0.0.14",
            f"{t}.mxgood TLSA 2 0 1 {ca_digest}",
            "bogus MX 10 mxbogus",
            "mxbogus A 127.0.0.15",
            f"{t}.mxbogus TLSA 3 1 1 {spki_sha256(tls['mxbogus.secure.test'][0])}",
            "cname MX 10 alias",
            "alias CNAME mxgood",
            # no MX: the domain is its own MX (validated NODATA)
            "imp A 127.0.0.11",
            f"{t}.imp TLSA 3 1 1 {mx1_spki}",
            "garb MX 10 mxgarb",
            "mxgarb A 127.0.0.17",
            f"{t}.mxgarb TLSA 3 1 1 {mx1_spki}",
            "unus MX 10 mxunus",
            "mxunus A 127.0.0.18",
            # PKIX-EE(1) and an unknown usage: secure but unusable for SMTP
            f"{t}.mxunus TLSA 1 1 1 {spki_sha256(tls['mxunus.secure.test'][0])}",
            f"{t}.mxunus TLSA 4 1 1 {mx1_spki}",
            "mxr A 127.0.0.22",
            f"{t}.mxr TLSA 3 1 1 {wrong}",
            "v6ok MX 10 mx6ok",
            "mx6ok A 127.0.0.23",
            "mx6ok AAAA ::1",
            f"{t}.mx6ok TLSA 3 1 1 {spki_sha256(tls['mx6ok.secure.test'][0])}",
            "v6bad MX 10 mx6bad",
            "mx6bad A 127.0.0.24",
            "mx6bad AAAA ::1",
            f"{t}.mx6bad TLSA 3 1 1 {wrong}",
            "cn7 MX 10 calias",
            "calias CNAME mxc.plain.test.",
            f"{t}.calias TLSA 3 1 1 {spki_sha256(tls['mxc.plain.test'][0])}",
            "cn7bad MX 10 calias2",
            "calias2 CNAME mxc2.plain.test.",
            f"{t}.calias2 TLSA 3 1 1 {wrong}",
            "big MX 10 mx40",
            "mx40 A 127.0.0.27",
        ] + [f"{t}.mx40 TLSA 1 1 1 {d}" for d in filler] + [
            f"{t}.mx40 TLSA 3 1 1 {wrong}",
            f"{t}.mx40 TLSA 3 1 1 {spki_sha256(tls['mx40.secure.test'][0])}",
            "bigbad MX 10 mx40b",
            "mx40b A 127.0.0.28",
        ] + [f"{t}.mx40b TLSA 1 1 1 {d}" for d in filler] + [
            f"{t}.mx40b TLSA 3 1 1 {wrong}",
            f"{t}.mx40b TLSA 3 1 1 {spki_sha256(other[0])[::-1]}",
        ], "bogus": [(f"{t}.mxbogus", "TLSA"), ("mx6ok", "AAAA"),
                     ("mx6bad", "AAAA")]},
        "plain.test": {"signed": False, "records": [
            "@ MX 10 mx",
            "mx A 127.0.0.16",
            f"{t}.mx TLSA 3 1 1 {wrong}",
            "cn MX 10 mxcn",
            "mxcn A 127.0.0.19",
            "pkix MX 10 mxbad.secure.test.",
            "skip5 MX 10 mx5g",
            "skip5 MX 20 mx",
            "only5 MX 10 mx5g",
            "only5 MX 20 mx5e",
            "mx5g A 127.0.0.20",
            "mx5e A 127.0.0.21",
            "rtarget MX 10 mxr.secure.test.",
            "mxc A 127.0.0.25",
            "mxc2 A 127.0.0.26",
        ]},
    }
    fx = dnssec_zone.Fixture(zones)
    try:
        # The resolver chain itself: AD for the signed zone, SERVFAIL for
        # the corrupted signature, no AD for the unsigned zone.
        rc, ad, _ = fx.query("dane.secure.test", "MX")
        check(rc == "NOERROR" and ad, "unbound: signed MX RRset validates (AD)")
        rc, ad, _ = fx.query(f"{t}.mxbogus.secure.test", "TLSA")
        check(rc == "SERVFAIL", "unbound: corrupted TLSA RRSIG is bogus (SERVFAIL)")
        rc, ad, _ = fx.query("plain.test", "MX")
        check(rc == "NOERROR" and not ad, "unbound: unsigned zone is insecure (no AD)")
        rc, ad, _ = fx.query("mx6ok.secure.test", "A")
        check(rc == "NOERROR" and ad, "unbound: A of mx6ok validates")
        rc, ad, _ = fx.query("mx6ok.secure.test", "AAAA")
        check(rc == "SERVFAIL", "unbound: AAAA of mx6ok is bogus (SERVFAIL)")
        rc, ad, _ = fx.query("calias.secure.test", "A")
        check(rc == "NOERROR" and not ad,
              "unbound: A via a secure CNAME into the unsigned zone is insecure")
        rc, ad, _ = fx.query("calias.secure.test", "CNAME")
        check(rc == "NOERROR" and ad, "unbound: the CNAME RRset itself validates")
        rc, ad, rd = fx.query(f"{t}.mx40.secure.test", "TLSA")
        check(rc == "NOERROR" and ad and len(rd) == 40 and rd[-1].startswith("3 1 1")
              and all(x.startswith("1 1 1") for x in rd[:38]),
              f"unbound: 40 TLSA records for mx40, DANE-EE last ({len(rd)})")

        extra = (f"tls {{ ca_file {p.ca_file} }}\n"
                 "policy { local; dnssec; dane }\n"
                 "queue { retry_initial 1h }")
        routes = (f"route rt.test rtarget.plain.test:{port}; "
                  f"route lit.test [mx1.secure.test]:{port}")
        with Relay(POSTERN, fx.port,
                   delivery=f"port {port}; connect_timeout 5s; {routes}",
                   extra=extra) as r:
            # 1. secure MX + matching TLSA
            r.send("s@snd.test", ["a@dane.secure.test"], msg("s1"))
            e = first_delivery(r, "a@dane.secure.test")
            check(e.get("status") == "sent" and e.get("mx") == "mx1.secure.test"
                  and e.get("mx_level") == "dnssec" and e.get("tls_level") == "authenticated",
                  "1: secure MX + matching TLSA: sent, mx_level=dnssec "
                  f"tls_level=authenticated ({e.get('status')} {e.get('mx_level')} "
                  f"{e.get('tls_level')})")
            check(len(peers["mx1.secure.test"].messages) == 1
                  and peers["mx1.secure.test"].messages[0]["tls"],
                  "1: the MX received the message over TLS")
            check(any(x.get("event") == "dane_ok" and x.get("host") == "mx1.secure.test"
                      and x.get("usage") == "3" for x in r.events()),
                  "1: DANE-EE authenticated the session (dane_ok usage=3)")

            # 2. secure TLSA, no STARTTLS
            r.send("s@snd.test", ["a@nostls.secure.test"], msg("s2"))
            e = first_delivery(r, "a@nostls.secure.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5"
                  and e.get("mx_level") == "none" and e.get("tls_level") == "none",
                  f"2: TLSA without STARTTLS: deferred 4.7.5 ({e.get('status')} "
                  f"{e.get('dsn')}: {e.get('reply')})")
            check(not peers["mx2.secure.test"].messages and
                  "MAIL" not in peers["mx2.secure.test"].commands,
                  "2: nothing was sent in plaintext")

            # 3. mismatch on the first MX, match on the second
            r.send("s@snd.test", ["a@fallback.secure.test"], msg("s3"))
            e = first_delivery(r, "a@fallback.secure.test")
            check(e.get("status") == "sent" and e.get("mx") == "mxgood.secure.test"
                  and e.get("mx_level") == "dnssec" and e.get("tls_level") == "authenticated",
                  f"3: mismatch then match: sent via mxgood ({e.get('status')} "
                  f"{e.get('mx')} {e.get('mx_level')} {e.get('tls_level')})")
            check(not peers["mxbad.secure.test"].messages
                  and len(peers["mxgood.secure.test"].messages) == 1,
                  "3: the mismatching MX (PKIX-valid certificate) got nothing")
            check(any(x.get("event") == "dane_mismatch"
                      and x.get("host") == "mxbad.secure.test" for x in r.events()),
                  "3: dane_mismatch logged for mxbad")

            # 4. bogus TLSA signature
            r.send("s@snd.test", ["a@bogus.secure.test"], msg("s4"))
            e = first_delivery(r, "a@bogus.secure.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5"
                  and "TLSA lookup" in e.get("reply", ""),
                  f"4: bogus TLSA: deferred 4.7.5 ({e.get('status')} {e.get('dsn')}: "
                  f"{e.get('reply')})")
            check(not peers["mxbogus.secure.test"].commands,
                  "4: the host with bogus TLSA was not even contacted")

            # 5. unsigned zone: opportunistic, no DANE
            r.send("s@snd.test", ["a@plain.test"], msg("s5"))
            e = first_delivery(r, "a@plain.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "none"
                  and e.get("tls_level") == "encrypted",
                  f"5: insecure zone: sent, mx_level=none tls_level=encrypted "
                  f"({e.get('status')} {e.get('mx_level')} {e.get('tls_level')})")
            check(len(peers["mx.plain.test"].messages) == 1
                  and peers["mx.plain.test"].messages[0]["tls"],
                  "5: delivered over (unauthenticated) TLS despite an insecure TLSA")

            # 6. CNAME: TLSA at the expanded name, names from the base domain
            r.send("s@snd.test", ["a@cname.secure.test"], msg("s6"))
            e = first_delivery(r, "a@cname.secure.test")
            check(e.get("status") == "sent" and e.get("mx") == "alias.secure.test"
                  and e.get("tls_level") == "authenticated" and e.get("mx_level") == "dnssec",
                  f"6: CNAME'd MX: TLSA of the expanded name used ({e.get('status')} "
                  f"{e.get('mx')} {e.get('tls_level')}: {e.get('reply')})")
            check(any(x.get("event") == "dane_ok" and x.get("host") == "alias.secure.test"
                      and x.get("base_domain") == "mxgood.secure.test"
                      for x in r.events()),
                  "6: TLSA base domain is the expanded name")
            sess = peers["mxgood.secure.test"].tls_sessions
            check(sess and sess[-1]["sni"] == "mxgood.secure.test",
                  "6: the SNI is the TLSA base domain, not the MX name (RFC 7672 "
                  f"§8.1) ({sess[-1]['sni'] if sess else None})")
            # 8. implicit MX: no MX records, validated denial
            r.send("s@snd.test", ["a@imp.secure.test"], msg("s8"))
            e = first_delivery(r, "a@imp.secure.test")
            check(e.get("status") == "sent" and e.get("mx") == "imp.secure.test"
                  and e.get("mx_level") == "dnssec" and e.get("tls_level") == "authenticated",
                  f"8: implicit MX with validated NODATA: mx_level=dnssec, DANE applies "
                  f"({e.get('status')} {e.get('mx')} {e.get('mx_level')} "
                  f"{e.get('tls_level')})")

            # 9. TLSA present, STARTTLS handshake fails: no plaintext retry
            r.send("s@snd.test", ["a@garb.secure.test"], msg("s9"))
            e = first_delivery(r, "a@garb.secure.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"9: TLSA + failed handshake: deferred 4.7.5 ({e.get('status')} "
                  f"{e.get('dsn')}: {e.get('reply')})")
            check("STARTTLS" in peers["mxgarb.secure.test"].commands
                  and "MAIL" not in peers["mxgarb.secure.test"].commands
                  and not any(x.get("event") == "starttls_failed_plaintext_retry"
                              and x.get("mx") == "mxgarb.secure.test" for x in r.events()),
                  "9: STARTTLS tried, no plaintext retry after the failed handshake")

            # 10. only unusable records: TLS required, encryption suffices
            r.send("s@snd.test", ["a@unus.secure.test"], msg("s10"))
            e = first_delivery(r, "a@unus.secure.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "dnssec"
                  and e.get("tls_level") == "encrypted",
                  f"10: unusable TLSA only: sent, tls_level=encrypted ({e.get('status')} "
                  f"{e.get('mx_level')} {e.get('tls_level')}: {e.get('reply')})")
            check(any(x.get("event") == "dane_unusable"
                      and x.get("host") == "mxunus.secure.test" for x in r.events()),
                  "10: dane_unusable logged")

            # 12. 5xx before TLS: skip the host, never bounce
            r.send("s@snd.test", ["a@skip5.plain.test"], msg("s12a"))
            e = first_delivery(r, "a@skip5.plain.test")
            check(e.get("status") == "sent" and e.get("mx") == "mx.plain.test",
                  f"12: 554 greeting on the first MX: sent via the second "
                  f"({e.get('status')} {e.get('mx')}: {e.get('reply')})")
            r.send("s@snd.test", ["a@only5.plain.test"], msg("s12b"))
            e = first_delivery(r, "a@only5.plain.test")
            check(e.get("status") == "deferred" and e.get("dsn", "").startswith("4."),
                  f"12: only 5xx greetings/EHLO replies: deferred 4.x.x, not bounced "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check("EHLO" in peers["mx5e.plain.test"].commands
                  and "MAIL" not in peers["mx5e.plain.test"].commands
                  and not peers["mx5g.plain.test"].commands,
                  "12: both 5xx hosts were tried, neither got MAIL")

            # 13. routes: an MX-looked-up target is an ordinary MX lookup
            r.send("s@snd.test", ["a@rt.test"], msg("s13a"))
            e = first_delivery(r, "a@rt.test")
            check(e.get("status") == "sent" and e.get("mx") == "mxr.secure.test"
                  and e.get("mx_level") == "none" and e.get("tls_level") == "encrypted",
                  f"13: route via an insecure MX lookup: no DANE, sent encrypted "
                  f"({e.get('status')} {e.get('mx')} {e.get('mx_level')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")
            check(not any(x.get("event", "").startswith("dane_")
                          and x.get("host") == "mxr.secure.test" for x in r.events()),
                  "13: no TLSA lookup for the host of an insecure MX RRset")
            r.send("s@snd.test", ["a@lit.test"], msg("s13b"))
            e = first_delivery(r, "a@lit.test")
            check(e.get("status") == "sent" and e.get("mx") == "mx1.secure.test"
                  and e.get("mx_level") == "none" and e.get("tls_level") == "authenticated",
                  f"13: literal route to a secure host: DANE, mx_level stays none "
                  f"({e.get('status')} {e.get('mx')} {e.get('mx_level')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")

            # 15. bogus AAAA next to a secure A RRset: DANE with the A family
            r.send("s@snd.test", ["a@v6ok.secure.test"], msg("s15a"))
            e = first_delivery(r, "a@v6ok.secure.test")
            check(e.get("status") == "sent" and e.get("mx") == "mx6ok.secure.test"
                  and e.get("mx_level") == "dnssec" and e.get("tls_level") == "authenticated",
                  f"15: secure A, bogus AAAA, TLSA match: sent authenticated "
                  f"({e.get('status')} {e.get('mx_level')} {e.get('tls_level')}: "
                  f"{e.get('reply')})")
            r.send("s@snd.test", ["a@v6bad.secure.test"], msg("s15b"))
            e = first_delivery(r, "a@v6bad.secure.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"15: secure A, bogus AAAA, TLSA mismatch: deferred 4.7.5 "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(not peers["mx6bad.secure.test"].messages,
                  "15: the mismatching host (PKIX-valid certificate) got nothing")

            # 16. secure CNAME into the unsigned zone, TLSA at the original name
            r.send("s@snd.test", ["a@cn7.secure.test"], msg("s16a"))
            e = first_delivery(r, "a@cn7.secure.test")
            check(e.get("status") == "sent" and e.get("mx") == "calias.secure.test"
                  and e.get("tls_level") == "authenticated",
                  f"16: secure CNAME into an unsigned zone, TLSA at the original name: "
                  f"sent authenticated ({e.get('status')} {e.get('mx')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")
            check(any(x.get("event") == "dane_ok" and x.get("host") == "calias.secure.test"
                      and x.get("base_domain") == "calias.secure.test"
                      for x in r.events()),
                  "16: TLSA base domain is the original name")
            sess = peers["mxc.plain.test"].tls_sessions
            check(sess and sess[-1]["sni"] == "calias.secure.test",
                  f"16: SNI is the TLSA base domain ({sess[-1]['sni'] if sess else None})")
            r.send("s@snd.test", ["a@cn7bad.secure.test"], msg("s16b"))
            e = first_delivery(r, "a@cn7bad.secure.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"16: secure CNAME, TLSA mismatch at the original name: deferred "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(not peers["mxc2.plain.test"].messages,
                  "16: the mismatching CNAME target got nothing")

            # 17. 40 TLSA records, the DANE-EE ones last
            r.send("s@snd.test", ["a@big.secure.test"], msg("s17a"))
            e = first_delivery(r, "a@big.secure.test")
            check(e.get("status") == "sent" and e.get("tls_level") == "authenticated",
                  f"17: 40 records, the last one matches: sent authenticated "
                  f"({e.get('status')} {e.get('tls_level')}: {e.get('reply')})")
            r.send("s@snd.test", ["a@bigbad.secure.test"], msg("s17b"))
            e = first_delivery(r, "a@bigbad.secure.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"17: 40 records, usable ones last, none matches: deferred "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(not peers["mx40b.secure.test"].messages,
                  "17: nothing accepted without a TLSA match")
            check(r.stop() == 0, "relay stopped cleanly")

        # 7. local minimum against a self-signed MX
        before = len(peers["mx.plain.test"].messages)
        with Relay(POSTERN, fx.port, delivery=f"port {port}; connect_timeout 5s",
                   extra="policy { local { min_tls_level authenticated } }\n"
                         "queue { retry_initial 1h }") as r:
            r.send("s@snd.test", ["b@plain.test"], msg("s7"))
            e = first_delivery(r, "b@plain.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5"
                  and e.get("mx_level") == "none" and e.get("tls_level") == "none",
                  f"7: min_tls_level authenticated vs self-signed: deferred 4.7.5 "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(len(peers["mx.plain.test"].messages) == before,
                  "7: the self-signed MX got nothing")

        # 11. a CN-only certificate is not authenticated (RFC 8461 §4.2)
        with Relay(POSTERN, fx.port, delivery=f"port {port}; connect_timeout 5s",
                   extra=f"tls {{ ca_file {p.ca_file} }}\n"
                         "policy { local { min_tls_level authenticated } }\n"
                         "queue { retry_initial 1h }") as r:
            r.send("s@snd.test", ["a@pkix.plain.test"], msg("s11a"))
            e = first_delivery(r, "a@pkix.plain.test")
            check(e.get("status") == "sent" and e.get("tls_level") == "authenticated",
                  f"11: DNS-ID certificate: sent authenticated ({e.get('status')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")
            r.send("s@snd.test", ["a@cn.plain.test"], msg("s11b"))
            e = first_delivery(r, "a@cn.plain.test")
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"11: CN-only certificate vs min_tls_level authenticated: deferred "
                  f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            check(not peers["mxcn.plain.test"].messages,
                  "11: the CN-only MX got nothing")

        # 14. DANE without the dnssec module: the MX level DANE relied on
        with Relay(POSTERN, fx.port, delivery=f"port {port}; connect_timeout 5s",
                   extra=f"tls {{ ca_file {p.ca_file} }}\n"
                         "policy { local; dane }\n"
                         "queue { retry_initial 1h }") as r:
            r.send("s@snd.test", ["b@dane.secure.test"], msg("s14"))
            e = first_delivery(r, "b@dane.secure.test")
            check(e.get("status") == "sent" and e.get("mx_level") == "dnssec"
                  and e.get("tls_level") == "authenticated",
                  f"14: DANE-authenticated without the dnssec module: mx_level=dnssec "
                  f"({e.get('status')} {e.get('mx_level')} {e.get('tls_level')})")
            pr = subprocess.run([PROBE, "-c", r.conf, "--json", "dane.secure.test"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=60)
            try:
                res = json.loads(pr.stdout)
            except ValueError:
                res = {}
            mx = res.get("mx") or [{}]
            check(pr.returncode == 0 and mx[0].get("mx_level") == "dnssec"
                  and mx[0].get("tls_level") == "authenticated",
                  f"14: postern-probe shows mx_level=dnssec ({pr.returncode} "
                  f"{pr.stdout.strip()[:300]} {pr.stderr.strip()[:300]})")
    finally:
        fx.close()
        for pe in peers.values():
            pe.stop()
        p.cleanup()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
