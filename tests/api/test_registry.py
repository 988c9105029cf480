"""Gaia's registry API (gaia/api/routes/registry.py) without a registry: tokens, events, views.

The registry itself (docker-registry trusting these tokens, skopeo logging in) is in
tests/delivery/test_registry_real.py.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient

from gaia.platform import Platform
from tests.conftest import World

TOKEN = "/api/v1/registry/token"
EVENTS = "/api/v1/registry/events"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
LAYER_A = "sha256:" + "a" * 64
LAYER_B = "sha256:" + "b" * 64


def basic(username: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}


def bearer_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def access(platform: Platform, client: TestClient, headers: dict[str, str], *scopes: str) -> Any:
    r = client.get(
        TOKEN, params={"service": "gaia-registry", "scope": list(scopes)}, headers=headers
    )
    assert r.status_code == 200, r.text
    claims = platform.registry.signer.verify(r.json()["token"])
    assert claims["aud"] == "gaia-registry" and claims["iss"] == "gaia"
    return {a["name"]: a["actions"] for a in claims["access"]}


def push_event(repository: str, tag: str, digest: str, layers: list[tuple[str, int]], actor: str,
               when: str = "2026-12-05T06:00:00Z") -> dict[str, Any]:  # fmt: skip
    return {
        "id": f"{repository}-{tag}-{digest[-4:]}",
        "timestamp": when,
        "action": "push",
        "target": {
            "mediaType": MANIFEST,
            "size": 500,
            "digest": digest,
            "length": 500,
            "repository": repository,
            "tag": tag,
            "references": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": s, "digest": d}
                for d, s in layers
            ],
        },
        "actor": {"name": actor},
    }


def post_events(platform: Platform, client: TestClient, *events: dict[str, Any]) -> None:
    r = client.post(
        EVENTS,
        content=__import__("json").dumps({"events": list(events)}),
        headers={
            "Authorization": f"Bearer {platform.registry.signer.notification_token}",
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        },
    )
    assert r.status_code == 200, r.text


def test_tokens_grant_what_the_roles_allow(world: World, platform: Platform) -> None:
    c = world.client
    scopes = (
        "repository:alpha/web:pull,push",
        "repository:beta/web:pull",
        "repository:public/base:pull",
    )
    # an API token (here the login's session token) as the password
    dev = access(platform, c, basic("dev", bearer_of(world.as_("developer"))), *scopes)
    assert dev == {"alpha/web": ["pull", "push"], "public/base": ["pull"]}
    viewer = access(platform, c, basic("viewer", "viewer-password"), *scopes)  # the password
    assert viewer == {"alpha/web": ["pull"], "public/base": ["pull"]}
    anonymous = access(platform, c, {}, *scopes)
    assert anonymous == {"public/base": ["pull"]}
    admin = access(
        platform, c, basic("admin", bearer_of(world.admin)), *scopes, "registry:catalog:*"
    )
    assert admin == {"alpha/web": ["pull", "push"], "beta/web": ["pull"], "public/base": ["pull"],
                     "catalog": ["*"]}  # fmt: skip
    # docker sends several scopes in one parameter, separated by spaces
    both = access(platform, c, basic("dev", "dev-password"), " ".join(scopes[:2]))
    assert both == {"alpha/web": ["pull", "push"]}


def test_bad_credentials_get_the_registry_error_body(world: World, platform: Platform) -> None:
    c = world.client
    for headers in (
        basic("dev", "wrong"),
        basic("viewer", bearer_of(world.as_("developer"))),  # someone else's token
        basic("dev", "gaia_not-a-token"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Bearer {bearer_of(world.admin)}"},
    ):
        r = c.get(TOKEN, params={"scope": "repository:alpha/web:pull"}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert r.headers["www-authenticate"].startswith("Basic")
    r = c.get(TOKEN, params={"service": "elsewhere"})
    assert r.status_code == 400 and "unknown service" in r.text
    r = c.get(TOKEN, params={"scope": "repository:alpha/web:steal"})
    assert r.status_code == 400 and "unknown action" in r.text


def test_a_pull_account_pulls_its_business_only(world: World, platform: Platform) -> None:
    user, password = platform.registry.pull_credentials("alpha")
    got = access(platform, world.client, basic(user, password),
                 "repository:alpha/web:pull,push", "repository:beta/web:pull")  # fmt: skip
    assert got == {"alpha/web": ["pull"]}
    r = world.client.get(TOKEN, params={"scope": "repository:alpha/web:pull"},
                         headers=basic(user, password + "x"))  # fmt: skip
    assert r.status_code == 401


def test_events_make_repositories_and_tags(world: World, platform: Platform) -> None:
    c = world.client
    post_events(
        platform,
        c,
        push_event("alpha/web", "v1", D1, [(LAYER_A, 1000), (LAYER_B, 2000)], "dev"),
        push_event("alpha/web", "v2", D2, [(LAYER_A, 1000)], "ba", "2026-12-05T06:01:00Z"),
        push_event("beta/api", "v1", D1, [(LAYER_A, 1000)], "outsider"),
        {"action": "pull", "target": {"repository": "alpha/web", "digest": D1}},  # ignored
    )
    r = c.get("/api/v1/registry/repositories", headers=world.as_("viewer"))
    assert [x["name"] for x in r.json()["items"]] == ["alpha/web"]  # beta's is not seen
    # shared layer A counted once: A + B + two manifests
    assert r.json()["items"][0]["size"] == 1000 + 2000 + 500 + 500
    r = c.get("/api/v1/registry/repositories/alpha/web/tags", headers=world.as_("viewer"))
    tags = r.json()["items"]
    assert [(t["tag"], t["digest"], t["pushed_by"]) for t in tags] == [
        ("v2", D2, "ba"),
        ("v1", D1, "dev"),
    ]
    assert tags[1]["size"] == 3500
    r = c.get("/api/v1/registry/repositories/beta/api/tags", headers=world.as_("viewer"))
    assert r.status_code == 404
    r = c.get("/api/v1/registry/repositories", headers=world.admin)
    assert {x["name"] for x in r.json()["items"]} == {"alpha/web", "beta/api"}
    # a delete of the manifest removes the tags that named it
    post_events(
        platform, c, {"action": "delete", "target": {"repository": "alpha/web", "digest": D2}}
    )
    r = c.get("/api/v1/registry/repositories/alpha/web/tags", headers=world.as_("viewer"))
    assert [t["tag"] for t in r.json()["items"]] == ["v1"]


def test_only_the_registry_posts_events(world: World) -> None:
    c = world.client
    r = c.post(EVENTS, json={"events": []})
    assert r.status_code == 401
    r = c.post(EVENTS, json={"events": []}, headers=world.admin)
    assert r.status_code == 403
    r = c.post(EVENTS, json={"events": []}, headers={"Authorization": "Bearer made-up"})
    assert r.status_code == 401


def test_a_namespace_at_its_quota_gets_no_push_token(world: World, platform: Platform) -> None:
    c = world.client
    post_events(platform, c, push_event("alpha/web", "v1", D1, [(LAYER_A, 4000)], "dev"))
    r = c.put("/api/v1/registry/namespaces/alpha/quota", json={"quota_bytes": 4000},
              headers=world.as_("business-admin"))  # fmt: skip
    assert r.status_code == 403  # quotas are the platform's to hand out
    r = c.put(
        "/api/v1/registry/namespaces/alpha/quota", json={"quota_bytes": 4000}, headers=world.admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["used_bytes"] == 4500
    r = c.get(
        TOKEN,
        params={"scope": "repository:alpha/web:pull,push"},
        headers=basic("dev", "dev-password"),
    )
    assert r.status_code == 403
    error = r.json()["errors"][0]
    assert (
        error["code"] == "DENIED"
        and "4500 bytes of its 4000-byte registry quota" in error["message"]
    )
    # pulling is still fine
    got = access(platform, c, basic("dev", "dev-password"), "repository:alpha/web:pull")
    assert got == {"alpha/web": ["pull"]}
    r = c.get("/api/v1/registry/namespaces", headers=world.as_("viewer"))
    spaces = {n["namespace"]: n for n in r.json()["items"]}
    assert set(spaces) == {"alpha", "public", "u/viewer"}
    assert spaces["alpha"]["quota_bytes"] == 4000 and spaces["alpha"]["can_push"] is False
    assert spaces["u/viewer"]["can_push"] is True and spaces["public"]["can_push"] is False


def test_registry_namespaces_cannot_be_business_names(world: World) -> None:
    for name in ("u", "public"):
        r = world.client.post("/api/v1/businesses", json={"name": name}, headers=world.admin)
        assert r.status_code == 422 and "reserved" in r.text


def test_the_info_says_how_to_log_in(world: World) -> None:
    r = world.client.get("/api/v1/registry", headers=world.as_("viewer"))
    assert r.status_code == 200
    assert r.json()["enabled"] is False and "GAIA_REGISTRY_LISTEN" in r.json()["login"]


def test_instances_get_their_business_pull_account(world: World, platform: Platform) -> None:
    """Every instance the controller places carries its business's pull account when the
    platform runs a registry (gaia.platform.Platform._pull_secret), and that account's token
    pulls the business's images only."""
    from gaia.platform import registry_service

    assert platform._pull_secret("alpha") is None  # no registry here
    settings = platform.settings.model_copy(update={"registry_url": "http://127.0.0.1:5999"})
    platform.registry = registry_service(settings, platform.secrets)
    pull = platform._pull_secret("alpha")
    assert pull is not None and pull.registry == "127.0.0.1:5999"
    got = access(platform, world.client, basic(pull.username, pull.password),
                 "repository:alpha/web:pull,push", "repository:beta/web:pull")  # fmt: skip
    assert got == {"alpha/web": ["pull"]}
    controller = platform.app_controller()
    assert controller.pull_secret_for("alpha") == pull


def test_a_node_account_pulls_for_the_businesses_running_on_the_node(
    world: World, platform: Platform
) -> None:
    """The P2P agent of a node gets the node's account for the platform's registry when it
    registers; the account pulls the images of the businesses with an instance on that node
    (and public ones), and nothing of a business that runs elsewhere."""
    import asyncio

    from gaia.platform import registry_service
    from tests.support.apps_harness import template

    settings = platform.settings.model_copy(update={"registry_url": "http://127.0.0.1:5999"})
    platform.registry = registry_service(settings, platform.secrets)
    c = world.client
    r = c.post(
        "/api/v1/businesses/alpha/apps",
        json={
            "name": "web",
            "cluster": "sim-1",
            "templates": [template("v1", "127.0.0.1:5999/alpha/web:v1")],
            "replicas": 1,
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    asyncio.run(platform.app_controller().start(loops=1))
    r = c.get("/api/v1/businesses/alpha/apps/web/instances", headers=world.admin)
    (instance,) = r.json()["items"]
    busy = instance["node"]
    nodes = [
        n["name"]
        for n in c.get("/api/v1/clusters/sim-1/nodes", headers=world.admin).json()["items"]
    ]
    idle = next(n for n in nodes if n != busy)
    token = c.get("/api/v1/clusters/sim-1/p2p/agent-token", headers=world.admin).json()["token"]
    agent = {"Authorization": f"Bearer {token}"}
    granted = {}
    for node in (busy, idle):
        body = {"node": node, "zone": "z", "address": f"{node}:7001", "upload_slots": 4}
        r = c.post("/api/v1/clusters/sim-1/p2p/agents", json=body, headers=agent)
        assert r.status_code == 200, r.text
        (creds,) = r.json()["registries"].values()
        assert creds["url"] == "http://127.0.0.1:5999" and creds["username"] == f"node+sim-1+{node}"
        granted[node] = access(platform, c, basic(creds["username"], creds["password"]),
                               "repository:alpha/web:pull,push", "repository:beta/web:pull",
                               "repository:public/base:pull")  # fmt: skip
    assert granted[busy] == {"alpha/web": ["pull"], "public/base": ["pull"]}
    assert granted[idle] == {"public/base": ["pull"]}
    r = c.get(TOKEN, params={"scope": "repository:alpha/web:pull"},
              headers=basic(f"node+sim-1+{busy}", "wrong"))  # fmt: skip
    assert r.status_code == 401
