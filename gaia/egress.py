"""The egress guard: where the platform may open a connection on a user's behalf.

Alert channels send to addresses a business admin typed in (a webhook URL, a WeCom robot URL,
an SMS endpoint, an SMTP host). Without a guard, such a user can make the platform talk to its
own loopback services, the cluster's private network or the cloud's metadata service
(169.254.169.254, fd00:ec2::254) and read the answer back through the channel test. So:

- An address is allowed when it is globally routable (``ipaddress``'s ``is_global``) and not
  multicast. Loopback, RFC 1918 and RFC 4193 (ULA) private ranges, link-local (which holds the
  metadata services), CGNAT (100.64.0.0/10), unspecified, reserved and documentation ranges are
  refused. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
- A platform admin may allow ranges with ``GAIA_EGRESS_ALLOW_CIDRS`` (comma-separated CIDRs,
  e.g. ``10.20.0.0/16,fd12::/64``), for an on-premises mail relay or chat server.
- The check happens **when connecting**, on the address actually connected to: the name is
  resolved once, every answer is checked, and the socket goes to a checked address. Checking
  only when the channel is saved would let DNS rebinding (a name that resolves to a public
  address at save time and to 127.0.0.1 later) walk past it.

For HTTP (httpx) the guard is an ``httpcore`` network backend (``GuardedBackend``): httpcore asks
its backend for a TCP stream to ``(host, port)`` and then starts TLS on that stream itself with
the URL's host as SNI and for certificate checking, and httpx sends the URL's ``Host`` header.
So pinning in the backend connects to the checked IP while TLS and ``Host`` stay those of the
name, with no URL rewriting; and it also covers every connection a pool opens later (keep-alive
reconnects), which a check in front of the transport would not. httpx offers no public argument
for the backend, so ``guarded_transport`` builds the transport's connection pool itself.

For SMTP (aiosmtplib), ``open_checked_socket`` resolves, checks and connects a socket, which the
SMTP client is given together with the original host name (for SNI and the certificate).

``check_literal_host`` is the early check used when a channel is saved: it refuses an IP
literal or ``localhost`` that would be refused at connect time, so the user hears at once. It
does not resolve names (a name may legitimately not resolve from where the API runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from gaia.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "GAIA_EGRESS_ALLOW_CIDRS"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class EgressRefused(Exception):
    """A connection to a refused address; the message says which and how to allow it."""


def parse_cidrs(text: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, fd00::/8"`` as networks; ``ValueError`` naming a bad entry."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks: list[IPNetwork] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{ALLOW_SETTING}: {item!r} is not a CIDR (10.0.0.0/8)") from None
    return tuple(networks)


def _kind_of_refused(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _kind_of_refused(address.ipv4_mapped)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations are allowed: public addresses, and the admin's allowed ranges."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        return cls(parse_cidrs(settings.egress_allow_cidrs))

    def refusal(self, address: IPAddress) -> str | None:
        """None when ``address`` may be connected to; else why not, in words."""
        if any(
            address in network for network in self.allowed if network.version == address.version
        ):
            return None
        kind = _kind_of_refused(address)
        if kind is None:
            return None
        return f"{address} is {kind}; a platform admin can allow it with {ALLOW_SETTING}"

    def check(self, address: str | IPAddress, *, host: str) -> IPAddress:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        why = self.refusal(ip)
        if why is not None:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise EgressRefused(f"refusing to connect to {shown}: {why}")
        return ip


# The policy in force. Read at connect time (not captured when a client is built) so that a
# changed setting or a test's override applies to every connection opened from then on.
_override: EgressPolicy | None = None


@functools.cache
def _policy_from_environment() -> EgressPolicy:
    return EgressPolicy.from_settings(Settings())


def current_policy() -> EgressPolicy:
    return _override if _override is not None else _policy_from_environment()


@contextlib.contextmanager
def policy_override(policy: EgressPolicy) -> Iterator[EgressPolicy]:
    """Use ``policy`` until the block ends (tests allow their fakes on 127.0.0.1 this way)."""
    global _override
    previous, _override = _override, policy
    try:
        yield policy
    finally:
        _override = previous


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def check_literal_host(host: str, *, policy: EgressPolicy | None = None) -> None:
    """Refuse, at save time, a host that is an IP literal (or ``localhost``) the policy refuses.
    Raises ``EgressRefused``. Names are left to the connect-time check."""
    policy = policy or current_policy()
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        policy.check(ipaddress.ip_address("127.0.0.1"), host=host)
        return
    address = _literal(host)
    if address is not None:
        policy.check(address, host=host)


async def resolve_checked(
    host: str, port: int, *, policy: EgressPolicy | None = None
) -> list[tuple[int, IPAddress]]:
    """The addresses of ``host`` the policy allows, as (family, address), in resolver order.

    Raises ``EgressRefused`` when every address is refused (one refused answer among allowed
    ones is skipped: the socket only ever goes to a checked address, so it cannot be reached),
    and ``OSError`` when the name does not resolve."""
    policy = policy or current_policy()
    literal = _literal(host)
    if literal is not None:
        policy.check(literal, host=host)
        family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        return [(family, literal)]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    allowed: list[tuple[int, IPAddress]] = []
    first_refusal: EgressRefused | None = None
    for family, _, _, _, sockaddr in infos:
        try:
            address = policy.check(str(sockaddr[0]).split("%", 1)[0], host=host)
        except EgressRefused as exc:
            first_refusal = first_refusal or exc
            continue
        if (family, address) not in allowed:
            allowed.append((family, address))
    if not allowed:
        raise first_refusal or OSError(f"{host} has no address")
    return allowed


async def open_checked_socket(
    host: str, port: int, *, timeout: float | None, policy: EgressPolicy | None = None
) -> socket.socket:
    """A non-blocking TCP socket connected to a checked address of ``host``."""
    last: OSError | None = None
    async with asyncio.timeout(timeout):
        for family, address in await resolve_checked(host, port, policy=policy):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
    raise last or OSError(f"cannot connect to {host}:{port}")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve_checked(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:  # EgressRefused is not one: it propagates as it is
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        last: Exception | None = None
        for _, address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("refusing to connect to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(
    *, ssl_context: ssl.SSLContext, limits: httpx.Limits, http2: bool = False
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through ``GuardedBackend``."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, http2=http2)
    # httpx has no public argument for the network backend: build the pool as it does, with ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=http2,
        network_backend=GuardedBackend(),
    )
    return transport


def refusal_in(exc: BaseException) -> EgressRefused | None:
    """The ``EgressRefused`` behind ``exc`` (clients may wrap it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, EgressRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


__all__: Sequence[str] = (
    "ALLOW_SETTING",
    "EgressPolicy",
    "EgressRefused",
    "GuardedBackend",
    "check_literal_host",
    "current_policy",
    "guarded_transport",
    "open_checked_socket",
    "parse_cidrs",
    "policy_override",
    "refusal_in",
    "resolve_checked",
)
