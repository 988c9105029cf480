"""The ``kubernetes`` provider: a real cluster from a kubeconfig, behind the provider port.

**Client.** lightkube's ``AsyncClient`` (typed, async, server-side apply, watch), one per
registered cluster, living on the cluster's own event loop thread (``informer.ClusterLoop``: the
platform calls providers from several loops). Health is ``GET /readyz`` on that loop too.

**Caches.** Three informers (list, then watch; relist on ``410 Gone`` and every ``resync_s``):
all pods (the nodes' allocation counts every pod, not only the platform's), indexed by node, nodes,
and events, each kept without what no reader here uses (``kept``: ``managedFields`` above all).
Reads (``list_nodes``, ``list_instances``) answer from the caches once they have synced; writes
go to the API server and put the object they get back into the cache at once, so a controller
pass sees its own writes even before the watch delivers them.

**Mapping** (one module per object kind: ``pods``, ``instances``, ``nodes``, ``services``,
``configs``, ``events``): a business is a namespace; an instance is a Pod named ``<app>-<id>``
with Gaia's labels and hashes, created already bound (``spec.nodeName``) to the node the Gaia
scheduler chose, so no other scheduler sees it; its GPU ids and CPU cores ride in annotations for
the node side. An in-place
upgrade patches the container image of that pod and nothing else: same UID, node, IP,
annotations. A restart deletes the pod and creates it again on the same node. Services,
ConfigMaps and Secrets are server-side applied with field manager ``gaia``.

**One write per instance.** Creating an instance is one POST of a pod that is already bound;
nothing is read first (the namespace and the pull secret are ensured once per process, the node
is checked against the cache through its index). The ``Scheduled`` notice that kube-scheduler
would write per pod is recorded in the provider's own event log at once and written to the cluster
as one Event per app and batch (``recorder``), not one per pod. Up to release 22 the provider
created the pod and then bound it (two writes): a process killed between them left a pod with no
``spec.nodeName`` that no scheduler binds, which the app controller still repairs
(``gaia.controllers.apps``, "placements left half-done"): past a grace period it is deleted,
which the API server does at once for a pod no node holds (so ``delete_instance`` drops it from
the cache too), and placed and created again. A single write cannot be interrupted half-way.

**Only Gaia's own objects.** Server-side apply with ``force`` takes every field over, and a
business is a namespace that might already exist for someone else (``default``/``kubernetes``
is the API server's Service). So before it force-applies, patches or deletes an object (a
namespace, pod, Service, ConfigMap, Secret or ResourceQuota) the provider reads it, and an object
that exists without ``app.kubernetes.io/managed-by=gaia`` is refused with ``NotManaged``, which
the app controller records as a ``ReconcileError`` event. (Nodes are the exception: they are
the cluster's, and removing one is an explicit admin action.) Business names are checked too
(``gaia.domain.namespaces``); this check is what holds for namespaces made by hand.

**Pre-pull** (``prewarm_image``, the port's ``ImagePrewarmer``): a cluster has no pull without a
pod, so a gray upgrade's look-ahead goes to the P2P agents' prewarm jobs through the
``PrewarmSink`` the platform hands the adapter (docs/p2p.md, "Pre-pull during gray upgrades").

Nodes come and go with the cluster: ``add_node`` is refused (501); cordon, drain (evictions of
the platform's pods) and removal (refused while pods are bound) work on the real Node objects.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import ssl
import time
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any, TypeVar, cast

import httpx
import httpx2
import yaml
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.core_v1 import (
    ConfigMap,
    Event,
    Namespace,
    Pod,
    ResourceQuota,
    Secret,
)
from lightkube.resources.core_v1 import Node as K8sNode
from lightkube.resources.core_v1 import Service as K8sService
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from gaia.domain.agent_identity import (
    NODE_NAME_KEY,
    POD_NAME_KEY,
    POD_UID_KEY,
    SERVICE_ACCOUNT_PREFIX,
    ReviewedToken,
)
from gaia.domain.errors import Conflict, InvalidRequest, NotFound, NotManaged, Unsupported
from gaia.domain.gpu_links import normalize_matrix, preset
from gaia.domain.resources import ResourceVector
from gaia.kube import parse_kubeconfig, ssl_context
from gaia.kube.labels import APP_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from gaia.providers.kubernetes import streams, usage
from gaia.providers.kubernetes.configs import config_from_k8s, config_manifest
from gaia.providers.kubernetes.control_plane import ApiServerMetrics
from gaia.providers.kubernetes.events import event_from_k8s
from gaia.providers.kubernetes.informer import ClusterLoop, Derived, Informer, key_of
from gaia.providers.kubernetes.instances import instance_from_pod, instance_id_of
from gaia.providers.kubernetes.kept import kept_event, kept_node, kept_pod
from gaia.providers.kubernetes.nodes import kwok_node_manifest, node_from_k8s
from gaia.providers.kubernetes.pods import (
    CONTAINER_NAME,
    image_patch,
    pod_manifest,
    pull_secret_manifest,
    recreate_manifest,
)
from gaia.providers.kubernetes.quotas import QUOTA_NAME, quota_from_k8s, quota_manifest
from gaia.providers.kubernetes.recorder import ScheduledRecorder, is_batch_event
from gaia.providers.kubernetes.services import (
    service_from_k8s,
    service_manifest,
    service_needs_replace,
)
from gaia.providers.port import (
    ChangeOf,
    ClusterEvent,
    ClusterHealth,
    ConfigData,
    ControlPlaneSample,
    ExecResult,
    Failure,
    FailureCause,
    HealthState,
    Instance,
    InstancePhase,
    InstanceSpec,
    InstanceState,
    LogLine,
    MetricSample,
    Node,
    NodeSpec,
    PrewarmSink,
    PullSecret,
    Service,
    ServiceSpec,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SYNC_TIMEOUT_S = 30.0
EVENTS_KEPT = 10_000
MOUNT_FAILURES_KEPT = 10_000
NODE_SIMULATORS = ("kwok",)
METRICS_TIMEOUT_S = 5.0
METRICS_CONCURRENCY = 16
# Connections to the API server kept open between bursts of writes: as many as the app controller
# has in flight (``CREATE_CONCURRENCY``). httpx keeps 20 by default and closes them after 5 s
# idle, so every burst of an upgrade or a creation opened (and TLS-handshook) about 44 again:
# a fifth of the client's CPU per write, and the API server's share of the handshakes too
# (measured: 2,000 PATCHes in bursts of 250, 64 at a time). Idle ones close
# after 30 s, well before the API server's own idle timeout (90 s) can race a request.
KEPT_CONNECTIONS = 64
KEEPALIVE_S = 30.0


class KubernetesCluster:
    kind = "kubernetes"

    def __init__(
        self,
        *,
        name: str,
        kubeconfig: str,
        resync_s: float = 300.0,
        node_simulator: str | None = None,
        prewarms: PrewarmSink | None = None,
    ) -> None:
        if node_simulator is not None and node_simulator not in NODE_SIMULATORS:
            raise InvalidRequest(
                f"node simulator {node_simulator!r} is unknown; known: {', '.join(NODE_SIMULATORS)}"
            )
        self.name = name
        # where pre-pulls go: the P2P agents' prewarm jobs (None: the platform has none here)
        self._prewarms = prewarms
        self._creds = parse_kubeconfig(kubeconfig)  # refuses a broken kubeconfig at once
        self._config = yaml.safe_load(kubeconfig)
        self._resync_s = resync_s
        self._node_simulator = node_simulator
        self._ssl: ssl.SSLContext | None = None
        # pod uid -> (when, message) of the kubelet's last FailedMount for it
        self._mount_failures: collections.OrderedDict[str, tuple[dt.datetime, str]] = (
            collections.OrderedDict()
        )
        self._cpu = usage.CpuRates()
        self._api_metrics = ApiServerMetrics()
        self._loop: ClusterLoop | None = None
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._pods: Informer | None = None
        # who hears of every change to one of Gaia's pods (``watch_changes``)
        self._listeners: list[Callable[[ChangeOf], None]] = []
        # per node, what placement reads of it (``_node_mark``): a change to it is heard too
        self._node_marks: dict[str, tuple[Any, ...]] = {}
        self._nodes: Informer | None = None
        self._events: Informer | None = None
        # the port's values made from the caches, made again only for objects that changed
        self._derived_instances: Derived[Instance] = Derived()
        self._derived_nodes: Derived[Node] = Derived()
        self._event_log: collections.deque[ClusterEvent] = collections.deque(maxlen=EVENTS_KEPT)
        self._event_seq = 0
        self._events_seen: collections.OrderedDict[tuple[str, str], None] = (
            collections.OrderedDict()
        )
        self._namespaces: set[str] = set()
        self._pull_secrets: dict[str, str] = {}  # namespace -> digest of the applied secret
        self._recorder: ScheduledRecorder | None = None
        # the caches' transforms (``kept``); a benchmark turns them off to measure what they save
        self.keep_everything = False

    # ------------------------------------------------------------ plumbing

    def _cluster_loop(self) -> ClusterLoop:
        if self._loop is None:
            self._loop = ClusterLoop(self.name)
        return self._loop

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await self._cluster_loop().call(coro)
        except (httpx.HTTPError, httpx2.HTTPError) as exc:
            # lightkube's client is httpx2, the raw one httpx: both mean the cluster did not
            # answer as it should
            raise ConnectionError(f"cluster {self.name}: {type(exc).__name__}: {exc}") from None

    def _kube(self) -> AsyncClient:
        """The lightkube client (on the cluster loop)."""
        if self._client is None:
            transport = httpx2.AsyncHTTPTransport(
                verify=ssl_context(self._creds),  # the same trust and client certificate
                trust_env=False,
                limits=httpx2.Limits(
                    max_connections=100,  # httpx's default
                    max_keepalive_connections=KEPT_CONNECTIONS,
                    keepalive_expiry=KEEPALIVE_S,
                ),
            )
            self._client = AsyncClient(
                KubeConfig.from_dict(self._config),
                field_manager="gaia",
                trust_env=False,
                transport=transport,
            )
        return self._client

    def _raw(self) -> httpx.AsyncClient:
        """A plain HTTP client for what lightkube does not cover (readyz, binding)."""
        if self._http is None:
            headers = {"Accept": "application/json"}
            if self._creds.token:
                headers["Authorization"] = f"Bearer {self._creds.token}"
            self._http = httpx.AsyncClient(
                base_url=self._creds.server,
                headers=headers,
                verify=ssl_context(self._creds),
                trust_env=False,
                timeout=30.0,
            )
        return self._http

    def watch_changes(self, listener: Callable[[ChangeOf], None]) -> None:
        """Call ``listener((namespace, app))`` (on this cluster's loop thread) whenever the pod
        watch reports a change to one of Gaia's pods of that app, and ``listener(None)`` for a
        node change placement reads (``_node_changed``); quick and thread-safe (a loop's
        ``wake``). Heard once the caches run (the first port call starts them)."""
        self._listeners.append(listener)

    def _pod_changed(self, op: str, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            return
        app = labels.get(APP_LABEL)
        # a pod of Gaia's without its app's label is nobody's to look at alone: look at all
        of: ChangeOf = (str(meta.get("namespace", "")), str(app)) if app else None
        for listener in self._listeners:
            listener(of)

    def _node_changed(self, op: str, doc: dict[str, Any]) -> None:
        """A node added, cordoned or opened, turned Ready or not, resized or retainted may let
        an instance that waits for room be placed: tell the listeners. A heartbeat (the
        conditions' times) changes none of that and tells nobody, or 1,000 nodes would wake
        the controller every few seconds."""
        name = str((doc.get("metadata") or {}).get("name", ""))
        if op == "DELETED":
            self._node_marks.pop(name, None)
            return  # its pods are lost and their changes heard as such
        mark = _node_mark(doc)
        if self._node_marks.get(name) == mark:
            return
        self._node_marks[name] = mark
        for listener in self._listeners:
            listener(None)  # room for any app that waits for it

    async def _informers(self) -> tuple[Informer, Informer]:
        """Start the caches on first use and wait until they have listed once."""
        if self._pods is None or self._nodes is None or self._events is None:
            client = self._kube()
            keep_all = self.keep_everything
            self._pods = Informer(
                client,
                Pod,
                resync_s=self._resync_s,
                on_change=self._pod_changed,
                transform=None if keep_all else kept_pod,
                indexes=POD_INDEXES,
            )
            self._nodes = Informer(
                client,
                K8sNode,
                resync_s=self._resync_s,
                on_change=self._node_changed,
                transform=None if keep_all else kept_node,
            )
            self._events = Informer(
                client,
                Event,
                resync_s=self._resync_s,
                on_change=self._record_event,
                transform=None if keep_all else kept_event,
            )
            for informer in (self._pods, self._nodes, self._events):
                informer.start()
        try:
            await self._pods.wait_synced(SYNC_TIMEOUT_S)
            await self._nodes.wait_synced(SYNC_TIMEOUT_S)
        except TimeoutError:
            problem = self._pods.last_error or self._nodes.last_error or "no answer"
            raise ConnectionError(
                f"cluster {self.name}: cannot list pods and nodes ({problem})"
            ) from None
        return self._pods, self._nodes

    async def _record_event(self, op: str, doc: dict[str, Any]) -> None:
        if op not in ("ADDED", "MODIFIED"):
            return
        meta = doc.get("metadata") or {}
        version = (str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))
        if version in self._events_seen:
            return
        if is_batch_event(doc):
            return  # its placements are in the log already, one by one (_scheduled)
        self._events_seen[version] = None
        while len(self._events_seen) > EVENTS_KEPT:
            self._events_seen.popitem(last=False)
        self._event_seq += 1
        event = event_from_k8s(doc, self._event_seq)
        self._event_log.append(event)
        if event.reason == "FailedMount" and event.object_kind == "Instance":
            uid = str(((doc.get("involvedObject") or doc.get("regarding") or {}).get("uid")) or "")
            if uid:
                self._mount_failures[uid] = (event.at, event.message)
                self._mount_failures.move_to_end(uid)
                while len(self._mount_failures) > MOUNT_FAILURES_KEPT:
                    self._mount_failures.popitem(last=False)

    # ------------------------------------------------------------ health

    async def check_health(self, *, timeout: float) -> ClusterHealth:
        try:
            return await asyncio.wait_for(self._on_loop(self._readyz(timeout)), timeout + 1)
        except TimeoutError:
            return ClusterHealth(HealthState.UNREACHABLE, f"no answer within {timeout:g}s")

    async def _readyz(self, timeout: float) -> ClusterHealth:
        try:
            response = await self._raw().get("/readyz", timeout=timeout)
        except ssl.SSLError as exc:
            return ClusterHealth(HealthState.UNREACHABLE, f"TLS failure: {exc.reason}")
        except httpx.TimeoutException:
            return ClusterHealth(HealthState.UNREACHABLE, f"no answer within {timeout:g}s")
        except httpx.HTTPError as exc:
            return ClusterHealth(HealthState.UNREACHABLE, type(exc).__name__)
        if response.status_code == 200:
            return ClusterHealth(HealthState.HEALTHY, "API server ready")
        if response.status_code in (401, 403):
            return ClusterHealth(
                HealthState.UNHEALTHY,
                f"API server refused the credentials ({response.status_code})",
            )
        return ClusterHealth(
            HealthState.UNHEALTHY, f"API server not ready (HTTP {response.status_code})"
        )

    # ------------------------------------------------------------ pre-pull

    async def prewarm_image(
        self, *, namespace: str, owner: str, image: str, nodes: Collection[str]
    ) -> None:
        """``ImagePrewarmer``: the cluster has no pull without a pod, so the wish goes to the
        P2P agents' prewarm jobs (``PrewarmSink``), keyed ``<namespace>/<owner>``; without a
        sink (no P2P wiring) or agents, nothing happens and instances pull in their turn.
        Not on the cluster's loop: the sink belongs to the platform's (the caller's) loop."""
        if self._prewarms is None:
            return
        self._prewarms.declare_prewarm(owner=f"{namespace}/{owner}", image=image, nodes=nodes)

    # ------------------------------------------------------------ token review

    async def review_token(self, token: str, *, audience: str) -> ReviewedToken:
        """``POST /apis/authentication.k8s.io/v1/tokenreviews`` with ``spec.audiences``: the
        API server checks the signature, expiry, audience and that the bound pod still exists
        (same uid). Gaia's credentials need ``create tokenreviews`` (``system:auth-delegator``)."""
        return await self._on_loop(self._review_token(token, audience))

    async def _review_token(self, token: str, audience: str) -> ReviewedToken:
        response = await self._raw().post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [audience]},
            },
        )
        if response.status_code >= 300:
            # Gaia's own credentials were refused, or the server failed: no answer about the
            # agent's token, so the agent is told the coordinator is unavailable, not refused
            raise ConnectionError(
                f"cluster {self.name}: TokenReview answered {response.status_code}: "
                f"{_message(response)}"
            )
        status = response.json().get("status") or {}
        user = status.get("user") or {}
        extra = {
            str(k): tuple(str(v) for v in (vs or ())) for k, vs in (user.get("extra") or {}).items()
        }
        review = ReviewedToken(
            authenticated=bool(status.get("authenticated")),
            username=str(user.get("username") or ""),
            audiences=tuple(str(a) for a in status.get("audiences") or ()),
            extra=extra,
            node=(extra.get(NODE_NAME_KEY) or ("",))[0],
            error=str(status.get("error") or ""),
        )
        if review.authenticated and not review.node:
            review = dataclasses.replace(review, node=await self._bound_pod_node(review))
        return review

    async def _bound_pod_node(self, review: ReviewedToken) -> str:
        """An API server before 1.30 puts no node in the review: the node of the bound pod,
        read from the pod itself while its uid is the one the token is bound to."""
        name, uid = (
            review.extra.get(POD_NAME_KEY, ("",))[0],
            review.extra.get(POD_UID_KEY, ("",))[0],
        )
        namespace = review.username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")[0]
        if not (name and uid and namespace):
            return ""
        response = await self._raw().get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if response.status_code != 200:
            return ""
        pod = response.json()
        if (pod.get("metadata") or {}).get("uid") != uid:
            return ""
        return str((pod.get("spec") or {}).get("nodeName") or "")

    async def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shut() -> None:
            if self._recorder is not None:
                await self._recorder.close()
            for informer in (self._pods, self._nodes, self._events):
                if informer is not None:
                    await informer.stop()
            if self._client is not None:
                await self._client.close()
            if self._http is not None:
                await self._http.aclose()

        try:
            await loop.call(shut())
        finally:
            self._pods = self._nodes = self._events = None
            self._derived_instances, self._derived_nodes = Derived(), Derived()
            self._client, self._http, self._recorder = None, None, None
            await asyncio.to_thread(loop.stop)

    # ------------------------------------------------------------ nodes

    async def list_nodes(self) -> list[Node]:
        return await self._on_loop(self._list_nodes())

    async def _list_nodes(self) -> list[Node]:
        pods, nodes = await self._informers()
        found = []
        for key, doc in sorted(nodes.items.items()):
            bound = pods.indexed("node", key[1])
            found.append(
                self._derived_nodes.get(
                    key, (doc, *bound), functools.partial(node_from_k8s, doc, bound)
                )
            )
        self._derived_nodes.keep_only(nodes.items.keys())
        return found

    async def _node(self, name: str) -> Node:
        """One node, counting only the pods bound to it (not every node of the cluster: this
        runs before each pod is created)."""
        pods, nodes = await self._informers()
        doc = nodes.items.get(("", name))
        if doc is None:
            raise NotFound(f"node {name} not found in cluster {self.name}")
        return node_from_k8s(doc, pods.indexed("node", name))

    async def add_node(self, spec: NodeSpec) -> Node:
        if self._node_simulator is None:
            raise Unsupported(
                "nodes join a real Kubernetes cluster by themselves (kubelet registration); the "
                "platform adds nodes only to clusters whose nodes KWOK simulates"
            )
        return await self._on_loop(self._add_node(spec))

    async def _add_node(self, spec: NodeSpec, timeout_s: float = 30.0) -> Node:
        _, nodes = await self._informers()
        if not isinstance(spec.gpus, int) or not 0 <= spec.gpus <= 64:
            raise InvalidRequest("node gpus must be an integer from 0 to 64")
        if spec.gpu_links:
            links = normalize_matrix(spec.gpu_links, spec.gpus, field="gpu_links")
        else:
            links = preset("pcie-2socket", spec.gpus)
        manifest = kwok_node_manifest(spec, links)
        if ("", spec.name) in nodes.items:
            raise Conflict(f"node {spec.name} already exists in cluster {self.name}")
        try:
            created = await self._kube().create(cast(K8sNode, K8sNode.from_dict(manifest)))
        except ApiError as exc:
            raise _translate(exc, f"node {spec.name}") from None
        nodes.remember(created.to_dict())
        # KWOK takes the node over and reports it Ready within a second or two
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            node = await self._node(spec.name)
            if node.ready or loop.time() > deadline:
                return node
            await asyncio.sleep(0.1)

    async def set_schedulable(self, name: str, schedulable: bool) -> Node:
        return await self._on_loop(self._set_schedulable(name, schedulable))

    async def _set_schedulable(self, name: str, schedulable: bool) -> Node:
        _, nodes = await self._informers()
        try:
            patched = await self._kube().patch(
                K8sNode, name, {"spec": {"unschedulable": not schedulable}}
            )
        except ApiError as exc:
            raise _translate(exc, f"node {name}") from None
        nodes.remember(patched.to_dict())
        return await self._node(name)

    async def drain(self, name: str) -> list[str]:
        return await self._on_loop(self._drain(name))

    async def _drain(self, name: str) -> list[str]:
        await self._set_schedulable(name, False)
        pods, _ = await self._informers()
        evicted = []
        for pod in sorted(pods.indexed("node", name), key=lambda p: p["metadata"]["name"]):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            namespace, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            await self._delete_pod(namespace, pod_name)
            evicted.append(pod_name)
        return sorted(evicted)

    async def remove_node(self, name: str) -> None:
        await self._on_loop(self._remove_node(name))

    async def _remove_node(self, name: str) -> None:
        pods, nodes = await self._informers()
        bound = [
            str(pod["metadata"]["name"])
            for pod in pods.indexed("node", name)
            if ((pod.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        ]
        if bound:
            raise Conflict(
                f"node {name} still runs {len(bound)} instance(s) ({', '.join(sorted(bound)[:5])}"
                f"{', ...' if len(bound) > 5 else ''}); drain it first"
            )
        try:
            await self._kube().delete(K8sNode, name)
        except ApiError as exc:
            raise _translate(exc, f"node {name}") from None
        nodes.forget("", name)

    # ------------------------------------------------------------ instances

    async def list_instances(
        self,
        *,
        namespace: str | None = None,
        app: str | None = None,
        ids: Collection[int] | None = None,
    ) -> list[Instance]:
        wanted = None if ids is None else frozenset(ids)
        return await self._on_loop(self._list_instances(namespace, app, wanted))

    async def instance_ids(self, *, namespace: str, app: str) -> set[int]:
        return await self._on_loop(self._instance_ids(namespace, app))

    async def instance_states(self, *, namespace: str, app: str) -> dict[int, InstanceState]:
        return await self._on_loop(self._instance_states(namespace, app))

    async def _app_pods(self, namespace: str | None, app: str | None) -> list[dict[str, Any]]:
        pods, _ = await self._informers()
        if namespace is not None and app is not None:
            # one app's (a partial pass, a gray upgrade's step): its own pods, from the index
            mine = pods.indexed("app", _app_key(namespace, app))
            return sorted(mine, key=key_of)
        found = []
        for (ns, _name), pod in sorted(pods.items.items()):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            if APP_LABEL not in labels:
                continue
            if namespace is not None and ns != namespace:
                continue
            if app is not None and labels.get(APP_LABEL) != app:
                continue
            found.append(pod)
        return found

    async def _list_instances(
        self, namespace: str | None, app: str | None, ids: frozenset[int] | None
    ) -> list[Instance]:
        pods = await self._app_pods(namespace, app)
        found = [
            self._refined(pod, self._instance(pod))
            for pod in pods
            if ids is None or instance_id_of(pod) in ids
        ]
        if namespace is None and app is None and ids is None:
            self._derived_instances.keep_only({key_of(pod) for pod in pods})
        return found

    def _instance(self, pod: dict[str, Any]) -> Instance:
        """``instance_from_pod``, done again only when the cached pod changed (``Derived``)."""
        return self._derived_instances.get(
            key_of(pod), (pod,), functools.partial(instance_from_pod, pod)
        )

    async def _instance_ids(self, namespace: str, app: str) -> set[int]:
        found = set()
        for pod in await self._app_pods(namespace, app):
            iid = instance_id_of(pod)
            # a pod whose id cannot be read fails as the whole list would (instance_from_pod)
            found.add(iid if iid is not None else instance_from_pod(pod).instance_id)
        return found

    async def _instance_states(self, namespace: str, app: str) -> dict[int, InstanceState]:
        # the pod's phase needs the same reading (and refinement) as its view; the informer's
        # cache answers, so this costs no request to the cluster
        found = {}
        for pod in await self._app_pods(namespace, app):
            inst = self._refined(pod, self._instance(pod))
            found[inst.instance_id] = InstanceState(
                phase=inst.phase, node=inst.node, version=inst.version, ready=inst.ready
            )
        return found

    def _refined(self, pod: dict[str, Any], inst: Instance) -> Instance:
        """What the pod alone cannot say: a pod waiting for a volume whose ConfigMap or Secret
        is missing looks like any pod being created; the kubelet's ``FailedMount`` events say
        it cannot start."""
        if inst.phase not in (InstancePhase.SCHEDULED, InstancePhase.CREATED) or not inst.node:
            return inst
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        failed = self._mount_failures.get(uid)
        if failed is None:
            return inst
        at, message = failed
        return dataclasses.replace(
            inst,
            phase=InstancePhase.FAILED,
            ready=False,
            last_failure=Failure(FailureCause.CONFIG, at, message),
        )

    async def _ensure_namespace(self, namespace: str) -> None:
        if namespace in self._namespaces:
            return
        await self._require_managed(Namespace, None, namespace, f"namespace {namespace}")
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            },
        }
        try:
            await self._kube().apply(cast(Namespace, Namespace.from_dict(body)), force=True)
        except ApiError as exc:
            raise _translate(exc, f"namespace {namespace}") from None
        self._namespaces.add(namespace)

    async def _ensure_pull_secret(self, namespace: str, secret: PullSecret) -> None:
        """The platform registry's pull secret in ``namespace``, applied when it changed (by
        this process's knowledge: once per namespace and credentials)."""
        manifest = pull_secret_manifest(namespace, secret)
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        if self._pull_secrets.get(namespace) == digest:
            return
        try:
            await self._kube().apply(cast(Secret, Secret.from_dict(manifest)), force=True)
        except ApiError as exc:
            raise _translate(exc, f"the registry pull secret of {namespace}") from None
        self._pull_secrets[namespace] = digest

    async def create_instance(self, spec: InstanceSpec) -> Instance:
        return await self._on_loop(self._create_instance(spec))

    async def _create_instance(self, spec: InstanceSpec) -> Instance:
        pods, nodes = await self._informers()
        if ("", spec.node) not in nodes.items:
            raise InvalidRequest(f"node {spec.node} does not exist in cluster {self.name}")
        if (spec.namespace, spec.name) in pods.items:
            raise Conflict(f"instance {spec.namespace}/{spec.name} already exists")
        _check_fits(await self._node(spec.node), spec)
        await self._ensure_namespace(spec.namespace)
        if spec.pull_secret is not None:
            await self._ensure_pull_secret(spec.namespace, spec.pull_secret)
        doc = await self._create_pod(pod_manifest(spec))
        pods.remember(doc)
        self._scheduled(doc)
        return instance_from_pod(doc)

    async def _create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST the pod, already bound; the API server's answer as a dict."""
        meta = manifest["metadata"]
        what = f"instance {meta['namespace']}/{meta['name']}"
        try:
            created = await self._kube().create(cast(Pod, Pod.from_dict(manifest)))
        except ApiError as exc:
            raise _translate(exc, what) from None
        return cast(dict[str, Any], created.to_dict())

    def _scheduled(self, pod: dict[str, Any]) -> None:
        """The platform is this pod's scheduler: it says so as kube-scheduler would, in its own
        event log at once (what the platform reads) and to the cluster in the app's next batch
        Event (``recorder``)."""
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        self._event_seq += 1
        self._event_log.append(
            ClusterEvent(
                seq=self._event_seq,
                at=dt.datetime.now(dt.UTC),
                namespace=namespace,
                object_kind="Instance",
                object_name=name,
                reason="Scheduled",
                message=f"Successfully assigned {namespace}/{name} to {node}",
            )
        )
        if self._recorder is None:
            self._recorder = ScheduledRecorder(
                post=self._post_event, reporting_instance=f"gaia-{self.name}"
            )
        app = ((meta.get("labels") or {}).get(APP_LABEL)) or name
        self._recorder.note(namespace=namespace, app=app, pod=name, node=node)

    async def _post_event(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            response = await self._raw().post(
                f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", json=body
            )
        except httpx.HTTPError as exc:
            log.warning("could not record the %s event: %s", body.get("reason"), exc)
            return
        if response.status_code >= 300:
            log.warning(
                "could not record the %s event: HTTP %s: %s",
                body.get("reason"),
                response.status_code,
                _message(response),
            )

    async def replace_image(
        self, *, namespace: str, name: str, image: str, version: str
    ) -> Instance:
        return await self._on_loop(self._replace_image(namespace, name, image, version))

    async def _replace_image(self, namespace: str, name: str, image: str, version: str) -> Instance:
        pods, _ = await self._informers()
        current = pods.items.get((namespace, name))
        if current is None:
            raise NotFound(f"instance {namespace}/{name} not found")
        _check_managed(current, f"pod {namespace}/{name}")
        patch = image_patch(current, image=image, version=version)
        try:
            patched = await self._kube().patch(
                Pod, name, patch, namespace=namespace, patch_type=PatchType.STRATEGIC
            )
        except ApiError as exc:
            raise _translate(exc, f"instance {namespace}/{name}") from None
        doc = patched.to_dict()
        pods.remember(doc)
        return instance_from_pod(doc)

    async def restart_instance(self, *, namespace: str, name: str) -> Instance:
        return await self._on_loop(self._restart_instance(namespace, name))

    async def _restart_instance(self, namespace: str, name: str) -> Instance:
        pods, _ = await self._informers()
        current = pods.items.get((namespace, name))
        if current is None:
            raise NotFound(f"instance {namespace}/{name} not found")
        _check_managed(current, f"pod {namespace}/{name}")
        so_far = instance_from_pod(current).restarts
        grace = (current.get("spec") or {}).get("terminationGracePeriodSeconds")
        # a graceful delete: the kubelet removes the pod only once its sandbox is gone, so the
        # new pod can take the same IP (where the CNI keeps it per instance, as Gaia's does)
        await self._delete_pod(namespace, name)
        await self._wait_gone(namespace, name, timeout_s=(grace if grace is not None else 30) + 60)
        doc = await self._create_pod(recreate_manifest(current, restarts=so_far + 1))
        pods.remember(doc)
        self._scheduled(doc)
        return instance_from_pod(doc)

    async def _wait_gone(self, namespace: str, name: str, timeout_s: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                await self._kube().get(Pod, name, namespace=namespace)
            except ApiError as exc:
                if exc.status.code == 404:
                    return
                raise _translate(exc, f"instance {namespace}/{name}") from None
            await asyncio.sleep(0.2)
        raise Conflict(f"instance {namespace}/{name} is still terminating after {timeout_s:g}s")

    async def delete_instance(self, *, namespace: str, name: str) -> None:
        await self._on_loop(self._delete_pod(namespace, name))

    async def _delete_pod(self, namespace: str, name: str, grace_s: int | None = None) -> None:
        pods, _ = await self._informers()
        cached = pods.items.get((namespace, name))
        if cached is not None:
            _check_managed(cached, f"pod {namespace}/{name}")
        elif await self._require_managed(Pod, namespace, name, f"pod {namespace}/{name}") is None:
            return
        try:
            await self._kube().delete(Pod, name, namespace=namespace, grace_period=grace_s)
        except ApiError as exc:
            if exc.status.code != 404:
                raise _translate(exc, f"instance {namespace}/{name}") from None
        if cached is not None and not (cached.get("spec") or {}).get("nodeName"):
            # the API server removes a pod that no node holds at once (no kubelet has to
            # confirm it stopped), so the name is free now; the cache says so before the watch
            # does, or creating the instance again in the same pass would look like a conflict
            pods.forget(namespace, name)

    # ------------------------------------------------------------ services

    async def apply_service(self, spec: ServiceSpec) -> Service:
        return await self._on_loop(self._apply_service(spec))

    async def _apply_service(self, spec: ServiceSpec) -> Service:
        await self._ensure_namespace(spec.namespace)
        manifest = service_manifest(spec)
        what = f"service {spec.namespace}/{spec.name}"
        current = await self._require_managed(K8sService, spec.namespace, spec.name, what)
        if current is not None and service_needs_replace(current, manifest):
            await self._delete(K8sService, spec.namespace, spec.name)
        try:
            await self._kube().apply(cast(K8sService, K8sService.from_dict(manifest)), force=True)
        except ApiError as exc:
            raise _translate(exc, f"service {spec.namespace}/{spec.name}") from None
        return await self._get_service(spec.namespace, spec.name)

    async def get_service(self, *, namespace: str, name: str) -> Service:
        return await self._on_loop(self._get_service(namespace, name))

    async def _get_service(self, namespace: str, name: str) -> Service:
        try:
            service = await self._kube().get(K8sService, name, namespace=namespace)
        except ApiError as exc:
            raise _translate(exc, f"service {namespace}/{name}") from None
        slices = [
            s.to_dict()
            async for s in self._kube().list(
                EndpointSlice,
                namespace=namespace,
                labels={"kubernetes.io/service-name": name},
            )
        ]
        return service_from_k8s(service.to_dict(), slices)

    async def delete_service(self, *, namespace: str, name: str) -> None:
        await self._on_loop(self._delete(K8sService, namespace, name))

    async def _delete(self, resource: Any, namespace: str, name: str) -> None:
        what = f"{resource.__name__} {namespace}/{name}"
        if await self._require_managed(resource, namespace, name, what) is None:
            return
        try:
            await self._kube().delete(resource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise _translate(exc, what) from None

    async def _require_managed(
        self, resource: Any, namespace: str | None, name: str, what: str
    ) -> dict[str, Any] | None:
        """The object as the API server has it now (``None``: there is none), checked to be
        Gaia's before it is force-applied, patched or deleted: ``NotManaged`` otherwise."""
        try:
            if namespace is None:
                found = await self._kube().get(resource, name)
            else:
                found = await self._kube().get(resource, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _translate(exc, what) from None
        doc = cast(dict[str, Any], cast(Any, found).to_dict())
        _check_managed(doc, what)
        return doc

    # ------------------------------------------------------------ configs

    async def apply_config(self, config: ConfigData) -> None:
        await self._on_loop(self._apply_config(config))

    async def _apply_config(self, config: ConfigData) -> None:
        await self._ensure_namespace(config.namespace)
        manifest = config_manifest(config)
        resource = Secret if config.secret else ConfigMap
        what = f"config {config.namespace}/{config.name}"
        await self._require_managed(resource, config.namespace, config.name, what)
        try:
            await self._kube().apply(cast(Any, resource).from_dict(manifest), force=True)
        except ApiError as exc:
            raise _translate(exc, f"config {config.namespace}/{config.name}") from None

    async def delete_config(self, *, namespace: str, name: str, secret: bool) -> None:
        await self._on_loop(self._delete(Secret if secret else ConfigMap, namespace, name))

    async def list_configs(self, *, namespace: str) -> list[ConfigData]:
        return await self._on_loop(self._list_configs(namespace))

    async def _list_configs(self, namespace: str) -> list[ConfigData]:
        labels: dict[str, Any] = {MANAGED_BY_LABEL: MANAGED_BY}
        found: list[ConfigData] = []
        for resource in (ConfigMap, Secret):
            async for obj in self._kube().list(resource, namespace=namespace, labels=labels):
                doc = cast(Any, obj).to_dict()
                found.append(config_from_k8s(doc, secret=resource is Secret))
        return sorted(found, key=lambda c: (c.secret, c.name))

    # ------------------------------------------------------------ quotas

    async def apply_quota(self, *, namespace: str, hard: ResourceVector) -> None:
        await self._on_loop(self._apply_quota(namespace, hard))

    async def _apply_quota(self, namespace: str, hard: ResourceVector) -> None:
        await self._ensure_namespace(namespace)
        manifest = quota_manifest(namespace, hard)
        await self._require_managed(ResourceQuota, namespace, QUOTA_NAME, f"quota of {namespace}")
        try:
            await self._kube().apply(
                cast(ResourceQuota, ResourceQuota.from_dict(manifest)), force=True
            )
        except ApiError as exc:
            raise _translate(exc, f"quota of {namespace}") from None

    async def get_quota(self, *, namespace: str) -> ResourceVector | None:
        return await self._on_loop(self._get_quota(namespace))

    async def _get_quota(self, namespace: str) -> ResourceVector | None:
        try:
            quota = await self._kube().get(ResourceQuota, QUOTA_NAME, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _translate(exc, f"quota of {namespace}") from None
        return quota_from_k8s(quota.to_dict())

    # ------------------------------------------------------------ observation

    async def events(self, *, since: int = 0, limit: int = 1000) -> list[ClusterEvent]:
        return await self._on_loop(self._events_since(since, limit))

    async def _events_since(self, since: int, limit: int) -> list[ClusterEvent]:
        await self._informers()
        return [e for e in self._event_log if e.seq > since][:limit]

    async def metrics(
        self, *, namespace: str | None = None, names: Iterable[str] | None = None
    ) -> list[MetricSample]:
        wanted = None if names is None else set(names)
        return await self._on_loop(self._metrics(namespace, wanted))

    async def _metrics(self, namespace: str | None, names: set[str] | None) -> list[MetricSample]:
        """Each node's kubelet ``/metrics/resource`` through the API server's node proxy
        (``usage``); nodes that do not answer (KWOK's, a kubelet that is down) are left out."""
        pods, nodes = await self._informers()
        filtered = namespace is not None or names is not None
        instances: dict[tuple[str, str], str] = {}  # (namespace, pod) -> node
        for (ns, pod_name), pod in pods.items.items():
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            if namespace is not None and ns != namespace:
                continue
            if names is not None and pod_name not in names:
                continue
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                instances[(ns, pod_name)] = node_name
        if filtered:
            targets = sorted(set(instances.values()))
        else:
            targets = [name for (_, name), doc in sorted(nodes.items.items()) if _kubelet(doc)]
        gate = asyncio.Semaphore(METRICS_CONCURRENCY)

        async def read(node_name: str) -> tuple[str, usage.NodeUsage | None]:
            async with gate:
                return node_name, await self._node_usage(node_name)

        readings = await asyncio.gather(*(read(n) for n in targets))
        samples: list[MetricSample] = []
        for node_name, reading in readings:
            if reading is None:
                continue
            if not filtered and not math.isnan(reading.memory_bytes):
                samples.append(
                    MetricSample(
                        target=node_name,
                        kind="node",
                        at=_when(reading.at_s),
                        cpu_milli=self._cpu.millicores(
                            ("node", node_name), reading.cpu_seconds, reading.at_s, since_s=math.nan
                        ),
                        memory_mib=reading.memory_bytes / 2**20,
                    )
                )
            for (ns, pod_name, container), used in sorted(reading.containers.items()):
                if container != CONTAINER_NAME or instances.get((ns, pod_name)) != node_name:
                    continue
                samples.append(
                    MetricSample(
                        target=pod_name,
                        kind="instance",
                        at=_when(used.at_s),
                        cpu_milli=self._cpu.millicores(
                            ("pod", ns, pod_name),
                            used.cpu_seconds,
                            used.at_s,
                            since_s=used.started_s,
                        ),
                        memory_mib=0.0
                        if math.isnan(used.memory_bytes)
                        else used.memory_bytes / 2**20,
                        namespace=ns,
                    )
                )
        return samples

    async def _node_usage(self, node_name: str) -> usage.NodeUsage | None:
        try:
            response = await self._raw().get(
                f"/api/v1/nodes/{node_name}/proxy/metrics/resource",
                headers={"Accept": "text/plain"},
                timeout=METRICS_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            log.debug("no metrics from node %s: %s", node_name, type(exc).__name__)
            return None
        if response.status_code != 200:
            log.debug("no metrics from node %s: HTTP %s", node_name, response.status_code)
            return None
        return usage.node_usage(response.text, now_s=time.time())

    async def control_plane_metrics(self) -> list[ControlPlaneSample]:
        return await self._on_loop(self._control_plane_metrics())

    async def _control_plane_metrics(self) -> list[ControlPlaneSample]:
        """The API server's own ``/metrics`` and its etcd readiness check (``control_plane``)."""
        raw = self._raw()
        response = await raw.get(
            "/metrics", headers={"Accept": "text/plain"}, timeout=METRICS_TIMEOUT_S
        )
        if response.status_code in (401, 403):
            raise ConnectionError(
                f"cluster {self.name}: the API server refused /metrics "
                f"({response.status_code}); grant the platform's credentials 'get' on the "
                "non-resource URL /metrics (ClusterRole system:monitoring has it)"
            )
        if response.status_code != 200:
            raise ConnectionError(
                f"cluster {self.name}: the API server answered /metrics with "
                f"HTTP {response.status_code}"
            )
        etcd = await raw.get("/readyz/etcd", timeout=METRICS_TIMEOUT_S)
        return self._api_metrics.samples(
            response.text, now_s=time.time(), etcd_ready=etcd.status_code == 200
        )

    async def logs(
        self,
        *,
        namespace: str,
        name: str,
        tail: int = 100,
        since: dt.datetime | None = None,
    ) -> list[LogLine]:
        return await self._on_loop(self._logs(namespace, name, tail, since))

    async def _logs(
        self, namespace: str, name: str, tail: int, since: dt.datetime | None = None
    ) -> list[LogLine]:
        params: dict[str, str | int] = {
            "container": "main",
            "tailLines": tail,
            "timestamps": "true",
        }
        if since is not None:
            if since.tzinfo is None:
                raise InvalidRequest("since must carry a timezone")
            # sinceTime has whole seconds: ask from the second ``since`` falls in, then drop
            # what is earlier than ``since`` itself (it is inclusive, as the sim's)
            params["sinceTime"] = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        response = await self._raw().get(
            f"/api/v1/namespaces/{namespace}/pods/{name}/log", params=params
        )
        if response.status_code == 404:
            raise NotFound(f"instance {namespace}/{name} not found")
        if response.status_code >= 300:
            raise Unsupported(
                f"the node does not serve logs for {namespace}/{name} "
                f"(HTTP {response.status_code}: {_message(response)})"
            )
        return _log_lines(response.text, since=since)

    async def exec(
        self, *, namespace: str, name: str, command: Iterable[str], timeout: float = 10.0
    ) -> ExecResult:
        return await self._on_loop(self._exec(namespace, name, list(command), timeout))

    async def _exec(
        self, namespace: str, name: str, command: list[str], timeout: float
    ) -> ExecResult:
        pods, _ = await self._informers()
        if (namespace, name) not in pods.items:
            raise NotFound(f"instance {namespace}/{name} not found")
        url = streams.exec_url(self._creds.server, namespace, name, CONTAINER_NAME, command)
        if self._ssl is None:
            context = ssl_context(self._creds)
            self._ssl = context if isinstance(context, ssl.SSLContext) else None
        headers = {"Authorization": f"Bearer {self._creds.token}"} if self._creds.token else {}
        return await streams.run_exec(url, ssl_context=self._ssl, headers=headers, timeout=timeout)


def _check_fits(node: Node, spec: InstanceSpec) -> None:
    """What kubelet admission would refuse, refused before the pod exists: a node that is not
    ready or cordoned, resources beyond what is free, GPU cards it lacks or that are taken."""
    if not node.ready:
        raise InvalidRequest(f"node {node.name} is not ready")
    if not node.schedulable:
        raise InvalidRequest(f"node {node.name} is cordoned")
    need, free = spec.resources, node.free
    for dim in ("cpu", "memory", "local_disk", "gpu", "gpu_memory"):
        if getattr(need, dim) > getattr(free, dim):
            raise InvalidRequest(
                f"node {node.name} has {getattr(free, dim)} {dim} free; "
                f"{spec.name} needs {getattr(need, dim)}"
            )
    cards = {g.index for g in node.gpus}
    share = need.gpu // max(1, len(spec.gpu_ids)) if spec.gpu_ids else 0
    for card in spec.gpu_ids:
        if card not in cards:
            raise InvalidRequest(f"node {node.name} has no GPU {card}")
        if node.gpu_used.get(card, 0) + share > 100:
            raise InvalidRequest(f"GPU {card} of node {node.name} cannot take {share} more")
    if need.gpu and not spec.gpu_ids:
        raise InvalidRequest(f"{spec.name} asks for GPUs but names no cards")


def _node_mark(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What placement reads of a node, without the times that change at every heartbeat."""
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    ready = next(
        (c.get("status") for c in status.get("conditions") or () if c.get("type") == "Ready"),
        None,
    )
    taints = tuple(
        sorted((t.get("key"), t.get("value"), t.get("effect")) for t in spec.get("taints") or ())
    )
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return (
        bool(spec.get("unschedulable")),
        ready,
        tuple(sorted((status.get("allocatable") or {}).items())),
        taints,
        tuple(sorted(labels.items())),
    )


def _node_of(pod: dict[str, Any]) -> str | None:
    """The pods informer's index: the node a pod is bound to."""
    return (pod.get("spec") or {}).get("nodeName") or None


def _app_key(namespace: str, app: str) -> str:
    return f"{namespace}/{app}"  # neither holds a "/" (DNS labels)


def _app_of(pod: dict[str, Any]) -> str | None:
    """The pods informer's index: the Gaia app a pod is an instance of (None for a pod Gaia
    does not manage)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    app = labels.get(APP_LABEL)
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not app:
        return None
    return _app_key(str(meta.get("namespace") or ""), str(app))


# the pods informer's indexes (bench/kube_scale.py measures the cache with them)
POD_INDEXES = {"node": _node_of, "app": _app_of}


def _kubelet(node: dict[str, Any]) -> bool:
    """Whether a node says it has a kubelet server to ask (KWOK's nodes say port 0 or none)."""
    endpoints = (node.get("status") or {}).get("daemonEndpoints") or {}
    port = (endpoints.get("kubeletEndpoint") or {}).get("Port") or 0
    return isinstance(port, int) and port > 0


def _when(at_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_s if not math.isnan(at_s) else time.time(), dt.UTC)


def _log_lines(text: str, *, since: dt.datetime | None = None) -> list[LogLine]:
    """``timestamps=true`` log text: each line starts with an RFC 3339 time (nanoseconds, cut to
    microseconds) and a space. With ``since``, lines earlier than it are dropped."""
    lines = []
    for raw in text.splitlines():
        stamp, _, rest = raw.partition(" ")
        try:
            at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            at, rest = dt.datetime.now(dt.UTC), raw
        if since is not None and at < since:
            continue
        lines.append(LogLine(at=at, text=rest))
    return lines


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:300]
    except ValueError:
        return response.text[:300]


def _check_managed(doc: dict[str, Any], what: str) -> None:
    """``NotManaged`` unless ``doc`` carries Gaia's managed-by label."""
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        raise NotManaged(
            f"{what} exists in the cluster but was not created by Gaia (it has no "
            f"{MANAGED_BY_LABEL}={MANAGED_BY} label), so Gaia will not overwrite or delete it; "
            "rename what Gaia would create, or remove that object in the cluster yourself"
        )


def _translate(exc: ApiError, what: str) -> Exception:
    code = exc.status.code
    message = exc.status.message or ""
    if code == 404:
        return NotFound(f"{what} not found")
    if code == 409:
        return Conflict(f"{what}: {message}")
    if code in (400, 422):
        return InvalidRequest(f"{what}: {message}")
    if code == 403 and "exceeded quota" in message:
        return Conflict(f"{what}: the namespace's ResourceQuota refuses it: {message}")
    if code in (401, 403):
        return ConnectionError(f"{what}: the cluster refused the platform's credentials ({code})")
    return ConnectionError(f"{what}: API server answered {code}: {message}")


__all__ = ["KubernetesCluster"]
