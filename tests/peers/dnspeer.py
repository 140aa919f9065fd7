#!/usr/bin/python3
"""dnspeer - a scripted DNS server for Postern's tests (python3-dnspython).

It listens on 127.0.0.1 (UDP and TCP, same port, port 0 by default) and
answers every query from a config, the way a recursive resolver would
(it follows CNAMEs itself and puts the whole chain in the answer). Each
name can be told to misbehave: no AD bit, SERVFAIL, REFUSED, truncation
over UDP, garbage, silence, delay.

Use from a test:

    import dnspeer
    peer = dnspeer.start({"records": {...}})   # subprocess; waits for port
    ... point the resolver at 127.0.0.1:peer.port ...
    peer.queries()    # [("udp", "mx.example.org", "A"), ...] so far
    peer.stop()       # also on context-manager exit: `with dnspeer.start(c)`

or run it by hand:

    /usr/bin/python3 tests/peers/dnspeer.py --config c.json \
        [--port-file F] [--log F] [--port N] [--address 127.0.0.1]

It prints "port N" on stdout once both sockets listen (and writes N to
--port-file). With --log, every query is appended as "udp NAME TYPE".
SIGTERM stops it.

Config format (JSON, or a dict for start()):

    {
      "ttl": 300,              # default TTL of every record
      "ad": true,              # default AD bit on answers (NOERROR/NXDOMAIN)
      "soa_minimum": 60,       # MINIMUM of the SOA sent with NXDOMAIN/NODATA
      "records": {
        "example.org": {
          "MX":    [[10, "mx1.example.org"], [20, "mx2.example.org"]],
          "A":     ["192.0.2.1"],
          "AAAA":  ["2001:db8::1"],
          "TXT":   [["v=STSv1; id=20260101"], ["part one", "part two"]],
          "TLSA":  [[3, 1, 1, "0123...hex"]],
          "CNAME": "other.example.org"
        },
        "nullmx.example.org": {"MX": [[0, "."]]}
      },
      "behaviour": {           # per owner name; every key optional
        "sf.example.org":    {"rcode": "SERVFAIL"},   # or REFUSED, NXDOMAIN,
                                                      # FORMERR, NOTIMP
        "noad.example.org":  {"ad": false},
        "big.example.org":   {"truncate": true},      # TC over UDP, full over TCP
        "bad.example.org":   {"garbage": true},       # valid header + question,
                                                      # then a cut record
        "raw.example.org":   {"garbage": "raw"},      # random bytes, wrong id
        "quiet.example.org": {"silent": true},        # never answers
        "slow.example.org":  {"delay": 0.5},          # seconds before answering
        "short.example.org": {"ttl": 5},
        "v6sf.example.org":  {"rcode": "SERVFAIL", "types": ["AAAA"]}
      }                        # "types": only for queries of these types
    }

Names are matched case-insensitively, without the trailing dot. A name with
neither records nor a behaviour entry is NXDOMAIN; a name that exists but
lacks the asked type is NODATA. Both come with an SOA in the authority
section (owner: the name's last two labels). A "behaviour" entry applies to
the name asked and to each name reached through CNAMEs (the first match
wins). "ad" of a chain is true only if every name on it has AD.
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HERE = os.path.dirname(os.path.abspath(__file__))

RCODES = {
    "NOERROR": dns.rcode.NOERROR,
    "FORMERR": dns.rcode.FORMERR,
    "SERVFAIL": dns.rcode.SERVFAIL,
    "NXDOMAIN": dns.rcode.NXDOMAIN,
    "NOTIMP": dns.rcode.NOTIMP,
    "REFUSED": dns.rcode.REFUSED,
}

MAX_CHAIN = 32


def _key(name):
    return str(name).rstrip(".").lower() or "."


def _rdata_text(rtype, value):
    """Presentation text of one record value given in the config."""
    if rtype in ("A", "AAAA"):
        return value
    if rtype == "MX":
        pref, host = value
        host = host if host.endswith(".") else host + "."
        return "%d %s" % (pref, host)
    if rtype == "TXT":
        strings = value if isinstance(value, list) else [value]
        return " ".join('"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')
                        for s in strings)
    if rtype == "TLSA":
        usage, selector, mtype, data = value
        return "%d %d %d %s" % (usage, selector, mtype, data or "")
    if rtype == "CNAME":
        return value if value.endswith(".") else value + "."
    raise ValueError("unsupported record type %s" % rtype)


class Zone:
    """The config, indexed for lookups."""

    def __init__(self, config):
        self.ttl = int(config.get("ttl", 300))
        self.ad = bool(config.get("ad", True))
        self.soa_minimum = int(config.get("soa_minimum", 60))
        self.records = {}
        for name, types in config.get("records", {}).items():
            self.records[_key(name)] = {t.upper(): v for t, v in types.items()}
        self.behaviour = {_key(n): b for n, b in
                          config.get("behaviour", {}).items()}

    def exists(self, key):
        return key in self.records or key in self.behaviour

    def behave(self, keys, rtype=None):
        for k in keys:
            b = self.behaviour.get(k)
            if b is None:
                continue
            types = b.get("types")
            if rtype is None or types is None or rtype in types:
                return b
        return {}

    def rrset(self, key, rtype, ttl):
        values = self.records.get(key, {}).get(rtype)
        if values is None:
            return None
        if rtype == "CNAME":
            values = [values]
        rrs = dns.rrset.RRset(dns.name.from_text(key), dns.rdataclass.IN,
                              dns.rdatatype.from_text(rtype))
        for v in values:
            rrs.add(dns.rdata.from_text(dns.rdataclass.IN,
                                        dns.rdatatype.from_text(rtype),
                                        _rdata_text(rtype, v)), ttl)
        return rrs

    def soa(self, key):
        labels = key.split(".")
        owner = ".".join(labels[-2:]) if len(labels) >= 2 else key
        rrs = dns.rrset.RRset(dns.name.from_text(owner), dns.rdataclass.IN,
                              dns.rdatatype.SOA)
        rrs.add(dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.SOA,
            "ns.%s. hostmaster.%s. 1 3600 600 86400 %d" %
            (owner, owner, self.soa_minimum)), self.ttl)
        return rrs


class Server:
    """The server itself; start() runs it on background threads."""

    def __init__(self, config, address="127.0.0.1", port=0, log=None):
        self.zone = Zone(config)
        self.address = address
        self.want_port = port
        self.log_path = log
        self.log_lock = threading.Lock()
        self.queries = []
        self.stopping = threading.Event()
        self.udp = None
        self.tcp = None
        self.port = None

    # -- sockets --

    def bind(self):
        fam = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            udp.bind((self.address, self.want_port))
            port = udp.getsockname()[1]
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.address, port))
            except OSError:
                udp.close()
                tcp.close()
                if self.want_port:
                    raise
                continue
            tcp.listen(64)
            self.udp, self.tcp, self.port = udp, tcp, port
            return port
        raise OSError("no port free for both UDP and TCP")

    def start(self):
        if self.port is None:
            self.bind()
        for target in (self._udp_loop, self._tcp_loop):
            threading.Thread(target=target, daemon=True).start()
        return self.port

    def stop(self):
        self.stopping.set()
        for s in (self.udp, self.tcp):
            try:
                s.close()
            except OSError:
                pass

    def _udp_loop(self):
        while not self.stopping.is_set():
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=self._udp_one, args=(data, peer),
                             daemon=True).start()

    def _udp_one(self, data, peer):
        reply = self.answer(data, "udp")
        if reply is not None:
            try:
                self.udp.sendto(reply, peer)
            except OSError:
                pass

    def _tcp_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,),
                             daemon=True).start()

    @staticmethod
    def _recv_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _tcp_conn(self, conn):
        with conn:
            while not self.stopping.is_set():
                try:
                    hdr = self._recv_exact(conn, 2)
                    if hdr is None:
                        return
                    data = self._recv_exact(conn, struct.unpack("!H", hdr)[0])
                    if data is None:
                        return
                except OSError:
                    return
                reply = self.answer(data, "tcp")
                if reply is None:
                    continue
                try:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return

    # -- answers --

    def _log(self, proto, name, rtype):
        with self.log_lock:
            self.queries.append((proto, name, rtype))
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write("%s %s %s\n" % (proto, name, rtype))

    def answer(self, data, proto):
        """The wire reply to one query, or None for silence."""
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
        try:
            return self._answer(query, proto)
        except Exception:
            # A bug here must show in the test log, not look like silence.
            traceback.print_exc()
            resp = dns.message.make_response(query)
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp.to_wire(max_size=65535)

    def _answer(self, query, proto):
        if not query.question:
            return None
        q = query.question[0]
        key = _key(q.name)
        rtype = dns.rdatatype.to_text(q.rdtype)
        self._log(proto, key, rtype)
        zone = self.zone

        # Follow the CNAME chain the way a recursive resolver does.
        chain = [key]
        cur = key
        answer = []
        while len(chain) <= MAX_CHAIN:
            b = zone.behave([cur])
            t = int(b.get("ttl", zone.ttl))
            if rtype != "CNAME" and zone.records.get(cur, {}).get("CNAME"):
                answer.append(zone.rrset(cur, "CNAME", t))
                cur = _key(zone.records[cur]["CNAME"])
                if cur in chain:
                    break  # a loop: send what we have, the client must cope
                chain.append(cur)
                continue
            break
        behave = zone.behave(chain, rtype)
        ttl = int(zone.behave([cur], rtype).get("ttl", zone.ttl))

        delay = float(behave.get("delay", 0))
        if delay:
            time.sleep(delay)
        if behave.get("silent"):
            return None
        garbage = behave.get("garbage")
        if garbage == "raw":
            return bytes(random.getrandbits(8) for _ in range(48))
        if garbage:
            # A real header and question, so the client accepts the packet
            # as the reply; then one answer record whose RDATA is cut short.
            qwire = q.name.to_wire() + struct.pack("!HH", q.rdtype, q.rdclass)
            hdr = struct.pack("!HHHHHH", query.id, 0x8180, 1, 1, 0, 0)
            return hdr + qwire + struct.pack("!HHHIH", 0xc00c, q.rdtype, 1,
                                             60, 16) + b"\x01\x02\x03\x04"

        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.RA
        resp.flags &= ~dns.flags.AA
        rcode = behave.get("rcode")
        if rcode is not None:
            resp.set_rcode(RCODES[rcode.upper()])
            if RCODES[rcode.upper()] != dns.rcode.NXDOMAIN:
                return resp.to_wire()
        final = zone.rrset(cur, rtype, ttl)
        resp.answer.extend(answer)
        if rcode is None:
            if final is not None:
                resp.answer.append(final)
            elif not zone.exists(cur):
                resp.set_rcode(dns.rcode.NXDOMAIN)
        if resp.rcode() == dns.rcode.NXDOMAIN or final is None:
            resp.authority.append(zone.soa(cur))
        ad = all(bool(zone.behave([n], rtype).get("ad", zone.ad))
                 for n in chain)
        if ad:
            resp.flags |= dns.flags.AD
        else:
            resp.flags &= ~dns.flags.AD

        if proto == "udp":
            if behave.get("truncate"):
                return self._truncated(resp)
            limit = 512
            if query.edns >= 0:
                limit = max(512, query.payload)
            try:
                return resp.to_wire(max_size=limit)
            except dns.exception.TooBig:
                return self._truncated(resp)
        return resp.to_wire(max_size=65535)

    @staticmethod
    def _truncated(resp):
        resp.answer = []
        resp.authority = []
        resp.additional = []
        resp.flags |= dns.flags.TC
        return resp.to_wire()


class Peer:
    """A dnspeer subprocess started by start()."""

    def __init__(self, proc, port, log, tmpdir, host="127.0.0.1"):
        self.host = host
        self.proc = proc
        self.port = port
        self.log = log
        self.tmpdir = tmpdir

    def address(self):
        """The server as net/dns's config writes it: 127.0.0.1:N, [::1]:N."""
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    def queries(self):
        """Queries so far, as (proto, name, type) tuples."""
        try:
            with open(self.log) as f:
                return [tuple(line.split()) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmpdir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(config, address="127.0.0.1"):
    """Runs dnspeer as a subprocess with `config` (a dict) on `address`
    (127.0.0.1 or ::1); returns a Peer once it listens. Call peer.stop() (or
    use `with`)."""
    tmp = tempfile.TemporaryDirectory(prefix="dnspeer.")
    cfg = os.path.join(tmp.name, "config.json")
    log = os.path.join(tmp.name, "queries.log")
    with open(cfg, "w") as f:
        json.dump(config, f)
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(HERE, "dnspeer.py"), "--config",
         cfg, "--log", log, "--address", address], stdout=subprocess.PIPE,
        text=True)
    line = proc.stdout.readline()  # "" if it died
    if not line.startswith("port "):
        proc.kill()
        proc.wait()
        tmp.cleanup()
        raise RuntimeError("dnspeer did not start: %r" % line)
    return Peer(proc, int(line.split()[1]), log, tmp, address)


def main():
    ap = argparse.ArgumentParser(description="scripted DNS server for tests")
    ap.add_argument("--config", required=True)
    ap.add_argument("--port-file")
    ap.add_argument("--log")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()
    with open(args.config) as f:
        config = json.load(f)
    server = Server(config, args.address, args.port, args.log)
    port = server.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    print("port %d" % port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    while not done.wait(1.0):
        pass
    server.stop()


if __name__ == "__main__":
    main()
