"""The registry's console pages (gaia/console/pages/registry.py): namespaces, repositories,
tags, and who sees a delete button. The registry's contents come from its push notifications,
posted here as the registry would."""

from __future__ import annotations

import re

from gaia.platform import Platform
from tests.conftest import World
from tests.console.test_clusters import html, post

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def pushed(platform: Platform, world: World, repository: str, tag: str, digest: str) -> None:
    event = {
        "action": "push",
        "timestamp": "2026-12-05T06:00:00Z",
        "target": {
            "mediaType": MANIFEST,
            "digest": digest,
            "size": 1000,
            "repository": repository,
            "tag": tag,
            "references": [{"mediaType": "layer", "digest": "sha256:" + "e" * 64, "size": 3 << 20}],
        },
        "actor": {"name": "dev"},
    }
    r = world.client.post(
        "/api/v1/registry/events",
        json={"events": [event]},
        headers={"Authorization": f"Bearer {platform.registry.signer.notification_token}"},
    )
    assert r.status_code == 200, r.text


def test_the_registry_pages_show_what_each_user_may_see(world: World, platform: Platform) -> None:
    pushed(platform, world, "alpha/web", "v1", "sha256:" + "1" * 64)
    pushed(platform, world, "beta/api", "v1", "sha256:" + "2" * 64)
    page = html(world, "viewer", "/console/registry")
    assert 'href="/console/registry"' in page  # in the navigation
    spaces = re.findall(
        r'<th scope="row"><a href="/console/registry\?namespace=[^"]*">([^<]+)</a>', page
    )
    assert spaces == ["alpha", "public", "u/viewer"]
    assert "alpha/web" in page and "beta/api" not in page
    assert "GAIA_REGISTRY_LISTEN" in page  # no registry runs in this test platform
    page = html(world, "viewer", "/console/registry/repositories/alpha/web")
    assert "sha256:111111111111" in page and "3.0 MiB" in page and "dev" in page
    assert "/tags/v1/delete" not in page  # a viewer may not push, so no delete button
    page = html(world, "developer", "/console/registry/repositories/alpha/web")
    assert "/tags/v1/delete" in page
    html(world, "viewer", "/console/registry/repositories/beta/api", status=404)
    # deleting needs the registry; without one the page says why
    r = post(world, "developer", "/console/registry/repositories/alpha/web/tags/v1/delete", {})
    assert r.status_code == 303 and "error=" in r.headers["location"]


def test_the_registry_page_speaks_chinese(world: World) -> None:
    r = world.client.patch(
        "/api/v1/users/viewer", json={"language": "zh-CN"}, headers=world.as_("viewer")
    )
    assert r.status_code == 200
    page = html(world, "viewer", "/console/registry")
    assert "镜像仓库" in page and "命名空间" in page and "可推送" in page
