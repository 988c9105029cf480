"""Pagination at the API's edge: the ``?limit=&cursor=`` query parameters every listing takes.

The paging itself (keyset, opaque cursor) is ``gaia.store.paging``: store modules page their
listings and routes pass these two parameters through. ``page_of`` and the cursor codec are
re-exported here for routers that still page a statement of their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from gaia.store.paging import decode_cursor as decode_cursor
from gaia.store.paging import encode_cursor as encode_cursor
from gaia.store.paging import page_of as page_of

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=400, description="from next_cursor")]
