"""mxpeer - a recording MX server for Postern's delivery tests (aiosmtpd).

    import mxpeer
    mx = mxpeer.MX("127.0.0.2", port=0, rcpt_replies={"bad@": "550 5.1.1 no such user"},
                   data_delay=0.0, pipelining=False)
    mx.port                       # the port it listens on
    mx.messages                   # [(mail_from, [rcpt, ...], data_bytes), ...]
    mx.sessions                   # SMTP sessions seen (EHLO/HELO count)
    mx.rcpt_options               # [(rcpt, [ESMTP options]), ...]
    mx.wait(count, timeout)       # until `count` messages arrived
    mx.stop()

`rcpt_replies` maps a substring of the recipient address to the reply its
RCPT gets ("450 4.2.0 try later"); `once=True` in a value tuple
("450 4.2.0 busy", True) makes the rule apply to the first RCPT only.
`pipelining=True` offers PIPELINING (RFC 2920) in the EHLO reply.
`data_delay` seconds pass before each reply to the final dot (a slow
filter at the receiving end).
Runs in a thread of the test process; listens on the given loopback address.
"""

import asyncio
import socket
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


class _Handler:
    def __init__(self, owner):
        self.owner = owner

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.owner.lock:
            self.owner.sessions += 1
        session.host_name = hostname
        if self.owner.pipelining:
            return responses[:-1] + ["250-PIPELINING"] + responses[-1:]
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        with self.owner.lock:
            self.owner.sessions += 1
        session.host_name = hostname
        return "250 {}".format(server.hostname)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.owner.lock:
            self.owner.rcpt_options.append((address, list(rcpt_options)))
            for pat, rule in list(self.owner.rcpt_replies.items()):
                reply, once = (rule, False) if isinstance(rule, str) else rule
                if pat in address:
                    if once:
                        del self.owner.rcpt_replies[pat]
                    return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)
        with self.owner.lock:
            self.owner.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 accepted"


class MX:
    def __init__(self, host="127.0.0.1", port=0, rcpt_replies=None, data_delay=0.0,
                 pipelining=False):
        self.lock = threading.Lock()
        self.data_delay = data_delay
        self.pipelining = pipelining
        self.messages = []
        self.sessions = 0  # EHLO/HELO commands seen: one per SMTP session
        self.rcpt_options = []  # [(address, [options])] as received
        self.rcpt_replies = dict(rcpt_replies or {})
        self.host = host
        self.port = port or free_port(host)
        self.controller = Controller(_Handler(self), hostname=host, port=self.port,
                                     server_kwargs={"decode_data": False},
                                     ready_timeout=10)
        self.controller.start()

    def wait(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"MX {self.host}:{self.port} got {len(self.messages)} "
                             f"messages, expected {count}")

    def stop(self):
        self.controller.stop()
