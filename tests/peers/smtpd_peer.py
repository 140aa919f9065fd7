"""A scriptable SMTP server (python3-aiosmtpd) for Postern's integration tests.

It plays a receiving MX: listens on 127.0.0.x or ::1 (port 0 = any free
port), optionally offers STARTTLS with a given certificate, records every
message it accepts, and can misbehave on request.

As a module (tests/peers is on PYTHONPATH under Bazel):

    import smtpd_peer
    with smtpd_peer.Peer(tls_cert=crt, tls_key=key,            # STARTTLS
                         rcpt_replies={"bad@x.test": "550 5.1.1 unknown"},
                         record="/tmp/msgs.jsonl") as peer:
        peer.port, peer.host                                    # where it is
        ... run the client ...
        peer.messages   # list of dicts, one per accepted message:
                        #  mail_from, rcpt_tos, mail_options, rcpt_options,
                        #  data (str, latin-1, after dot-unstuffing), tls,
                        #  helo, peer (client IP), dropped (True: we hung up before replying)
        peer.commands   # every command line received, in order
        peer.tls_sessions  # one dict per completed STARTTLS handshake:
                           #  sni (the server name the client sent, or None),
                           #  resumed (the client resumed a session), version
        peer.reload_cert(crt, key)  # serve another certificate from now on,
                                    # keeping the session ticket keys

From the shell (runs until SIGTERM/SIGINT; the port is written once the
server listens):

    /usr/bin/python3 tests/peers/smtpd_peer.py --port-file P --record F.jsonl \
        [--host 127.0.0.1] [--tls-cert C --tls-key K] [--script JSON]

where JSON holds the keyword arguments below, e.g.
'{"rcpt_replies": {"a@x": "451 4.2.0 later"}, "multiline": true}'.

Behaviours (keyword arguments; all optional):
    hostname          name in the greeting and EHLO (default "mx.test")
    tls_cert/tls_key  offer STARTTLS with this certificate and key
    starttls_refuse   advertise STARTTLS but answer it "454 4.7.0 ..."
    starttls_garbage  answer STARTTLS with 220, then send plaintext junk
                      instead of a TLS handshake and hang up
    pipelining        advertise PIPELINING (default True)
    dsn               advertise DSN and accept RET/ENVID/NOTIFY/ORCPT
    size_limit        the SIZE announced and enforced (default 32 MiB)
    smtputf8          advertise SMTPUTF8
    requiretls        advertise REQUIRETLS (RFC 8689) in the EHLO reply of a
                      TLS session and accept MAIL ... REQUIRETLS there (it
                      shows in mail_options); without it, or on a plaintext
                      session, MAIL ... REQUIRETLS gets 555 as any unknown
                      parameter
    requiretls_plaintext  with requiretls: also offer and accept it on a
                      plaintext session (a broken server)
    ehlo_refuse       answer EHLO with "502 5.5.1 ..." (forces HELO)
    ehlo_reply        a whole reply to EHLO (and HELO) instead of the usual,
                      e.g. "554 5.7.1 not you"
    greeting          a whole greeting reply, e.g. "554 5.3.2 go away"
    mail_reply        reply to every MAIL instead of accepting it
    rcpt_replies      {address: reply} for chosen recipients
    data_reply        final reply after the body instead of "250 2.0.0 OK"
    multiline         send every single-line reply as a 3-line reply
    reply_421         {"command": "RCPT", "nth": 2}: answer the nth such
                      command (1-based, counted per connection) with
                      "421 4.3.2 ..." and close the connection
    drop_in_data      "after_354": hang up while the body is coming;
                      "before_reply": read the whole body, then hang up
                      without a final reply
    hang_on           a command name, "GREETING", or "DATA_END" (the final
                      reply after the body): never answer it
    delay             {command: seconds} to wait before answering
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, MISSING

_DSN_PARAMS = {"RET", "ENVID", "NOTIFY", "ORCPT"}


def _multiline(status):
    """'250 2.1.0 ok' -> a three-line reply with the same code."""
    if len(status) < 4 or status[3] != " " or "\r\n" in status:
        return status
    code, text = status[:3], status[4:]
    return "%s-%s\r\n%s-(second line of a multi-line reply)\r\n%s %s" % (
        code, text, code, code, text)


def _note_sni(ssl_obj, server_name, ctx):
    """Remembers the server name the client asked for (SNI) on the
    connection's SSL object, for tls_sessions."""
    ssl_obj._peer_sni = server_name
    return None


class _Handler:
    def __init__(self, peer):
        self.peer = peer

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        extra = []
        if self.peer.opts.get("pipelining", True):
            extra.append("250-PIPELINING")
        if self.peer.opts.get("dsn"):
            extra.append("250-DSN")
        if server._requiretls_offered():
            extra.append("250-REQUIRETLS")
        extra.append("250-ENHANCEDSTATUSCODES")
        return responses[:-1] + extra + responses[-1:]

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        reply = self.peer.opts.get("mail_reply")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.peer.opts.get("rcpt_replies", {}).get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.peer.opts.get("hang_on") == "DATA_END":
            await asyncio.sleep(3600)
        drop = self.peer.opts.get("drop_in_data") == "before_reply"
        self.peer._record(server, session, envelope, dropped=drop)
        if drop:
            server._peer_drop = True
            return "250 2.0.0 never sent"
        return self.peer.opts.get("data_reply") or "250 2.0.0 OK queued"


class _PeerSMTP(SMTP):
    """aiosmtpd's SMTP with scripted misbehaviour (see the module doc)."""

    def __init__(self, handler, peer, **kw):
        super().__init__(handler, **kw)
        self._peer = peer
        self._peer_counts = {}
        self._peer_drop = False
        self._peer_greeted = False
        self._peer_in_mail = False

    # -- helpers -------------------------------------------------------------
    def _hang_up(self):
        if self._handler_coroutine:
            self._handler_coroutine.cancel()
        if self.transport:
            self.transport.close()

    async def _script(self, command):
        """Applies hang/delay/421 rules; True when the command is handled."""
        opts = self._peer.opts
        self._peer.commands.append(command)
        n = self._peer_counts[command] = self._peer_counts.get(command, 0) + 1
        if opts.get("hang_on") == command:
            await asyncio.sleep(3600)
        delay = opts.get("delay", {}).get(command)
        if delay:
            await asyncio.sleep(delay)
        r421 = opts.get("reply_421")
        if r421 and r421.get("command") == command and r421.get("nth", 1) == n:
            await super().push("421 4.3.2 mx.test closing connection")
            self._hang_up()
            return True
        return False

    async def push(self, status):
        if self._peer_drop:
            self._peer_drop = False
            self._hang_up()
            return
        if not self._peer_greeted and status.startswith("220 "):
            self._peer_greeted = True
            status = self._peer.opts.get("greeting") or status
        if self._peer.opts.get("multiline"):
            status = _multiline(status)
        await super().push(status)

    def _requiretls_offered(self):
        opts = self._peer.opts
        return bool(opts.get("requiretls")) and (
            self._tls_protocol is not None
            or bool(opts.get("requiretls_plaintext")))

    def _getparams(self, params):
        result = super()._getparams(params)
        if result is not None and self._peer.opts.get("dsn"):
            for k in _DSN_PARAMS:
                result.pop(k, None)
        # RFC 8689 §2: MAIL only, no value; a value stays and gets 555.
        if (result is not None and self._peer_in_mail
                and self._requiretls_offered()
                and result.get("REQUIRETLS") is True):
            result.pop("REQUIRETLS")
        return result

    # -- commands ------------------------------------------------------------
    async def _handle_client(self):
        if self._peer.opts.get("hang_on") == "GREETING":
            await asyncio.sleep(3600)
        await super()._handle_client()

    async def smtp_EHLO(self, arg):
        if await self._script("EHLO"):
            return
        if self._peer.opts.get("ehlo_reply"):
            await self.push(self._peer.opts["ehlo_reply"])
            return
        if self._peer.opts.get("ehlo_refuse"):
            await self.push("502 5.5.1 EHLO not implemented")
            return
        await super().smtp_EHLO(arg)

    async def smtp_HELO(self, arg):
        if await self._script("HELO"):
            return
        if self._peer.opts.get("ehlo_reply"):
            await self.push(self._peer.opts["ehlo_reply"])
            return
        await super().smtp_HELO(arg)

    async def smtp_STARTTLS(self, arg):
        if await self._script("STARTTLS"):
            return
        if self._peer.opts.get("starttls_refuse"):
            await self.push("454 4.7.0 TLS not available due to temporary reason")
            return
        if self._peer.opts.get("starttls_garbage"):
            await self.push("220 2.0.0 Ready to start TLS")
            await asyncio.sleep(0.2)
            self.transport.write(b"this is not a TLS handshake\r\n" * 4)
            await asyncio.sleep(0.2)
            self._hang_up()
            return
        await super().smtp_STARTTLS(arg)
        ssl_obj = self.transport.get_extra_info("ssl_object") if self._tls_protocol else None
        if ssl_obj is not None:
            with self._peer._lock:
                self._peer.tls_sessions.append({
                    "sni": getattr(ssl_obj, "_peer_sni", None),
                    "resumed": ssl_obj.session_reused,
                    "version": ssl_obj.version(),
                })

    async def smtp_MAIL(self, arg):
        if await self._script("MAIL"):
            return
        self._peer_in_mail = True
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._peer_in_mail = False

    async def smtp_RCPT(self, arg):
        if await self._script("RCPT"):
            return
        await super().smtp_RCPT(arg)

    async def smtp_RSET(self, arg):
        if await self._script("RSET"):
            return
        await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg):
        if await self._script("QUIT"):
            return
        await super().smtp_QUIT(arg)

    async def smtp_DATA(self, arg):
        if await self._script("DATA"):
            return
        if (self._peer.opts.get("drop_in_data") == "after_354"
                and self.envelope.rcpt_tos):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readline()  # the first body line arrives
            self._peer.dropped += 1
            self._hang_up()
            return
        await super().smtp_DATA(arg)


class Peer:
    """One scripted SMTP server in a background thread."""

    def __init__(self, host="127.0.0.1", port=0, record=None, **opts):
        self.host = host
        self.opts = opts
        self.record_path = record
        self.messages = []
        self.commands = []
        self.tls_sessions = []
        self.dropped = 0
        self.port = None
        self._lock = threading.Lock()
        self._tls = None
        if opts.get("tls_cert"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(opts["tls_cert"], opts["tls_key"])
            ctx.sni_callback = _note_sni
            self._tls = ctx
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = None
        self._start(port)

    def _factory(self):
        return _PeerSMTP(_Handler(self), self, hostname=self.opts.get(
            "hostname", "mx.test"), tls_context=self._tls, decode_data=False,
            ident="ESMTP postern-test-peer", loop=self._loop,
            data_size_limit=self.opts.get("size_limit", 33554432),
            enable_SMTPUTF8=bool(self.opts.get("smtputf8")))

    def _start(self, port):
        ready = threading.Event()
        err = []

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(
                    self._loop.create_server(self._factory, host=self.host,
                                             port=port))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as e:  # reported to the starting thread
                err.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(30)
        if err:
            raise err[0]

    def reload_cert(self, cert, key):
        """Serves `cert` from now on. The SSL context (and with it the
        session ticket keys) stays, so a client may still resume a session
        made with the old certificate, which that session then carries."""
        self._tls.load_cert_chain(cert, key)

    def _record(self, server, session, envelope, dropped=False):
        msg = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "data": (envelope.original_content or b"").decode("latin-1"),
            "tls": server._tls_protocol is not None,
            "helo": session.host_name,
            "peer": session.peer[0] if session.peer else None,
            "dropped": dropped,
        }
        with self._lock:
            self.messages.append(msg)
            if self.record_path:
                with open(self.record_path, "a") as f:
                    f.write(json.dumps(msg) + "\n")

    def stop(self):
        if self._server is None:
            return

        async def shutdown():
            self._server.close()
            await self._server.wait_closed()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--record")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--script", default="{}",
                    help="JSON object of behaviour keyword arguments")
    a = ap.parse_args()
    opts = json.loads(a.script)
    if a.tls_cert:
        opts["tls_cert"], opts["tls_key"] = a.tls_cert, a.tls_key
    peer = Peer(host=a.host, port=a.port, record=a.record, **opts)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % peer.port)
    os.rename(tmp, a.port_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
