"""Keyset pagination over a select: one page of rows and the cursor of the next.

Keyset (not offset) pagination keeps deep pages as fast as the first and never skips or repeats
a row when new ones arrive between two page loads. The cursor is the last key of the previous
page, base64-encoded so that clients treat it as opaque. Store modules page their listings with
``page_of``; the API's ``?limit=&cursor=`` parameters are in ``gaia.api.pagination``
(docs/architecture.md, "store").
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from gaia.domain.errors import InvalidRequest

T = TypeVar("T")


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidRequest("cursor is not one this API handed out; start from page one") from None


def page_of(
    session: Session,
    stmt: Select[T],
    *,
    key: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
    descending: bool = False,
    numeric: bool = False,
) -> tuple[list[T], str | None]:
    """Up to ``limit`` rows of ``stmt`` after ``cursor`` in ``key`` order, and the next cursor
    (``None`` on the last page). ``numeric`` keys are checked to be integers a client could not
    have forged into an overflow."""
    if cursor:
        raw = decode_cursor(cursor)
        if numeric:
            try:
                after: Any = int(raw)
            except ValueError:
                raise InvalidRequest("cursor is not one this API handed out") from None
            if not -(2**62) < after < 2**62:
                raise InvalidRequest("cursor is not one this API handed out")
        else:
            after = raw
        stmt = stmt.where(key < after if descending else key > after)
    stmt = stmt.order_by(key.desc() if descending else key.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(getattr(rows[-1], key.key))
    return rows, next_cursor
