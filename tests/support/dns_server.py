"""A DNS server standing in for a cluster's (CoreDNS): A records of the names it is given, NXDOMAIN for others.

    with dns_server(port, {"iris-serve-svc.team-vision.svc.cluster.local": "127.0.0.1"}) as records:
        records["ocr-serve-svc.team-vision.svc.cluster.local"] = "127.0.0.1"   # a Service created later
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _Records(BaseResolver):
    def __init__(self, records: dict[str, str]):
        self.records = records

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        address = self.records.get(name)
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=5))
        return reply  # an AAAA question of a known name: no answer, no error


@contextlib.contextmanager
def dns_server(port: int, records: dict[str, str]) -> Iterator[dict[str, str]]:
    """UDP on 127.0.0.1:`port`; the dict it yields is live (add or remove names while it runs)."""
    live = dict(records)
    server = DNSServer(_Records(live), address="127.0.0.1", port=port, logger=DNSLogger("-request,-reply,-truncated"))
    server.start_thread()
    try:
        yield live
    finally:
        server.stop()
        server.server.server_close()
