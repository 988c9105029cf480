"""Pagination at the API's edge: the ``?limit=&cursor=`` query parameters every listing takes,
and the one answer shape of every list, ``Page`` (``{"items": [...], "next_cursor": ...}``).

The paging itself (keyset over a select, or over a list in memory; the signed, typed cursor)
is ``gaia.store.paging``: store modules page their listings and routes pass these two
parameters through. A cursor another list handed out, or one that was changed, is a 422
``invalid_request`` ("start from page one"), never some other page. ``page_of``,
``page_in_memory`` and the cursor codec are re-exported here for routers that page a statement
or a provider's list of their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from gaia.store.paging import decode_cursor as decode_cursor
from gaia.store.paging import encode_cursor as encode_cursor
from gaia.store.paging import kind_of as kind_of
from gaia.store.paging import page_in_memory as page_in_memory
from gaia.store.paging import page_in_memory_both_ways as page_in_memory_both_ways
from gaia.store.paging import page_of as page_of

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
# a cursor carries the last key of a page (a node name can be 253 characters) and its signature
Cursor = Annotated[
    str | None,
    Query(
        max_length=1024,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="from next_cursor; empty: page one",
    ),
]
