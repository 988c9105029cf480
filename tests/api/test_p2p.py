"""The P2P API (gaia.api.routes.p2p): who may call what, the bounds of the agents' bodies, the
users' views (paged, per visible cluster), prewarms, and the figures on /metrics."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gaia.controllers.swarm import SwarmSweep
from gaia.monitor.metrics import catalogue
from gaia.platform import Platform, registry_service
from tests.conftest import World

P2P = "/api/v1/clusters/sim-1/p2p"
MiB = 1 << 20
LAYER = "sha256:" + "a" * 64
CONFIG = "sha256:" + "b" * 64
MANIFEST = "sha256:" + "c" * 64


def agent_headers(world: World) -> dict[str, str]:
    r = world.client.get(f"{P2P}/agent-token", headers=world.admin)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def register(client: TestClient, agent: dict[str, str], node: str, **extra: Any) -> Any:
    body = {"node": node, "zone": "z1", "address": f"{node}:7001", "upload_slots": 4, **extra}
    r = client.post(f"{P2P}/agents", json=body, headers=agent)
    assert r.status_code == 200, r.text
    return r.json()


def test_only_a_platform_admin_reads_the_agent_token(world: World) -> None:
    for who in ("business-admin", "developer", "viewer", "outsider"):
        r = world.client.get(f"{P2P}/agent-token", headers=world.as_(who))
        assert r.status_code == 403, (who, r.text)
    token = agent_headers(world)["Authorization"]
    assert token.startswith("Bearer gaia-p2p-")


def test_agent_paths_take_the_agent_token_only(world: World) -> None:
    c = world.client
    agent = agent_headers(world)
    body = {"node": "n1", "zone": "z1", "address": "10.0.0.1:7001", "upload_slots": 4}
    assert c.post(f"{P2P}/agents", json=body, headers=agent).status_code == 200
    wrong = {"Authorization": "Bearer gaia-p2p-" + "0" * 64}
    assert c.post(f"{P2P}/agents", json=body, headers=wrong).status_code == 401
    assert c.post(f"{P2P}/agents", json=body).status_code == 401
    for who in ("platform-admin", "developer"):
        r = c.post(f"{P2P}/agents", json=body, headers=world.as_(who))
        assert r.status_code == 403, (who, r.text)
    # an agent token is no user token anywhere else, nor on another cluster's agent paths
    assert c.get("/api/v1/clusters", headers=agent).status_code == 401
    assert c.get(f"{P2P}/nodes", headers=agent).status_code == 401
    r = c.post("/api/v1/clusters/nope/p2p/agents", json=body, headers=agent)
    assert r.status_code == 401


def test_a_node_token_speaks_for_its_node_alone(world: World, platform: Platform) -> None:
    """On a sim cluster (no TokenReview) an agent proves its node with the node's own token;
    the cluster-wide token speaks for any node only while GAIA_P2P_SHARED_AGENT_TOKEN allows."""
    c = world.client
    for who in ("business-admin", "outsider"):
        r = c.get(f"{P2P}/agent-token", params={"node": "n1"}, headers=world.as_(who))
        assert r.status_code == 403, (who, r.text)
    r = c.get(f"{P2P}/agent-token", params={"node": "n1"}, headers=world.admin)
    assert r.status_code == 200 and r.json()["node"] == "n1"
    n1 = {"Authorization": f"Bearer {r.json()['token']}"}
    assert r.json()["token"].startswith("gaia-p2pn-")
    register(c, n1, "n1")
    body = {"node": "n2", "zone": "z1", "address": "n2:7001", "upload_slots": 4}
    assert c.post(f"{P2P}/agents", json=body, headers=n1).status_code == 403
    r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n2", "want": 1}, headers=n1)
    assert r.status_code == 403, r.text
    # a node token is valid on its own cluster's agent paths only
    assert c.get("/api/v1/clusters", headers=n1).status_code == 401
    # the cluster-wide token, refused once the platform stops accepting it
    shared = agent_headers(world)
    platform.p2p_auth.shared_token_where = "none"
    r = c.post(f"{P2P}/agents", json=body, headers=shared)
    assert r.status_code == 403 and "prove their node" in r.json()["message"]
    assert c.get(f"{P2P}/agent-token", headers=world.admin).status_code == 409
    register(c, n1, "n1")  # node tokens still work


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("tasks", {"node": "n1", "registry": "r.io", "repository": "a/b", "digest": "sha256:x",
                   "size": 1}),
        ("tasks", {"node": "n1", "registry": "r.io", "repository": "A/b", "digest": LAYER,
                   "size": 1}),
        ("tasks", {"node": "n1", "registry": "r.io", "repository": "a//b", "digest": LAYER,
                   "size": 1}),
        ("tasks", {"node": "n1", "registry": "r.io", "repository": "a/b", "digest": LAYER,
                   "size": (64 << 30) + 1}),
        (f"tasks/{LAYER}/schedule", {"node": "n1", "want": 17, "wait_s": 1}),
        (f"tasks/{LAYER}/schedule", {"node": "n1", "want": 1, "wait_s": 10.5}),
        (f"tasks/{LAYER}/reports", {"node": "n1", "reports": [{"piece": 0, "ok": True}] * 257}),
        (f"tasks/{LAYER}/schedule", {"node": "n1", "want": 1,
                                     "reports": [{"piece": 0, "ok": True}] * 257}),
        ("tasks/sha256:zz/schedule", {"node": "n1", "want": 1, "wait_s": 0}),
        ("agents", {"node": "N1!", "address": "a:1", "upload_slots": 1}),
        ("agents", {"node": "n1", "address": "a:1", "upload_slots": 1, "extra": 1}),
    ],
)  # fmt: skip
def test_agent_bodies_are_bounded(world: World, path: str, body: dict[str, Any]) -> None:
    r = world.client.post(f"{P2P}/{path}", json=body, headers=agent_headers(world))
    assert r.status_code == 422, r.text


def test_a_blob_is_fetched_from_the_registry_once_then_from_peers(world: World) -> None:
    c = world.client
    agent = agent_headers(world)
    reg = register(c, agent, "n1")
    assert len(bytes.fromhex(reg["ticket_key"])) == 32 and reg["prewarm"] == []
    register(c, agent, "n2")
    task = {
        "registry": "registry.local",
        "repository": "team/web",
        "digest": LAYER,
        "size": 3 * MiB,
    }
    r = c.post(f"{P2P}/tasks", json={"node": "n1", **task}, headers=agent)
    assert r.json() == {"digest": LAYER, "size": 3 * MiB, "piece_size": MiB, "pieces": 3,
                        "hashes": {}}  # fmt: skip
    fetched: list[int] = []
    while len(fetched) < 3:  # at most SOURCE_SLOTS (2) registry pieces per node at a time
        r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "wire": 2, "want": 16},
                   headers=agent)  # fmt: skip
        out = r.json()
        pieces = sorted(a["piece"] for a in out["assignments"])
        assert 1 <= len(pieces) <= 2 and not set(pieces) & set(fetched)
        assert {a["source"] for a in out["assignments"]} == {"registry"}
        assert {a["ticket"] for a in out["assignments"]} == {""}  # the registry takes none
        reports = [{"piece": i, "ok": True, "sha256": f"{i:064x}", "bytes": MiB} for i in pieces]
        r = c.post(f"{P2P}/tasks/{LAYER}/reports", json={"node": "n1", "reports": reports},
                   headers=agent)  # fmt: skip
        assert r.status_code == 200 and r.json() == {}
        fetched += pieces
    assert c.post(f"{P2P}/tasks/{LAYER}/done", json={"node": "n1", "ok": True},
                  headers=agent).status_code == 200  # fmt: skip
    c.post(f"{P2P}/tasks", json={"node": "n2", **task}, headers=agent)
    out = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n2", "wire": 2, "want": 2},
                 headers=agent).json()  # fmt: skip
    assert [(a["source"], a["parent"], a["address"]) for a in out["assignments"]] == [
        ("peer", "n1", "n1:7001")
    ] * 2
    # each peer assignment's ticket names the requester and verifies under the key n1 got
    for a in out["assignments"]:
        body, _, mac = a["ticket"].rpartition(".")
        assert body == f"n2.{LAYER}.{out['ticket_expires']}"
        n1_key = bytes.fromhex(reg["ticket_key"])
        assert mac == hmac.new(n1_key, body.encode(), hashlib.sha256).hexdigest()
    assert out["hashes"] == {str(i): f"{i:064x}" for i in range(3)}
    metrics = c.get("/metrics", headers=world.admin).text
    assert 'gaia_p2p_registry_assignments_total{cluster="sim-1"} 3.0' in metrics
    assert 'gaia_p2p_bytes_total{cluster="sim-1",source="registry"} 3.145728e+06' in metrics
    assert 'gaia_p2p_agents{cluster="sim-1"} 2.0' in metrics
    names = {
        line.split("{")[0].split(" ")[0]
        for line in metrics.splitlines()
        if line.startswith("gaia_p2p_")
    }
    assert len(names) == 9 and all(catalogue.lookup(n) for n in names), names


def test_pieces_reported_with_the_next_schedule_count_before_it_assigns(world: World) -> None:
    """The agent's usual call is "this piece is done, give me the next": the reports a schedule
    carries count first, so the next piece is assigned, its registry slot free again, and the
    finished piece's hash goes out to everyone, all in one round trip."""
    c = world.client
    agent = agent_headers(world)
    register(c, agent, "n1")
    task = {"registry": "registry.local", "repository": "team/web", "digest": LAYER,
            "size": 3 * MiB}  # fmt: skip
    c.post(f"{P2P}/tasks", json={"node": "n1", **task}, headers=agent)
    first = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "wire": 2, "want": 2},
                   headers=agent).json()  # fmt: skip
    held = sorted(a["piece"] for a in first["assignments"])
    assert len(held) == 2  # the node's two registry slots (SOURCE_SLOTS): nothing more now
    blocked = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "want": 1},
                     headers=agent).json()  # fmt: skip
    assert blocked["assignments"] == []
    done = [{"piece": i, "ok": True, "sha256": f"{i:064x}", "bytes": MiB} for i in held]
    r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "want": 1, "reports": done},
               headers=agent)  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()
    assert [a["piece"] for a in out["assignments"]] == [3 - sum(held)]  # the one left
    assert out["hashes"] == {str(i): f"{i:064x}" for i in held}
    metrics = c.get("/metrics", headers=world.admin).text
    assert 'gaia_p2p_bytes_total{cluster="sim-1",source="registry"} 2.097152e+06' in metrics
    # a report the coordinator refuses (an ok registry piece without its hash) refuses the
    # whole call: nothing is assigned on the strength of it
    bad = [{"piece": out["assignments"][0]["piece"], "ok": True, "bytes": MiB}]
    r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "want": 1, "reports": bad},
               headers=agent)  # fmt: skip
    assert r.status_code == 422, r.text


def test_a_schedule_sent_again_with_the_same_reports_counts_them_once(world: World) -> None:
    """An agent sends a ``schedule`` call again when its answer did not come in time, with the
    same reports; each names the lease its assignment carried, so the second call counts
    nothing again: the figures (metrics, nodes' bytes, hashes) are those of one call."""
    c = world.client
    agent = agent_headers(world)
    register(c, agent, "n1")
    register(c, agent, "n2")
    task = {"registry": "registry.local", "repository": "team/web", "digest": LAYER,
            "size": 2 * MiB}  # fmt: skip

    def schedule(node: str, reports: list[dict[str, Any]]) -> Any:
        r = c.post(f"{P2P}/tasks/{LAYER}/schedule", headers=agent,
                   json={"node": node, "wire": 2, "want": 2, "reports": reports})  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()

    def figures() -> tuple[list[str], list[Any]]:
        metrics = c.get("/metrics", headers=world.admin).text
        lines = sorted(line for line in metrics.splitlines() if line.startswith("gaia_p2p_"))
        nodes = c.get(f"{P2P}/nodes", headers=world.admin).json()["items"]
        return lines, [(n["name"], n["bytes_up"], n["bytes_down"], n["pieces_held"]) for n in nodes]

    c.post(f"{P2P}/tasks", json={"node": "n1", **task}, headers=agent)
    given = schedule("n1", [])["assignments"]
    assert len({a["lease"] for a in given}) == 2
    from_registry = [{"piece": a["piece"], "ok": True, "sha256": f"{a['piece']:064x}",
                      "bytes": MiB, "lease": a["lease"]} for a in given]  # fmt: skip
    hashes = schedule("n1", from_registry)["hashes"]
    c.post(f"{P2P}/tasks", json={"node": "n2", **task}, headers=agent)
    given = schedule("n2", [])["assignments"]
    from_peer = [{"piece": a["piece"], "ok": True, "parent": a["parent"], "bytes": MiB,
                  "lease": a["lease"]} for a in given]  # fmt: skip
    schedule("n2", from_peer)
    once = figures()
    assert 'gaia_p2p_bytes_total{cluster="sim-1",source="registry"} 2.097152e+06' in once[0]
    assert once[1] == [("n1", 2 * MiB, 2 * MiB, 2), ("n2", 0, 2 * MiB, 2)]
    # the same calls again (their answers "lost"), and the same reports on their own
    assert schedule("n1", from_registry)["hashes"] == hashes
    schedule("n2", from_peer)
    r = c.post(f"{P2P}/tasks/{LAYER}/reports", json={"node": "n2", "reports": from_peer},
               headers=agent)  # fmt: skip
    assert r.status_code == 200, r.text
    assert figures() == once


def test_the_registration_answer_says_which_tickets_the_node_gets(world: World) -> None:
    """An agent whose peer server checks the piece a ticket names says ``tickets: 2``; the
    answer confirms it (the peer server may then refuse whole-blob tickets). Older agents send
    nothing and get whole-blob tickets (1)."""
    c = world.client
    agent = agent_headers(world)
    assert register(c, agent, "n1")["tickets"] == 1
    assert register(c, agent, "n1", tickets=2)["tickets"] == 2
    body = {"node": "n1", "address": "n1:7001", "upload_slots": 4, "tickets": 3}
    assert c.post(f"{P2P}/agents", json=body, headers=agent).status_code == 422


def test_an_unregistered_node_or_unknown_blob_is_404(world: World) -> None:
    c = world.client
    agent = agent_headers(world)
    body = {"node": "ghost", "registry": "r.io", "repository": "a/b", "digest": LAYER, "size": 1}
    assert c.post(f"{P2P}/tasks", json=body, headers=agent).status_code == 404
    register(c, agent, "n1")
    r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "want": 1}, headers=agent)
    assert r.status_code == 404


def test_an_agent_of_wire_1_gets_one_assignment_and_its_parents_ticket(world: World) -> None:
    """Agents from before tickets per parent show the answer's one ticket to every parent:
    they get one assignment per call, and the ticket is its parent's."""
    c = world.client
    agent = agent_headers(world)
    keys = {n: bytes.fromhex(register(c, agent, n)["ticket_key"]) for n in ("n1", "n2", "n3")}
    task = {"registry": "registry.local", "repository": "team/web", "digest": LAYER,
            "size": 2 * MiB}  # fmt: skip
    for node in ("n1", "n2"):
        assert c.post(f"{P2P}/tasks", json={"node": node, **task}, headers=agent).status_code == 200
        out = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": node, "wire": 2, "want": 2},
                     headers=agent).json()  # fmt: skip
        reports = [{"piece": a["piece"], "ok": True, "sha256": f"{a['piece']:064x}",
                    "bytes": MiB, "parent": a["parent"]} for a in out["assignments"]]  # fmt: skip
        c.post(f"{P2P}/tasks/{LAYER}/reports", json={"node": node, "reports": reports},
               headers=agent)  # fmt: skip
    c.post(f"{P2P}/tasks", json={"node": "n3", **task}, headers=agent)
    out = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n3", "want": 16},
                 headers=agent).json()  # fmt: skip
    (only,) = out["assignments"]
    assert only["source"] == "peer" and out["ticket"] == only["ticket"]
    body, _, mac = out["ticket"].rpartition(".")
    assert mac == hmac.new(keys[only["parent"]], body.encode(), hashlib.sha256).hexdigest()


def test_schedule_reports_and_done_need_the_nodes_own_open_task(world: World) -> None:
    c = world.client
    agent = agent_headers(world)
    register(c, agent, "n1")
    register(c, agent, "n2")
    task = {"registry": "registry.local", "repository": "team/web", "digest": LAYER, "size": MiB}
    assert c.post(f"{P2P}/tasks", json={"node": "n1", **task}, headers=agent).status_code == 200
    for path, body in (
        ("schedule", {"node": "n2", "want": 1}),
        ("reports", {"node": "n2", "reports": [{"piece": 0, "ok": True, "sha256": "0" * 64}]}),
        ("done", {"node": "n2", "ok": True}),
    ):
        r = c.post(f"{P2P}/tasks/{LAYER}/{path}", json=body, headers=agent)
        assert r.status_code == 404 and "POST tasks first" in r.json()["message"], (path, r.text)
    r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "want": 1}, headers=agent)
    assert r.status_code == 200, r.text


def _with_platform_registry(platform: Platform) -> str:
    """The platform's registry named (not run here: the node checks come before any call)."""
    settings = platform.settings.model_copy(update={"registry_url": "http://127.0.0.1:5999"})
    platform.registry = registry_service(settings, platform.secrets)
    return platform.registry.address


def test_a_node_that_may_not_pull_the_repository_cannot_open_its_task(
    world: World, platform: Platform
) -> None:
    """The platform's registry: the node's account (the businesses with an instance on the
    node) must pull the repository; another registry's task for a digest cannot borrow the
    platform's blobs (Gaia does not run this registry, so it cannot tell them apart: refused)."""
    c = world.client
    agent = agent_headers(world)
    address = _with_platform_registry(platform)
    register(c, agent, "n1")  # no instance of any business runs on n1
    for repository in ("alpha/web", "beta/api", "u/viewer/tools"):
        task = {"node": "n1", "registry": address, "repository": repository, "digest": LAYER,
                "size": MiB}  # fmt: skip
        r = c.post(f"{P2P}/tasks", json=task, headers=agent)
        assert r.status_code == 403 and "may not pull" in r.json()["message"], r.text
    task = {"node": "n1", "registry": "docker.io", "repository": "library/nginx",
            "digest": LAYER, "size": MiB}  # fmt: skip
    r = c.post(f"{P2P}/tasks", json=task, headers=agent)
    assert r.status_code == 403 and "not shared" in r.json()["message"], r.text
    # and so no schedule, no ticket
    r = c.post(f"{P2P}/tasks/{LAYER}/schedule", json={"node": "n1", "want": 1}, headers=agent)
    assert r.status_code == 404, r.text


def _tell(c: TestClient, agent: dict[str, str], registry: str, repository: str) -> None:
    r = c.post(
        f"{P2P}/manifests",
        json={"node": "n1", "registry": registry, "repository": repository, "reference": "v1",
              "digest": MANIFEST, "media_type": "application/vnd.oci.image.manifest.v1+json",
              "blobs": [{"digest": LAYER, "size": MiB}]},
        headers=agent,
    )  # fmt: skip
    assert r.status_code == 200, r.text


def test_images_are_shown_to_those_who_may_pull_them(world: World, platform: Platform) -> None:
    """Platform admins see every image; anyone else those of the platform's registry they may
    pull: their businesses' and public ones, not another business's, not other registries'."""
    c = world.client
    agent = agent_headers(world)
    address = _with_platform_registry(platform)
    register(c, agent, "n1")
    for repository in ("alpha/web", "beta/api", "public/base"):
        _tell(c, agent, address, repository)
    _tell(c, agent, "docker.io", "library/nginx")

    def listed(who: dict[str, str]) -> list[str]:
        names: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1}
            if cursor:
                params["cursor"] = cursor
            r = c.get(f"{P2P}/images", params=params, headers=who)
            assert r.status_code == 200, r.text
            names += [f"{i['registry']}/{i['repository']}" for i in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                return names

    assert listed(world.admin) == [  # by name: "127.0.0.1:5999/..." sorts first
        f"{address}/alpha/web", f"{address}/beta/api", f"{address}/public/base",
        "docker.io/library/nginx",
    ]  # fmt: skip
    assert listed(world.as_("viewer")) == [f"{address}/alpha/web", f"{address}/public/base"]
    assert listed(world.as_("outsider")) == [f"{address}/beta/api", f"{address}/public/base"]


def _serve_image(c: TestClient, agent: dict[str, str], node: str) -> None:
    r = c.post(
        f"{P2P}/manifests",
        json={
            "node": node,
            "registry": "registry.local",
            "repository": "team/web",
            "reference": "v1",
            "digest": MANIFEST,
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "blobs": [{"digest": CONFIG, "size": 10}, {"digest": LAYER, "size": MiB}],
        },
        headers=agent,
    )
    assert r.status_code == 200, r.text
    for digest, size in ((CONFIG, 10), (LAYER, MiB)):
        task = {"node": node, "registry": "registry.local", "repository": "team/web",
                "digest": digest, "size": size}  # fmt: skip
        assert c.post(f"{P2P}/tasks", json=task, headers=agent).status_code == 200
        c.post(f"{P2P}/tasks/{digest}/done", json={"node": node, "ok": True}, headers=agent)


def test_images_and_nodes_are_listed_in_pages_to_those_who_see_the_cluster(
    world: World, make_user: Callable[..., dict[str, str]]
) -> None:
    c = world.client
    agent = agent_headers(world)
    for node in ("n1", "n2", "n3"):
        register(c, agent, node)
    _serve_image(c, agent, "n1")
    # another registry's image: the platform admins' (the scoping: test_images_are_shown_...)
    r = c.get(f"{P2P}/images", headers=world.as_("viewer"))
    assert r.status_code == 200 and r.json()["items"] == [], r.text
    r = c.get(f"{P2P}/images", headers=world.admin)
    assert r.status_code == 200, r.text
    (image,) = r.json()["items"]
    assert image == {
        "registry": "registry.local",
        "repository": "team/web",
        "reference": "v1",
        "digest": MANIFEST,
        "nodes_complete": 1,
        "bytes_from_peers": 0,
        "bytes_from_registry": 0,
    }
    r = c.get(f"{P2P}/nodes", params={"limit": 2}, headers=world.as_("developer"))
    body = r.json()
    assert [n["name"] for n in body["items"]] == ["n1", "n2"] and body["next_cursor"]
    r = c.get(f"{P2P}/nodes", params={"cursor": body["next_cursor"]}, headers=world.admin)
    assert [n["name"] for n in r.json()["items"]] == ["n3"]
    # a business without a quota on the cluster does not see it, nor its P2P figures
    assert (
        c.post("/api/v1/businesses", json={"name": "gamma"}, headers=world.admin).status_code == 201
    )
    stranger = make_user("stranger", business="gamma", role="business-admin")
    for path in ("images", "nodes", "prewarms/pw-0123456789abcdef"):
        assert c.get(f"{P2P}/{path}", headers=stranger).status_code == 404, path


def test_a_prewarm_reaches_its_nodes_by_heartbeat_and_reports_progress(world: World) -> None:
    c = world.client
    agent = agent_headers(world)
    register(c, agent, "n1")
    register(c, agent, "n2")
    body = {"image": "registry.local/team/web:v1", "nodes": ["n1", "n2"]}
    r = c.post(f"{P2P}/prewarms", json=body, headers=world.as_("business-admin"))
    assert r.status_code == 403
    r = c.post(f"{P2P}/prewarms", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert register(c, agent, "n1")["prewarm"] == [
        {"id": pid, "image": "registry.local/team/web:v1"}
    ]
    _serve_image(c, agent, "n1")
    assert register(c, agent, "n1")["prewarm"] == []
    r = c.get(f"{P2P}/prewarms/{pid}", headers=world.as_("viewer"))
    assert r.json() == {
        "id": pid,
        "image": "registry.local/team/web:v1",
        "nodes": [
            {"node": "n1", "state": "done", "blobs_done": 2, "blobs_total": 2},
            {"node": "n2", "state": "pending", "blobs_done": 0, "blobs_total": 0},
        ],
    }
    bad = {"image": "registry.local/Team:v1", "nodes": ["n1"]}
    assert c.post(f"{P2P}/prewarms", json=bad, headers=world.admin).status_code == 422


def test_the_platform_runs_the_p2p_sweep(platform: Platform) -> None:
    assert any(isinstance(loop, SwarmSweep) for loop in platform.loops())
