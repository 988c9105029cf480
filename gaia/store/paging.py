"""Keyset pagination: one page of rows and the cursor of the next, for every list of the API.

Keyset (not offset) pagination keeps deep pages as fast as the first and never skips or repeats
a row when new ones arrive between two page loads. Two pagers share one cursor format:

- ``page_of`` pages a SQL select on an indexed key (users, businesses, apps, upgrades ...);
- ``page_in_memory`` pages a list that is not a table (a cluster's nodes, an app's instances
  as the cluster reports them) over a stable sort key, still bounded by ``limit``.

**The cursor is opaque, typed and tamper-evident.** It carries the list's *kind* (which list,
and for a nested list which parent: ``apps@business:7``) and the last key of the page, as JSON
(so an integer key stays an integer), followed by an HMAC-SHA256 of both under the platform's
cursor key (``sign_cursors_with``, derived from ``GAIA_SECRET_KEY`` when the platform opens).
A cursor this API did not hand out for *that* list (garbage, another list's cursor, a forged
key) is refused with ``InvalidRequest`` (422) instead of silently answering some other page.
Without a configured key (a store used on its own, in tests) a random per-process key signs:
cursors then only outlive the process that made them, which costs a client a restart from
page one, never a wrong page. Rotating ``GAIA_SECRET_KEY`` (a new first key) ends the cursors
handed out before it the same way.

The API's ``?limit=&cursor=`` parameters are in ``gaia.api.pagination``
(docs/architecture.md, "store").
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from gaia.domain.errors import InvalidRequest

T = TypeVar("T")
Key = str | int

CURSOR_VERSION = "c1"
REFUSED = "cursor is not one this API handed out; start from page one"
# 16 bytes of HMAC-SHA256: forging one is 2**128 guesses, and the cursor stays short
_MAC_BYTES = 16
# keys a client could otherwise push past SQLite's and PostgreSQL's 64-bit integers
_INT_BOUND = 2**62

_signing_key: bytes = secrets.token_bytes(32)


def sign_cursors_with(key: bytes) -> None:
    """Sign and check cursors with ``key`` from now on (the platform derives it from its secret
    key, so every replica of one platform accepts the others' cursors)."""
    global _signing_key
    if len(key) < 16:
        raise ValueError("a cursor key needs at least 16 bytes")
    _signing_key = bytes(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    # strict: only the URL-safe alphabet, so two spellings of one cursor cannot both verify
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


def _mac(body: bytes) -> bytes:
    return hmac.new(_signing_key, CURSOR_VERSION.encode() + b"\0" + body, hashlib.sha256).digest()[
        :_MAC_BYTES
    ]


def encode_cursor(kind: str, value: Key) -> str:
    """The cursor that resumes list ``kind`` after key ``value``."""
    body = json.dumps([kind, value], separators=(",", ":"), ensure_ascii=False).encode()
    return f"{CURSOR_VERSION}.{_b64(body)}.{_b64(_mac(body))}"


def decode_cursor(cursor: str, *, kind: str, numeric: bool = False) -> Key:
    """The key in ``cursor`` if this API handed it out for list ``kind``; else
    ``InvalidRequest``. ``numeric`` lists take integer keys only, string lists strings only."""
    try:
        version, body_text, mac_text = cursor.split(".")
        if version != CURSOR_VERSION:
            raise ValueError("another cursor version")
        body, mac = _unb64(body_text), _unb64(mac_text)
        if not hmac.compare_digest(mac, _mac(body)):
            raise ValueError("not signed by this platform")
        found_kind, value = json.loads(body)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise InvalidRequest(REFUSED) from None
    if found_kind != kind:
        raise InvalidRequest(REFUSED)
    if numeric:
        # bool is an int in Python; JSON true is not a key this API hands out
        if type(value) is not int or not -_INT_BOUND < value < _INT_BOUND:
            raise InvalidRequest(REFUSED)
    elif not isinstance(value, str):
        raise InvalidRequest(REFUSED)
    key: Key = value
    return key


def kind_of(key: InstrumentedAttribute[Any], scope: str = "") -> str:
    """The kind of a list keyed by ``key`` (``apps.name``), narrowed to one parent by ``scope``
    (``business:7``): a cursor of one business's apps is no cursor of another's."""
    table = getattr(key.class_, "__tablename__", key.class_.__name__)
    return f"{table}.{key.key}" + (f"@{scope}" if scope else "")


def page_of(
    session: Session,
    stmt: Select[T],
    *,
    key: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
    descending: bool = False,
    numeric: bool = False,
    scope: str = "",
) -> tuple[list[T], str | None]:
    """Up to ``limit`` rows of ``stmt`` after ``cursor`` in ``key`` order, and the next cursor
    (``None`` on the last page). ``key`` must be unique within ``stmt``; ``numeric`` keys are
    integers, ``scope`` names the parent of a nested list (``kind_of``)."""
    kind = kind_of(key, scope)
    if cursor:
        after = decode_cursor(cursor, kind=kind, numeric=numeric)
        stmt = stmt.where(key < after if descending else key > after)
    stmt = stmt.order_by(key.desc() if descending else key.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(kind, getattr(rows[-1], key.key))
    return rows, next_cursor


def page_in_memory(
    items: Iterable[T],
    *,
    key: Callable[[T], Key],
    kind: str,
    limit: int,
    cursor: str | None,
    descending: bool = False,
    numeric: bool = False,
) -> tuple[list[T], str | None]:
    """``page_of`` for a list already in memory: up to ``limit`` of ``items`` after ``cursor``
    in ``key`` order (``key`` unique per item), and the next cursor. The items need not come
    sorted; a key that is gone since the last page is no problem (the page starts at the next
    key after it)."""
    ordered = sorted(items, key=key, reverse=descending)
    start = 0
    if cursor:
        after = decode_cursor(cursor, kind=kind, numeric=numeric)
        keys = [key(i) for i in ordered]
        # bisect needs ascending keys: search the descending list's negated position
        if descending:
            start = len(keys) - bisect.bisect_left(keys[::-1], after)
        else:
            start = bisect.bisect_right(keys, after)
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return page, encode_cursor(kind, key(page[-1])) if more and page else None


def page_in_memory_both_ways(
    items: Iterable[T],
    *,
    key: Callable[[T], int],
    kind: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[T], str | None, str | None]:
    """``page_in_memory`` over ascending integer keys that also answers the cursor of the page
    before (``None`` on page one), for a list that a person walks both ways. It is an ordinary
    cursor of the same list: the key just before the previous page, or one below every key
    when the previous page is page one (integer keys this API hands out are never that low)."""
    ordered = sorted(items, key=key)
    start = 0
    if cursor:
        after = decode_cursor(cursor, kind=kind, numeric=True)
        start = bisect.bisect_right([key(i) for i in ordered], after)
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    nxt = encode_cursor(kind, key(page[-1])) if more and page else None
    if start == 0:
        return page, nxt, None
    before = start - limit - 1  # the last item before the previous page
    prev = encode_cursor(kind, key(ordered[before]) if before >= 0 else -_INT_BOUND + 1)
    return page, nxt, prev
