"""The app under a real HTTP server: uvicorn in a thread, on a free port of 127.0.0.1.

For the tests a real client must reach over TCP (Prometheus scraping, Alertmanager posting,
streamed responses that ``TestClient`` would buffer to their end). Loops are off unless asked for;
the lifespan runs, so what the app opens at start-up is open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from gaia.app import Platform, create_app
from tests.support.kube import free_port


@contextmanager
def serve(
    platform: Platform,
    *,
    run_loops: bool = False,
    lifespan: bool = True,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> Iterator[str]:
    """Serve ``platform`` until the block ends; yields the origin (``http://<host>:port``).
    ``lifespan=False`` skips start-up and shut-down (nothing opened, nothing closed); ``host``
    another local address (a test bed's bridge, which network namespaces reach); ``port`` a port
    chosen before the platform was built (when its settings must name its own origin)."""
    port = port or free_port()
    config = uvicorn.Config(
        create_app(platform, run_loops=run_loops),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on" if lifespan else "off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start under uvicorn")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
