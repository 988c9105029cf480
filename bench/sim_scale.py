"""Scale of the app controller on the simulated cluster: 5,000 instances on 2,000 nodes.

Run ``.venv/bin/python bench/sim_scale.py`` from the repository root (``--quick`` for a small
smoke run, ``--help`` for the sizes). In one process, on SQLite in a temporary directory:

1. a sim cluster of ``--nodes`` nodes and a business with room for everything;
2. an app of ``--instances`` instances (``v1``) created through the real HTTP API (TestClient),
   then the real ``AppController`` is run pass after pass while a ``ManualClock`` is stepped
   ``--step`` simulated seconds per pass, until every instance is Running and ready;
3. **gray upgrade, in place**: half the instances (ids 0, 2, 4, ...) to ``v2`` (only the image
   differs), ``--batch`` at a time, until the upgrade reports Succeeded. The app is created
   with ``prepull: templates``, so while its instances come up (and before the upgrade is
   asked for) the platform pulls ``v2``, declared with the app and run by no instance, onto
   the nodes of the instances already running;
4. **the same, cold**: a twin app (another repository) with the default ``prepull:
   upgrades``, whose upgrade's first batch pulls in its turn (the later batches' pulls
   overlap the earlier batches' restarts);
5. **baseline, recreate**: the same half of a twin app (same layer sizes, another repository so
   its caches start as cold as ours did) moved to a template that differs in more than the image
   (memory), which the platform must do by deleting and re-creating each instance, as a plain
   Deployment rolling update does to every pod. Same batch size.

For each phase it prints simulated seconds (what a user would wait), wall seconds of the phase
(including the benchmark's own progress checks through the API after every pass), wall seconds
spent inside the controller's passes (what it costs us to simulate and reconcile), passes, mean
controller time per pass (wall, and the process's CPU time, which a loaded machine disturbs
less), instances rescheduled (a new node), and the peak resident memory.
The physical limit of the upgrade is also printed: the image layers that differ between v1 and
v2 must cross each node's link once per batch, so ``batches x (changed bytes / node
bandwidth)`` is the least simulated time an upgrade with that batch size takes when each batch
pulls in its turn. Since issue 22 the controller pre-pulls the next batches' image while a batch
restarts, so the pulls overlap and that limit (computed the same way, for comparison) is no
longer a floor; the floors printed beside it are the simulated kubelet's: cold, the first
batch's pull (nothing is warm yet) plus, per batch, the restart no pre-pull can hide (the watch
reaching the kubelet, creating and starting the container: the sim's ``WATCH_S + CREATE_S +
START_S``); with the version pulled before its upgrade (``prepull: templates``), the restarts
alone.

Simulated time, with ``--wake events``, moves as an event-driven controller lives it: a pass at
once after the API write that begins a phase (the platform wakes the controller on API writes to
apps), then a pass at each instance change or at the resync (``--step``), whichever comes first.

After the in-place upgrade, the **quiet phase**: ``--quiet-s`` simulated seconds ticked once a
second with nothing changing, the controller's CPU per simulated second printed for a controller
that makes a full pass every tick (the baseline: every controller before issue 22) beside the
platform's own (quiet ticks skipped, a full pass per ``--resync``); then the same two with one
more app that cannot be placed (more CPU than any node has): a large platform always holds one,
and before the work queue (``gaia.controllers.workqueue``) it made every tick a full pass.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gaia.app import Platform, create_app
from gaia.clock import ManualClock
from gaia.providers.sim import SimCluster
from gaia.providers.sim._cluster import CREATE_S, START_S, WATCH_S  # the simulated kubelet
from gaia.providers.sim._images import UNPACK_S_PER_LAYER
from gaia.security import hash_password, use_cheap_password_hashing
from gaia.settings import Settings
from gaia.store.models import Cluster, User

BIZ = "/api/v1/businesses/bench"


@dataclass
class Phase:
    name: str
    sim_s: float
    wall_s: float
    controller_s: float
    controller_cpu_s: float
    passes: int
    moved: int
    rss_mib: float
    partial: int = 0  # passes among them over some apps only (the platform's controller)

    @property
    def per_pass_ms(self) -> float:
        return 1000 * self.controller_s / max(1, self.passes)

    @property
    def cpu_per_pass_ms(self) -> float:
        return 1000 * self.controller_cpu_s / max(1, self.passes)


@dataclass
class Quiet:
    resync: float | None
    seconds: int
    cpu_s: float  # the process's CPU in the controller's ticks
    passes: int  # full passes among them
    partial: int = 0  # passes over the work queue's due apps only
    stuck: bool = False  # one app among them cannot be placed (not as wished)

    @property
    def cpu_ms_per_s(self) -> float:
        return 1000 * self.cpu_s / self.seconds


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Bench:
    def __init__(
        self, *, nodes: int, step: float, bandwidth: int, data_dir: Path, wake: str
    ) -> None:
        self.wake = wake
        use_cheap_password_hashing()
        settings = Settings(
            data_dir=data_dir,
            database_url=f"sqlite:///{data_dir / 'gaia.db'}",
            secret_key=Fernet.generate_key().decode(),
            demo=False,
        )
        self.clock = ManualClock(dt.datetime.now(dt.UTC))
        self.platform = Platform.open(settings, clock=self.clock)
        with self.platform.db.write_session() as session:
            session.add(
                User(username="admin", password_hash=hash_password("pw"), is_platform_admin=True)
            )
        self.client = TestClient(create_app(self.platform, run_loops=False), base_url="https://x")
        self.client.__enter__()
        token = self.client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "pw"}
        ).json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.step = step
        self.controller = self.platform.app_controller()
        self.call("POST", "/api/v1/businesses", {"name": "bench"})
        self.call(
            "POST",
            "/api/v1/clusters",
            {
                "name": "scale",
                "kind": "sim",
                "sim": {
                    "nodes": nodes,
                    "cpu": 32,
                    "memory_mib": 131072,
                    "gpus": 0,
                    "bandwidth_mbps": bandwidth,
                },
            },
        )
        huge = {"cpu": 1_000_000, "memory": 10**9, "local_disk": 10**6, "bandwidth": 10**8}
        self.call("PUT", f"{BIZ}/quotas/scale", {"hard": huge})

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.client.request(method, path, json=body, headers=self.headers)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def sim(self) -> SimCluster:
        with self.platform.db.read_session() as session:
            row = session.query(Cluster).filter_by(name="scale").one()
            provider = self.platform.providers.for_cluster(row)
        assert isinstance(provider, SimCluster)
        return provider

    def observed(self, app: str) -> list[Any]:
        return asyncio.run(self.sim().list_instances(namespace="bench", app=app))

    def run_until(self, name: str, done: Any, *, limit_passes: int = 20_000) -> Phase:
        start_sim = self.clock.now()
        start_wall = time.perf_counter()
        passes = 0
        in_controller = 0.0
        cpu_in_controller = 0.0
        sim = self.sim()
        last_pass = self.clock.now()
        counted, partial = self.controller.passes, self.controller.partial_passes
        while passes < limit_passes:
            if self.wake == "poll":
                self.clock.step(self.step)
            elif passes > 0:
                self._until_change_or_resync(sim, last_pass + dt.timedelta(seconds=self.step))
            # else: the API write that began the phase woke the controller: a pass at once
            last_pass = self.clock.now()
            t = time.perf_counter()
            cpu = time.process_time()
            asyncio.run(self.controller.run_once())
            in_controller += time.perf_counter() - t
            # the process's CPU time, all threads (the pass's database work runs in one): what
            # the pass costs, whatever else the machine runs meanwhile
            cpu_in_controller += time.process_time() - cpu
            passes += 1
            if done():
                break
        else:
            raise RuntimeError(f"{name}: not done after {limit_passes} passes")
        return Phase(
            name=name,
            sim_s=(self.clock.now() - start_sim).total_seconds(),
            wall_s=time.perf_counter() - start_wall,
            controller_s=in_controller,
            controller_cpu_s=cpu_in_controller,
            # the passes made (a tick of the platform's controller may make none)
            passes=self.controller.passes - counted,
            partial=self.controller.partial_passes - partial,
            moved=0,
            rss_mib=peak_rss_mib(),
        )

    def use_controller(self, resync: float | None) -> None:
        """A new app controller for the next phases: ``resync`` None, every tick a full pass;
        else the platform's own (told of each instance change and its app: ``watch_changes``).
        It first passes until settled, so the phase does not pay for writing the events the
        sim already holds (what a new controller does first)."""
        self.controller = self.platform.app_controller(resync=resync)
        if resync is not None:
            self.platform.providers.watch_changes(self.controller.changed)
        for _ in range(20):
            asyncio.run(self.controller.run_once())
            if self.controller.last.settled:
                return
        raise RuntimeError("the platform did not settle for a new controller")

    def quiet(self, *, seconds: int, resync: float | None, stuck: bool = False) -> Quiet:
        """``seconds`` simulated seconds of a platform where nothing changes, ticked once a
        second as the running platform ticks its controller: ``resync`` None is every tick a
        full pass (the controller before it skipped quiet ticks); a number, the platform's own
        controller (told of instance changes, a full pass per ``resync`` when nothing changes,
        the apps not as wished looked at alone from its work queue). ``stuck``: one app of
        the platform cannot be placed (before the work queue that made every tick a full
        pass). A fresh controller first passes until settled (it writes the events the sim
        holds), but for the stuck app."""
        controller = self.platform.app_controller(resync=resync)
        self.platform.providers.watch_changes(controller.changed)
        sim = self.sim()
        for _ in range(20):
            asyncio.run(controller.run_once())
            if controller.last.unsettled == int(stuck) and not controller.last.partial:
                break
        else:
            raise RuntimeError("the platform did not settle for the quiet phase")
        passes, partial = controller.passes, controller.partial_passes
        cpu = time.process_time()
        for _ in range(seconds):
            self.clock.step(1.0)
            sim.advance()
            asyncio.run(controller.run_once())
        return Quiet(
            resync=resync,
            seconds=seconds,
            cpu_s=time.process_time() - cpu,
            passes=controller.passes - passes - (controller.partial_passes - partial),
            partial=controller.partial_passes - partial,
            stuck=stuck,
        )

    def _until_change_or_resync(self, sim: SimCluster, resync_at: dt.datetime) -> None:
        """Move simulated time as an event-driven controller lives it: to the next moment an
        instance changes (the sim's next scheduled transitions, run until one is visible to
        a watcher), or to the resync, whichever comes first. A watch-based informer tells a
        real controller of a change within milliseconds; here the reaction is immediate."""
        seen = sim.changes
        while sim.changes == seen:
            pending = sim.next_transition_at()
            target = resync_at if pending is None or pending >= resync_at else pending
            ahead = (target - self.clock.now()).total_seconds()
            # at least a microsecond: the transition's time, rounded to the clock's microsecond,
            # may fall just before it
            self.clock.step(max(ahead, 1e-6))
            sim.advance()
            if target == resync_at:
                return

    def all_ready(self, app: str, count: int) -> Any:
        def check() -> bool:
            insts = self.observed(app)
            return len(insts) == count and all(i.ready for i in insts)

        return check

    def upgrade_done(self, app: str) -> Any:
        def check() -> bool:
            # newest first: the first page's first item is the upgrade just started
            upgrades = self.call("GET", f"{BIZ}/apps/{app}/upgrades?limit=1")["items"]
            return bool(upgrades and upgrades[0]["state"] == "Succeeded")

        return check


def template(name: str, image: str, memory: int = 256) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {"cpu": 0.5, "memory": memory},
        "ports": [{"port": 8080}],
        "readiness": {"kind": "http", "port": 8080, "period_s": 5},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=250, help="max_unavailable of upgrades")
    parser.add_argument("--step", type=float, default=1.0, help="simulated seconds per pass")
    parser.add_argument("--bandwidth", type=int, default=1000, help="node link, Mbit/s")
    parser.add_argument(
        "--wake",
        choices=("events", "poll"),
        default="events",
        help="events: a pass at each instance change and at the resync (--step), as the "
        "platform runs the controller; poll: a pass every --step only (before issue 22)",
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=Settings.model_fields["app_resync_seconds"].default,
        help="the quiet phase's resync (GAIA_APP_RESYNC_SECONDS)",
    )
    parser.add_argument("--quiet-s", type=int, default=30, help="simulated seconds of quiet")
    parser.add_argument("--quick", action="store_true", help="200 nodes, 500 instances")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.instances, args.batch = 200, 500, 25
    with tempfile.TemporaryDirectory(prefix="gaia-bench-") as tmp:
        bench = Bench(
            nodes=args.nodes,
            step=args.step,
            bandwidth=args.bandwidth,
            data_dir=Path(tmp),
            wake=args.wake,
        )
        n = args.instances
        half = list(range(0, n, 2))
        # identical layer sizes for both repositories: a 160 MB base shared by the two tags and
        # a 60 MB top layer that differs between them
        sim = bench.sim()
        mb = 1_000_000
        for repo in ("bench/web", "bench/cold", "bench/api"):
            sim.register_image(f"{repo}:1", [40 * mb, 80 * mb, 40 * mb, 60 * mb])
            sim.register_image(f"{repo}:2", [40 * mb, 80 * mb, 40 * mb, 60 * mb + 1])
        phases = []
        quiet: list[Quiet] = []
        # separate repositories, so the baseline starts with caches as cold as ours did
        for app, first, second, prepull in (
            (
                "inplace",
                template("v1", "bench/web:1"),
                template("v2", "bench/web:2"),
                "templates",
            ),
            ("cold", template("v1", "bench/cold:1"), template("v2", "bench/cold:2"), "upgrades"),
            (
                "recreate",
                template("v1", "bench/api:1"),
                template("v2", "bench/api:2", memory=384),
                "upgrades",
            ),
        ):
            bench.call(
                "POST",
                f"{BIZ}/apps",
                {
                    "name": app,
                    "cluster": "scale",
                    "templates": [first, second],
                    "replicas": n,
                    "prepull": prepull,
                },
            )
            phases.append(bench.run_until(f"create {n} ({app} app)", bench.all_ready(app, n)))
            before = {i.instance_id: i.node for i in bench.observed(app)}
            bench.call(
                "POST",
                f"{BIZ}/apps/{app}/upgrades",
                {"template": "v2", "instance_ids": half, "max_unavailable": args.batch},
            )
            kind = {
                "inplace": "in place, v2 pre-pulled",
                "cold": "in place, cold",
                "recreate": "recreate (baseline)",
            }[app]
            phase = bench.run_until(f"upgrade {len(half)}: {kind}", bench.upgrade_done(app))
            after = {i.instance_id: i.node for i in bench.observed(app)}
            phase.moved = sum(1 for i in half if after.get(i) != before.get(i))
            phases.append(phase)
            if app == "inplace":
                # every instance running as wished, nothing changing: what the controller costs
                quiet = [bench.quiet(seconds=args.quiet_s, resync=r) for r in (None, args.resync)]
                # one app that cannot be placed (more CPU than any node has), as a large
                # platform always has one: before the work queue every tick was a full pass
                stuck = template("v1", "bench/web:1") | {"resources": {"cpu": 64, "memory": 256}}
                bench.call(
                    "POST",
                    f"{BIZ}/apps",
                    {
                        "name": "stuck",
                        "cluster": "scale",
                        "templates": [stuck],
                        "replicas": 1,
                        "allow_pending": True,
                    },
                )
                quiet += [
                    bench.quiet(seconds=args.quiet_s, resync=r, stuck=True)
                    for r in (None, args.resync)
                ]
                bench.call("DELETE", f"{BIZ}/apps/stuck")
                bench.run_until("delete the stuck app", lambda: not bench.observed("stuck"))
                # a small app upgraded in place beside the big one: every instance change a
                # full pass of the platform (the controller up to session 36) beside the
                # platform's own, which looks at the app whose instance changed and reads
                # only that app's instances (twin apps, twin repositories: both pull cold)
                small = max(10, n // 50)
                for twin, label, resync in (
                    ("small-a", "every change a full pass", None),
                    ("small-b", "a change: its app", args.resync),
                ):
                    repo = f"bench/{twin}"
                    sim.register_image(f"{repo}:1", [40 * mb, 80 * mb, 40 * mb, 60 * mb])
                    sim.register_image(f"{repo}:2", [40 * mb, 80 * mb, 40 * mb, 60 * mb + 1])
                    bench.use_controller(resync)
                    bench.call(
                        "POST",
                        f"{BIZ}/apps",
                        {
                            "name": twin,
                            "cluster": "scale",
                            "templates": [template("v1", f"{repo}:1"), template("v2", f"{repo}:2")],
                            "replicas": small,
                        },
                    )
                    bench.run_until(f"create {twin}", bench.all_ready(twin, small))
                    bench.call(
                        "POST",
                        f"{BIZ}/apps/{twin}/upgrades",
                        {
                            "template": "v2",
                            "instance_ids": list(range(small)),
                            "max_unavailable": max(1, small // 10),
                        },
                    )
                    name = f"upgrade {small} of {twin}: {label}"
                    phases.append(bench.run_until(name, bench.upgrade_done(twin)))
                bench.use_controller(None)
            # the twin app's instances must not disturb the next phase's timing
            bench.call("POST", f"{BIZ}/apps/{app}/stop")
            bench.run_until(f"stop {app}", lambda a=app: not bench.observed(a))

        changed = sim.image_bytes_missing(have="bench/web:1", want="bench/web:2")
        bandwidth = args_bandwidth_bytes(sim)
        batches = -(-len(half) // args.batch)
        floor = batches * changed / bandwidth
        print(
            f"\nsim_scale: {args.nodes} nodes, {n} instances, upgrade {len(half)} "
            f"in batches of {args.batch}, controller woken by {args.wake} "
            f"(resync every {args.step}s simulated), SQLite\n"
        )
        print(
            f"{'phase':<46} {'sim s':>8} {'wall s':>8} {'ctrl s':>8} {'passes':>7} "
            f"{'partial':>7} {'ctrl ms/pass':>12} {'CPU ms/pass':>11} "
            f"{'moved':>6} {'peak RSS MiB':>13}"
        )
        for p in phases:
            print(
                f"{p.name:<46} {p.sim_s:>8.2f} {p.wall_s:>8.1f} {p.controller_s:>8.1f} "
                f"{p.passes:>7} {p.partial:>7} {p.per_pass_ms:>12.0f} {p.cpu_per_pass_ms:>11.0f} "
                f"{p.moved:>6} {p.rss_mib:>13.0f}"
            )
        print(
            f"\nphysical limit of the upgrade: {batches} batches x {changed / 1e6:.1f} MB of "
            f"changed layers / {bandwidth * 8 / 1e6:.0f} Mbit/s = {floor:.1f} simulated s"
        )
        changed_layers = len(
            set(sim.image_layers("bench/web:2")) - set(sim.image_layers("bench/web:1"))
        )
        first_pull = changed / bandwidth + UNPACK_S_PER_LAYER * changed_layers
        restart = WATCH_S + CREATE_S + START_S
        print(
            f"simulated kubelet's floor, cold (prepull: upgrades): the first batch's pull "
            f"{first_pull:.2f} s + {batches} batches x restart {restart:.2f} s (watch {WATCH_S}, "
            f"create {CREATE_S}, start {START_S}) = {first_pull + batches * restart:.2f} "
            f"simulated s"
        )
        print(
            f"simulated kubelet's floor, v2 pulled before its upgrade (prepull: templates): "
            f"{batches} batches x restart {restart:.2f} s = {batches * restart:.2f} simulated s"
        )
        print(
            f"\nquiet platform ({n} instances running as wished, nothing changing), "
            f"{args.quiet_s} simulated s ticked once a second:"
        )
        for q in quiet:
            how = (
                "every tick a full pass (before: no quiet ticks)"
                if q.resync is None
                else f"quiet ticks skipped, resync every {q.resync:g} s"
            )
            if q.stuck:
                how = "+ 1 app that cannot be placed: " + (
                    "every tick a full pass (before)" if q.resync is None else "work queue"
                )
            print(
                f"  {how:<63} controller CPU {q.cpu_ms_per_s:7.1f} ms per simulated s, "
                f"{q.passes} full passes, {q.partial} partial"
            )
        bench.client.__exit__(None, None, None)


def args_bandwidth_bytes(sim: SimCluster) -> float:
    node = asyncio.run(sim.list_nodes())[0]
    return float(node.capacity.bandwidth) * 125_000


if __name__ == "__main__":
    main()
