"""Downgrade attempts and the `local` policy matrix (issues 5 and 8).

For each `policy { local { min_tls_level L } }` with L in none, encrypted,
authenticated (and `tls { ca_file TESTCA }`), one message goes to each of:

    plain   a peer without STARTTLS
    self    STARTTLS with a self-signed certificate for its own name
            (an attacker's swapped certificate)
    valid   STARTTLS with a certificate from TESTCA for its name
    wrong   STARTTLS with a certificate from TESTCA for another name
    strip   a valid peer behind a man in the middle that removes
            STARTTLS from the EHLO reply

and is delivered, or deferred with a 4.7.x status and never reaches the
peer, exactly as the level table says; the delivery log's tls_level says
what the session reached. The DANE case (TLSA served insecurely while the
zone is signed) waits for the DANE module.

Usage: downgrade_test.py POSTERN
"""

import sys

import dnspeer
import faultkit as fk
import mitm
import pki
import smtpd_peer
from relay import Relay

POSTERN = sys.argv[1]
ORDER = ["none", "encrypted", "authenticated"]
# What each peer's session reaches at best.
REACHED = {"plain": "none", "self": "encrypted", "valid": "authenticated",
           "strip": "none", "wrong": "encrypted"}


def main():
    with pki.PKI() as p:
        vc, vk = p.server_cert("mx.valid.test")
        sc, sk = p.server_cert("mx.self.test", self_signed=True)
        # The stripped peer holds a valid certificate for its name too.
        tc, tk = p.server_cert("mx.strip.test")
        wc, wk = p.server_cert("other.test")
        peers = {
            "plain": smtpd_peer.Peer("127.0.0.1"),
            "self": smtpd_peer.Peer("127.0.0.1", tls_cert=sc, tls_key=sk),
            "valid": smtpd_peer.Peer("127.0.0.1", tls_cert=vc, tls_key=vk),
            "strip": smtpd_peer.Peer("127.0.0.1", tls_cert=tc, tls_key=tk),
            "wrong": smtpd_peer.Peer("127.0.0.1", tls_cert=wc, tls_key=wk),
        }
        proxy = mitm.StripTLS("127.0.0.1", peers["strip"].port)
        ports = {k: v.port for k, v in peers.items()}
        ports["strip"] = proxy.port
        zone = {"records": {f"mx.{k}.test": {"A": ["127.0.0.1"]} for k in peers}}
        dns = dnspeer.start(zone)
        try:
            routes = "; ".join(f"route {k}.test [mx.{k}.test]:{ports[k]}" for k in peers)
            for level in ORDER:
                print(f"--- min_tls_level {level}", flush=True)
                before = {k: len(v.messages) for k, v in peers.items()}
                extra = (f"tls {{ ca_file {p.ca_file} }}\n"
                         f"policy {{ local {{ min_tls_level {level} }} }}\n"
                         "queue { retry_initial 1h }")
                with Relay(POSTERN, dns.port, delivery=routes + "; connect_timeout 3s",
                           extra=extra) as r:
                    for k in peers:
                        r.send("s@snd.test", [f"u@{k}.test"], fk.message(f"{level}-{k}"))
                    for k in peers:
                        ev = r.wait_log(lambda e, k=k: e.get("event") == "delivery"
                                        and e.get("domain") == f"{k}.test")[0]
                        ok_level = ORDER.index(REACHED[k]) >= ORDER.index(level)
                        got = len(peers[k].messages) - before[k]
                        if ok_level:
                            fk.check(ev["status"] == "sent" and ev["tls_level"] == REACHED[k]
                                     and got == 1,
                                     f"{level} x {k}: sent with tls_level={ev['tls_level']} "
                                     f"(want {REACHED[k]}), peer got {got}")
                        else:
                            fk.check(ev["status"] == "deferred" and ev["dsn"].startswith("4.7.")
                                     and got == 0,
                                     f"{level} x {k}: deferred {ev['dsn']} "
                                     f"({ev['reply'][:80]!r}), peer got {got}")
                    fk.check(r.stop() == 0, f"{level}: SIGTERM: exit 0")
            fk.check(proxy.stripped >= 3,
                     f"the man in the middle really stripped STARTTLS ({proxy.stripped} times)")
            fk.check(all(m["tls"] for m in peers["valid"].messages + peers["self"].messages
                         + peers["wrong"].messages),
                     "what the TLS peers received came over TLS")
            fk.check(not any(m["tls"] for m in peers["strip"].messages),
                     "what passed the man in the middle was plaintext (level none only)")
        finally:
            dns.stop()
            proxy.stop()
            for v in peers.values():
                v.stop()
    fk.finish()


if __name__ == "__main__":
    main()
