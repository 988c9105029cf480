"""List pages: the two shapes of list the console shows, each built one way.

**Short lists the console pages itself** (clusters, businesses, members, quotas, configs,
instance configurations, apps, nodes, an app's versions): the API lists
them in keyset pages of up to 500, like every list it has; ``every_item`` collects
them all (bounded), the page keeps the rows its filters match (``mentions`` for the "part of a
name" box), and ``paginate`` cuts out the page shown, whose links (``Paged.link``) keep the
filters. Filtering here rather than in the API keeps the API's list parameters as they are, and
these lists stay short (a platform has tens of clusters, not millions).

**Long lists the API pages itself** (operation records, events, log lines, an app's upgrades,
newest first; an app's instances, by id, which the API also filters and counts, and their
addresses): ``cursor_page`` asks for one
page with the filters and the cursor the browser came with, and answers the rows with the links
to the older page and back to the newest one; ``instance_page`` and ``instance_links`` do the
same for an app's instances, which every tab that shows them reads a page at a time (the
instances table, monitoring, network, the pickers of logs and terminal). Nothing is collected:
a page costs one API call however long the history or large the app is.

Either way what flows in is the API's JSON and what flows out is a template's context; the
console never sees more rows than the API gives the logged-in user (docs/architecture.md,
the console).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query

from gaia.console.web import ApiResult, ConsoleApi

# of 500 rows each: a bound on collecting a keyset-paged API list (100,000 rows)
MAX_LIST_PAGES = 200
# the instances list API's cursor, passed through as it came (the API checks it)
Cursor = Annotated[str, Query(max_length=1024, pattern=r"^[A-Za-z0-9._-]*$")]


async def every_item(api: ConsoleApi, path: str, **params: Any) -> ApiResult:
    """Every item of a keyset-paged API list (``{"items", "next_cursor"}``) in one result's
    ``data``, or the API's first refusal."""
    items: list[Any] = []
    cursor = None
    for _ in range(MAX_LIST_PAGES):
        result = await api.get(path, limit=500, cursor=cursor, **params)
        if not result.ok:
            return result
        items.extend(result.data["items"])
        cursor = result.data.get("next_cursor")
        if not cursor:
            break
    return ApiResult(200, items)


def mentions(text: str, *fields: Any) -> bool:
    """Whether any of the fields contains the text, ignoring case (an empty text: all do)."""
    needle = text.strip().lower()
    return not needle or any(needle in str(f or "").lower() for f in fields)


@dataclass
class Paged:
    """One page of a list the console filtered; ``link(n)`` keeps the filters."""

    items: Sequence[Any]
    page: int
    size: int
    total: int
    query: dict[str, str] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    def link(self, page: int) -> str:
        return "?" + urlencode({**self.query, "page": page})

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.size + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        return min(self.total, self.page * self.size)


def paginate(
    items: Sequence[Any], *, page: int, size: int, query: Mapping[str, Any] | None = None
) -> Paged:
    """The page ``page`` of ``items`` (clamped to the pages there are); ``query`` is what the
    page's links keep (empty values and the page number left out)."""
    size = max(1, min(size, 500))
    pages = max(1, math.ceil(len(items) / size))
    page = max(1, min(page, pages))
    start = (page - 1) * size
    kept = {k: str(v) for k, v in (query or {}).items() if v not in (None, "") and k != "page"}
    return Paged(items[start : start + size], page, size, len(items), kept)


@dataclass(frozen=True, slots=True)
class CursorPage:
    """One page of a newest-first list the API pages by cursor, and the links around it.

    ``older`` leads to the next (older) page and is "" at the end; ``newest`` leads back to
    the first page and is "" on it; ``refresh`` is this list from its newest page, always."""

    result: ApiResult
    items: list[dict[str, Any]]
    first: bool
    older: str
    newest: str
    refresh: str

    @property
    def data(self) -> dict[str, Any]:
        """The API's whole answer (``{}`` when it refused): some lists say more than items."""
        return self.result.data if self.result.ok and isinstance(self.result.data, dict) else {}


async def cursor_page(
    api: ConsoleApi,
    path: str,
    *,
    filters: Mapping[str, Any],
    cursor: str,
    limit: int,
    keep: Mapping[str, Any],
    here: str = "",
) -> CursorPage:
    """Ask ``path`` for the page at ``cursor`` with ``filters``; the links go to ``here``
    (the page's own path; "" for a link relative to it) with ``keep`` as their query."""
    result = await api.get(path, **filters, cursor=cursor or None, limit=limit)
    data = result.data if result.ok and isinstance(result.data, dict) else {}
    kept = {k: v for k, v in keep.items() if v not in ("", None)}
    nxt = data.get("next_cursor")
    refresh = here + ("?" + urlencode(kept) if kept or not here else "")
    return CursorPage(
        result=result,
        items=list(data.get("items", [])),
        first=not cursor,
        older=here + "?" + urlencode({**kept, "cursor": nxt}) if nxt else "",
        newest=refresh if cursor else "",
        refresh=refresh,
    )


def instance_links(
    here: str, *, query: Mapping[str, Any], page: Mapping[str, Any]
) -> dict[str, str]:
    """The links around one page of an app's instances as the API pages them both ways
    (``here`` with the options in ``query``): ``next`` and ``previous`` carry the API's cursors,
    ``first`` drops the cursor; each is "" where there is no such page."""
    kept = {k: v for k, v in query.items() if v not in ("", None)}

    def to(cursor: str | None) -> str:
        return here + "?" + urlencode({**kept, **({"cursor": cursor} if cursor else {})})

    return {
        "next": to(page["next_cursor"]) if page.get("next_cursor") else "",
        "previous": to(page["prev_cursor"]) if page.get("prev_cursor") else "",
        "first": to(None) if page.get("prev_cursor") else "",
    }


async def instance_page(
    api: ConsoleApi, path: str, *, limit: int, cursor: str = "", **filters: Any
) -> dict[str, Any]:
    """One page of an app's instances (``path``: the API's ``.../instances``), filtered,
    counted and paged by the API: the page a tab shows, whatever the app's size. An empty page
    when the API refused (the tab has the app already, so it says so itself)."""
    result = await api.get(path, **filters, limit=limit, cursor=cursor or None)
    if result.ok and isinstance(result.data, dict):
        return dict(result.data)
    return {"items": [], "next_cursor": None, "prev_cursor": None, "matched": 0, "total": 0}
