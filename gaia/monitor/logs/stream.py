"""The server's console log lines (uvicorn's access and error lines on stdout and stderr),
written by a thread of their own so that a slow reader never stalls a request.

uvicorn's default handlers are ``logging.StreamHandler``s: every request's access line is a
``write`` to stdout on the event loop's thread. Where stdout is a pipe that is read slowly or not
at all (a supervisor that stalls, ``gaia up | less`` paused, a test that stopped reading), the
pipe's 64 KiB fill up, the write blocks, and with it the event loop: every request of every user
waits for the reader. ``BackgroundStreamHandler`` formats the line where it is logged (so the
record's arguments are read while they are current) and puts it on a bounded queue; one thread
writes the queue out. When the queue is full the line is dropped and counted, and once the
stream takes lines again a line says how many were dropped: losing console lines is better than
stopping the platform (the system log store keeps its own copy: ``SystemLogHandler``).
``logging.shutdown`` (at exit) writes out what is queued, for a bounded time.

``server_log_config`` is uvicorn's own logging configuration with these handlers in place of its
stream handlers: same formats, same streams, same levels.
"""

from __future__ import annotations

import copy
import logging
import queue
import sys
import threading
from typing import IO, Any

# lines held for a slow stream: some 100 bytes each, about a megabyte
CAPACITY = 10_000
# how long the exit waits for a stream to take what is queued
CLOSE_TIMEOUT_S = 2.0


class BackgroundStreamHandler(logging.Handler):
    def __init__(
        self, stream: IO[str] | None = None, *, capacity: int = CAPACITY, level: int = 0
    ) -> None:
        super().__init__(level)
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.dropped = 0  # lines dropped because the stream did not keep up (all time)
        self._unreported = 0  # dropped since the last notice written
        self._counter = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._write, name="gaia-log-stream", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._counter:
                self.dropped += 1
                self._unreported += 1

    def _write(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            with self._counter:
                missed, self._unreported = self._unreported, 0
            try:
                if missed:
                    self.stream.write(
                        f"({missed} log line(s) dropped here: the output was not read fast "
                        "enough; the platform's log store has them)\n"
                    )
                self.stream.write(line + "\n")
                if self._queue.empty():
                    self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stream: nothing to write to, nothing to stop for

    def flush(self) -> None:
        """Nothing to do here: the writer flushes whenever it has caught up."""

    def close(self) -> None:
        """Write out what is queued (for at most ``CLOSE_TIMEOUT_S``), then stop the writer."""
        try:
            self._queue.put(None, timeout=CLOSE_TIMEOUT_S)
        except queue.Full:
            pass  # the stream is stuck: what is queued is lost with the process
        else:
            self._thread.join(CLOSE_TIMEOUT_S)
        super().close()


def server_log_config(base: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging configuration ``base`` (``uvicorn.config.LOGGING_CONFIG``) with each of
    its stream handlers written by a background thread."""
    config = copy.deepcopy(base)
    for handler in config.get("handlers", {}).values():
        if handler.get("class") == "logging.StreamHandler":
            handler["class"] = f"{__name__}.BackgroundStreamHandler"
    return config
