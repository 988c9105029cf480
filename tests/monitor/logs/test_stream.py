"""The server's console lines are written by a thread: a stream that does not keep up never
blocks the code that logs; what the queue cannot hold is dropped, counted and reported once the
stream takes lines again. A real pipe, as a supervisor's or a shell's."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest
from uvicorn.config import LOGGING_CONFIG

from gaia.monitor.logs.stream import BackgroundStreamHandler, server_log_config


@pytest.fixture
def pipe() -> Iterator[tuple[int, object]]:
    r, w = os.pipe()
    stream = os.fdopen(w, "w")
    yield r, stream
    stream.close()
    os.close(r)


def test_a_stream_nobody_reads_does_not_block_and_drops_are_told(
    pipe: tuple[int, object],
) -> None:
    r, stream = pipe
    handler = BackgroundStreamHandler(stream, capacity=100)  # type: ignore[arg-type]
    logger = logging.getLogger("tests.stream")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        started = time.monotonic()
        for i in range(5_000):  # some 550 KB: the pipe holds 64 KiB, the queue 100 lines
            logger.info("line %d %s", i, "x" * 100)
        assert time.monotonic() - started < 5  # a blocked write would never return
        assert handler.dropped > 0

        # the reader comes back: what was held goes out, then a notice of what was dropped
        read: list[bytes] = []
        reader = threading.Thread(target=lambda: _read_until(r, b"the end", read), daemon=True)
        reader.start()
        time.sleep(0.5)  # the held lines are written meanwhile
        logger.info("the end")
        reader.join(10)
        text = b"".join(read).decode()
        assert "line 0 " in text and text.rstrip().endswith("the end")
        assert "log line(s) dropped here" in text
        written = sum(1 for line in text.splitlines() if line.startswith("line "))
        assert written + handler.dropped == 5_000
    finally:
        logger.removeHandler(handler)
        handler.close()


def _read_until(fd: int, marker: bytes, into: list[bytes]) -> None:
    while not b"".join(into).rstrip().endswith(marker):
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        into.append(chunk)


def test_uvicorns_config_keeps_its_formats_and_streams() -> None:
    config = server_log_config(LOGGING_CONFIG)
    for name in ("default", "access"):
        handler = config["handlers"][name]
        assert handler["class"] == "gaia.monitor.logs.stream.BackgroundStreamHandler"
        assert handler["stream"] == LOGGING_CONFIG["handlers"][name]["stream"]
        assert handler["formatter"] == name
    assert LOGGING_CONFIG["handlers"]["access"]["class"] == "logging.StreamHandler"  # a copy
