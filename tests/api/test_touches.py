"""What each write route's operation record says it touched (``OperationRecord.touches``), which
is how a quiet app controller tells whether a write needs a look at one app, none, or a full
pass (``gaia.store.apps.changed_apps``). Every write route of the API is in the table below:
a route added later fails here until someone decides what its writes change. "nothing" is the
unsafe answer (a write that did change what the controller reads is then seen only at the
resync), so it is given only to routes that change no app, quota, config, cluster or node."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from gaia.api.deps import touched_apps

OPENAPI = Path(__file__).parent / "openapi.json"
WRITES = ("post", "put", "patch", "delete")

APP = "app"  # one app: a look at it alone
NOTHING = "nothing"  # no look
ALL = "all"  # a full pass

EXPECTED = {
    "/api/v1/alerts/alertmanager": NOTHING,
    "/api/v1/alerts/channels": NOTHING,
    "/api/v1/alerts/channels/{channel_id}": NOTHING,
    "/api/v1/alerts/channels/{channel_id}/test": NOTHING,
    "/api/v1/alerts/policies": NOTHING,
    "/api/v1/alerts/policies/{policy_id}": NOTHING,
    "/api/v1/alerts/receiver-groups": NOTHING,
    "/api/v1/alerts/receiver-groups/{group_id}": NOTHING,
    "/api/v1/alerts/receivers": NOTHING,
    "/api/v1/alerts/receivers/{receiver_id}": NOTHING,
    "/api/v1/alerts/silences": NOTHING,
    "/api/v1/alerts/silences/{silence_id}": NOTHING,
    "/api/v1/auth/login": NOTHING,
    "/api/v1/auth/logout": NOTHING,
    "/api/v1/backups": NOTHING,
    "/api/v1/businesses": NOTHING,  # POST: a new business holds no app and no quota yet
    "/api/v1/businesses/{biz}": ALL,  # DELETE takes its quotas away
    "/api/v1/businesses/{biz}/apps": ALL,  # a new app
    "/api/v1/businesses/{biz}/apps/{app}": APP,
    "/api/v1/businesses/{biz}/apps/{app}/blacklist/{node}": APP,
    "/api/v1/businesses/{biz}/apps/{app}/instances/start": APP,
    "/api/v1/businesses/{biz}/apps/{app}/instances/stop": APP,
    "/api/v1/businesses/{biz}/apps/{app}/instances/{instance}/exec": APP,
    "/api/v1/businesses/{biz}/apps/{app}/instances/{instance}/kill": APP,
    "/api/v1/businesses/{biz}/apps/{app}/instances/{instance}/restart": APP,
    "/api/v1/businesses/{biz}/apps/{app}/scale-in": APP,
    "/api/v1/businesses/{biz}/apps/{app}/scale-out": APP,
    "/api/v1/businesses/{biz}/apps/{app}/start": APP,
    "/api/v1/businesses/{biz}/apps/{app}/stop": APP,
    "/api/v1/businesses/{biz}/apps/{app}/templates": APP,
    "/api/v1/businesses/{biz}/apps/{app}/templates/{version}": APP,
    "/api/v1/businesses/{biz}/apps/{app}/upgrades": APP,
    "/api/v1/businesses/{biz}/apps/{app}/upgrades/{upgrade}/pause": APP,
    "/api/v1/businesses/{biz}/apps/{app}/upgrades/{upgrade}/resume": APP,
    "/api/v1/businesses/{biz}/apps/{app}/upgrades/{upgrade}/rollback": APP,
    "/api/v1/businesses/{biz}/configmaps": ALL,
    "/api/v1/businesses/{biz}/configmaps/{name}": ALL,
    "/api/v1/businesses/{biz}/instance-configs": ALL,
    "/api/v1/businesses/{biz}/instance-configs/{name}": ALL,
    "/api/v1/businesses/{biz}/members/{username}": NOTHING,
    "/api/v1/businesses/{biz}/pipelines": NOTHING,  # a deploy writes versions: the mark sees them
    "/api/v1/businesses/{biz}/pipelines/{name}": NOTHING,
    "/api/v1/businesses/{biz}/pipelines/{name}/runs": NOTHING,
    "/api/v1/businesses/{biz}/pipelines/{name}/runs/{number}/cancel": NOTHING,
    "/api/v1/businesses/{biz}/quotas/{cluster}": ALL,
    "/api/v1/businesses/{biz}/quotas/{cluster}/admission-check": ALL,  # a question: no record
    "/api/v1/businesses/{biz}/quotas/{cluster}/gpu-models/{model}": ALL,
    "/api/v1/businesses/{biz}/secrets": ALL,
    "/api/v1/businesses/{biz}/secrets/{name}": ALL,
    "/api/v1/clusters": ALL,
    "/api/v1/clusters/{cluster}": ALL,
    "/api/v1/clusters/{cluster}/alert-rules": NOTHING,
    "/api/v1/clusters/{cluster}/etcd": ALL,
    "/api/v1/clusters/{cluster}/ip-pools": ALL,
    "/api/v1/clusters/{cluster}/ip-pools/{pool}": ALL,
    "/api/v1/clusters/{cluster}/ip-pools/{pool}/allocations/{allocation_id}": ALL,
    "/api/v1/clusters/{cluster}/ipam/add": ALL,
    "/api/v1/clusters/{cluster}/ipam/check": ALL,
    "/api/v1/clusters/{cluster}/ipam/del": ALL,
    "/api/v1/clusters/{cluster}/ipam/gc": ALL,
    "/api/v1/clusters/{cluster}/ipam/plan": ALL,
    "/api/v1/clusters/{cluster}/nodes": ALL,
    "/api/v1/clusters/{cluster}/nodes/{node}": ALL,
    "/api/v1/clusters/{cluster}/nodes/{node}/cordon": ALL,
    "/api/v1/clusters/{cluster}/nodes/{node}/drain": ALL,
    "/api/v1/clusters/{cluster}/nodes/{node}/uncordon": ALL,
    "/api/v1/clusters/{cluster}/p2p/agents": ALL,
    "/api/v1/clusters/{cluster}/p2p/manifests": ALL,
    "/api/v1/clusters/{cluster}/p2p/prewarms": ALL,
    "/api/v1/clusters/{cluster}/p2p/tasks": ALL,
    "/api/v1/clusters/{cluster}/p2p/tasks/{digest}/done": ALL,
    "/api/v1/clusters/{cluster}/p2p/tasks/{digest}/reports": ALL,
    "/api/v1/clusters/{cluster}/p2p/tasks/{digest}/schedule": ALL,
    "/api/v1/clusters/{cluster}/sim/faults": ALL,
    "/api/v1/hooks/pipelines/{pipeline_id}": NOTHING,
    "/api/v1/instance-configs": ALL,
    "/api/v1/instance-configs/{name}": ALL,
    "/api/v1/platform/replicas/{replica}/loops/{loop}/restart": ALL,
    "/api/v1/registry/events": NOTHING,
    "/api/v1/registry/gc": NOTHING,
    "/api/v1/registry/namespaces/{biz}/quota": NOTHING,
    "/api/v1/registry/repositories/{repository}/tags/{tag}": NOTHING,
    "/api/v1/tokens": NOTHING,
    "/api/v1/tokens/{token_id}": NOTHING,
    "/api/v1/users": NOTHING,
    "/api/v1/users/{username}": NOTHING,
}


def write_routes() -> list[str]:
    paths = json.loads(OPENAPI.read_text())["paths"]
    return sorted(p for p, ops in paths.items() if any(m in ops for m in WRITES))


def test_every_write_route_is_in_the_table() -> None:
    assert write_routes() == sorted(EXPECTED)


@pytest.mark.parametrize("template", sorted(EXPECTED))
def test_a_successful_writes_record_says_what_it_touched(template: str) -> None:
    # the scope as FastAPI leaves it for the recorder: the route, its full template, its params
    scope = {
        "route": SimpleNamespace(path=template),
        "fastapi": {"effective_route_context": SimpleNamespace(path_format=template)},
        "path_params": {"biz": "alpha", "app": "web", "cluster": "sim-1"},
    }
    touched = touched_apps(scope)
    kind = {"": NOTHING, "*": ALL}.get(touched, APP)
    assert kind == EXPECTED[template]
    if kind == APP:
        assert touched == "alpha/web"
