"""SQLite's writer turn held in a test, as a background loop's pass holds it while it writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from gaia.store.database import Database
from gaia.store.models import Business


class HeldTurn:
    """A thread inside a write transaction of ``db`` (on SQLite: this process's writer turn);
    ``let_go`` lets it commit (what it wrote: one business)."""

    def __init__(self, release: threading.Event, thread: threading.Thread) -> None:
        self._release = release
        self._thread = thread

    def let_go(self) -> None:
        self._release.set()

    def join(self) -> None:
        self._release.set()
        self._thread.join(10)


@contextmanager
def writer_turn_held(db: Database, *, business: str, hold_s: float = 20) -> Iterator[HeldTurn]:
    """Hold the writer turn from a thread for the block (at most ``hold_s``), having written
    the business ``business``; it commits when let go or at the block's end."""
    holding, release = threading.Event(), threading.Event()

    def controller_pass() -> None:
        with db.write_session() as session:
            session.add(Business(name=business))
            session.flush()
            holding.set()
            release.wait(hold_s)

    thread = threading.Thread(target=controller_pass, name="holds-the-writer-turn")
    thread.start()
    held = HeldTurn(release, thread)
    try:
        if not holding.wait(10):
            raise AssertionError("the thread did not get the writer turn within 10 s")
        yield held
    finally:
        held.join()
