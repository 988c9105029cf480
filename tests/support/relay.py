"""A TCP relay in front of a test API server: cut, restore, stall and resume the connection
(used by the cluster health and informer tests)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from dataclasses import dataclass, field

from tests.support.kube import free_port


@dataclass(eq=False)
class _Link:
    """One relayed connection: the client's socket, the API server's, and whether bytes flow."""

    client: socket.socket
    upstream: socket.socket
    flowing: threading.Event = field(default_factory=threading.Event)
    closed: bool = False


class Relay:
    """Forward 127.0.0.1:<port> (or listen_host) to a local port: the API server (TLS passes
    through untouched), PostgreSQL.

    ``cut()`` drops the listener and every connection, as a partition that resets connections
    does; ``restore()`` listens on the same port again. ``stall()`` keeps the open connections up
    but stops forwarding on them, as a dead NAT entry or a black-holing load balancer does:
    neither end sees an error, and connections opened later flow. ``resume()`` forwards what the
    stalled connections held.
    """

    def __init__(self, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        # listen_host: another address of this machine, for clients in other network
        # namespaces (a real node's pods reach the host's own address, not its loopback)
        self.listen_host = listen_host
        self.port = free_port()
        self.target = target_port
        self.server: socketserver.ThreadingTCPServer | None = None
        self.links: set[_Link] = set()
        self.lock = threading.Lock()

    def restore(self) -> None:
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream = socket.create_connection(("127.0.0.1", relay.target))
                link = _Link(self.request, upstream)
                link.flowing.set()
                with relay.lock:
                    relay.links.add(link)
                back = threading.Thread(
                    target=relay.pump, args=(link, upstream, self.request), daemon=True
                )
                back.start()
                relay.pump(link, self.request, upstream)
                back.join()
                with relay.lock:
                    relay.links.discard(link)
                upstream.close()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((self.listen_host, self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def pump(link: _Link, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                link.flowing.wait()  # a stalled link holds what it read until resumed
                if link.closed:
                    break
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            links = list(self.links)
        for link in links:
            link.closed = True
            link.flowing.set()
            for sock in (link.client, link.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stall(self) -> None:
        with self.lock:
            for link in self.links:
                link.flowing.clear()

    def resume(self) -> None:
        with self.lock:
            for link in self.links:
                link.flowing.set()

    def stalled(self) -> int:
        with self.lock:
            return sum(1 for link in self.links if not link.flowing.is_set())
