"""TLS session resumption under DANE, end to end: a real `postern` with
`policy { local; dnssec; dane }` through a validating unbound in front of
nsd (tests/peers/dnssec_zone.py), delivering to aiosmtpd MX hosts that
record, per STARTTLS handshake, whether the client resumed a session.

A resumed session carries the certificate chain of the handshake that made
it, so the relay keys its session cache by everything the verdict depends
on (host, port, SNI, and the TLSA RRset that governs) and drops a session
whose policy check failed. Every connection carries one message
(`reuse_limit 1`), so each delivery is a new TLS handshake.

Scenarios:
 1. two deliveries to a DANE host: the second resumes the first's session
    (the cache works, and the resumed session is checked again: sent,
    authenticated);
 2. TLSA and key rollover: the MX serves a new certificate (keeping its
    ticket keys, so it would accept the old session) and the zone is
    reloaded with a TLSA record for the new key only: the next delivery
    makes a full handshake and is sent authenticated (an old session would
    bring back the old chain, which no longer matches);
 3. a host whose TLSA record does not match: the delivery is deferred, and
    the next attempt does not offer the session of the failed one.

Usage: tls_session_test.py POSTERN_BINARY
"""

import hashlib
import subprocess
import sys
import time

import dnssec_zone
import pki
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def spki_sha256(cert_pem):
    spki = subprocess.run(
        ["sh", "-c", "openssl x509 -in '%s' -pubkey -noout | "
         "openssl pkey -pubin -outform DER" % cert_pem],
        check=True, stdout=subprocess.PIPE).stdout
    return hashlib.sha256(spki).hexdigest()


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")


def delivery(r, rcpt, timeout=30):
    return r.wait_log(lambda e: e.get("event") == "delivery" and e.get("rcpt") == rcpt,
                      timeout=timeout)[0]


def start_peers(hosts, tls):
    for _ in range(20):
        port = dnssec_zone._free_port()
        peers = {}
        try:
            for name, ip in hosts.items():
                crt, key = tls[name]
                peers[name] = smtpd_peer.Peer(host=ip, port=port, hostname=name,
                                              tls_cert=crt, tls_key=key)
            return port, peers
        except OSError:
            for p in peers.values():
                p.stop()
    raise RuntimeError("no common free port on the MX addresses")


def zones(t, roll_spki, wrong):
    return {
        # TTL 1 s: the TLSA rollover must reach the relay's DNS cache.
        "secure.test": {"signed": True, "ttl": 1, "records": [
            "roll MX 10 mxroll",
            "mxroll A 127.0.0.31",
            f"{t}.mxroll TLSA 3 1 1 {roll_spki}",
            "fail MX 10 mxfail",
            "mxfail A 127.0.0.32",
            f"{t}.mxfail TLSA 3 1 1 {wrong}",
        ]},
    }


def main():
    p = pki.PKI()
    hosts = {"mxroll.secure.test": "127.0.0.31", "mxfail.secure.test": "127.0.0.32"}
    # Self-signed: only DANE can authenticate these sessions.
    old = p.server_cert("mxroll.secure.test", self_signed=True)
    tls = {
        "mxroll.secure.test": old,
        "mxfail.secure.test": p.server_cert("mxfail.secure.test", self_signed=True),
    }
    # Another file name (pki.py names files after the first argument): the
    # new key must not overwrite the old one.
    new = p.server_cert("new.secure.test", names=["mxroll.secure.test"],
                        self_signed=True)
    check(spki_sha256(new[0]) != spki_sha256(old[0]), "the new key differs")
    wrong = spki_sha256(p.server_cert("unrelated.test")[0])
    port, peers = start_peers(hosts, tls)
    roll, fail = peers["mxroll.secure.test"], peers["mxfail.secure.test"]
    t = f"_{port}._tcp"
    fx = dnssec_zone.Fixture(zones(t, spki_sha256(old[0]), wrong))
    try:
        extra = ("policy { local; dnssec; dane }\n"
                 "queue { retry_initial 1h }")
        with Relay(POSTERN, fx.port,
                   delivery=f"port {port}; connect_timeout 5s; reuse_limit 1",
                   extra=extra) as r:
            # 1. the cache works; a resumed session is judged again
            for i in (1, 2):
                r.send("s@snd.test", [f"a{i}@roll.secure.test"], msg(f"r{i}"))
                e = delivery(r, f"a{i}@roll.secure.test")
                check(e.get("status") == "sent" and e.get("tls_level") == "authenticated",
                      f"1: delivery {i} sent authenticated ({e.get('status')} "
                      f"{e.get('tls_level')}: {e.get('reply')})")
            s = roll.tls_sessions
            check(len(s) == 2 and not s[0]["resumed"] and s[1]["resumed"],
                  f"1: the second handshake resumed the first's session ({s})")
            check(sum(1 for x in r.events() if x.get("event") == "dane_ok"
                      and x.get("host") == "mxroll.secure.test") == 2,
                  "1: DANE checked both sessions, the resumed one too")

            # 2. TLSA and key rollover
            roll.reload_cert(*new)
            fx.reload(zones(t, spki_sha256(new[0]), wrong))
            rc, ad, rd = fx.query(f"{t}.mxroll.secure.test", "TLSA")
            check(rc == "NOERROR" and ad and rd == [f"3 1 1 {spki_sha256(new[0])}"],
                  f"2: the zone now publishes the new key only ({rc} {ad} {rd})")
            # The relay's cached answers live for their TTL (1 s here), as
            # a rollover's published TTL promises: wait that long.
            time.sleep(1.5)
            r.send("s@snd.test", ["a3@roll.secure.test"], msg("r3"))
            e = delivery(r, "a3@roll.secure.test")
            check(e.get("status") == "sent" and e.get("tls_level") == "authenticated",
                  f"2: after the rollover: sent authenticated ({e.get('status')} "
                  f"{e.get('tls_level')}: {e.get('reply')})")
            s = roll.tls_sessions
            check(len(s) == 3 and not s[2]["resumed"],
                  f"2: a full handshake, no session of the old TLSA RRset offered ({s})")

            # 3. a session whose policy check failed is not offered again
            for i in (1, 2):
                r.send("s@snd.test", [f"b{i}@fail.secure.test"], msg(f"f{i}"))
                e = delivery(r, f"b{i}@fail.secure.test")
                check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                      f"3: attempt {i} at the mismatching host: deferred 4.7.5 "
                      f"({e.get('status')} {e.get('dsn')}: {e.get('reply')})")
            s = fail.tls_sessions
            check(len(s) == 2 and not s[0]["resumed"] and not s[1]["resumed"],
                  f"3: the failed session was not offered again ({s})")
            check(not fail.messages, "3: the mismatching host got nothing")
            check(r.stop() == 0, "relay stopped cleanly")
    finally:
        fx.close()
        for pe in peers.values():
            pe.stop()
        p.cleanup()
    print(f"{len(failures)} failed checks" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
