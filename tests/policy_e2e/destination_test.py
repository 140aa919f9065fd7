"""Per-destination policy (`destination PATTERN { ... }`) end to end: a real
`postern` with the default chain and `local { min_tls_level encrypted }`,
a validating unbound in front of nsd (a signed and an unsigned zone), MTA-STS
policy servers and aiosmtpd MX hosts on 127.0.0.x. Each domain has its own
MX, so every outcome is the block's doing:

 1. pin.plain.test: self-signed MX, `tls_fingerprint` of its certificate and
    `min_tls_level authenticated` -> sent, tls_level=authenticated
    (tls_pin_matched); spki.plain.test: the public key's digest -> the same;
    wrongpin.plain.test: a wrong digest -> deferred 4.7.5;
 2. req.sec.test (matching TLSA) with `dane required` -> sent, DANE;
    notlsa.sec.test (signed, no TLSA) with `dane required` -> deferred
    4.7.5 "requires DANE";
 3. stsoff.plain.test: MTA-STS enforce, self-signed MX, `mtasts off` -> sent
    encrypted, the override logged; stson.plain.test, the same without a
    block -> deferred (the strictest wins without an explicit override);
 4. daneoff.sec.test: a TLSA record that does not match, `dane off` -> sent,
    logged; danemis.sec.test without the block -> deferred;
 5. `.sub.plain.test { min_tls_level authenticated }`: a.sub.plain.test with
    a self-signed MX -> deferred; sub.plain.test itself is not matched ->
    sent encrypted;
 6. plain MX without STARTTLS: open.plain.test with `min_tls_level none`
    (looser than local's encrypted) -> sent in plaintext, the override
    logged; closed.plain.test without a block -> deferred;
 7. names.plain.test: a CA-signed certificate naming only
    mx.provider.test, `tls_names mx.provider.test` and
    `min_tls_level authenticated` -> sent authenticated; nonames.plain.test
    the same without tls_names -> deferred;
 8. postern-probe names the block and what it sets;
 9. reload while mail flows: `min_tls_level authenticated` added to the
    sub.plain.test... block via SIGHUP -> the next message to sub.plain.test
    is deferred;
10. TLS-Required: No (RFC 8689 §5): a message with the header to
    stson.plain.test (MTA-STS enforce, self-signed MX) and to
    danemis.sec.test (TLSA mismatch) is delivered over TLS, logged
    (tls_required_no_honoured); a relay with
    `policy { ...; honour_tls_required_no no }` defers the same message.

Usage: destination_test.py POSTERN_BINARY POSTERN_PROBE_BINARY
"""

import hashlib
import json
import os
import signal
import subprocess
import sys

import dnssec_zone
import httpspeer
import pki
import smtpd_peer
from relay import Relay

POSTERN, PROBE = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def der(cert_pem, spki=False):
    cmd = (f"openssl x509 -in '{cert_pem}' -pubkey -noout | openssl pkey -pubin -outform DER"
           if spki else f"openssl x509 -in '{cert_pem}' -outform DER")
    return subprocess.run(["sh", "-c", cmd], check=True, stdout=subprocess.PIPE).stdout


def msg(subject):
    return (f"From: s@snd.test\r\nTo: r@x.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@client.test>\r\n\r\nbody of {subject}\r\n")




def main():
    p = pki.PKI()
    # name -> (last octet, certificate or None for no STARTTLS)
    mx = {
        "mx.pin.plain.test": (81, p.server_cert("mx.pin.plain.test", self_signed=True)),
        "mx.spki.plain.test": (82, p.server_cert("mx.spki.plain.test", self_signed=True)),
        "mx.wrongpin.plain.test": (83, p.server_cert("mx.wrongpin.plain.test", self_signed=True)),
        "mx.req.sec.test": (84, p.server_cert("mx.req.sec.test", self_signed=True)),
        "mx.notlsa.sec.test": (85, p.server_cert("mx.notlsa.sec.test")),
        "mx.stsoff.plain.test": (86, p.server_cert("mx.stsoff.plain.test", self_signed=True)),
        "mx.stson.plain.test": (87, p.server_cert("mx.stson.plain.test", self_signed=True)),
        "mx.daneoff.sec.test": (88, p.server_cert("mx.daneoff.sec.test", self_signed=True)),
        "mx.danemis.sec.test": (89, p.server_cert("mx.danemis.sec.test", self_signed=True)),
        "mx.a.sub.plain.test": (90, p.server_cert("mx.a.sub.plain.test", self_signed=True)),
        "mx.sub.plain.test": (91, p.server_cert("mx.sub.plain.test", self_signed=True)),
        "mx.open.plain.test": (92, None),
        "mx.closed.plain.test": (93, None),
        "mx.names.plain.test": (94, p.server_cert("mx.provider.test")),
        "mx.nonames.plain.test": (95, p.server_cert("mx.provider.test")),
    }

    def mx_starter(name):
        last, ck = mx[name]
        kw = {"tls_cert": ck[0], "tls_key": ck[1]} if ck else {}
        return lambda port: smtpd_peer.Peer(host=f"127.0.0.{last}", port=port,
                                            hostname=name, **kw)

    smtp_port, peers = dnssec_zone.on_common_port([(n, mx_starter(n)) for n in mx])

    def sts_starter(dom, last):
        c, k = p.server_cert(f"mta-sts.{dom}")
        body = f"version: STSv1\r\nmode: enforce\r\nmx: mx.{dom}\r\nmax_age: 86400\r\n"
        cfg = {"routes": {"/.well-known/mta-sts.txt": {"body": body,
                                                       "content_type": "text/plain"}}}
        return lambda port: httpspeer.start(cfg, c, k, address=f"127.0.0.{last}", port=port)

    https_port, web = dnssec_zone.on_common_port([("stsoff", sts_starter("stsoff.plain.test", 96)),
                                      ("stson", sts_starter("stson.plain.test", 97))])
    t = f"_{smtp_port}._tcp"
    req_spki = hashlib.sha256(der(mx["mx.req.sec.test"][1][0], spki=True)).hexdigest()
    wrong = hashlib.sha256(b"nothing").hexdigest()
    plain = []
    for name, (last, _) in mx.items():
        if name.endswith(".plain.test"):
            dom = name[len("mx."):-len(".plain.test")]
            plain += [f"{dom} MX 10 mx.{dom}", f"mx.{dom} A 127.0.0.{last}"]
    plain += ['_mta-sts.stsoff TXT "v=STSv1; id=1"', "mta-sts.stsoff A 127.0.0.96",
              '_mta-sts.stson TXT "v=STSv1; id=1"', "mta-sts.stson A 127.0.0.97"]
    sec = []
    for name, (last, _) in mx.items():
        if name.endswith(".sec.test"):
            dom = name[len("mx."):-len(".sec.test")]
            sec += [f"{dom} MX 10 mx.{dom}", f"mx.{dom} A 127.0.0.{last}"]
    sec += [f"{t}.mx.req TLSA 3 1 1 {req_spki}",
            f"{t}.mx.daneoff TLSA 3 1 1 {wrong}",
            f"{t}.mx.danemis TLSA 3 1 1 {wrong}"]
    fx = dnssec_zone.Fixture({"plain.test": {"signed": False, "records": plain},
                              "sec.test": {"signed": True, "records": sec}})
    pin = hashlib.sha256(der(mx["mx.pin.plain.test"][1][0])).hexdigest()
    spki = hashlib.sha256(der(mx["mx.spki.plain.test"][1][0], spki=True)).hexdigest()
    blocks = {
        "pin.plain.test": f"tls_fingerprint sha256:{pin}; min_tls_level authenticated",
        "spki.plain.test": f"tls_fingerprint sha256:{spki}; min_tls_level authenticated",
        "wrongpin.plain.test": f"tls_fingerprint sha256:{wrong}; min_tls_level authenticated",
        "req.sec.test": "dane required",
        "notlsa.sec.test": "dane required",
        "stsoff.plain.test": "mtasts off",
        "daneoff.sec.test": "dane off",
        ".sub.plain.test": "min_tls_level authenticated",
        "open.plain.test": "min_tls_level none",
        "names.plain.test": "tls_names mx.provider.test; min_tls_level authenticated",
        "nonames.plain.test": "min_tls_level authenticated",
    }

    def top(extra_sub=""):
        out = "".join(f"destination {pat} {{ {body} }}\n" for pat, body in blocks.items())
        if extra_sub:
            out += f"destination sub.plain.test {{ {extra_sub} }}\n"
        return out

    cfg = (f"tls {{ ca_file {p.ca_file} }}\n"
           f"policy {{ local {{ min_tls_level encrypted }}; "
           f"mtasts {{ https_port {https_port}; fetch_timeout 3s }}; dnssec; dane }}\n"
           "queue { retry_initial 1h }")
    expect = {
        "pin.plain.test": ("sent", "authenticated"),
        "spki.plain.test": ("sent", "authenticated"),
        "wrongpin.plain.test": ("deferred", None),
        "req.sec.test": ("sent", "authenticated"),
        "notlsa.sec.test": ("deferred", None),
        "stsoff.plain.test": ("sent", "encrypted"),
        "stson.plain.test": ("deferred", None),
        "daneoff.sec.test": ("sent", "encrypted"),
        "danemis.sec.test": ("deferred", None),
        "a.sub.plain.test": ("deferred", None),
        "sub.plain.test": ("sent", "encrypted"),
        "open.plain.test": ("sent", "none"),
        "closed.plain.test": ("deferred", None),
        "names.plain.test": ("sent", "authenticated"),
        "nonames.plain.test": ("deferred", None),
    }
    try:
        with Relay(POSTERN, fx.port, delivery=f"port {smtp_port}; connect_timeout 3s",
                   extra=cfg, top=top()) as r:
            for i, dom in enumerate(expect):
                r.send("s@snd.test", [f"a@{dom}"], msg(f"m{i}"))
            for dom, (status, level) in expect.items():
                e = r.wait_log(lambda e: e.get("event") == "delivery"
                               and e.get("rcpt") == f"a@{dom}", timeout=40)[0]
                ok = e.get("status") == status and (level is None or e.get("tls_level") == level)
                if status == "deferred":
                    ok = ok and e.get("dsn") == "4.7.5"
                check(ok, f"{dom}: {status} {level or ''} ({e.get('status')} "
                          f"{e.get('tls_level')} {e.get('dsn')}: {e.get('reply')})")
            ev = r.events()
            check(any(x.get("event") == "tls_pin_matched" and x.get("digest") == "certificate"
                      for x in ev) and
                  any(x.get("event") == "tls_pin_matched" and x.get("digest") == "public key"
                      for x in ev), "1: pins matched by certificate and by public key")
            e = [x for x in ev if x.get("event") == "delivery"
                 and x.get("rcpt") == "a@notlsa.sec.test"][0]
            check("requires DANE" in e.get("reply", ""),
                  f"2: dane required without TLSA says why ({e.get('reply')})")
            for what, dom in (("mtasts off", "stsoff.plain.test"),
                              ("dane off", "daneoff.sec.test"),
                              ("min_tls_level", "open.plain.test")):
                check(any(x.get("event") == "destination_override"
                          and what in x.get("override", "") for x in ev),
                      f"{dom}: the looser override '{what}' is logged")
            check(not any(x.get("event") == "destination_override"
                          and x.get("destination") in ("pin.plain.test", "req.sec.test")
                          for x in ev), "stricter blocks are not logged as overrides")
            check(not [m for m in peers["mx.stsoff.plain.test"].messages] == [],
                  "3: the MX whose MTA-STS policy was turned off got the message")
            # 8. probe
            out = subprocess.run([PROBE, "-c", r.conf, "--json", "a.sub.plain.test"],
                                 capture_output=True, timeout=60)
            pr = json.loads(out.stdout or b"{}")
            check((pr.get("destination") or {}).get("pattern") == ".sub.plain.test"
                  and "min_tls_level authenticated" in pr["destination"].get("sets", ""),
                  f"8: probe names the block ({pr.get('destination')})")
            # 10. TLS-Required: No waives MTA-STS and DANE
            trn = ("From: s@snd.test\r\nTo: r@x.test\r\nSubject: trn\r\n"
                   "TLS-Required: No\r\n\r\nplease deliver anyway\r\n")
            for rc in ("t@stson.plain.test", "t@danemis.sec.test"):
                r.send("s@snd.test", [rc], trn)
                e = r.wait_log(lambda e: e.get("event") == "delivery"
                               and e.get("rcpt") == rc, timeout=40)[0]
                check(e.get("status") == "sent" and e.get("tls_level") == "encrypted",
                      f"10: TLS-Required: No to {rc}: sent over TLS "
                      f"({e.get('status')} {e.get('tls_level')}: {e.get('reply')})")
            check(sum(1 for x in r.events()
                      if x.get("event") == "tls_required_no_honoured") >= 2,
                  "10: each such delivery logs tls_required_no_honoured")
            # 9. reload: sub.plain.test gets its own stricter block
            with open(r.conf) as f:
                conf = f.read()
            with open(r.conf, "w") as f:
                f.write(conf.replace(top(), top("min_tls_level authenticated")))
            os.kill(r.pid, signal.SIGHUP)
            r.wait_log(lambda e: e.get("event") == "reloaded")
            r.send("s@snd.test", ["b@sub.plain.test"], msg("after-reload"))
            e = r.wait_log(lambda e: e.get("event") == "delivery"
                           and e.get("rcpt") == "b@sub.plain.test", timeout=40)[0]
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"9: after the reload sub.plain.test needs authenticated TLS "
                  f"({e.get('status')} {e.get('reply')})")
        cfg_no = cfg.replace("dnssec; dane }", "dnssec; dane; honour_tls_required_no no }")
        with Relay(POSTERN, fx.port, delivery=f"port {smtp_port}; connect_timeout 3s",
                   extra=cfg_no, top=top()) as r2:
            r2.send("s@snd.test", ["u@stson.plain.test"], trn)
            e = r2.wait_log(lambda e: e.get("event") == "delivery"
                            and e.get("rcpt") == "u@stson.plain.test", timeout=40)[0]
            check(e.get("status") == "deferred" and e.get("dsn") == "4.7.5",
                  f"10: honour_tls_required_no no: the header changes nothing "
                  f"({e.get('status')} {e.get('reply')})")
    finally:
        fx.close()
        for s in list(peers.values()) + list(web.values()):
            s.stop()
        p.cleanup()
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
