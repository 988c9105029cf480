"""Apps at scale on a real control plane: Gaia's in-place gray upgrade against a Deployment canary.

Run ``.venv/bin/python bench/kube_scale.py`` from the repository root (``--quick`` for a small
smoke run, ``--help`` for the sizes). It needs the control plane of the tests
(``scripts/build-control-plane.sh``; the script builds it when missing and prints how long that
took, and how long a cached build takes).

In one process:

1. etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK as in the tests, and
   ``--nodes`` KWOK nodes (32 CPUs, 128 GiB each),
   then waits until KWOK has finished starting them (about a minute and 10,000 requests at
   1,000 nodes: node and status patches, leases, events, a pod list per node), which it prints
   apart, so that no phase is charged with it (until 2026-12-05 the first phase, Gaia's
   create, was);
2. the platform on SQLite in a temporary folder, the cluster registered with its kubeconfig;
3. **Gaia**: an app of ``--instances`` instances, until every pod is Running and ready; then a
   gray upgrade of ``--upgrade`` of them (ids 0, 1, 2, ...) to a template that differs only in
   the image, ``--batch`` at a time, until the upgrade reports Succeeded. The app controller runs
   as the platform runs it (``ControllerLoop``: its own loop, woken by every change to one of
   Gaia's pods and by the API's writes, as kube-controller-manager's controllers are woken by
   their informers); ``--paced`` drives it as the bench did up to issue 22 instead (a pass, a
   look, 0.5 s of sleep);
4. **baseline**: the same change the usual way: a Deployment of ``--instances`` replicas
   scheduled by kube-scheduler, then a canary, i.e. the stable Deployment scaled down by
   ``--upgrade`` while a second Deployment with the new image is scaled up to ``--upgrade``
   (kube-controller-manager deletes and creates the pods), until the new pods are ready.

For each phase: wall seconds and the API requests the API server counted
(``apiserver_request_total`` from its own ``/metrics``, by verb, WATCH excluded), and how many
pods were recreated (a new UID). Gaia's upgrade keeps every pod; the canary replaces
``--upgrade`` of them. Each phase's requests are printed by verb and resource (the profile of
where they go). A phase ends when the bench sees it done (its looks are once a second on both
sides); it is counted then, before the bench's last listing of the pods.

**Who sent them** (the counting rule, since 2026-12-06). The count is of every client of the API
server, and most of a phase's requests are not the orchestrator's: the node stand-in (KWOK)
reports every container it starts or restarts, and lease renewals (KWOK's node heartbeats,
about one PUT per node every 40 s, and the API server's own identity lease) grow with the
phase's length whatever the phase does. So the API server keeps an audit log
(``ControlPlane.audit_log``: verb, resource and user agent of every request but watches, at the
Metadata level, ``/metrics`` left out as the count leaves it out), the bench tells each
request's sender by its user agent (``classify``) and prints per phase:

- **orchestrator**: the platform's own work. On Gaia's side Gaia's client (the provider's
  httpx and lightkube clients), on the baseline's kube-controller-manager and kube-scheduler;
  both columns in every phase, since the controllers also react to Gaia's pods;
- **nodes (KWOK)**: what a kubelet would write (pod status, events such as ``Killing``, node
  status), leases left out;
- **leases**: every request on a Lease, whoever sent it;
- **the bench's looks** (its own pod lists, under the user agent ``gaia-kube-bench``), and **the
  API server's own, other** (its loopback requests but leases; any agent not known, named in
  the report);
- **in the audit log**: the requests logged against the count, so that an attribution that
  misses requests shows (a request that straddles a phase's edge can land on either side).

The goal lines at the end compare Gaia with the baseline of the same run as issue 22 states its
goals: time, and the orchestrator's requests, with the ratio of all requests beside it. Why
the audit log and not each component's client metrics (``rest_client_requests_total``): it is
the only source that is exact and covers every sender with the API server's own verbs and
resources (a client's metrics count watches as GETs, have no resource, and KWOK serves none);
the bench's own count of Gaia's requests would need a hook in the provider. Its cost is a JSON
line per request written by the API server; ``--no-attribution`` runs without it.
KWOK's stages (``tools/kwok/gaia-stages.yaml``) record a ``Killing`` event both for a container
restarted in place and for a deleted pod that ran, as a kubelet does, so that the node's
requests compare like with like (until 2026-12-06 only Gaia's side had them).

The temporary folder (control plane data and logs, the audit log, the platform's database;
about 100 MB at full size, more with the audit log) is deleted at the end; ``--keep-work``
keeps it and prints its path.

``--timeline`` shows where an upgrade's time goes: the controller's passes, and from a watch of
the app's pods (``UpgradeWatch``) the node's part (an image patch to the container restarted and
ready: KWOK's latency, which the canary pays too) and the controller's part (a ready pod to the
patch that takes its slot), with the API server's own time per request.

Last, **the provider's cache memory**: with every pod of both apps still in the cluster, a fresh
process per case lists them (and then the nodes) into an informer as the provider builds it,
once keeping what the provider keeps (``gaia.providers.kubernetes.kept``: no ``managedFields``,
no node images, other tools' pods cut to what a node's allocation counts) and once whole (as
before), and reports its RSS growth (``VmRSS`` after the list minus before it) per 10,000 pods
and per 1,000 nodes, beside the JSON size of what the cache holds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import gc
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gaia.app import Platform, create_app
from gaia.clock import RealClock
from gaia.kube.labels import APP_LABEL
from gaia.security import hash_password, use_cheap_password_hashing
from gaia.settings import Settings
from gaia.store.models import User
from tests.support.kube import ControlPlane, build_control_plane, fake_node

BIZ = "/api/v1/businesses/bench"
BENCH_AGENT = "gaia-kube-bench"  # the bench's own requests, told apart in the audit log
_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


# Who sent a request: the user agent the API server's audit log records for it. Every client of
# the test control plane has the same admin certificate, so the agent is what tells them apart.
_AGENTS = (
    (BENCH_AGENT, "bench"),
    ("kube-controller-manager/", "controllers"),
    ("kube-scheduler/", "scheduler"),
    ("kwok/", "kwok"),
    ("kube-apiserver/", "apiserver"),
    # Gaia's provider: lightkube's client (httpx2) and its plain httpx one
    ("python-httpx", "gaia"),
)
ORCHESTRATOR = ("gaia", "controllers", "scheduler")  # the platform's own work, either side
_ACTOR_NAMES = {
    "gaia": "Gaia",
    "controllers": "kube-controller-manager",
    "scheduler": "kube-scheduler",
    "kwok": "nodes (KWOK)",
    "leases": "leases",
    "bench": "the bench's looks",
    "apiserver": "the API server's own",
    "other": "other",
}
# the audit log's verbs as ``apiserver_request_total`` names them (a server-side apply is a
# ``patch`` in the log and an ``APPLY`` in the count)
_VERBS = {
    "get": "GET",
    "list": "LIST",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETECOLLECTION",
}
AUDITED_VERBS = tuple(_VERBS)  # every verb but watch, as the count leaves WATCH out


def classify(event: dict[str, Any]) -> tuple[str, str]:
    """(actor, "VERB resource[/subresource]") of one audit event. Lease requests are their own
    actor whoever sent them (KWOK's node heartbeats, the API server's identity lease): they
    grow with a phase's length whatever the phase does."""
    ref = event.get("objectRef") or {}
    verb = _VERBS.get(event.get("verb", ""), str(event.get("verb", "?")).upper())
    if ref.get("resource"):
        what = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    else:
        what = "-" + str(event.get("requestURI", "")).split("?")[0]
    key = f"{verb} {what}"
    if ref.get("resource") == "leases":
        return "leases", key
    agent = str(event.get("userAgent", ""))
    for prefix, actor in _AGENTS:
        if agent.startswith(prefix):
            return actor, key
    return "other", key


MARK = "gaia-bench-mark"  # a query parameter of the bench's reads of /metrics (``RequestLog``)


class RequestLog:
    """Who sent each request: the API server's audit log (``ControlPlane.audit_log``: verb,
    resource and user agent of every request but watches, one line each), read as it grows.

    A phase's requests are cut from the log where the counter is read: each of the bench's reads
    of ``/metrics`` carries a mark (``request_counts(api, mark=...)``), and ``cut(mark)`` returns
    the requests that the API server had finished when that read arrived (the log's time of
    completion before the read's time of arrival) and were not returned by an earlier cut. The
    log is written as requests finish, so a request that finished while the read was served may
    come before its line: it is kept for the next cut. So the phase's window in the log is the
    counter's own, to the few milliseconds the counter takes to be read out; ``/metrics``
    itself is left out, as the count leaves it out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        # read, not yet cut: (finished at, actor, "VERB resource"); the mark's reads apart
        self._pending: list[tuple[str, str, str]] = []
        self._marks: dict[str, tuple[int, str]] = {}  # mark -> (place in _pending, arrived at)
        self.other_agents: collections.Counter[str] = collections.Counter()

    def _read(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line still being written is left for the next read
        self._offset += end
        for line in data[:end].splitlines():
            event = json.loads(line)
            # one line per request: ResponseComplete, or Panic for a request that failed so
            if event.get("stage") not in ("ResponseComplete", "Panic"):
                continue
            uri = str(event.get("requestURI", ""))
            if uri.startswith("/metrics"):
                if f"{MARK}=" in uri:
                    mark = uri.split(f"{MARK}=", 1)[1].split("&")[0]
                    self._marks[mark] = (len(self._pending), event["requestReceivedTimestamp"])
                continue
            actor, key = classify(event)
            self._pending.append((event["stageTimestamp"], actor, key))
            if actor == "other":
                self.other_agents[str(event.get("userAgent", ""))] += 1

    def cut(self, mark: str, timeout_s: float = 30.0) -> dict[str, dict[str, int]]:
        deadline = time.monotonic() + timeout_s
        self._read()
        while mark not in self._marks:
            if time.monotonic() > deadline:
                raise SystemExit(f"the audit log {self.path} has no read of /metrics marked {mark}")
            time.sleep(0.05)
            self._read()
        place, arrived = self._marks.pop(mark)
        out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        kept = []
        for finished, actor, key in self._pending[:place]:
            if finished < arrived:  # both RFC 3339 with microseconds, in UTC: text order is time
                out[actor][key] += 1
            else:
                kept.append((finished, actor, key))
        self._pending = kept + self._pending[place:]
        self._marks = {m: (at - place + len(kept), t) for m, (at, t) in self._marks.items()}
        return {actor: dict(keys) for actor, keys in out.items()}


@dataclass
class Phase:
    name: str
    wall_s: float
    requests: dict[str, int]  # "VERB resource[/subresource]" -> count
    recreated: int = 0
    observer: int = 0  # of those, the bench's own reads (pod lists to see when a phase is done)
    kind: str = ""  # "create", "upgrade", "deployment", "canary": what the goal lines compare
    # who sent them (``RequestLog``): actor -> "VERB resource" -> count; empty without the log
    actors: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def sent_by(self, *actors: str) -> int:
        return sum(sum(self.actors.get(actor, {}).values()) for actor in actors)

    @property
    def orchestrator(self) -> int:
        return self.sent_by(*ORCHESTRATOR)

    def by_verb(self) -> dict[str, int]:
        verbs: collections.Counter[str] = collections.Counter()
        for key, n in self.requests.items():
            verbs[key.split(" ")[0]] += n
        return dict(verbs)

    def row(self) -> str:
        verbs = ", ".join(f"{v} {n}" for v, n in sorted(self.by_verb().items()) if n)
        return (
            f"| {self.name} | {self.wall_s:,.1f} | {self.total:,} | {self.total - self.observer:,} "
            f"| {verbs} | {self.recreated:,} |"
        )

    def attribution_row(self) -> str:
        """All requests, then by who sent them; the last column is how many requests the audit
        log has against the API server's own count (the same but for a request that straddled
        the phase's edge)."""
        logged = sum(sum(keys.values()) for keys in self.actors.values())
        gap = f" ({logged - self.total:+,})" if logged != self.total else ""
        return (
            f"| {self.name} | {self.total:,} | {self.orchestrator:,} | {self.sent_by('gaia'):,} "
            f"| {self.sent_by('controllers', 'scheduler'):,} | {self.sent_by('kwok'):,} "
            f"| {self.sent_by('leases'):,} | {self.sent_by('bench'):,} "
            f"| {self.sent_by('apiserver', 'other'):,} | {logged:,}{gap} |"
        )

    def breakdown(self) -> str:
        """Where the requests went: verb and resource, largest first (the profile that guides
        a change)."""
        top = sorted(self.requests.items(), key=lambda kv: -kv[1])
        return f"{self.name}: " + ", ".join(f"{key} {n:,}" for key, n in top if n)

    def breakdown_by_actor(self) -> list[str]:
        lines = []
        for actor in _ACTOR_NAMES:
            keys = self.actors.get(actor)
            if keys:
                lines.append(f"{_ACTOR_NAMES[actor]} {sum(keys.values()):,}: {_top(keys, 5)}")
        return lines


ATTRIBUTION_HEADER = (
    "| phase | all requests | orchestrator | of it Gaia | of it KCM + scheduler | nodes (KWOK) "
    "| leases | the bench's looks | the API server's own, other | in the audit log |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def record(phases: list[Phase], phase: Phase) -> None:
    """Keep ``phase`` for the report and print it at once (a run cut short still shows it)."""
    phases.append(phase)
    print(phase.row(), flush=True)
    print(f"  {phase.breakdown()}", flush=True)
    if phase.actors:
        print(f"  {phase.attribution_row()}", flush=True)
        for line in phase.breakdown_by_actor():
            print(f"    {line}", flush=True)


def request_counts(api: httpx.Client, mark: str | None = None) -> collections.Counter[str]:
    """The API server's own ``apiserver_request_total`` by verb and resource (WATCH left out);
    ``mark`` tags the read for ``RequestLog.cut``."""
    counts: collections.Counter[str] = collections.Counter()
    params = {MARK: mark} if mark is not None else None
    for line in api.get("/metrics", params=params).text.splitlines():
        match = _REQUEST_LINE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") == "WATCH":
            continue
        resource = labels.get("resource", "") or "-"
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels.get('verb', '?')} {resource}"] += int(float(match["value"]))
    return counts


_DURATION_LINE = re.compile(
    r"^apiserver_request_duration_seconds_(?P<what>sum|count)\{(?P<labels>[^}]*)\} (?P<value>\S+)$"
)


def request_seconds(api: httpx.Client) -> dict[str, list[float]]:
    """``--timeline``: the API server's own time per request
    (``apiserver_request_duration_seconds``) as [seconds, requests] by verb and resource, to tell
    a slow server from a slow client."""
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for line in api.get("/metrics").text.splitlines():
        match = _DURATION_LINE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        resource = labels.get("resource", "") or "-"
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = f"{labels.get('verb', '?')} {resource}"
        out[key][0 if match["what"] == "sum" else 1] += float(match["value"])
    return out


def delta(after: collections.Counter[str], before: collections.Counter[str]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after if after[key] - before[key]}


# Requests that go on while a cluster of KWOK nodes idles: lease renewals and API discovery.
_IDLE_TRAFFIC = ("PUT leases", "GET -/openapi/v3", "GET -/api", "GET -/apis")


def settle_nodes(
    api: httpx.Client, *, nodes: int, window_s: float = 3.0, limit_s: float = 600.0
) -> tuple[float, dict[str, int]]:
    """Wait until KWOK has finished starting the new nodes; return how long that took and the
    requests it made.

    For about a minute after a thousand nodes are created, KWOK patches each node and its
    status, creates its lease, posts its events and lists its pods (about 10,000 requests at
    1,000 nodes). Before this wait existed all of that fell into the first phase measured
    (Gaia's create), on its clock and in its request count. Settled: a ``window_s`` window in
    which, besides lease renewals and discovery, the API server saw at most one request per
    hundred nodes (at least 5)."""
    began = time.monotonic()
    first = previous = request_counts(api)
    while time.monotonic() - began < limit_s:
        time.sleep(window_s)
        now = request_counts(api)
        busy = sum(n for key, n in delta(now, previous).items() if key not in _IDLE_TRAFFIC)
        previous = now
        if busy <= max(5, nodes // 100):
            break
    return time.monotonic() - began, delta(previous, first)


def _top(counts: dict[str, int], n: int = 6) -> str:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{key} {value:,}" for key, value in ranked)


class ObserverCount:
    """Counts the bench's own API requests (its pod lists), so that a phase's figure can be
    read with and without the observer: a phase polled more often counts more lists."""

    def __init__(self, api: httpx.Client) -> None:
        self.n = 0
        api.event_hooks["request"].append(self._count)

    def _count(self, request: httpx.Request) -> None:
        if request.url.path != "/metrics":
            self.n += 1


def bench_client(plane: ControlPlane) -> httpx.Client:
    """A client of the API server for the bench's own looks, under a user agent of its own (the
    audit log tells its requests from Gaia's, which are httpx's too)."""
    client = plane.http_client()
    client.headers["User-Agent"] = BENCH_AGENT
    return client


def pods(api: httpx.Client, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"labelSelector": selector, "limit": 2000}
    while True:
        page = api.get(f"/api/v1/namespaces/{namespace}/pods", params=params).json()
        for pod in page["items"]:
            if "deletionTimestamp" not in pod["metadata"]:
                out[pod["metadata"]["name"]] = pod
        token = page["metadata"].get("continue")
        if not token:
            return out
        params["continue"] = token


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


class UpgradeWatch:
    """``--timeline``: where an upgrade's time goes, from a watch of the app's pods (WATCH is
    not in the request counts). Per pod: when the API server took the image patch (the first
    event with the new image in the spec) and when the node reported the container restarted on
    it and ready (KWOK's status patch). Then: the node's part (patch to ready), and the
    controller's part in a window of ``max_unavailable`` (a pod's patch after the ready pod whose
    slot it took: the n-th patch follows the (n - window)-th ready)."""

    def __init__(self, client: httpx.Client, *, selector: str, image: str) -> None:
        self.client, self.selector, self.image = client, selector, image
        self.patched: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        listing = client.get(
            "/api/v1/namespaces/bench/pods", params={"labelSelector": selector, "limit": 1}
        ).json()
        self.version = listing["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        params = {
            "labelSelector": self.selector,
            "watch": "1",
            "resourceVersion": self.version,
            "allowWatchBookmarks": "false",
        }
        with (
            contextlib.suppress(httpx.HTTPError),
            self.client.stream(
                "GET", "/api/v1/namespaces/bench/pods", params=params, timeout=None
            ) as stream,
        ):
            for line in stream.iter_lines():
                if line:
                    self._saw(json.loads(line)["object"], time.monotonic())

    def _saw(self, pod: dict[str, Any], at: float) -> None:
        name = pod["metadata"]["name"]
        if pod["spec"]["containers"][0]["image"] != self.image:
            return
        self.patched.setdefault(name, at)
        statuses = pod.get("status", {}).get("containerStatuses") or []
        restarted = bool(statuses) and statuses[0]["image"] == self.image
        if name not in self.ready and restarted and ready(pod):
            self.ready[name] = at

    def report(self, *, window: int, began: float, ended: float) -> list[str]:
        def spread(values: list[float]) -> str:
            if not values:
                return "none"
            values = sorted(values)
            median, p90 = (values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.9))
            return f"median {median:.2f} s, p90 {p90:.2f} s, max {values[-1]:.2f} s"

        node = [self.ready[n] - self.patched[n] for n in self.ready if n in self.patched]
        patches = sorted(self.patched.values())
        readies = sorted(self.ready.values())
        reaction = [patches[i] - readies[i - window] for i in range(window, len(patches))]
        last = readies[-1] - began if readies else float("nan")
        return [
            f"  first patch at {patches[0] - began:.2f} s, last ready at {last:.2f} s, "
            f"phase seen done at {ended - began:.2f} s",
            f"  the node (KWOK): image patch to restarted and ready: {spread(node)}",
            f"  the controller: a ready pod to the patch that takes its slot: {spread(reaction)}",
        ]


class ControllerLoop:
    """The app controller as the platform runs it (``Platform.running``): a loop of its own (here
    a thread's event loop), its interval as the resync, and woken at once by every change the
    provider reports of one of Gaia's pods (``watch_changes``) and by the API's writes to apps
    (``gaia.api.deps`` nudges it; the bench calls ``wake`` after its own). Each pass is kept
    (start, seconds, image patches) for ``--timeline``."""

    def __init__(self, controller: Any, providers: Any) -> None:
        self.controller = controller
        self.passes: list[tuple[float, float, int]] = []
        controller.observe = self._observe
        providers.watch_changes(lambda _heard: controller.wake())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(controller.start(),), daemon=True
        )
        self._thread.start()

    @contextlib.contextmanager
    def _observe(self, _name: str) -> Any:
        at = time.monotonic()
        yield
        patched = self.controller.last.actions.get("replace-image", 0)
        self.passes.append((at, time.monotonic() - at, patched))

    def wake(self) -> None:
        self.controller.wake()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self.controller.stop)
        self._thread.join(120)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _informer_rss(kubeconfig: Path, kind: str, keep_everything: bool) -> dict[str, Any]:
    """In this (fresh) process: list every ``kind`` ("pods" or "nodes") of the cluster into an
    informer as the provider builds it, and say how much the process grew."""
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import Namespace, Node, Pod

    from gaia.providers.kubernetes.cluster import POD_INDEXES
    from gaia.providers.kubernetes.informer import Informer
    from gaia.providers.kubernetes.kept import kept_node, kept_pod

    client = AsyncClient(KubeConfig.from_file(str(kubeconfig)), trust_env=False)
    await client.get(Namespace, "default")  # connections and TLS set up before the baseline
    if kind == "pods":
        informer = Informer(
            client,
            Pod,
            transform=None if keep_everything else kept_pod,
            indexes=POD_INDEXES,
        )
    else:
        informer = Informer(client, Node, transform=None if keep_everything else kept_node)
    gc.collect()
    before = _rss_bytes()
    informer.start()
    await informer.wait_synced(900)
    await informer.stop()
    gc.collect()
    grown = _rss_bytes() - before
    stored = len(json.dumps(list(informer.items.values())))
    await client.close()
    return {"objects": len(informer.items), "rss_bytes": grown, "json_bytes": stored}


def informer_memory(kubeconfig: Path) -> list[str]:
    """The cache memory lines of the report: each case in a process of its own (RSS seldom
    shrinks, so two cases in one process would measure each other)."""
    results: dict[tuple[str, bool], dict[str, Any]] = {}
    for kind in ("pods", "nodes"):
        for everything in (True, False):
            command = [
                sys.executable,
                __file__,
                "--informer-rss",
                kind,
                "--kubeconfig",
                str(kubeconfig),
            ] + (["--keep-everything"] if everything else [])
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[(kind, everything)] = json.loads(out.strip().splitlines()[-1])
    lines = [
        "| cache | objects | RSS grown, MiB | per 10,000 pods / 1,000 nodes, MiB "
        "| JSON kept, MiB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (kind, everything), r in results.items():
        per = 10_000 if kind == "pods" else 1_000
        scaled = r["rss_bytes"] * per / max(1, r["objects"]) / 2**20
        what = f"{kind}, {'whole (before)' if everything else 'kept (kept.py)'}"
        lines.append(
            f"| {what} | {r['objects']:,} | {r['rss_bytes'] / 2**20:,.1f} | {scaled:,.1f} "
            f"| {r['json_bytes'] / 2**20:,.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--upgrade", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="where the upgrade's time goes: its controller passes, the node's and the "
        "controller's part (UpgradeWatch)",
    )
    parser.add_argument(
        "--paced",
        action="store_true",
        help="drive the app controller as the bench did before: passes 0.5 s apart, not woken "
        "by changes",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="leave out the cache memory measurement"
    )
    parser.add_argument(
        "--gaia-only",
        action="store_true",
        help="leave out the Deployment baseline (to profile Gaia's phases of another revision)",
    )
    parser.add_argument(
        "--no-attribution",
        action="store_true",
        help="no API server audit log: requests counted in all, not by who sent them (to time "
        "the phases without the log's cost)",
    )
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the temporary folder (the control plane's logs and data, the audit log, "
        "the platform's database) instead of deleting it at the end, and print its path",
    )
    # the cache memory cases run in processes of their own (informer_memory)
    parser.add_argument("--informer-rss", choices=("pods", "nodes"), help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep-everything", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.informer_rss:
        result = asyncio.run(
            _informer_rss(args.kubeconfig, args.informer_rss, args.keep_everything)
        )
        print(json.dumps(result))
        return 0
    if args.quick:
        args.nodes, args.instances, args.upgrade, args.batch = 50, 300, 60, 30

    # a run stopped with SIGTERM (``timeout``) still stops the control plane (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    bin_dir = build_control_plane()
    build_s = time.monotonic() - began
    work = Path(tempfile.mkdtemp(prefix="gaia-kube-bench-"))
    audit = None if args.no_attribution else RequestLog(work / "audit.log")
    plane = ControlPlane(
        bin_dir=bin_dir,
        work=work / "cp",
        audit_log=None if audit is None else audit.path,
        audit_verbs=AUDITED_VERBS,
    )
    try:
        plane.start()
        plane.ensure_controller_manager()
        plane.start_scheduler()
    except BaseException:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
        raise
    api = bench_client(plane)
    observer = ObserverCount(api)
    phases: list[Phase] = []

    marks = iter(range(1, 1_000_000))

    def counted() -> tuple[collections.Counter[str], dict[str, dict[str, int]]]:
        """The counter now, and the audit log's requests up to the same moment since the last
        call (``RequestLog.cut``)."""
        if audit is None:
            return request_counts(api), {}
        mark = str(next(marks))
        counts = request_counts(api, mark)
        return counts, audit.cut(mark)

    def mark() -> tuple[collections.Counter[str], int]:
        """A phase's start: the counter's reading and the bench's own requests so far."""
        return counted()[0], observer.n

    def measured(
        name: str, kind: str, wall_s: float, since: tuple[collections.Counter[str], int], **kw: Any
    ) -> Phase:
        before, seen = since
        after, actors = counted()
        return Phase(
            name,
            wall_s,
            delta(after, before),
            observer=observer.n - seen,
            kind=kind,
            actors=actors,
            **kw,
        )

    try:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: api.post(
                        "/api/v1/nodes", json=fake_node(f"n{i:05d}", cpu="32", memory="128Gi")
                    ),
                    range(args.nodes),
                )
            )
        print(f"{args.nodes} KWOK nodes created in {time.monotonic() - started:.1f} s")
        settled_s, startup = settle_nodes(api, nodes=args.nodes)
        print(
            f"KWOK's node start-up settled {settled_s:.1f} s later: {sum(startup.values()):,} "
            f"requests (counted in no phase): {_top(startup)}",
            flush=True,
        )

        use_cheap_password_hashing()
        settings = Settings(
            data_dir=work / "data",
            secret_key=Fernet.generate_key().decode(),
            demo=False,
        )
        platform = Platform.open(settings, clock=RealClock())
        with platform.db.write_session() as session:
            session.add(
                User(username="bench", password_hash=hash_password("pw"), is_platform_admin=True)
            )
        client = TestClient(create_app(platform, run_loops=False), base_url="https://x")
        client.__enter__()
        token = client.post(
            "/api/v1/auth/login", json={"username": "bench", "password": "pw"}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}

        def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
            r = client.request(method, path, json=body, headers=headers)
            if r.status_code != status:
                raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:400]}")
            return r.json() if r.content else None

        call("POST", "/api/v1/businesses", {"name": "bench"}, status=201)
        call(
            "POST",
            "/api/v1/clusters",
            {"name": "kube", "kind": "kubernetes", "kubeconfig": plane.kubeconfig_text()},
            status=201,
        )
        hard = {"cpu": 100_000, "memory": 100_000_000, "local_disk": 10_000_000}
        call("PUT", f"{BIZ}/quotas/kube", {"hard": hard})
        controller = platform.app_controller()
        driver = None if args.paced else ControllerLoop(controller, platform.providers)

        def template(name: str, image: str) -> dict[str, Any]:
            return {
                "name": name,
                "image": image,
                "resources": {"cpu": 0.1, "memory": 64},
                "readiness": {"kind": "http", "port": 8080, "path": "/ready"},
            }

        def settle(done: Any, what: str) -> float:
            """Until ``done()``, looked at once a second as for the Deployments (the look at a
            creation lists every pod of the phase: looked at twice as often, it would cost the
            API server, and KWOK beside it, twice as much); the moment it was seen done. The
            controller runs as the platform runs it (``ControllerLoop``), told of the API
            write that began the phase as the API tells it; with ``--paced``, passes 0.5 s
            apart in this thread instead (how the bench drove it before)."""
            deadline = time.monotonic() + 3600
            looked = 0.0
            if driver is not None:
                driver.wake()
            while time.monotonic() < deadline:
                if driver is None:
                    asyncio.run(controller.run_once())
                if time.monotonic() - looked >= 1.0:
                    looked = time.monotonic()
                    if done():
                        return looked
                time.sleep(0.5 if driver is None else max(0.0, looked + 1.0 - time.monotonic()))
            raise SystemExit(f"{what}: not done within an hour")

        def passes_so_far() -> int:
            # (the loop counts its passes as well as the controller: not controller.passes)
            return controller.passes if driver is None else len(driver.passes)

        def process_line(cpu: float, passes: int) -> str:
            return (
                f"  Gaia's process (the platform, its controller, the bench's looks): "
                f"{time.process_time() - cpu:.1f} CPU s, {passes_so_far() - passes} passes"
            )

        selector = f"{APP_LABEL}=web"
        since = mark()
        cpu, passes = time.process_time(), passes_so_far()
        started = time.monotonic()
        call(
            "POST",
            f"{BIZ}/apps",
            {
                "name": "web",
                "cluster": "kube",
                "templates": [
                    template("v1", "registry.local/web:v1"),
                    template("v2", "registry.local/web:v2"),
                ],
                "replicas": args.instances,
            },
            status=201,
        )
        ended = settle(
            lambda: sum(ready(p) for p in pods(api, "bench", selector).values()) == args.instances,
            "create",
        )
        print(process_line(cpu, passes))
        record(
            phases,
            measured(
                f"Gaia: create {args.instances:,} instances",
                "create",
                ended - started,
                since,
                recreated=0,
            ),
        )
        uids = {n: p["metadata"]["uid"] for n, p in pods(api, "bench", selector).items()}

        watch = (
            UpgradeWatch(bench_client(plane), selector=selector, image="registry.local/web:v2")
            if args.timeline
            else None
        )
        server_before = request_seconds(api) if args.timeline else {}
        since = mark()
        cpu, passes = time.process_time(), passes_so_far()
        started = time.monotonic()
        upgrade = call(
            "POST",
            f"{BIZ}/apps/web/upgrades",
            {
                "template": "v2",
                "instance_ids": list(range(args.upgrade)),
                "max_unavailable": args.batch,
            },
            status=201,
        )
        ended = settle(
            lambda: call("GET", f"{BIZ}/apps/web/upgrades/{upgrade['id']}")["state"] == "Succeeded",
            "upgrade",
        )
        print(process_line(cpu, passes))
        # counted before anything else the bench does (the timeline's wait, its last listing)
        phase = measured(
            f"Gaia: gray upgrade {args.upgrade:,} in place", "upgrade", ended - started, since
        )
        if watch is not None:
            time.sleep(0.5)  # the watch's last events
            if driver is not None:
                for at, took, patched in driver.passes:
                    if at >= started:
                        print(f"  pass at {at - started:6.2f} s: {took:5.2f} s, {patched} patched")
            print("\n".join(watch.report(window=args.batch, began=started, ended=ended)))
            server_after = request_seconds(api)
            for key in ("PATCH pods", "PATCH pods/status", "POST events", "PUT leases"):
                took = server_after[key][0] - server_before.get(key, [0.0, 0.0])[0]
                n = server_after[key][1] - server_before.get(key, [0.0, 0.0])[1]
                if n:
                    print(f"  API server, {key}: {n:,.0f} in {1000 * took / n:.1f} ms each")
        now = pods(api, "bench", selector)
        phase.recreated = sum(1 for n, p in now.items() if p["metadata"]["uid"] != uids.get(n))
        record(phases, phase)
        if driver is not None:
            driver.stop()
        asyncio.run(platform.providers.close())

        if args.gaia_only:
            return report(args, build_s, began, phases, [], audit)

        # the baseline: Deployments, scheduled by kube-scheduler, changed by the controllers
        api.post("/api/v1/namespaces", json={"metadata": {"name": "deploy"}})

        def deployment(name: str, image: str, replicas: int) -> dict[str, Any]:
            return {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": "deploy"},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": "web", "track": name}},
                    "template": {
                        "metadata": {"labels": {"app": "web", "track": name}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "main",
                                    "image": image,
                                    "resources": {
                                        "requests": {"cpu": "100m", "memory": "64Mi"},
                                        "limits": {"cpu": "100m", "memory": "64Mi"},
                                    },
                                }
                            ]
                        },
                    },
                },
            }

        def ready_count(track: str) -> int:
            return sum(ready(p) for p in pods(api, "deploy", f"track={track}").values())

        since = mark()
        started = time.monotonic()
        api.post(
            "/apis/apps/v1/namespaces/deploy/deployments",
            json=deployment("stable", "registry.local/web:v1", args.instances),
        )
        while ready_count("stable") < args.instances:
            time.sleep(1)
        ended = time.monotonic()
        record(
            phases,
            measured(
                f"baseline: Deployment of {args.instances:,}",
                "deployment",
                ended - started,
                since,
                recreated=0,
            ),
        )
        stable_uids = {n: p["metadata"]["uid"] for n, p in pods(api, "deploy", "app=web").items()}
        since = mark()
        started = time.monotonic()
        api.patch(
            "/apis/apps/v1/namespaces/deploy/deployments/stable/scale",
            json={"spec": {"replicas": args.instances - args.upgrade}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        api.post(
            "/apis/apps/v1/namespaces/deploy/deployments",
            json=deployment("canary", "registry.local/web:v2", args.upgrade),
        )
        while (
            ready_count("canary") < args.upgrade
            or len(pods(api, "deploy", "track=stable")) > args.instances - args.upgrade
        ):
            time.sleep(1)
        ended = time.monotonic()
        phase = measured(
            f"baseline: canary of {args.upgrade:,} (2 Deployments)",
            "canary",
            ended - started,
            since,
        )
        phase.recreated = sum(1 for n in pods(api, "deploy", "app=web") if n not in stable_uids)
        record(phases, phase)
        memory = [] if args.no_memory else informer_memory(plane.kubeconfig_path)
    finally:
        api.close()
        plane.stop()
        if args.keep_work:
            print(f"the work folder is kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report(args, build_s, began, phases, memory, audit)


def report(
    args: argparse.Namespace,
    build_s: float,
    began: float,
    phases: list[Phase],
    memory: list[str],
    audit: RequestLog | None,
) -> int:
    print()
    print(
        f"control plane: {args.nodes:,} KWOK nodes; build {build_s:.1f} s this run "
        "(cached when the stamp matches)"
    )
    print(
        "| phase | wall s | API requests | without the bench's own lists | by verb "
        "| pods recreated |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for phase in phases:
        print(phase.row())
    if audit is not None:
        print("\nwho sent them (the API server's audit log, by user agent; leases apart):")
        print(ATTRIBUTION_HEADER)
        for phase in phases:
            print(phase.attribution_row())
        if audit.other_agents:
            print(f"(other: {_top(dict(audit.other_agents), 4)})")
    print("\nby verb and resource:")
    for phase in phases:
        print(f"- {phase.breakdown()}")
        for line in phase.breakdown_by_actor():
            print(f"  - {line}")
    lines = goal_lines(phases, quick=args.quick)
    if lines:
        print("\nissue 22's goals (for the full size; at --quick only the upgrade's time):")
        print("\n".join(lines))
    if memory:
        print("\nthe provider's pod and node caches (a fresh process per case):")
        print("\n".join(memory))
    print(f"\ntook {time.monotonic() - began:.0f} s")
    return 0


def goal_lines(phases: list[Phase], *, quick: bool) -> list[str]:
    """Gaia beside the baseline of the same run, as issue 22 states its goals: time, and the
    orchestrator's requests (the platform's own work: Gaia's client beside kube-controller-
    manager and kube-scheduler), with the ratio of all requests beside it."""
    kinds = {phase.kind: phase for phase in phases}
    goals = (
        # (Gaia's phase, the baseline's, what, time goal, requests goal)
        ("create", "deployment", "create", None if quick else 0.8, None if quick else 1.0),
        ("upgrade", "canary", "in-place upgrade", 1.0 if quick else 0.5, None if quick else 0.25),
    )
    lines = []
    for ours, theirs, what, time_goal, requests_goal in goals:
        gaia, base = kinds.get(ours), kinds.get(theirs)
        if gaia is None or base is None:
            continue

        def ratio(a: float, b: float, goal: float | None) -> str:
            x = a / b if b else float("inf")
            if goal is None:
                return f"{x:.2f}x"
            return f"{x:.2f}x (goal <= {goal:g}x: {'met' if x <= goal else 'not met'})"

        parts = [
            f"time {gaia.wall_s:,.1f} / {base.wall_s:,.1f} s = "
            f"{ratio(gaia.wall_s, base.wall_s, time_goal)}"
        ]
        if gaia.actors and base.actors:
            parts.append(
                f"the orchestrator's requests {gaia.orchestrator:,} / {base.orchestrator:,} = "
                f"{ratio(gaia.orchestrator, base.orchestrator, requests_goal)}"
            )
            parts.append(
                f"all requests {gaia.total:,} / {base.total:,} = "
                f"{ratio(gaia.total, base.total, None)}"
            )
        else:
            parts.append(
                f"all requests {gaia.total:,} / {base.total:,} = "
                f"{ratio(gaia.total, base.total, requests_goal)} (no audit log: not by sender)"
            )
        lines.append(f"- {what}: " + "; ".join(parts))
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
