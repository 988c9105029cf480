"""Listing an app's gray upgrades (issue 22): a page shows each upgrade's instances counted,
not listed, the progress of the upgrade in progress only, and counts per state that the
database makes over every upgrade; one upgrade (``GET .../upgrades/{id}``) keeps its lists.

On both stores, driven through the API and the app controller on the sim's stepped clock."""

from __future__ import annotations

from typing import Any

import pytest

from gaia.platform import Platform
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

APP = f"{BIZ}/apps/web"


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


def _walk(h: AppsHarness, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every page of the list, each answer whole."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = h.get(
            f"{APP}/upgrades", limit=limit, **params, **({"cursor": cursor} if cursor else {})
        )
        pages.append(page)
        cursor = page["next_cursor"]
        if not cursor:
            return pages


def _upgrade(h: AppsHarness, body: dict[str, Any], *, until: str | None = "Succeeded") -> int:
    upgrade = h.post(f"{APP}/upgrades", body, status=201)
    path = f"{APP}/upgrades/{upgrade['id']}"
    if until:
        h.settle(lambda: h.get(path)["state"] == until)
    return int(upgrade["id"])


def test_the_list_counts_instances_and_states_and_pages_newest_first(h: AppsHarness) -> None:
    v1, v2 = (template(f"v{i}", f"shop/web:{i}", cpu=0.1, memory=64) for i in (1, 2))
    h.post(f"{BIZ}/apps", {"name": "web", "cluster": "sim-1", "templates": [v1, v2],
                           "replicas": 6}, status=201)  # fmt: skip
    h.settle(h.ready("web", 6))
    first = _upgrade(h, {"template": "v2", "all": True, "max_unavailable": 3})
    second = _upgrade(h, {"template": "v1", "instance_ids": [1, 4]})
    third = _upgrade(h, {"template": "v1", "all": True}, until=None)
    h.post(f"{APP}/upgrades/{third}/pause")

    pages = _walk(h, limit=1)
    assert [[u["id"] for u in p["items"]] for p in pages] == [[third], [second], [first]]
    for page in pages:  # the counts are the app's, on every page
        assert page["total"] == 3
        assert page["by_state"] == {"Paused": 1, "Succeeded": 2}
        assert page["active"] == third
    listed = {u["id"]: u for p in pages for u in p["items"]}
    assert {i: u["instance_count"] for i, u in listed.items()} == {first: 6, second: 2, third: 6}
    assert all("instance_ids" not in u and "previous" not in u for u in listed.values())
    # progress of the one in progress only (paused after its first batch, or before)
    progress = listed[third]["progress"]
    assert progress is not None and progress["total"] == 6
    assert progress["done"] + len(progress["in_flight"]) + progress["waiting"] == 6
    assert listed[first]["progress"] is None and listed[second]["progress"] is None

    # a filter by state, paged on its own
    done = _walk(h, limit=1, state="Succeeded")
    assert [[u["id"] for u in p["items"]] for p in done] == [[second], [first]]
    assert done[0]["total"] == 3  # the counts stay the app's
    r = h.client.get(f"{APP}/upgrades", params={"state": "Lost"}, headers=h.headers)
    assert r.status_code == 422, r.text
    # a cursor of the filtered list is no cursor of the whole one
    r = h.client.get(
        f"{APP}/upgrades", params={"cursor": done[0]["next_cursor"]}, headers=h.headers
    )
    assert r.status_code == 422 and "start from page one" in r.json()["message"]

    # one upgrade keeps its lists, and its progress against the cluster now
    one = h.get(f"{APP}/upgrades/{second}")
    assert one["instance_ids"] == [1, 4] and one["instance_count"] == 2
    assert one["previous"] == {"1": "v2", "4": "v2"}
    assert one["progress"] == {"total": 2, "done": 2, "in_flight": [], "waiting": 0}

    # the rest of the third upgrade: its progress in the list follows it to the end
    h.post(f"{APP}/upgrades/{third}/resume")
    h.settle(lambda: h.get(f"{APP}/upgrades/{third}")["state"] == "Succeeded")
    page = h.get(f"{APP}/upgrades", limit=1)
    assert (page["active"], page["by_state"]) == (None, {"Succeeded": 3})
    assert page["items"][0]["progress"] is None  # finished: its state says how it ended
    assert h.get(f"{APP}/upgrades/{third}")["progress"]["done"] == 6


def test_progress_of_a_few_instances_of_a_larger_app(h: AppsHarness) -> None:
    """An upgrade of fewer than half the instances is stepped against those instances' views
    only; one of every instance against the app's small states: both count the same way."""
    v1, v2 = (template(f"v{i}", f"shop/web:{i}", cpu=0.1, memory=64) for i in (1, 2))
    h.post(f"{BIZ}/apps", {"name": "web", "cluster": "sim-1", "templates": [v1, v2],
                           "replicas": 5}, status=201)  # fmt: skip
    h.settle(h.ready("web", 5))
    few = _upgrade(h, {"template": "v2", "instance_ids": [3]}, until=None)
    assert h.get(f"{APP}/upgrades", limit=5)["items"][0]["progress"]["total"] == 1
    h.settle(lambda: h.get(f"{APP}/upgrades/{few}")["state"] == "Succeeded")
    assert h.get(f"{APP}/upgrades/{few}")["progress"] == {
        "total": 1, "done": 1, "in_flight": [], "waiting": 0,
    }  # fmt: skip
    # the app's answer shows its latest upgrade's progress from the small states too
    assert h.app("web")["upgrade"]["progress"]["done"] == 1
