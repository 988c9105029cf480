"""Every route, tried by every role: who may call it, and what the others get.

The table below must name every route of the app (``test_every_route_is_in_the_table`` fails
when a new route is added without a row). For each row and role the test checks:

- anonymous callers get 401;
- a role the row allows is not refused (no 401/403/404 from authorisation);
- a role the row refuses gets 403, or 404 where it cannot see the object at all (tenancy:
  another business's objects answer exactly as missing ones).

Objects live in business ``alpha``; ``outsider`` is business-admin of ``beta`` only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from gaia.platform import Platform
from gaia.store.models import (
    AlertRecord,
    App,
    AppBlacklist,
    Backup,
    Business,
    FloatingIpPool,
    NetworkAttachment,
    PlatformReplica,
    utcnow,
)
from tests.conftest import QUOTA, World
from tests.support.egress import allow_loopback_egress

ROLES = ("platform-admin", "business-admin", "developer", "viewer", "outsider")
MEMBERS = ("platform-admin", "business-admin", "developer", "viewer")
ALL = ROLES
WRITERS = ("platform-admin", "business-admin", "developer")  # app.write


@dataclass
class Row:
    method: str
    path: str  # with the fixture's real names substituted
    allowed: tuple[str, ...]
    body: dict[str, Any] | None = None
    hidden_from: tuple[str, ...] = field(default=("outsider",))  # expect 404, not 403

    @property
    def template(self) -> str:
        return (
            self.path.split("?")[0]
            .replace("/sim-1-node-0", "/{node}")
            .replace("/repositories/alpha/web", "/repositories/{repository}")
            .replace("/tags/v1", "/tags/{tag}")
            .replace("/alpha", "/{biz}")
            .replace("/sim-1", "/{cluster}")
            .replace("/members/dev", "/members/{username}")
            .replace("/users/viewer", "/users/{username}")
            .replace("/instance-configs/small", "/instance-configs/{name}")
            .replace("/tokens/999", "/tokens/{token_id}")
            .replace(f"/{BLOB}", "/{digest}")
            .replace("/prewarms/pw-0123456789abcdef", "/prewarms/{prewarm}")
            .replace("/records/1", "/records/{record_id}")
            .replace("/backups/1", "/backups/{backup_id}")
            .replace("/channels/1", "/channels/{channel_id}")
            .replace("/receivers/1", "/receivers/{receiver_id}")
            .replace("/receiver-groups/1", "/receiver-groups/{group_id}")
            .replace("/policies/1", "/policies/{policy_id}")
            .replace("/silences/1", "/silences/{silence_id}")
            .replace("/apps/web", "/apps/{app}")
            .replace("/templates/v1", "/templates/{version}")
            .replace("/instances/0", "/instances/{instance}")
            .replace("/upgrades/1", "/upgrades/{upgrade}")
            .replace("/gpu-models/T4", "/gpu-models/{model}")
            .replace("/configmaps/settings", "/configmaps/{name}")
            .replace("/secrets/db?reveal=true", "/secrets/{name}")
            .replace("/secrets/db", "/secrets/{name}")
            .replace("/pipelines/build", "/pipelines/{name}")
            .replace("/runs/1", "/runs/{number}")
            .replace("/replicas/r-seeded/loops/apps", "/replicas/{replica}/loops/{loop}")
            .replace("/ip-pools/rack-a", "/ip-pools/{pool}")
            .replace("/allocations/1", "/allocations/{allocation_id}")
        )


BIZ = "/api/v1/businesses/alpha"
APP = f"{BIZ}/apps/web"
PIPE = f"{BIZ}/pipelines/build"
GIT_URL = "https://git.example.com/alpha/web.git"
NODES = "/api/v1/clusters/sim-1/nodes"
P2P = "/api/v1/clusters/sim-1/p2p"
IPP = "/api/v1/clusters/sim-1/ip-pools"
IPAM = "/api/v1/clusters/sim-1/ipam"
SANDBOX = {"namespace": "alpha", "pod": "web-0", "container_id": "c0"}
BLOB = "sha256:" + "a" * 64
AGENT = {"node": "n1", "zone": "z1", "address": "10.0.0.1:7001", "upload_slots": 4}
TASK = {"node": "n1", "registry": "r.io", "repository": "a/b", "digest": BLOB, "size": 1}
V1 = {"name": "v1", "image": "shop/web:1", "resources": {"cpu": 1, "memory": 256}}
V2 = {**V1, "name": "v2", "image": "shop/web:2"}
APP_BODY = {"name": "other", "cluster": "sim-1", "templates": [V1], "replicas": 1}
NODE_BODY = {"name": "extra-1", "cpu": 8, "memory_mib": 16384}
AL = "/api/v1/alerts"
ADMINS = ("platform-admin", "business-admin")
HOOK = {"url": "http://127.0.0.1:9/hook"}  # the discard port: a test send is refused at once
# HOOK is on loopback, which the egress guard refuses unless allowed: allowed here (autouse),
# as an admin would with GAIA_EGRESS_ALLOW_CIDRS
__all__ = ["allow_loopback_egress"]
POLICY = {
    "business": "alpha",
    "name": "p",
    "scope": {"kind": "app", "app": "web"},
    "metric": "gaia_instance_cpu_usage_percent",
    "threshold": 80,
}
SILENCE = {
    "business": "alpha",
    "matchers": {"app": "web"},
    "ends_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
}
TABLE = [
    Row("POST", "/api/v1/auth/logout", ALL, hidden_from=()),
    Row("GET", "/api/v1/users/me", ALL, hidden_from=()),
    Row("GET", "/api/v1/tokens", ALL, hidden_from=()),
    Row("POST", "/api/v1/tokens", ALL, {"name": "ci"}, hidden_from=()),
    # Someone else's token id answers 404 for everyone (tokens are private to their owner).
    Row("DELETE", "/api/v1/tokens/999", (), hidden_from=ALL),
    Row("GET", "/api/v1/users", ("platform-admin",), hidden_from=()),
    Row(
        "POST",
        "/api/v1/users",
        ("platform-admin",),
        {"username": "new", "password": "x" * 10},
        hidden_from=(),
    ),
    # A user sees their own account; only admins see others' (others get 404).
    Row(
        "GET",
        "/api/v1/users/viewer",
        ("platform-admin", "viewer"),
        hidden_from=("business-admin", "developer", "outsider"),
    ),
    Row(
        "PATCH",
        "/api/v1/users/viewer",
        ("platform-admin", "viewer"),
        {"display_name": "V"},
        hidden_from=("business-admin", "developer", "outsider"),
    ),
    Row("GET", "/api/v1/businesses", ALL, hidden_from=()),
    Row("POST", "/api/v1/businesses", ("platform-admin",), {"name": "gamma"}, hidden_from=()),
    Row("GET", BIZ, MEMBERS),
    Row("PATCH", BIZ, ("platform-admin", "business-admin"), {"description": "d"}),
    Row("DELETE", BIZ, ("platform-admin",)),
    Row("GET", f"{BIZ}/members", MEMBERS),
    Row("PUT", f"{BIZ}/members/dev", ("platform-admin", "business-admin"), {"role": "developer"}),
    Row("DELETE", f"{BIZ}/members/dev", ("platform-admin", "business-admin")),
    Row("GET", f"{BIZ}/quotas", MEMBERS),
    Row("GET", f"{BIZ}/quotas/sim-1", MEMBERS),
    Row("PUT", f"{BIZ}/quotas/sim-1", ("platform-admin",), {"hard": QUOTA}),
    Row("DELETE", f"{BIZ}/quotas/sim-1", ("platform-admin",)),
    Row("POST", f"{BIZ}/quotas/sim-1/admission-check", MEMBERS, {"request": {"cpu": 1}}),
    Row("GET", "/api/v1/instance-configs", ALL, hidden_from=()),
    Row(
        "POST",
        "/api/v1/instance-configs",
        ("platform-admin",),
        {"name": "big", "resources": {"cpu": 8}},
        hidden_from=(),
    ),
    Row("GET", "/api/v1/instance-configs/small", ALL, hidden_from=()),
    Row(
        "PATCH",
        "/api/v1/instance-configs/small",
        ("platform-admin",),
        {"description": "x"},
        hidden_from=(),
    ),
    Row("DELETE", "/api/v1/instance-configs/small", ("platform-admin",), hidden_from=()),
    Row("GET", f"{BIZ}/instance-configs", MEMBERS),
    Row(
        "POST",
        f"{BIZ}/instance-configs",
        ("platform-admin", "business-admin"),
        {"name": "big", "resources": {"cpu": 8}},
    ),
    Row("GET", f"{BIZ}/instance-configs/small", MEMBERS),
    Row(
        "PATCH",
        f"{BIZ}/instance-configs/small",
        ("platform-admin", "business-admin"),
        {"description": "x"},
    ),
    Row("DELETE", f"{BIZ}/instance-configs/small", ("platform-admin", "business-admin")),
    Row("GET", "/api/v1/clusters", ALL, hidden_from=()),
    Row(
        "POST",
        "/api/v1/clusters",
        ("platform-admin",),
        {"name": "sim-2", "kind": "sim"},
        hidden_from=(),
    ),
    # Members of a business with a quota in sim-1 see it; beta also has a quota there.
    Row("GET", "/api/v1/clusters/sim-1", ALL, hidden_from=()),
    Row("PATCH", "/api/v1/clusters/sim-1", ("platform-admin",), {"zone": "z"}, hidden_from=()),
    Row("DELETE", "/api/v1/clusters/sim-1", ("platform-admin",), hidden_from=()),
    Row("GET", "/api/v1/backups", ("platform-admin",), hidden_from=()),
    Row("POST", "/api/v1/backups", ("platform-admin",), hidden_from=()),
    Row("GET", "/api/v1/backups/1", ("platform-admin",), hidden_from=()),
    Row("GET", "/api/v1/clusters/sim-1/etcd", ("platform-admin",), hidden_from=()),
    Row(
        "PUT",
        "/api/v1/clusters/sim-1/etcd",
        ("platform-admin",),
        {"endpoints": ["http://127.0.0.1:2379"]},
        hidden_from=(),
    ),
    Row("DELETE", "/api/v1/clusters/sim-1/etcd", ("platform-admin",), hidden_from=()),
    Row("GET", "/api/v1/records", ALL, hidden_from=()),
    # Record 1 is the admin's first login (platform-level): only platform admins see it.
    Row(
        "GET",
        "/api/v1/records/1",
        ("platform-admin",),
        hidden_from=("business-admin", "developer", "viewer", "outsider"),
    ),
    Row("GET", "/api/v1/events", ALL, hidden_from=()),
    Row("GET", "/api/v1/overview", ALL, hidden_from=()),
    Row("GET", "/api/v1/search?q=we", ALL, hidden_from=()),
    # configmaps and secrets
    Row("GET", f"{BIZ}/configmaps", MEMBERS),
    Row("POST", f"{BIZ}/configmaps", WRITERS, {"name": "new", "data": {"k": "v"}}),
    Row("GET", f"{BIZ}/configmaps/settings", MEMBERS),
    Row("PUT", f"{BIZ}/configmaps/settings", WRITERS, {"data": {"k": "v"}}),
    Row("DELETE", f"{BIZ}/configmaps/settings", WRITERS),
    Row("GET", f"{BIZ}/secrets", MEMBERS),
    Row("POST", f"{BIZ}/secrets", WRITERS, {"name": "new", "data": {"k": "v"}}),
    Row("GET", f"{BIZ}/secrets/db", MEMBERS),
    Row("GET", f"{BIZ}/secrets/db?reveal=true", WRITERS),
    Row("PUT", f"{BIZ}/secrets/db", WRITERS, {"data": {"k": "v"}}),
    Row("DELETE", f"{BIZ}/secrets/db", WRITERS),
    # pipelines (seeded: pipeline "build" with run 1, queued; no runner loop in these tests)
    Row("GET", f"{BIZ}/pipelines", MEMBERS),
    Row("POST", f"{BIZ}/pipelines", WRITERS, {"name": "new", "git_url": GIT_URL}),
    Row("GET", PIPE, MEMBERS),
    Row("PATCH", PIPE, WRITERS, {"branch": "dev"}),
    Row("DELETE", PIPE, WRITERS),
    Row("POST", f"{PIPE}/runs", WRITERS),
    Row("GET", f"{PIPE}/runs", MEMBERS),
    Row("GET", f"{PIPE}/runs/1", MEMBERS),
    Row("POST", f"{PIPE}/runs/1/cancel", WRITERS),
    Row("GET", f"{PIPE}/runs/1/logs", MEMBERS),
    # apps (seeded: app "web" with templates v1, v2 and upgrade 1 of instance 0 to v2)
    Row("GET", f"{BIZ}/apps", MEMBERS),
    Row("POST", f"{BIZ}/apps", WRITERS, APP_BODY),
    Row("GET", APP, MEMBERS),
    Row("PATCH", APP, WRITERS, {"description": "d"}),
    Row("DELETE", APP, WRITERS),
    Row("POST", f"{APP}/stop", WRITERS),
    Row("POST", f"{APP}/start", WRITERS),
    Row("GET", f"{APP}/templates", MEMBERS),
    Row("POST", f"{APP}/templates", WRITERS, {**V2, "name": "v3"}),
    Row("GET", f"{APP}/templates/v1", MEMBERS),
    Row("DELETE", f"{APP}/templates/v1", WRITERS),
    Row("POST", f"{APP}/scale-out", WRITERS, {"count": 1}),
    Row("POST", f"{APP}/scale-in", WRITERS, {"instance_ids": [0]}),
    Row("GET", f"{APP}/instances", MEMBERS),
    Row("GET", f"{APP}/instances/0", MEMBERS),
    Row("POST", f"{APP}/instances/stop", WRITERS, {"instance_ids": [0]}),
    Row("POST", f"{APP}/instances/start", WRITERS, {"instance_ids": [0]}),
    Row("POST", f"{APP}/instances/0/restart", WRITERS),
    Row("POST", f"{APP}/instances/0/kill", WRITERS),
    Row("GET", f"{APP}/instances/0/logs", MEMBERS),
    Row("POST", f"{APP}/instances/0/exec", WRITERS, {"command": ["hostname"]}),
    Row("GET", f"{APP}/upgrades", MEMBERS),
    Row("POST", f"{APP}/upgrades", WRITERS, {"template": "v1", "instance_ids": [0]}),
    Row("GET", f"{APP}/upgrades/1", MEMBERS),
    Row("POST", f"{APP}/upgrades/1/pause", WRITERS),
    Row("POST", f"{APP}/upgrades/1/resume", WRITERS),
    Row("POST", f"{APP}/upgrades/1/rollback", WRITERS),
    Row("GET", f"{APP}/service", MEMBERS),
    Row("GET", f"{APP}/blacklist", MEMBERS),
    Row("DELETE", f"{APP}/blacklist/sim-1-node-0", ("platform-admin", "business-admin")),
    # per-model GPU limits (seeded: T4)
    Row("GET", f"{BIZ}/quotas/sim-1/gpu-models", MEMBERS),
    Row("PUT", f"{BIZ}/quotas/sim-1/gpu-models/T4", ("platform-admin",), {"cards": 2}),
    Row("DELETE", f"{BIZ}/quotas/sim-1/gpu-models/T4", ("platform-admin",)),
    # nodes of a cluster: everyone who sees the cluster reads them; only platform admins act
    Row("GET", f"{NODES}", ALL, hidden_from=()),
    # one node with its bound instances (others' businesses' instances unnamed)
    Row("GET", f"{NODES}/sim-1-node-0", ALL, hidden_from=()),
    Row("POST", f"{NODES}", ("platform-admin",), NODE_BODY, hidden_from=()),
    Row("POST", f"{NODES}/sim-1-node-0/cordon", ("platform-admin",), hidden_from=()),
    Row("POST", f"{NODES}/sim-1-node-0/uncordon", ("platform-admin",), hidden_from=()),
    Row("POST", f"{NODES}/sim-1-node-0/drain", ("platform-admin",), hidden_from=()),
    Row("DELETE", f"{NODES}/sim-1-node-0", ("platform-admin",), hidden_from=()),
    # the image registry: views for everyone (filtered by namespace), quotas for platform
    # admins, tags deleted by those who may push, events from the registry only (seeded:
    # alpha/web:v1)
    Row("GET", "/api/v1/registry", ALL, hidden_from=()),
    Row("GET", "/api/v1/registry/namespaces", ALL, hidden_from=()),
    Row(
        "PUT",
        "/api/v1/registry/namespaces/alpha/quota",
        ("platform-admin",),
        {"quota_bytes": 1 << 30},
        hidden_from=(),
    ),
    Row("GET", "/api/v1/registry/repositories", ALL, hidden_from=()),
    Row("GET", "/api/v1/registry/repositories/alpha/web/tags", MEMBERS),
    Row("DELETE", "/api/v1/registry/repositories/alpha/web/tags/v1", WRITERS),
    Row("POST", "/api/v1/registry/events", (), {"events": []}, hidden_from=()),
    Row("POST", "/api/v1/registry/gc", ("platform-admin",), hidden_from=()),
    # P2P: the agents' calls take the cluster's agent token, never a user's (403 for all)
    Row("POST", f"{P2P}/agents", (), AGENT, hidden_from=()),
    Row("POST", f"{P2P}/tasks", (), TASK, hidden_from=()),
    Row("POST", f"{P2P}/tasks/{BLOB}/schedule", (), {"node": "n1", "want": 1}, hidden_from=()),
    Row("POST", f"{P2P}/tasks/{BLOB}/reports", (), {"node": "n1", "reports": []}, hidden_from=()),
    Row("POST", f"{P2P}/tasks/{BLOB}/done", (), {"node": "n1", "ok": True}, hidden_from=()),
    Row(
        "POST",
        f"{P2P}/manifests",
        (),
        {**TASK, "reference": "v1", "media_type": "a/b"},
        hidden_from=(),
    ),
    # the users' side: the figures for everyone who sees the cluster, the rest for admins
    Row("GET", f"{P2P}/agent-token", ("platform-admin",), hidden_from=()),
    Row("GET", f"{P2P}/agent-token?node=n1", ("platform-admin",), hidden_from=()),
    Row("GET", f"{P2P}/images", ALL, hidden_from=()),
    Row("GET", f"{P2P}/nodes", ALL, hidden_from=()),
    Row(
        "POST",
        f"{P2P}/prewarms",
        ("platform-admin",),
        {"image": "r.io/a/b:v1", "nodes": ["n1"]},
        hidden_from=(),
    ),
    # a prewarm that does not exist: 404 for everyone (ids are random)
    Row("GET", f"{P2P}/prewarms/pw-0123456789abcdef", (), hidden_from=ALL),
    # the Galaxy network (issue 19): pools are the platform admins'; anyone who sees the
    # cluster sees them, as its nodes; the CNI plugin's calls take the node token (403 for all)
    Row("GET", f"{IPP}", ALL, hidden_from=()),
    Row(
        "POST",
        f"{IPP}",
        ("platform-admin",),
        {"name": "b", "subnet": "10.9.1.0/24"},
        hidden_from=(),
    ),
    Row("GET", f"{IPP}/rack-a", ALL, hidden_from=()),
    Row("DELETE", f"{IPP}/rack-a", ("platform-admin",), hidden_from=()),
    Row("GET", f"{IPP}/rack-a/allocations", ("platform-admin",), hidden_from=()),
    Row("DELETE", f"{IPP}/rack-a/allocations/1", ("platform-admin",), hidden_from=()),
    Row("GET", f"{IPAM}/token", ("platform-admin",), hidden_from=()),
    Row(
        "POST",
        f"{IPAM}/add",
        (),
        {**SANDBOX, "node": "n1", "mode": "nat", "node_ip": "10.0.0.1"},
        hidden_from=(),
    ),
    Row("POST", f"{IPAM}/del", (), SANDBOX, hidden_from=()),
    Row("POST", f"{IPAM}/check", (), SANDBOX, hidden_from=()),
    Row("POST", f"{IPAM}/plan", (), {"namespace": "alpha", "pod": "web-0"}, hidden_from=()),
    Row("POST", f"{IPAM}/gc", (), {"node": "n1", "valid": []}, hidden_from=()),
    Row("GET", f"{APP}/network", MEMBERS),
    Row(
        "POST",
        "/api/v1/clusters/sim-1/sim/faults",
        ("platform-admin",),
        {"kind": "node_lost", "node": "sim-1-node-0"},
        hidden_from=(),
    ),
    # alerting (seeded in alpha: channel 1, receiver 1, group 1, policy 1, silence 1, record 1)
    Row("GET", f"{AL}/channels", ALL, hidden_from=()),
    Row(
        "POST",
        f"{AL}/channels",
        ADMINS,
        {"business": "alpha", "name": "c2", "kind": "webhook", "config": HOOK},
    ),
    Row("GET", f"{AL}/channels/1", MEMBERS),
    Row("PATCH", f"{AL}/channels/1", ADMINS, {"enabled": True}),
    Row("POST", f"{AL}/channels/1/test", ADMINS),
    Row("DELETE", f"{AL}/channels/1", ADMINS),
    Row("GET", f"{AL}/receivers", ALL, hidden_from=()),
    Row("POST", f"{AL}/receivers", WRITERS, {"business": "alpha", "name": "r2"}),
    Row("PATCH", f"{AL}/receivers/1", WRITERS, {"phone": "+8613800000000"}),
    Row("DELETE", f"{AL}/receivers/1", WRITERS),
    Row("GET", f"{AL}/receiver-groups", ALL, hidden_from=()),
    Row("POST", f"{AL}/receiver-groups", WRITERS, {"business": "alpha", "name": "g2"}),
    Row("PATCH", f"{AL}/receiver-groups/1", WRITERS, {"receiver_ids": [1]}),
    Row("DELETE", f"{AL}/receiver-groups/1", WRITERS),
    Row("GET", f"{AL}/policies", ALL, hidden_from=()),
    Row("POST", f"{AL}/policies", WRITERS, {**POLICY, "name": "p2"}),
    Row("GET", f"{AL}/policies/1", MEMBERS),
    Row("PATCH", f"{AL}/policies/1", WRITERS, {"threshold": 90}),
    Row("DELETE", f"{AL}/policies/1", WRITERS),
    Row("GET", f"{AL}/builtin-rules", ALL, hidden_from=()),
    Row("POST", "/api/v1/clusters/sim-1/alert-rules", ("platform-admin",), {}, hidden_from=()),
    Row("GET", f"{AL}/rules.yaml", ALL, hidden_from=()),
    Row("GET", f"{AL}/silences", ALL, hidden_from=()),
    Row("POST", f"{AL}/silences", WRITERS, SILENCE),
    Row("DELETE", f"{AL}/silences/1", WRITERS),
    Row("GET", f"{AL}/records", ALL, hidden_from=()),
    Row("GET", f"{AL}/records/1", MEMBERS),
    Row(
        "POST",
        f"{AL}/alertmanager",
        ("platform-admin",),
        {"status": "firing", "alerts": []},
        hidden_from=(),
    ),
    Row("GET", "/api/v1/monitoring/metrics", ALL, hidden_from=()),
    Row(
        "GET",
        "/api/v1/monitoring/series?metric=gaia_instance_cpu_usage_percent&business=alpha",
        MEMBERS,
    ),
    Row("GET", f"{APP}/logs", MEMBERS),
    Row("GET", "/api/v1/system/logs", ("platform-admin",), hidden_from=()),
    Row("GET", "/api/v1/platform/components", ("platform-admin",), hidden_from=()),
    Row("GET", "/api/v1/platform/components/clusters", ("platform-admin",), hidden_from=()),
    Row(
        "POST",
        "/api/v1/platform/replicas/r-seeded/loops/apps/restart",
        ("platform-admin",),
        hidden_from=(),
    ),
]
REGISTRY_PUSH = {
    "action": "push",
    "timestamp": "2026-12-05T06:00:00Z",
    "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "1" * 64,
        "size": 500,
        "repository": "alpha/web",
        "tag": "v1",
    },
    "actor": {"name": "dev"},
}
# the webhook is authenticated by the pipeline's signature, not a user (tests/api/test_pipelines.py)
PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/registry/token"),
    ("POST", "/api/v1/hooks/pipelines/{pipeline_id}"),
}


def _seed(world: World, platform: Platform) -> None:
    c, h = world.client, world.admin
    r = c.post(IPP, json={"name": "rack-a", "subnet": "10.9.0.0/24"}, headers=h)
    assert r.status_code == 201, r.text
    with platform.db.write_session() as session:
        alpha_id = session.scalars(select(Business.id).where(Business.name == "alpha")).one()
        pool = session.scalars(select(FloatingIpPool)).one()
        session.add(
            NetworkAttachment(
                cluster_id=pool.cluster_id, business_id=alpha_id, pod="kept-0",
                mode="floating-ip", pool_id=pool.id, ip="10.9.0.2", policy="never",
            )
        )  # fmt: skip
    r = c.post(
        f"{BIZ}/apps",
        json={"name": "web", "cluster": "sim-1", "templates": [V1, V2], "replicas": 1},
        headers=h,
    )
    assert r.status_code == 201, r.text
    r = c.post(f"{APP}/upgrades", json={"template": "v2", "instance_ids": [0]}, headers=h)
    assert r.status_code == 201, r.text
    r = c.put(f"{BIZ}/quotas/sim-1/gpu-models/T4", json={"cards": 1}, headers=h)
    assert r.status_code == 200, r.text
    with platform.db.write_session() as session:
        app_id = session.scalars(select(App.id).where(App.name == "web")).one()
        session.add(
            AppBlacklist(
                app_id=app_id,
                node="sim-1-node-0",
                failures=3,
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
    for path in ("/api/v1/instance-configs", f"{BIZ}/instance-configs"):
        r = c.post(path, json={"name": "small", "resources": {"cpu": 1}}, headers=h)
        assert r.status_code == 201, r.text
    r = c.post(
        "/api/v1/registry/events",
        json={"events": [REGISTRY_PUSH]},
        headers={"Authorization": f"Bearer {platform.registry.signer.notification_token}"},
    )
    assert r.status_code == 200, r.text
    r = c.post(f"{BIZ}/pipelines", json={"name": "build", "git_url": GIT_URL}, headers=h)
    assert r.status_code == 201, r.text
    r = c.post(f"{PIPE}/runs", headers=h)
    assert r.status_code == 201 and r.json()["number"] == 1, r.text
    for path, name in ((f"{BIZ}/configmaps", "settings"), (f"{BIZ}/secrets", "db")):
        r = c.post(path, json={"name": name, "data": {"k": "v"}}, headers=h)
        assert r.status_code == 201, r.text
    alerting: list[tuple[str, dict[str, Any]]] = [
        ("channels", {"business": "alpha", "name": "c", "kind": "webhook", "config": HOOK}),
        ("receivers", {"business": "alpha", "name": "r", "email": "r@alpha.example.com"}),
        ("receiver-groups", {"business": "alpha", "name": "g", "receiver_ids": [1]}),
        ("policies", {**POLICY, "channel_ids": [1], "group_ids": [1]}),
        ("silences", SILENCE),
    ]
    for kind, body in alerting:
        r = c.post(f"{AL}/{kind}", json=body, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["id"] == 1
    with platform.db.write_session() as session:
        # a replica's heartbeat row (gaia.store.replicas), seen now, running the loop "apps"
        session.add(
            PlatformReplica(
                name="r-seeded",
                version="0",
                host="h",
                pid=1,
                address="127.0.0.1:8080",
                schema_revision="0013",
                started_at=platform.clock.now(),
                seen_at=platform.clock.now(),
                loops=[{"name": "apps"}],
                restart_loops=[],
            )
        )
        now = utcnow()
        session.add(
            Backup(trigger="api", state="Succeeded", requested_by="admin", requested_at=now)
        )
        alpha = session.scalars(select(Business.id).where(Business.name == "alpha")).one()
        session.add(
            AlertRecord(
                business_id=alpha,
                policy_id=1,
                policy_name="p",
                fingerprint="1-seeded",
                severity="warning",
                labels={"app": "web"},
                status="firing",
                started_at=now,
                fired_at=now,
            )
        )


def test_every_route_is_in_the_table(world: World) -> None:
    # The OpenAPI document is the list of routes the API offers (no route is hidden from it).
    spec = world.client.get("/api/openapi.json").json()
    routes = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    covered = {(row.method, row.template) for row in TABLE} | PUBLIC
    assert routes - covered == set(), "routes without an authorisation row"
    assert covered - routes == set(), "rows for routes that do not exist"


@pytest.mark.parametrize("row", TABLE, ids=lambda r: f"{r.method} {r.template}")
def test_route_authorisation(world: World, platform: Platform, row: Row) -> None:
    _seed(world, platform)
    c = world.client
    anonymous = c.request(row.method, row.path, json=row.body)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["code"] == "unauthenticated"

    # Order matters for destructive rows: try the refused roles first, the allowed last.
    for role in sorted(ROLES, key=lambda r: r in row.allowed):
        r = c.request(row.method, row.path, json=row.body, headers=world.as_(role))
        if role in row.allowed:
            assert r.status_code not in (401, 403, 404), f"{role}: {r.status_code} {r.text}"
            assert r.status_code < 500
            if row.method == "DELETE":
                break  # the object is gone; the other allowed roles would get 404
        elif role in row.hidden_from:
            assert r.status_code == 404, f"{role}: {r.status_code} {r.text}"
            assert r.json()["code"] == "not_found"
        else:
            assert r.status_code == 403, f"{role}: {r.status_code} {r.text}"
            assert r.json()["code"] == "forbidden"


def test_outsider_cannot_tell_a_foreign_business_from_a_missing_one(world: World) -> None:
    c, h = world.client, world.as_("outsider")
    foreign = c.get("/api/v1/businesses/alpha/quotas", headers=h)
    missing = c.get("/api/v1/businesses/no-such-biz/quotas", headers=h)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["message"].replace("alpha", "X") == missing.json()["message"].replace(
        "no-such-biz", "X"
    )
    listed = c.get("/api/v1/businesses", headers=h).json()["items"]
    assert [b["name"] for b in listed] == ["beta"]
