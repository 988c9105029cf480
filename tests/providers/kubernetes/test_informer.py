"""How an informer (``gaia/providers/kubernetes/informer.py``) recovers, on a real etcd and
kube-apiserver reached through a TCP relay that the tests cut, stall and restore.

**What really gives a 410.** A watch from an old ``resourceVersion`` is answered with an
``ERROR`` event of code 410 (inside an HTTP 200 stream) only when the API server no longer holds
the events since that version, and where it looks depends on the kind:

- Most kinds (ConfigMaps, and the Pods and Nodes that ``KubernetesCluster`` watches) are served
  from the API server's watch cache: one ring of recent events per kind, all namespaces together.
  The ring starts at 100 events and doubles, up to 100 Ki, whenever it is full and its oldest
  event is younger than 75 s (``DefaultEventFreshDuration``): an event leaves it only once it is
  75 s old or 100 Ki newer ones came. Compacting etcd does not touch it, so a watch from a
  compacted version is still served; no namespace and no burst of events shrinks the window, a
  test would have to wait more than 75 s. (``test_the_api_server_gives_410_only_for_kinds_it_
  does_not_cache`` shows both sides.)
- Events (``events`` and ``events.k8s.io/events``, which ``KubernetesCluster`` also watches) have
  no watch cache (``DefaultWatchCacheSizes`` sets their size to 0): they are watched from etcd,
  so a version that etcd has compacted away gives 410 at once. kube-apiserver compacts etcd
  every 5 minutes (``--etcd-compaction-interval``); the tests compact it themselves, through
  etcd's gRPC gateway (``POST /v3/kv/compaction``).

**When the informer watches from an old version.** Only when a watch stream *ends cleanly*: the
API server closes every watch after its request timeout (30 to 60 minutes) and lightkube then
watches again from the last version it saw. A watch that *fails* (a reset or refused connection)
makes the informer back off and list again, so a cut relay ends in a list whether or not the
version is still known. So the tests cut the relay to show that a partition ends with exactly the
objects that exist, and stall it (the stream neither fails nor ends) under watches the server
ends after 1 s to show the 410 path itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import ConfigMap, Event

from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.kubernetes.informer import ClusterLoop, Informer, Key, key_of
from tests.support.kube import ControlPlane
from tests.support.relay import Relay
from tests.support.waiting import eventually

LABEL = "gaia.test/informer"
INFORMER_LOG = "gaia.providers.kubernetes.informer"
_namespaces = itertools.count()


# ------------------------------------------------------------------------------ helpers


def compact_etcd(control_plane: ControlPlane) -> None:
    """Compact etcd's history up to its current revision, as kube-apiserver does every 5 minutes
    (up to the revision of 5 minutes before)."""
    base = f"http://127.0.0.1:{control_plane.etcd_port}"
    any_key = base64.b64encode(b"/").decode()
    header = httpx.post(f"{base}/v3/kv/range", json={"key": any_key}).json()["header"]
    r = httpx.post(
        f"{base}/v3/kv/compaction", json={"revision": header["revision"], "physical": True}
    )
    assert r.status_code == 200, r.text


@dataclass
class Watched:
    """An informer running on its own ``ClusterLoop`` (as ``KubernetesCluster`` runs them), what
    its ``on_change`` reported, and the loop's thread (whose log records are the informer's)."""

    loop: ClusterLoop
    informer: Informer
    client: AsyncClient
    changes: list[tuple[str, Key]]
    thread: int

    def items(self, namespace: str) -> dict[str, dict[str, Any]]:
        async def copy() -> dict[str, dict[str, Any]]:
            return {name: doc for (ns, name), doc in self.informer.items.items() if ns == namespace}

        return self.loop.run_sync(copy(), timeout=10)

    def changes_in(self, namespace: str, since: int = 0) -> list[tuple[str, str]]:
        return [(op, name) for op, (ns, name) in self.changes[since:] if ns == namespace]

    def logged(self, caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
        """What this informer logged at ``level`` or above (other clusters' informers may run
        in the same session, and the tests compact etcd under them too)."""
        return [
            r.getMessage()
            for r in caplog.records
            if r.thread == self.thread and r.name == INFORMER_LOG and r.levelno >= level
        ]


@dataclass
class Namespace:
    """A fresh namespace; the objects a test makes in it carry the label ``LABEL: name``, which
    the informers select."""

    name: str
    api: httpx.Client

    def url(self, plural: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{self.name}/{plural}" + (f"/{name}" if name else "")

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"] = {**body.get("metadata", {}), "labels": {LABEL: self.name}}
        r = self.api.post(self.url(plural), json=body)
        assert r.status_code == 201, r.text
        doc: dict[str, Any] = r.json()
        return doc

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        r = self.api.patch(
            self.url(plural, name),
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text

    def delete(self, plural: str, name: str) -> None:
        r = self.api.delete(self.url(plural, name))
        assert r.status_code == 200, r.text

    def listed(self, plural: str) -> dict[str, dict[str, Any]]:
        r = self.api.get(self.url(plural), params={"labelSelector": f"{LABEL}={self.name}"})
        assert r.status_code == 200, r.text
        return {doc["metadata"]["name"]: doc for doc in r.json()["items"]}

    def event(self, name: str, message: str) -> dict[str, Any]:
        return self.create(
            "events",
            {
                "metadata": {"name": name},
                "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": self.name},
                "reason": "Tested",
                "message": message,
                "type": "Normal",
            },
        )

    def config_map(self, name: str, value: str) -> dict[str, Any]:
        return self.create("configmaps", {"metadata": {"name": name}, "data": {"value": value}})


def messages(items: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: str(doc.get("message")) for name, doc in items.items()}


def values(items: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: str((doc.get("data") or {}).get("value")) for name, doc in items.items()}


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    client = control_plane.http_client()
    yield client
    client.close()


@pytest.fixture
def relay(control_plane: ControlPlane) -> Iterator[Relay]:
    relay = Relay(control_plane.api_port)
    relay.restore()
    yield relay
    relay.resume()
    relay.cut()


@pytest.fixture
def namespace(api: httpx.Client) -> Namespace:
    name = f"inf-{next(_namespaces)}-{int(time.time() * 1000) % 10**8}"
    r = api.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return Namespace(name=name, api=api)


@pytest.fixture
def informers(
    control_plane: ControlPlane, relay: Relay, namespace: Namespace
) -> Iterator[Callable[..., Watched]]:
    """Start informers that reach the API server through the relay and select the test's
    objects by label; each is stopped, and its loop ended, after the test."""
    started: list[Watched] = []

    def start(
        resource: Any,
        *,
        resync_s: float = 300.0,
        client_class: type[AsyncClient] = AsyncClient,
        before_start: Callable[[AsyncClient, Informer], None] | None = None,
    ) -> Watched:
        config = control_plane.kubeconfig()
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
        loop = ClusterLoop(f"{namespace.name}-{len(started)}")
        changes: list[tuple[str, Key]] = []

        def on_change(op: str, doc: dict[str, Any]) -> None:
            changes.append((op, key_of(doc)))

        async def begin() -> tuple[AsyncClient, Informer, int]:
            client = client_class(KubeConfig.from_dict(config), trust_env=False)
            informer = Informer(
                client,
                resource,
                labels={LABEL: namespace.name},
                resync_s=resync_s,
                on_change=on_change,
            )
            if before_start is not None:
                before_start(client, informer)
            informer.start()
            return client, informer, threading.get_ident()

        client, informer, thread = loop.run_sync(begin(), timeout=10)
        watched = Watched(loop, informer, client, changes, thread)
        started.append(watched)
        loop.run_sync(informer.wait_synced(60), timeout=70)
        return watched

    yield start
    for watched in started:

        async def end(w: Watched = watched) -> None:
            await w.informer.stop()
            await w.client.close()

        with contextlib.suppress(Exception):
            watched.loop.run_sync(end(), timeout=20)
        watched.loop.stop()


# ------------------------------------------------------------------------------ the API server


def test_the_api_server_gives_410_only_for_kinds_it_does_not_cache(
    control_plane: ControlPlane, namespace: Namespace
) -> None:
    """The ground the informer tests stand on (see the module docstring): after etcd is
    compacted past a version, a watch of Events from it gets an ERROR event with code 410, and a
    watch of ConfigMaps from it is still served, from the watch cache."""
    before = {
        plural: namespace.api.get(namespace.url(plural)).json()["metadata"]["resourceVersion"]
        for plural in ("events", "configmaps")
    }
    namespace.event("e0", "created after the version")
    namespace.config_map("c0", "created after the version")
    compact_etcd(control_plane)

    def watch_from(plural: str) -> list[dict[str, Any]]:
        params = {"watch": "true", "resourceVersion": before[plural], "timeoutSeconds": "1"}
        with namespace.api.stream("GET", namespace.url(plural), params=params) as response:
            assert response.status_code == 200
            return [httpx.Response(200, content=line).json() for line in response.iter_lines()]

    events = watch_from("events")
    assert [(e["type"], e["object"].get("code")) for e in events] == [("ERROR", 410)]
    # kube-controller-manager, when an earlier test started it, publishes ``kube-root-ca.crt``
    # into the new namespace at any moment: only the test's own ConfigMap is looked at.
    config_maps = [
        e for e in watch_from("configmaps") if e["object"]["metadata"]["name"] != "kube-root-ca.crt"
    ]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in config_maps] == [("ADDED", "c0")]


# ------------------------------------------------------------------------------ recovery


def test_a_partition_with_compaction_ends_with_exactly_the_objects_that_exist(
    control_plane: ControlPlane,
    relay: Relay,
    namespace: Namespace,
    informers: Callable[..., Watched],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events (watched from etcd, no watch cache) change while the relay is cut and etcd is
    compacted past everything the informer saw: the old version is gone, so only a list can
    repair the cache. The cut makes the watch fail and the informer list again once the API
    server answers; it ends with exactly what exists, and reports the partition as a network
    error (a warning), not as a bug with a traceback."""
    caplog.set_level(logging.INFO, logger=INFORMER_LOG)
    for name in ("keep", "update", "delete"):
        namespace.event(name, "before")
    watched = informers(Event)
    eventually(
        lambda: set(watched.items(namespace.name)) == {"keep", "update", "delete"},
        "the informer sees the first events",
    )
    assert watched.informer.relists == 1

    relay.cut()
    eventually(lambda: not watched.informer.healthy, "the informer notices the cut")
    namespace.event("create", "while cut")
    namespace.patch("events", "update", {"message": "while cut"})
    namespace.delete("events", "delete")
    compact_etcd(control_plane)
    relay.restore()

    expected = {"keep": "before", "update": "while cut", "create": "while cut"}
    eventually(
        lambda: messages(watched.items(namespace.name)) == expected,
        "the informer ends with exactly the events that exist",
    )
    assert messages(namespace.listed("events")) == expected
    assert watched.informer.relists >= 2
    eventually(lambda: watched.informer.healthy, "the informer is healthy again")
    assert watched.logged(caplog, logging.ERROR) == []
    warnings = watched.logged(caplog, logging.WARNING)
    assert warnings and all(message.endswith("(retrying)") for message in warnings), warnings


class ServerEndsWatchesAfterOneSecond(AsyncClient):
    """The real client, but every watch asks the API server to end it after 1 s. The API server
    ends every watch after its request timeout anyway (30 to 60 minutes), and lightkube then
    watches again from the last version it saw: this is that moment, without the half hour."""

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        return super().watch(*args, **{**kwargs, "server_timeout": 1})


def test_a_watch_resumed_from_a_compacted_version_gets_410_and_relists(
    control_plane: ControlPlane,
    relay: Relay,
    namespace: Namespace,
    informers: Callable[..., Watched],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The 410 path itself. The relay stalls the watch's connection: nothing fails and nothing
    arrives. Meanwhile the API server ends that watch (its 1-s timeout; the end waits in the
    relay), the events change and etcd is compacted. When the relay forwards again, the stream
    ends cleanly, lightkube watches again from the last version the informer saw, the API server
    answers 410 (Events are watched from etcd), and the informer lists again."""
    caplog.set_level(logging.INFO, logger=INFORMER_LOG)
    for name in ("keep", "update", "delete"):
        namespace.event(name, "before")
    watched = informers(Event, client_class=ServerEndsWatchesAfterOneSecond)
    eventually(
        lambda: set(watched.items(namespace.name)) == {"keep", "update", "delete"},
        "the informer sees the first events",
    )
    assert watched.informer.relists == 1

    relay.stall()
    assert relay.stalled() >= 1
    time.sleep(3)  # the API server ends the stalled watch after 1 s
    namespace.event("create", "while stalled")
    namespace.patch("events", "update", {"message": "while stalled"})
    namespace.delete("events", "delete")
    compact_etcd(control_plane)
    assert set(watched.items(namespace.name)) == {"keep", "update", "delete"}
    relay.resume()

    expected = {"keep": "before", "update": "while stalled", "create": "while stalled"}
    eventually(
        lambda: messages(watched.items(namespace.name)) == expected,
        "the informer ends with exactly the events that exist",
    )
    assert watched.informer.relists == 2
    assert watched.logged(caplog, logging.INFO) == ["Event watch expired (410 Gone): listing again"]


def test_a_silently_stalled_watch_is_repaired_by_the_periodic_relist(
    relay: Relay, namespace: Namespace, informers: Callable[..., Watched]
) -> None:
    """A watch whose connection stalls without an error (no read timeout can tell it from a quiet
    cluster) misses what changes; the relist every ``resync_s`` repairs the cache, and reports
    only what changed: the unchanged object is not announced again."""
    namespace.config_map("steady", "1")
    namespace.config_map("changing", "1")
    watched = informers(ConfigMap, resync_s=2.0)
    eventually(
        lambda: values(watched.items(namespace.name)) == {"steady": "1", "changing": "1"},
        "the informer sees the config maps",
    )
    # stall just after a relist: its watch (on the list's connection) is stalled, and the next
    # relist, on a new connection, is a whole resync_s away
    listed = watched.informer.relists
    eventually(lambda: watched.informer.relists > listed, "a relist")
    relay.stall()
    stalled_at, reported = watched.informer.relists, len(watched.changes)
    namespace.patch("configmaps", "changing", {"data": {"value": "2"}})
    assert watched.informer.relists == stalled_at, "the test was too slow for resync_s"
    eventually(
        lambda: values(watched.items(namespace.name)) == {"steady": "1", "changing": "2"},
        "the relist picks up the change",
    )
    assert watched.informer.relists > stalled_at
    eventually(lambda: watched.informer.relists >= stalled_at + 2, "another relist")
    assert watched.changes_in(namespace.name, since=reported) == [("MODIFIED", "changing")]


# ------------------------------------------------------------------------------ the cache


class WritesDuringTheFirstList(AsyncClient):
    """The real client; ``during_list`` runs once, after the API server has answered the first
    list and before the informer stores it (a caller writing an object at that moment), and
    ``at_watch`` keeps the keys the informer held each time it started a watch."""

    during_list: Callable[[], Awaitable[None]] | None = None
    informer: Informer | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_watch: list[set[Key]] = []

    def list(self, *args: Any, **kwargs: Any) -> Any:
        listing = super().list(*args, **kwargs)
        hook, self.during_list = self.during_list, None
        return listing if hook is None else _ListThenRun(listing, hook)

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        if self.informer is not None:
            self.at_watch.append(set(self.informer.items))
        return super().watch(*args, **kwargs)


class _ListThenRun:
    def __init__(self, listing: Any, hook: Callable[[], Awaitable[None]]) -> None:
        self.listing, self.hook = listing, hook

    @property
    def resourceVersion(self) -> str:  # lightkube's name
        return str(self.listing.resourceVersion)

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for obj in self.listing:
            yield obj
        await self.hook()


def test_an_object_remembered_during_a_list_stays_in_the_cache(
    namespace: Namespace, informers: Callable[..., Watched]
) -> None:
    """``KubernetesCluster`` remembers each pod it creates and checks a node's pods in the cache
    before it places the next one there. A list answered just before such a create, stored just
    after it, must not drop the new pod (even until the watch brings it back): the remembered
    object is newer than the list, and the watch from the list's version will bring its changes."""
    namespace.config_map("listed", "1")
    written: Key = (namespace.name, "written")

    def prepare(client: AsyncClient, informer: Informer) -> None:
        assert isinstance(client, WritesDuringTheFirstList)

        async def create_and_remember() -> None:
            labels = {LABEL: namespace.name}
            body = {
                "metadata": {"name": "written", "namespace": namespace.name, "labels": labels},
                "data": {"value": "1"},
            }
            created = await client.create(cast(ConfigMap, ConfigMap.from_dict(body)))
            informer.remember(created.to_dict())

        client.during_list = create_and_remember
        client.informer = informer

    watched = informers(ConfigMap, client_class=WritesDuringTheFirstList, before_start=prepare)
    client = watched.client
    assert isinstance(client, WritesDuringTheFirstList)
    eventually(lambda: bool(client.at_watch), "the informer starts watching")
    assert written in client.at_watch[0], "the list dropped the object written during it"
    eventually(
        lambda: values(watched.items(namespace.name)) == {"listed": "1", "written": "1"},
        "the informer holds both",
    )


# ------------------------------------------------------------------------------ the provider


def test_a_relist_does_not_record_the_cluster_events_again(
    control_plane: ControlPlane, namespace: Namespace
) -> None:
    """``KubernetesCluster.events`` feeds the platform's event records (the apps controller
    writes each one it is given): a Kubernetes Event is given once, however often the informer
    lists again."""
    cluster = KubernetesCluster(
        name="informer-test", kubeconfig=control_plane.kubeconfig_text(), resync_s=0.5
    )

    def recorded() -> list[str]:
        events = asyncio.run(cluster.events(since=0, limit=100_000))
        return [e.message for e in events if e.namespace == namespace.name]

    def relists() -> int:
        informer = cluster._events  # the provider does not expose its informers
        return informer.relists if informer is not None else 0

    try:
        namespace.event("first", "once")
        eventually(lambda: recorded() == ["once"], "the event is recorded")
        namespace.event("second", "twice?")
        eventually(lambda: recorded() == ["once", "twice?"], "the second event is recorded")
        listed = relists()
        eventually(lambda: relists() >= listed + 3, "the informer lists again")
        assert recorded() == ["once", "twice?"]
    finally:
        asyncio.run(cluster.close())


def test_the_pod_indexes_follow_every_change_of_a_pod() -> None:
    """The provider's pod indexes (by node, by app) answer one node's or one app's question
    without walking every pod: they must follow a pod that is bound, relabelled or forgotten,
    and never hold a pod Gaia does not manage."""
    from lightkube.resources.core_v1 import Pod

    from gaia.kube.labels import APP_LABEL, MANAGED_BY, MANAGED_BY_LABEL
    from gaia.providers.kubernetes.cluster import POD_INDEXES

    informer = Informer(cast(AsyncClient, None), Pod, indexes=POD_INDEXES)

    def pod(name: str, version: int, *, app: str | None, node: str = "") -> dict[str, Any]:
        labels = {MANAGED_BY_LABEL: MANAGED_BY} if app is not None else {}
        if app is not None:
            labels[APP_LABEL] = app
        return {
            "metadata": {
                "namespace": "biz",
                "name": name,
                "resourceVersion": str(version),
                "labels": labels,
            },
            "spec": {"nodeName": node} if node else {},
        }

    def names(index: str, value: str) -> list[str]:
        return sorted(p["metadata"]["name"] for p in informer.indexed(index, value))

    informer.remember(pod("web-1", 1, app="web"))
    informer.remember(pod("web-2", 2, app="web", node="n1"))
    informer.remember(pod("db-1", 3, app="db", node="n1"))
    informer.remember(pod("stray", 4, app=None, node="n1"))
    assert names("app", "biz/web") == ["web-1", "web-2"]
    assert names("app", "biz/db") == ["db-1"]
    assert names("node", "n1") == ["db-1", "stray", "web-2"]
    # bound: web-1 joins its node, and stays in its app once
    informer.remember(pod("web-1", 5, app="web", node="n2"))
    assert names("node", "n2") == ["web-1"]
    assert names("app", "biz/web") == ["web-1", "web-2"]
    # an older version than the cache holds changes nothing
    informer.remember(pod("web-1", 4, app="db", node="n1"))
    assert names("app", "biz/web") == ["web-1", "web-2"]
    # relabelled to another app, then gone: each index forgets it, empty buckets included
    informer.remember(pod("web-2", 6, app="db", node="n1"))
    assert names("app", "biz/web") == ["web-1"]
    assert names("app", "biz/db") == ["db-1", "web-2"]
    for name in ("web-1", "web-2", "db-1", "stray"):
        informer.forget("biz", name)
    assert informer.items == {}
    assert all(not values for values in informer._indexed.values())
