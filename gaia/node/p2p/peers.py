"""The agent's client for other agents' peer servers: one ``GET`` per piece, received in one buffer.

A piece is up to 16 MiB and is the bulk of everything an agent receives, so its path is kept
short: ``PeerClient.get`` writes the request on a kept-alive socket, reads the status line and
headers, then receives the body with ``sock_recv_into`` straight into one preallocated buffer of
``Content-Length`` bytes (no chunk objects, no joins: the caller hashes that buffer and writes it
at the piece's offset). A general HTTP client (httpx: h11 events, anyio streams, a 64 KiB read
and a ``bytes`` object per chunk, a join at the end) cost a third of an agent's CPU at 1 MiB
pieces in ``bench/p2p.py``.

The peer server is the agent's own (``server.peer_app`` under uvicorn), so the client speaks
only what that server sends: HTTP/1.1 with ``Content-Length`` (a chunked or length-less answer
is refused as a protocol error). Connections are kept per peer address and reused; an idle one
is dropped after ``keepalive_s``, before the server's own keep-alive timeout (30 s) could close
it under a request. A request whose connection the server closed without a byte of an answer
(a kept-alive one it timed out as the request went out) is sent once more on a new connection:
a request that was never answered says nothing about the parent.

Wake-ups: a link shaped to 10 Mbit/s delivers a piece a packet at a time, and each readable
socket costs a turn of the event loop and a resumed coroutine for ~1.4 KB: in ``bench/p2p.py``
the agents moved 25 MB per CPU second at 10 Mbit/s links against 82 at 100 Mbit/s (N = 4, same
calls), and that, not the number of nodes, was why N = 32 on 10 Mbit/s cost 3-4 x the CPU per
byte of N = 3 on 100 Mbit/s. So while a body is received the socket's ``SO_RCVLOWAT`` is
``BODY_LOWAT`` (the bytes still to come, when fewer): the kernel wakes the loop once per 64 KiB.
It is set back to 1 before the connection goes back to the pool (a head is a few hundred bytes).

Errors: ``PeerUnreachable`` (connect refused or reset, the peer closed mid-answer, a protocol
error) and ``PeerTimeout`` (no progress for ``timeout_s``; connecting: ``connect_s``), which
the downloader reports as the piece's ``reason`` (docs/p2p.md).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

HEAD_LIMIT = 16 << 10  # status line and headers; the peer server sends a few hundred bytes
# the socket becomes readable once this much of the body is there (SO_RCVLOWAT; less for the
# body's last bytes): see the module docstring, "Wake-ups"
BODY_LOWAT = 64 << 10
MAX_BODY = 64 << 20  # a piece is at most 16 MiB (domain.swarm.piece_size): over is a lie


class PeerError(Exception):
    """A piece request that got no usable answer; ``reason`` is what the coordinator hears."""

    reason = "unreachable"


class PeerUnreachable(PeerError):
    reason = "unreachable"


class PeerTimeout(PeerError):
    reason = "timeout"


@dataclass(frozen=True)
class PeerAnswer:
    status: int
    body: bytearray  # exactly Content-Length bytes


class _Closed(Exception):
    """The server closed the connection before sending any byte of an answer."""


class PeerClient:
    """Kept-alive connections to peer servers (module docstring). Not thread-safe: one loop."""

    def __init__(
        self, *, timeout_s: float, connect_s: float = 3.0, keepalive_s: float = 2.0
    ) -> None:
        self.timeout_s = timeout_s
        self.connect_s = connect_s
        self.keepalive_s = keepalive_s
        self._idle: dict[str, list[tuple[socket.socket, float]]] = {}
        self.connections_opened = 0

    async def get(self, address: str, path: str, headers: dict[str, str]) -> PeerAnswer:
        """``GET path`` on the peer at ``address`` (``host:port``)."""
        request = _request(address, path, headers)
        sock = self._take_idle(address) or await self._connect(address)
        try:
            return await self._exchange(address, sock, request)
        except _Closed:
            pass  # closed as the request went out (an idle timeout): once more, on a new one
        sock = await self._connect(address)
        try:
            return await self._exchange(address, sock, request)
        except _Closed as exc:
            raise PeerUnreachable(f"{address} closed the connection without answering") from exc

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for sock, _ in pool:
                sock.close()
        self._idle.clear()

    def _take_idle(self, address: str) -> socket.socket | None:
        pool = self._idle.get(address)
        now = time.monotonic()
        while pool:
            sock, since = pool.pop()
            if now - since < self.keepalive_s:
                return sock
            sock.close()
        return None

    def _put_idle(self, address: str, sock: socket.socket) -> None:
        self._idle.setdefault(address, []).append((sock, time.monotonic()))

    async def _connect(self, address: str) -> socket.socket:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_s):
                infos = await loop.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
                family, kind, proto, _, where = infos[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    await loop.sock_connect(sock, where)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError as exc:
            raise PeerTimeout(f"connecting to {address} took over {self.connect_s} s") from exc
        except (OSError, ValueError, IndexError) as exc:
            raise PeerUnreachable(f"cannot connect to {address}: {exc}") from exc
        self.connections_opened += 1
        return sock

    async def _exchange(self, address: str, sock: socket.socket, request: bytes) -> PeerAnswer:
        """One request and its answer; the socket goes back to the pool or is closed."""
        loop = asyncio.get_running_loop()
        keep = False
        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await loop.sock_sendall(sock, request)
                head = bytearray(HEAD_LIMIT)
                got = 0
                while True:
                    n = await loop.sock_recv_into(sock, memoryview(head)[got:])
                    if n == 0:
                        if got == 0:
                            raise _Closed
                        raise PeerUnreachable(f"{address} closed the connection mid-answer")
                    got += n
                    end = head.find(b"\r\n\r\n", 0, got)
                    if end >= 0:
                        break
                    if got == HEAD_LIMIT:
                        raise PeerUnreachable(f"{address} sent headers over {HEAD_LIMIT} bytes")
                    deadline.reschedule(loop.time() + self.timeout_s)
                status, length, keep = _parse_head(bytes(head[:end]), address)
                body = bytearray(length)
                extra = got - (end + 4)
                if extra > length:
                    raise PeerUnreachable(f"{address} sent more than its Content-Length")
                body[:extra] = head[end + 4 : got]
                view = memoryview(body)
                filled = extra
                lowat = 1
                while filled < length:
                    wanted = min(length - filled, BODY_LOWAT)
                    if wanted != lowat:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
                        lowat = wanted
                    n = await loop.sock_recv_into(sock, view[filled:])
                    if n == 0:
                        raise PeerUnreachable(f"{address} closed the connection mid-answer")
                    filled += n
                    deadline.reschedule(loop.time() + self.timeout_s)
                view.release()
                if lowat != 1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        except TimeoutError as exc:
            sock.close()
            raise PeerTimeout(f"{address} made no progress for {self.timeout_s} s") from exc
        except OSError as exc:
            sock.close()
            raise PeerUnreachable(f"{address}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        if keep:
            self._put_idle(address, sock)
        else:
            sock.close()
        return PeerAnswer(status, body)


def _request(address: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {address}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes, address: str) -> tuple[int, int, bool]:
    """(status, Content-Length, keep the connection) from the status line and headers."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise PeerUnreachable(f"{address} sent no HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    keep = parts[0] == "HTTP/1.1"
    length = -1
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length" and value.strip().isdigit():
            length = int(value.strip())
        elif name == "transfer-encoding":
            raise PeerUnreachable(f"{address} sent a {value.strip()} body; expected a length")
        elif name == "connection":
            keep = value.strip().lower() != "close"
    if not 0 <= length <= MAX_BODY:
        raise PeerUnreachable(f"{address} sent no usable Content-Length")
    return status, length, keep
