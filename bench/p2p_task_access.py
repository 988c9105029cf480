"""The platform's CPU per ``POST .../p2p/tasks`` for an image of the platform's registry, at
1,000 nodes x 10 instances, beside a heartbeat's, with the node access check as it was (one
listing of the cluster's instances per node) and as it is (one listing for every node).

Run ``.venv/bin/python bench/p2p_task_access.py`` from the repository root (``--nodes``,
``--per-node``, ``--layers``, ``--rounds``, ``--help``). In one process, on SQLite in a
temporary folder:

1. the platform (``Platform.open``, its API under FastAPI's ``TestClient``, loops off, a
   ``ManualClock`` so no instance moves) with its registry: Debian's ``docker-registry``, run by
   Gaia (``GAIA_REGISTRY_LISTEN``), trusting Gaia's tokens;
2. a sim cluster of ``--nodes`` nodes, ``--per-node`` instances on each (one per business
   ``biz0``, ``biz1``, ...: ``nodes x per-node`` instances), created through the provider;
3. an image of ``--layers`` layers pushed to ``biz0/web``, every node registered as an agent
   (the cluster-wide token: a sim cluster);
4. then ``--rounds`` rounds of A B: **A, the baseline**, the access check with the code before
   (``baseline_node_businesses`` below: one listing of every instance of the cluster per node
   whose answer is older than 5 s, the answer kept per node), **B, Gaia**
   (``gaia.api.node_access.node_businesses``: one listing of the cluster, by node, for every
   node). Each phase starts with the caches empty and sends, node after node, one ``POST
   tasks`` per layer (what a rollout of the image does: every node opens every layer), then
   one heartbeat per node (``POST .../p2p/agents``) and as many ``GET /api/healthz`` (the
   floor: the same stack, no authentication, no database).

The figure is the process's CPU time (``time.process_time``: the server and the in-process
client, both threads) over a phase's calls, divided by their number; the floor shows what the
client and the HTTP stack take. "listings" counts the calls of the provider's
``list_instances``. The blob's ``HEAD`` at the registry is answered once per phase and layer
(a yes is kept 60 s), as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from bench.api import machine_line  # noqa: E402
from gaia.api import node_access  # noqa: E402
from gaia.app import Platform, create_app  # noqa: E402
from gaia.clock import ManualClock  # noqa: E402
from gaia.domain.errors import GaiaError  # noqa: E402
from gaia.domain.resources import ResourceVector  # noqa: E402
from gaia.providers.port import InstanceSpec  # noqa: E402
from gaia.security import hash_password, use_cheap_password_hashing  # noqa: E402
from gaia.settings import Settings  # noqa: E402
from gaia.store import registry as registry_store  # noqa: E402
from gaia.store.models import User  # noqa: E402
from tests.support.images import RegistryClient  # noqa: E402
from tests.support.kube import free_port  # noqa: E402
from tests.support.p2p import need, random_image  # noqa: E402

CLUSTER = "bench-1"
P2P = f"/api/v1/clusters/{CLUSTER}/p2p"
REPOSITORY = "biz0/web"

# ---------------------------------------------------------------- the baseline: the code before
# (gaia/api/node_access.py at 34fa148): a listing of every instance of the cluster for each node
# whose answer is older than 5 s, the answer kept per (cluster, node)

_BASELINE_CACHE: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}


async def baseline_node_businesses(
    plat: Platform, cluster: str, node: str, *, wanted: object = ()
) -> frozenset[str]:
    now = time.monotonic()
    found = _BASELINE_CACHE.get((cluster, node))
    if found is not None and now - found[0] < node_access.NODE_CACHE_S:
        return found[1]
    with plat.db.read_session() as session:
        row = registry_store.cluster_by_name(session, cluster)
    if row is None:
        return frozenset()
    try:
        instances = await plat.providers.for_cluster(row).list_instances()
    except GaiaError:
        return frozenset()
    hosted = frozenset(i.namespace for i in instances if i.node == node)
    if len(_BASELINE_CACHE) > 10_000:
        _BASELINE_CACHE.clear()
    _BASELINE_CACHE[(cluster, node)] = (now, hosted)
    return hosted


GAIA_NODE_BUSINESSES = node_access.node_businesses


@dataclass
class Phase:
    name: str
    task_ms: float
    task_wall_ms: float
    heartbeat_ms: float
    floor_ms: float
    listings: int
    tasks: int


class Bench:
    def __init__(self, *, nodes: int, per_node: int, layers: int, data_dir: Path) -> None:
        need("docker-registry")
        use_cheap_password_hashing()
        settings = Settings(
            data_dir=data_dir,
            database_url=f"sqlite:///{data_dir / 'gaia.db'}",
            secret_key=Fernet.generate_key().decode(),
            demo=False,
            registry_listen=f"127.0.0.1:{free_port()}",
        )
        self.platform = Platform.open(settings, clock=ManualClock(dt.datetime.now(dt.UTC)))
        with self.platform.db.write_session() as session:
            session.add(
                User(username="admin", password_hash=hash_password("pw"), is_platform_admin=True)
            )
        self.client = TestClient(create_app(self.platform, run_loops=False), base_url="https://x")
        self.client.__enter__()  # the lifespan: starts the registry
        self.admin: dict[str, str] = {}
        token = self.call("POST", "/api/v1/auth/login", {"username": "admin", "password": "pw"})
        self.admin = {"Authorization": f"Bearer {token['token']}"}
        sim = {"nodes": nodes, "cpu": 64, "memory_mib": 262144, "gpus": 0}
        self.call("POST", "/api/v1/clusters", {"name": CLUSTER, "kind": "sim", "sim": sim})
        self.agent = {"Authorization": f"Bearer {self.call('GET', f'{P2P}/agent-token')['token']}"}
        self.address = self.platform.registry.address
        self.layers = self._push(layers)
        self.nodes, self.listings = asyncio.run(self._place(per_node))
        for name in self.nodes:
            self.heartbeat(name)

    def call(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        r = self.client.request(method, path, json=body, headers=headers or self.admin)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def _push(self, layers: int) -> list[tuple[str, int]]:
        image = random_image(layers, 64 << 10, seed=3)
        token = self.platform.registry.signer.issue(
            subject="bench",
            access=[{"type": "repository", "name": REPOSITORY, "actions": ["pull", "push"]}],
        )
        client = RegistryClient(url=f"http://{self.address}", host=self.address)
        client.http.headers["Authorization"] = f"Bearer {token.token}"
        try:
            client.push(image, repository=REPOSITORY, tag="v1")
        finally:
            client.close()
        return [(layer.blob.digest, len(layer.blob.data)) for layer in image.layers]

    async def _place(self, per_node: int) -> tuple[list[str], list[int]]:
        with self.platform.db.read_session() as session:
            row = registry_store.cluster_by_name(session, CLUSTER)
        assert row is not None
        provider = self.platform.providers.for_cluster(row)
        names = sorted(n.name for n in await provider.list_nodes())
        for i, node in enumerate(names):
            for b in range(per_node):
                await provider.create_instance(
                    InstanceSpec(
                        namespace=f"biz{b}",
                        app="web",
                        instance_id=i,
                        version="v1",
                        image=f"{self.address}/biz{b}/web:v1",
                        node=node,
                        resources=ResourceVector(cpu=100, memory=64),
                    )
                )
        listings = [0]
        listed = provider.list_instances

        async def counted(**kw: Any) -> Any:
            listings[0] += 1
            return await listed(**kw)

        provider.list_instances = counted  # type: ignore[method-assign]
        return names, listings

    def heartbeat(self, node: str) -> None:
        body = {"node": node, "zone": "z1", "address": f"{node}:7001", "upload_slots": 4}
        self.call("POST", f"{P2P}/agents", body, self.agent)

    def open_task(self, node: str, digest: str, size: int) -> None:
        body = {"node": node, "registry": self.address, "repository": REPOSITORY,
                "digest": digest, "size": size}  # fmt: skip
        self.call("POST", f"{P2P}/tasks", body, self.agent)

    def phase(self, name: str, impl: Callable[..., Any]) -> Phase:
        node_access.node_businesses = impl  # what check_blob_access calls
        service = self.platform.registry
        for cache in (_BASELINE_CACHE, service.node_cache, service.node_listings,
                      service.node_rechecked, service.linked_cache):  # fmt: skip
            cache.clear()
        self.listings[0] = 0
        tasks = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for node in self.nodes:
            for digest, size in self.layers:
                self.open_task(node, digest, size)
                tasks += 1
        task_cpu, task_wall = time.process_time() - cpu, time.perf_counter() - wall
        listings = self.listings[0]
        cpu = time.process_time()
        for node in self.nodes:
            self.heartbeat(node)
        heartbeat_cpu = time.process_time() - cpu
        cpu = time.process_time()
        for _ in self.nodes:
            self.client.get("/api/healthz").raise_for_status()
        floor_cpu = time.process_time() - cpu
        node_access.node_businesses = GAIA_NODE_BUSINESSES
        n = len(self.nodes)
        return Phase(
            name=name,
            task_ms=task_cpu / tasks * 1000,
            task_wall_ms=task_wall / tasks * 1000,
            heartbeat_ms=heartbeat_cpu / n * 1000,
            floor_ms=floor_cpu / n * 1000,
            listings=listings,
            tasks=tasks,
        )

    def close(self) -> None:
        self.client.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--per-node", type=int, default=10, help="instances on each node")
    parser.add_argument("--layers", type=int, default=4, help="tasks each node opens")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gaia-bench-") as folder:
        started = time.perf_counter()
        bench = Bench(
            nodes=options.nodes,
            per_node=options.per_node,
            layers=options.layers,
            data_dir=Path(folder),
        )
        setup_s = time.perf_counter() - started
        phases: list[Phase] = []
        try:
            for _ in range(options.rounds):
                phases.append(bench.phase("baseline", baseline_node_businesses))
                phases.append(bench.phase("Gaia", GAIA_NODE_BUSINESSES))
        finally:
            bench.close()
    print(machine_line())
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"{options.nodes} nodes x {options.per_node} instances "
        f"({options.nodes * options.per_node} on the sim cluster), {options.layers} layers of "
        f"{REPOSITORY} per node; setup {setup_s:.0f} s; process CPU per call (server and "
        "in-process client), phases in the order run (A B A B)"
    )
    header = ("phase", "POST tasks", "(wall)", "heartbeat", "healthz", "listings", "tasks")
    print(f"{header[0]:10}{''.join(f'{h:>14}' for h in header[1:])}")
    for p in phases:
        print(
            f"{p.name:10}{p.task_ms:>11.2f} ms{p.task_wall_ms:>11.2f} ms{p.heartbeat_ms:>11.2f} ms"
            f"{p.floor_ms:>11.2f} ms{p.listings:>14}{p.tasks:>14}"
        )
    for name in ("baseline", "Gaia"):
        mine = [p for p in phases if p.name == name]
        task = sum(p.task_ms for p in mine) / len(mine)
        beat = sum(p.heartbeat_ms for p in mine) / len(mine)
        print(f"{name:10} mean: POST tasks {task:.2f} ms, heartbeat {beat:.2f} ms "
              f"({task / beat:.1f} x a heartbeat)")  # fmt: skip


if __name__ == "__main__":
    main()
