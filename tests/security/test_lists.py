"""Issue 15, one list shape: every list of the API answers ``{"items", "next_cursor"}`` and pages
by ``?limit=&cursor=``; a cursor the API did not hand out for that very list is a 422, never
some other page."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gaia.app import create_app
from gaia.platform import Platform
from gaia.security import SecretBox
from gaia.store import paging
from tests.conftest import TEST_SECRET_KEY, World
from tests.support.apps_harness import AppsHarness, template

BIZ = "/api/v1/businesses/alpha"
REFUSED = "cursor is not one this API handed out; start from page one"

# Answers to a query, not lists of objects: a log tail (``?tail=``/``?limit=`` newest lines,
# the log search pages with its own cursor) and a metric's series.
NOT_LISTS = {
    "/api/v1/businesses/{biz}/apps/{app}/instances/{instance}/logs",
    "/api/v1/monitoring/series",
}


# A page that carries what a page of it shows besides its items (issue 20: an app's instances,
# counted by the API so that a console page reads one page of 10,000); still items and
# next_cursor, paged by ?limit=&cursor= like every list.
SAYS_MORE = {
    f"{BIZ}/apps/web/instances": {"prev_cursor", "matched", "total", "by_status", "by_version"},
    # issue 22: an app's upgrades counted per state, and its addresses with its network
    f"{BIZ}/apps/web/upgrades": {"total", "by_state", "active"},
    f"{BIZ}/apps/web/network": {"mode", "ip_release", "total", "kept_total"},
}


def _app(world: World, name: str, *, cluster: str = "sim-1", replicas: int = 1) -> None:
    body = {
        "name": name,
        "cluster": cluster,
        "templates": [template("v1", "registry.local/x:1", cpu=0.1, memory=64)],
        "replicas": replicas,
    }
    r = world.client.post(f"{BIZ}/apps", json=body, headers=world.admin)
    assert r.status_code == 201, r.text


def _schema_is_array(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema.get("type") == "array"


def test_no_list_endpoint_answers_a_bare_array(platform: Platform) -> None:
    """The README promises ``{items, next_cursor}``; nodes, apps, instances, upgrades,
    templates, blacklist, tokens, members, quotas, ... answered bare arrays, which a client
    cannot page and which grow without bound (10,000 instances in one answer)."""
    spec = create_app(platform, run_loops=False).openapi()
    components = spec["components"]["schemas"]
    bare, unpaged = [], []
    for path, ops in spec["paths"].items():
        get = ops.get("get")
        if get is None or path in NOT_LISTS:
            continue
        content = get["responses"].get("200", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        if _schema_is_array(schema, components):
            bare.append(path)
        ref = schema.get("$ref", "")
        if ref.rsplit("/", 1)[-1].startswith("Page_"):
            params = {p["name"] for p in get.get("parameters", [])}
            if not {"limit", "cursor"} <= params:
                unpaged.append(path)
    assert bare == [], f"lists answering a bare array: {bare}"
    assert unpaged == [], f"pages without ?limit=&cursor=: {unpaged}"


def test_every_list_answers_items_and_next_cursor(world: World) -> None:
    """The same lists, asked for real: each answers the one page shape."""
    _app(world, "web")
    c, admin = world.client, world.admin
    app = f"{BIZ}/apps/web"
    for path in (
        "/api/v1/clusters/sim-1/nodes",
        "/api/v1/clusters/sim-1/p2p/nodes",
        "/api/v1/clusters/sim-1/p2p/images",
        "/api/v1/clusters/sim-1/ip-pools",
        f"{BIZ}/apps",
        f"{app}/instances",
        f"{app}/upgrades",
        f"{app}/network",
        f"{app}/templates",
        f"{app}/blacklist",
        "/api/v1/tokens",
        f"{BIZ}/members",
        f"{BIZ}/quotas",
        f"{BIZ}/quotas/sim-1/gpu-models",
        "/api/v1/instance-configs",
        f"{BIZ}/instance-configs",
        "/api/v1/alerts/builtin-rules",
    ):
        r = c.get(path, params={"limit": 1}, headers=admin)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        assert isinstance(body, dict), path
        assert set(body) == {"items", "next_cursor"} | SAYS_MORE.get(path, set()), path
        assert len(body["items"]) <= 1, path


def _walk(client: TestClient, path: str, headers: dict[str, str], limit: int) -> list[list[Any]]:
    pages: list[list[Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        r = client.get(path, params=params, headers=headers)
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor does not move on"


def test_walking_1200_instances_by_500_sees_each_once_in_order(
    world: World, platform: Platform
) -> None:
    """The instances list was one answer of every instance (0.23 s and megabytes at 10,000,
    read whole by the console); paged, a walk sees each instance exactly once, in id order,
    with what the cluster reports for those it runs."""
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "big", "kind": "sim", "sim": {"nodes": 20, "cpu": 64, "memory_mib": 262144}},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    hard = {"cpu": 1000, "memory": 10**6, "local_disk": 10**4, "bandwidth": 10**5}
    r = world.client.put(f"{BIZ}/quotas/big", json={"hard": hard}, headers=world.admin)
    assert r.status_code == 200, r.text
    _app(world, "many", cluster="big", replicas=1200)
    AppsHarness(platform=platform, client=world.client, headers=world.admin).tick()

    pages = _walk(world.client, f"{BIZ}/apps/many/instances", world.admin, 500)
    assert [len(p) for p in pages] == [500, 500, 200]
    ids = [i["id"] for page in pages for i in page]
    assert ids == list(range(1200))
    assert any(i["node"] for page in pages for i in page)  # merged with the cluster's view


def _cursor_of(client: TestClient, path: str, headers: dict[str, str]) -> str:
    r = client.get(path, params={"limit": 1}, headers=headers)
    assert r.status_code == 200, r.text
    cursor = r.json()["next_cursor"]
    assert cursor, f"{path} has one page only"
    return str(cursor)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _tampered(cursor: str, value: Any) -> str:
    """The cursor with its key changed and its signature kept (what a client could forge)."""
    version, body, mac = cursor.split(".")
    kind, _ = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = json.dumps([kind, value], separators=(",", ":")).encode()
    return f"{version}.{_b64(forged)}.{mac}"


@pytest.fixture
def cursors(world: World) -> dict[str, str]:
    """A real next-page cursor of several lists."""
    for name in ("api", "web"):
        _app(world, name, replicas=2)
    c, admin = world.client, world.admin
    return {
        "apps": _cursor_of(c, f"{BIZ}/apps", admin),
        "instances": _cursor_of(c, f"{BIZ}/apps/web/instances", admin),
        "nodes": _cursor_of(c, "/api/v1/clusters/sim-1/nodes", admin),
        "users": _cursor_of(c, "/api/v1/users", admin),
        "records": _cursor_of(c, "/api/v1/records", admin),
    }


def _refused(client: TestClient, path: str, headers: dict[str, str], cursor: str) -> None:
    r = client.get(path, params={"cursor": cursor}, headers=headers)
    assert r.status_code == 422, (path, cursor, r.status_code, r.text[:200])
    body = r.json()
    assert body["code"] == "invalid_request", body
    assert REFUSED in body["message"], body


LISTS = {
    "apps": f"{BIZ}/apps",
    "instances": f"{BIZ}/apps/web/instances",
    "nodes": "/api/v1/clusters/sim-1/nodes",
    "users": "/api/v1/users",
    "records": "/api/v1/records",
}


@pytest.mark.parametrize("garbage", ["x", "AAAA", _b64(b"web"), _b64(b"5"), "c1.AAAA.AAAA"])
def test_garbage_cursors_are_refused_not_read_as_a_key(
    world: World, cursors: dict[str, str], garbage: str
) -> None:
    """ "AAAA" and base64 of a name decoded as a key, and answered some page (often the first)
    as if the client had asked for it: a client that mangled its cursor read wrong data."""
    for path in LISTS.values():
        _refused(world.client, path, world.admin, garbage)


def test_a_cursor_of_another_list_is_refused(world: World, cursors: dict[str, str]) -> None:
    """A users cursor on the clusters list (both keyed by name) was read as a cluster name and
    skipped every cluster before it."""
    for kind, cursor in cursors.items():
        for other, path in LISTS.items():
            if other != kind:
                _refused(world.client, path, world.admin, cursor)
    # the same kind of list under another parent: beta's apps are not alpha's
    _app_in_beta = world.client.post(
        "/api/v1/businesses/beta/apps",
        json={"name": "zeta", "cluster": "sim-1", "templates": [template("v1", "r.local/z:1")]},
        headers=world.admin,
    )
    assert _app_in_beta.status_code == 201, _app_in_beta.text
    _refused(world.client, "/api/v1/businesses/beta/apps", world.admin, cursors["apps"])
    # and each cursor still works on its own list
    for kind, path in LISTS.items():
        r = world.client.get(path, params={"cursor": cursors[kind]}, headers=world.admin)
        assert r.status_code == 200, (kind, r.text)


def test_a_cursor_with_a_forged_key_is_refused(world: World, cursors: dict[str, str]) -> None:
    """A client rewriting the key inside a cursor (a name, a huge or negative id, a number for
    a name) must not steer the query: the signature no longer matches."""
    forged = {
        "apps": ["aaa", 0],
        "instances": [1, -1, 2**70, "0"],
        "nodes": ["a"],
        "users": [""],
        "records": [1, 2**63],
    }
    for kind, values in forged.items():
        for value in values:
            _refused(world.client, LISTS[kind], world.admin, _tampered(cursors[kind], value))


@pytest.mark.parametrize("limit", [0, -1, 501, "ten"])
def test_limit_out_of_range_is_refused(world: World, limit: Any) -> None:
    """A limit outside 1..500 is a 422 with the error shape on the lists that had none."""
    _app(world, "web")
    for path in (f"{BIZ}/apps", f"{BIZ}/apps/web/instances", "/api/v1/clusters/sim-1/nodes"):
        r = world.client.get(path, params={"limit": limit}, headers=world.admin)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["code"] == "invalid_request"


def test_cursors_are_signed_with_a_key_derived_from_the_secret_key(
    world: World, cursors: dict[str, str]
) -> None:
    """Replicas share ``GAIA_SECRET_KEY``, so page two may come from another replica: a cursor
    must verify under the key any replica derives from it, and under no other secret key."""
    path, cursor = LISTS["apps"], cursors["apps"]
    try:
        paging.sign_cursors_with(SecretBox(Fernet.generate_key()).derive_key("list cursors"))
        _refused(world.client, path, world.admin, cursor)
        # another replica: a box of its own over the same secret key
        paging.sign_cursors_with(SecretBox(TEST_SECRET_KEY).derive_key("list cursors"))
        r = world.client.get(path, params={"cursor": cursor}, headers=world.admin)
        assert r.status_code == 200, r.text
        assert [a["name"] for a in r.json()["items"]] == ["web"]
    finally:
        paging.sign_cursors_with(SecretBox(TEST_SECRET_KEY).derive_key("list cursors"))
