"""Which address is the client: the socket peer, or what a trusted proxy says it saw.

A request's socket peer is the client unless the peer is one of the proxies named in
``GAIA_TRUSTED_PROXIES`` (``Settings.trusted_proxies``). Only then is ``X-Forwarded-For`` read,
from the right: each proxy appends the address it received the request from, so the rightmost
entry was written by the proxy we trust and everything left of it by whoever sent the request to
that proxy, which may be anyone. Walking leftwards past our own proxies, the first address that
is not one of them is the client. An entry a client could have forged is never reached unless
every entry right of it came from a trusted proxy.

Without trusted proxies, ``X-Forwarded-For`` is ignored entirely: believing it from anyone would
let a client pick its own address, and with it its own login throttle bucket
(``gaia.store.throttle``).

The result is a normalised IP address (an IPv4-mapped IPv6 address is written as IPv4), or the
peer's name as the ASGI server gave it when it is not an IP (a Unix socket, a test client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from starlette.requests import HTTPConnection

# Longer peer names (never an IP address) are cut: the address is a key, not a document.
MAX_ADDRESS_LENGTH = 100


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: IPv4Address | IPv6Address | None, proxies: Sequence[IPv4Network | IPv6Network]
) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(
    connection: HTTPConnection, *, trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> str:
    """The client's address for ``connection`` (see the module docstring for the rules)."""
    peer_text = connection.client.host if connection.client else ""
    peer = _ip(peer_text)
    if not _trusted(peer, trusted_proxies):
        return str(peer) if peer is not None else peer_text[:MAX_ADDRESS_LENGTH]
    hops = [
        hop.strip()
        for header in connection.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    client = peer
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            # Not an address (a proxy that passes on whatever the client wrote, or a
            # "unknown"): stop at the last hop we could check rather than take a client's word.
            break
        client = address
        if not _trusted(address, trusted_proxies):
            break
    return str(client)


def request_client_address(connection: HTTPConnection) -> str:
    """The client's address under this platform's ``trusted_proxies`` setting."""
    settings = connection.app.state.platform.settings
    return client_address(connection, trusted_proxies=settings.trusted_proxies)
