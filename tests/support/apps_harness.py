"""Drive apps end to end: the API (TestClient), the app controller, and the sim's manual clock.

``AppsHarness.settle(predicate)`` steps simulated time a little, runs one controller pass, and
repeats until the predicate holds; nothing sleeps. The platform fixture's clock is a
``ManualClock``, shared by the sim clusters and the controller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from fastapi.testclient import TestClient

from gaia.clock import ManualClock
from gaia.controllers.apps import AppController
from gaia.platform import Platform
from gaia.providers.sim import SimCluster
from gaia.store.models import Cluster

BIZ = "/api/v1/businesses/alpha"


def template(
    name: str,
    image: str,
    *,
    cpu: float = 1,
    memory: int = 1024,
    gpu: float = 0,
    readiness: bool = True,
    liveness: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"cpu": cpu, "memory": memory, "gpu": gpu},
        "ports": [{"port": 8080, "name": "http"}],
    }
    if readiness:
        doc["readiness"] = {"kind": "http", "port": 8080, "path": "/ready", "period_s": 2}
    if liveness:
        doc["liveness"] = {
            "kind": "http",
            "port": 8080,
            "path": "/live",
            "period_s": 5,
            "failure_threshold": 3,
        }
    doc.update(extra)
    return doc


@dataclass
class AppsHarness:
    platform: Platform
    client: TestClient
    headers: dict[str, str]
    controller: AppController = field(init=False)
    step_s: float = 1.0

    def __post_init__(self) -> None:
        self.controller = self.platform.app_controller()

    @property
    def clock(self) -> ManualClock:
        return cast(ManualClock, self.platform.clock)

    def sim(self, cluster: str) -> SimCluster:
        with self.platform.db.read_session() as session:
            row = session.query(Cluster).filter_by(name=cluster).one()
            provider = self.platform.providers.for_cluster(row)
        assert isinstance(provider, SimCluster)
        return provider

    def restart_controller(self) -> None:
        """A new controller object: all in-memory state is gone, as after a crash."""
        self.controller = self.platform.app_controller()

    def tick(self, seconds: float | None = None) -> None:
        self.clock.step(self.step_s if seconds is None else seconds)
        asyncio.run(self.controller.run_once())

    def settle(self, predicate: Callable[[], bool], *, limit_s: float = 600) -> float:
        """Tick until ``predicate()``; returns the simulated seconds it took."""
        waited = 0.0
        while waited <= limit_s:
            self.tick()
            waited += self.step_s
            if predicate():
                return waited
        raise AssertionError(f"did not settle within {limit_s} simulated seconds")

    # ------------------------------------------------------------ API shortcuts

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, headers=self.headers, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def get_all(self, path: str) -> list[Any]:
        """Every item of a paged list (``{"items", "next_cursor"}``), walking its pages."""
        items: list[Any] = []
        cursor = None
        while True:
            page = self.get(path, limit=500, **({"cursor": cursor} if cursor else {}))
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def post(self, path: str, body: dict[str, Any] | None = None, status: int = 200) -> Any:
        r = self.client.post(path, json=body or {}, headers=self.headers)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def app(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.get(f"{BIZ}/apps/{name}"))

    def instances(self, app: str) -> dict[int, dict[str, Any]]:
        return {i["id"]: i for i in self.get_all(f"{BIZ}/apps/{app}/instances")}

    def ready(self, app: str, count: int) -> Callable[[], bool]:
        def check() -> bool:
            insts = self.instances(app)
            return len(insts) == count and all(
                i["ready"] and i["status"] == "Running" for i in insts.values()
            )

        return check

    def events(self, name: str) -> list[tuple[str, str]]:
        """(reason, message) of an object's events, oldest first (repeats are aggregated)."""
        return [(e["reason"], e["message"]) for e in self.event_rows(name)]

    def event_rows(self, name: str) -> list[dict[str, Any]]:
        items = self.get("/api/v1/events", object_name=name, limit=500)["items"]
        return sorted(items, key=lambda e: e["id"])

    @staticmethod
    def run_async(coro: Any) -> Any:
        return asyncio.run(coro)
