"""The list-page helpers: collecting a keyset-paged API list, the name filter, the console's own
pages of a filtered list, and the links around one page of a list the API pages by cursor."""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import parse_qs

from gaia.console.listing import cursor_page, every_item, mentions, paginate
from gaia.console.web import ApiResult, ConsoleApi


class FakeApi:
    """Answers GETs from a list of pages (``{"items", "next_cursor"}``), noting each call."""

    def __init__(self, *answers: ApiResult) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    async def get(self, path: str, **params: Any) -> ApiResult:
        self.calls.append({"path": path, **params})
        return self.answers.pop(0)


def page_of(items: list[Any], next_cursor: str | None = None) -> ApiResult:
    return ApiResult(200, {"items": items, "next_cursor": next_cursor})


def test_every_item_follows_the_cursor_to_the_end() -> None:
    api = FakeApi(page_of([1, 2], "c1"), page_of([3], None))
    result = asyncio.run(every_item(cast(ConsoleApi, api), "/api/v1/clusters"))
    assert result.ok and result.data == [1, 2, 3]
    assert [c["cursor"] for c in api.calls] == [None, "c1"]
    assert {c["limit"] for c in api.calls} == {500}


def test_every_item_answers_the_first_refusal() -> None:
    api = FakeApi(page_of([1], "c1"), ApiResult(403, {"message": "no"}))
    result = asyncio.run(every_item(cast(ConsoleApi, api), "/api/v1/businesses"))
    assert result.status == 403 and result.error == "no"


def test_mentions_ignores_case_and_an_empty_filter_keeps_everything() -> None:
    assert mentions(" Web ", "my-web-app", None)
    assert not mentions("db", "web", "")
    assert mentions("", "anything")


def test_paginate_clamps_the_page_and_its_links_keep_the_filters() -> None:
    paged = paginate(list(range(45)), page=9, size=20, query={"name": "x", "empty": "", "page": 3})
    assert paged.page == 3 and list(paged.items) == [40, 41, 42, 43, 44]
    assert (paged.first_index, paged.last_index, paged.pages) == (41, 45, 3)
    assert parse_qs(paged.link(2)[1:]) == {"name": ["x"], "page": ["2"]}


def test_the_newest_page_links_only_to_older_ones() -> None:
    api = FakeApi(page_of([{"id": 9}], "c9"))
    listed = asyncio.run(
        cursor_page(
            cast(ConsoleApi, api),
            "/api/v1/records",
            filters={"actor": "dev"},
            cursor="",
            limit=50,
            keep={"actor": "dev", "size": ""},
        )
    )
    assert listed.first and listed.items == [{"id": 9}] and listed.newest == ""
    assert listed.older == "?actor=dev&cursor=c9"
    assert api.calls == [{"path": "/api/v1/records", "actor": "dev", "cursor": None, "limit": 50}]


def test_an_older_page_links_back_to_the_newest_and_ends_without_older() -> None:
    api = FakeApi(page_of([{"id": 1}], None))
    listed = asyncio.run(
        cursor_page(
            cast(ConsoleApi, api),
            "/api/v1/events",
            filters={},
            cursor="c9",
            limit=50,
            keep={"size": 20},
            here="/console/b/alpha/apps/web/events",
        )
    )
    assert not listed.first and listed.older == ""
    assert listed.newest == listed.refresh == "/console/b/alpha/apps/web/events?size=20"
