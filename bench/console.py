"""Console page load budget: the app page with 1,000 instances, the overview with 50 clusters,
the alert records page with 10,000 records.

Run ``.venv/bin/python bench/console.py`` from the repository root (``--quick``: 200 instances,
10 clusters, 500 alert records). It needs Debian's Chromium (``apt-get install chromium``) and
the console assets (``scripts/console-assets.sh``).

In one process, on SQLite in a temporary folder: ``--clusters`` sim clusters (one of 100 nodes
for the app, the others of 2 nodes), a business with a quota on each, and an app of
``--instances`` instances brought to Running by the real app controller on a stepped clock; and
``--alerts`` alert records of one app CPU policy with a webhook channel, written the way the
evaluator writes them (``gaia.store.alerting.records.apply_transitions``: each record with its
queued notification), one in five still firing, the rest resolved. The platform is then served by
uvicorn on a free port, and each page is loaded ``--loads`` times (the instances tab twice:
its first page, and filtered by status, part of the node's name and part of the instance's):

- **TTFB**: time to the first byte of the HTML (httpx, streaming, the session cookie set);
- **full load**: Chromium's navigation timing from the start of the navigation to the end of
  the ``load`` event (HTML, CSS, scripts), through Playwright;
- **baseline**: the API call the page is built from, as JSON, the least any page showing that
  data must wait for: time to its first byte. ``GET /api/v1/overview``; for the app page and
  its instances tab, one page of the app's instances (``limit=1`` for the app page, which
  shows only the counts that page carries, ``limit=50`` for the tab's first page of 50: the
  API filters, counts and pages the instances, so neither page reads the others); and
  ``GET /api/v1/alerts/records?limit=50``.

The app's other tabs that show instances are loaded too (issue 22): monitoring (a page of 12
small charts; baseline: that page of ``GET .../instances``), logs and the terminal (an instance
picker; baselines: one page of log lines, and ``GET .../instances/{id}`` of the instance the
terminal opens on), network (a page of instances with their addresses; baseline:
``GET .../network?limit=50``) and the apps list (baseline: ``GET .../apps``, which counts each
app's ready instances). For the network tab the app is made a floating-IP app (a default
version with ``network_mode: floating-ip``) with one address per instance and ``--kept`` more
kept for instances scaled away, written as the CNI plugin's ADDs write them; the **upgrade**
tab (baseline: ``GET .../upgrades?limit=20``) has ``--upgrades`` upgrades of every instance in
the history, the newest Paused (so its panel polls, as while one runs), written to the store as
``POST .../upgrades`` stores them (running them would take the controller hours).
**Scale in** is timed as the console's form post (``count=1``, to its redirect)
beside the API's ``POST .../scale-in`` of one id; each is undone by an untimed scale-out, so the
app keeps its size. ``--only WORD`` keeps the rows whose label contains one of the words given.

Medians are printed with the budget (TTFB 1 s, full load 2 s); nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gaia.app import Platform, create_app
from gaia.clock import ManualClock
from gaia.domain.alerts import Transition, TransitionKind, fingerprint
from gaia.security import hash_password, use_cheap_password_hashing
from gaia.settings import Settings
from gaia.store.alerting.records import apply_transitions, load_evaluation_inputs
from gaia.store.models import (
    AlertRecord,
    App,
    AppUpgrade,
    FloatingIpPool,
    NetworkAttachment,
    User,
)

BIZ = "/api/v1/businesses/bench"
BUDGET_TTFB_S = 1.0
BUDGET_LOAD_S = 2.0


def every_item(call: Callable[[str, str], Any], path: str) -> list[Any]:
    """Every item of a paged API list (``{"items", "next_cursor"}``), page by page."""
    items: list[Any] = []
    cursor = ""
    while True:
        page = call("GET", f"{path}?limit=500" + (f"&cursor={cursor}" if cursor else ""))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def build(args: argparse.Namespace, data_dir: Path) -> Platform:
    use_cheap_password_hashing()
    settings = Settings(data_dir=data_dir, secret_key=Fernet.generate_key().decode(), demo=False)
    clock = ManualClock(dt.datetime.now(dt.UTC))
    platform = Platform.open(settings, clock=clock)
    with platform.db.write_session() as session:
        session.add(
            User(username="admin", password_hash=hash_password("pw"), is_platform_admin=True)
        )
    with TestClient(create_app(platform, run_loops=False), base_url="https://x") as client:
        token = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "pw"}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}

        def call(method: str, path: str, body: Any = None) -> Any:
            r = client.request(method, path, json=body, headers=headers)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
            return r.json() if r.content else None

        call("POST", "/api/v1/businesses", {"name": "bench"})
        huge = {"cpu": 100_000, "memory": 10**8, "local_disk": 10**5, "bandwidth": 10**7}
        for i in range(args.clusters):
            name = "apps" if i == 0 else f"c{i:02d}"
            nodes = 100 if i == 0 else 2
            call(
                "POST",
                "/api/v1/clusters",
                {
                    "name": name,
                    "kind": "sim",
                    "region": f"region-{i % 5}",
                    "zone": f"zone-{i % 10}",
                    "sim": {"nodes": nodes, "cpu": 64, "memory_mib": 262144, "gpus": 0},
                },
            )
            call("PUT", f"{BIZ}/quotas/{name}", {"hard": huge})
        template = {
            "name": "v1",
            "image": "bench/web:1",
            "resources": {"cpu": 0.5, "memory": 256},
            "ports": [{"port": 8080}],
        }
        v2 = {**template, "name": "v2", "image": "bench/web:2"}
        call(
            "POST",
            f"{BIZ}/apps",
            {
                "name": "web",
                "cluster": "apps",
                "templates": [template, v2],
                "replicas": args.instances,
            },
        )
        controller = platform.app_controller()
        for _ in range(2_000):
            clock.step(1.0)
            asyncio.run(controller.run_once())
            instances = every_item(call, f"{BIZ}/apps/web/instances")
            if len(instances) == args.instances and all(i["ready"] for i in instances):
                break
        else:
            raise RuntimeError("the app did not become ready")
        seed_alert_records(platform, call, clock=clock, count=args.alerts)
        seed_network(platform, call, instances=args.instances, kept=args.kept)
        seed_upgrades(platform, instances=args.instances, count=args.upgrades)
    return platform


def seed_network(
    platform: Platform, call: Callable[..., Any], *, instances: int, kept: int
) -> None:
    """The app as a floating-IP app: a default version with ``network_mode: floating-ip``
    (policy ``never``; its instances keep running the version they run), a pool of a /18, and
    one address per instance plus ``kept`` for instances scaled away, written as the CNI
    plugin's ADDs write them (``gaia.store.network.attach_floating``: one row each), in one
    transaction."""
    floating = {
        "name": "v3",
        "image": "bench/web:3",
        "resources": {"cpu": 0.5, "memory": 256},
        "ports": [{"port": 8080}],
        "network_mode": "floating-ip",
        "ip_release": "never",
    }
    call("POST", f"{BIZ}/apps/web/templates?allow_pending=true", floating)
    call("PATCH", f"{BIZ}/apps/web", {"default_template": "v3"})
    call("POST", "/api/v1/clusters/apps/ip-pools", {"name": "rack", "subnet": "10.64.0.0/18"})
    with platform.db.write_session() as session:
        pool = session.scalars(select(FloatingIpPool)).one()
        app = session.scalars(select(App).where(App.name == "web")).one()
        first = int(ipaddress.IPv4Address(pool.range_start))
        session.add_all(
            NetworkAttachment(
                cluster_id=app.cluster_id,
                business_id=app.business_id,
                pod=f"web-{iid}",
                mode="floating-ip",
                pool_id=pool.id,
                ip=str(ipaddress.IPv4Address(first + n)),
                policy="never",
                node=f"node-{iid % 100}",
                container_id=f"sandbox-{iid}",
            )
            for n, iid in enumerate([*range(instances), *range(10**6 - kept, 10**6)])
        )
    print(f"seeded {instances} addresses and {kept} kept ones", flush=True)


def seed_upgrades(platform: Platform, *, instances: int, count: int) -> None:
    """``count`` gray upgrades of every instance in the app's history: all Succeeded but the
    newest, Paused (the upgrade tab's panel then polls, as while one runs), as the API's
    ``POST .../upgrades`` with ``all`` stores them (``instance_ids`` and ``previous`` of every
    instance); written directly, since running them would take the controller hours here."""
    if not count:
        return
    ids = list(range(instances))
    with platform.db.write_session() as session:
        app = session.scalars(select(App).where(App.name == "web")).one()
        for n in range(count):
            target, before = ("v2", "v1") if n % 2 == 0 else ("v1", "v2")
            newest = n == count - 1
            session.add(
                AppUpgrade(
                    app_id=app.id,
                    target=target,
                    instance_ids=ids,
                    previous={str(i): before for i in ids},
                    max_unavailable=250,
                    state="Paused" if newest else "Succeeded",
                    message="",
                    created_by="admin",
                )
            )
    print(f"seeded {count} upgrades of {instances} instances each", flush=True)


def seed_alert_records(
    platform: Platform, call: Callable[..., Any], *, clock: ManualClock, count: int
) -> None:
    """``count`` records of one app CPU policy, written by the store calls the evaluator makes
    after a pass (fire transitions, then resolve transitions for four in five), a thousand per
    transaction as a busy pass would; each fire queues one webhook notification (no delivery
    loop runs here, so they stay pending)."""
    hook = call(
        "POST",
        "/api/v1/alerts/channels",
        {
            "business": "bench",
            "name": "ops-hook",
            "kind": "webhook",
            "config": {"url": "https://hooks.example.com/alerts"},
        },
    )
    policy = call(
        "POST",
        "/api/v1/alerts/policies",
        {
            "business": "bench",
            "name": "web CPU high",
            "scope": {"kind": "app", "app": "web"},
            "metric": "gaia_instance_cpu_usage_percent",
            "comparison": ">",
            "threshold": 80,
            "for_seconds": 0,
            "severity": "critical",
            "channel_ids": [hook["id"]],
        },
    )
    policy_id = policy["id"]
    for start in range(0, count, 1000):
        batch = range(start, min(start + 1000, count))
        labels = [
            {"cluster": "apps", "business": "bench", "app": "web", "instance": f"web-{i}"}
            for i in batch
        ]
        resolved = [x for i, x in zip(batch, labels, strict=True) if i % 5]
        for kind, value, chosen in (
            (TransitionKind.FIRE, 97.0, labels),
            (TransitionKind.RESOLVE, 31.0, resolved),
        ):
            now = clock.now()
            at = now.timestamp()
            with platform.db.write_session() as session:
                policies, silences, _firing = load_evaluation_inputs(session, now=now)
                row = policies[policy_id]
                transitions = [
                    (
                        row,
                        policy_id,
                        Transition(
                            kind=kind,
                            fingerprint=fingerprint(policy_id, x),
                            labels=x,
                            value=value,
                            active_since=at - 60,
                            at=at,
                        ),
                    )
                    for x in chosen
                ]
                apply_transitions(session, transitions, silences=silences, now=now)
            clock.step(15.0)
    with platform.db.read_session() as session:
        by_status = dict(
            session.execute(
                select(AlertRecord.status, func.count()).group_by(AlertRecord.status)
            ).all()
        )
    print(f"alert records by status: {by_status}", flush=True)


def serve(platform: Platform) -> tuple[uvicorn.Server, threading.Thread, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(platform, run_loops=False), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def ttfb(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    first = 0.0
    with client.stream("GET", url) as response:
        for _chunk in response.iter_raw():
            if not first:
                first = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}")
    return first


def full_load(page: Any, url: str) -> float:
    page.goto(url, wait_until="load")
    timing = page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " return [n.startTime, n.loadEventEnd]; }"
    )
    return float(timing[1] - timing[0]) / 1000


def time_scale_in(
    web: httpx.Client, api: httpx.Client, *, token: str, origin: str, args: argparse.Namespace
) -> tuple[str, float, float | None, float]:
    """The console's scale-in form (``count=1``: the newest instance), to its redirect, beside
    the API's scale-in of one id; each is undone by an untimed scale-out of one, so the app keeps
    its size. The ids the platform hands out only grow: the API's own removal takes the id the
    scale-out before it gave."""
    from gaia.console.browser_guard import csrf_token

    form_headers = {"X-CSRF-Token": csrf_token(token), "Origin": origin}
    next_id = args.instances
    consoles, floors = [], []
    for _ in range(args.loads):
        started = time.perf_counter()
        r = web.post(
            "/console/b/bench/apps/web/scale-in", data={"count": "1"}, headers=form_headers
        )
        consoles.append(time.perf_counter() - started)
        if r.status_code != 303 or "ok=" not in r.headers.get("location", ""):
            raise RuntimeError(f"console scale-in: {r.status_code} {r.headers.get('location')}")
        # back to the app's size (an app has at most 10,000 instances): the new one is next_id
        api.post(f"{BIZ}/apps/web/scale-out", json={"count": 1}).raise_for_status()
        started = time.perf_counter()
        r = api.post(f"{BIZ}/apps/web/scale-in", json={"instance_ids": [next_id]})
        floors.append(time.perf_counter() - started)
        r.raise_for_status()
        api.post(f"{BIZ}/apps/web/scale-out", json={"count": 1}).raise_for_status()
        next_id += 2
    return (
        f"scale-in 1 of {args.instances} (form post)",
        statistics.median(consoles),
        None,
        statistics.median(floors),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument(
        "--kept", type=int, default=100, help="addresses kept for instances scaled away"
    )
    parser.add_argument(
        "--upgrades", type=int, default=20, help="upgrades of every instance in the history"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", nargs="*", default=[], help="measure only the rows whose label has a word"
    )
    args = parser.parse_args()
    if args.quick:
        args.instances, args.clusters, args.alerts, args.loads = 200, 10, 500, 3
        args.kept, args.upgrades = 10, 5
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Chromium is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gaia-console-bench-") as tmp:
        started = time.perf_counter()
        platform = build(args, Path(tmp))
        print(
            f"set up {args.clusters} clusters, {args.instances} running instances and "
            f"{args.alerts} alert records in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        server, thread, origin = serve(platform)
        token = httpx.post(
            f"{origin}/api/v1/auth/login", json={"username": "admin", "password": "pw"}
        ).json()["token"]
        # (label, console page, the API call it is built from)
        pages = [
            (f"overview, {args.clusters} clusters", "/console", "/api/v1/overview"),
            (
                f"app page, {args.instances} instances",
                "/console/b/bench/apps/web",
                f"{BIZ}/apps/web/instances?limit=1",
            ),
            (
                f"app instances tab, {args.instances} instances",
                "/console/b/bench/apps/web/instances",
                f"{BIZ}/apps/web/instances?limit=50",
            ),
            (
                "app instances tab, filtered",
                "/console/b/bench/apps/web/instances?status=Running&node=node-9&name=7",
                f"{BIZ}/apps/web/instances?status=Running&node=node-9&name=7&limit=50",
            ),
            (
                f"app monitoring, {args.instances} instances",
                "/console/b/bench/apps/web/monitoring",
                f"{BIZ}/apps/web/instances?limit=12",
            ),
            (
                f"app logs, {args.instances} instances",
                "/console/b/bench/apps/web/logs",
                f"{BIZ}/apps/web/logs?limit=100",
            ),
            (
                f"app terminal, {args.instances} instances",
                f"/console/b/bench/apps/web/terminal?instance={args.instances // 2}",
                f"{BIZ}/apps/web/instances/{args.instances // 2}",
            ),
            (
                f"app network, {args.instances} instances",
                "/console/b/bench/apps/web/network",
                f"{BIZ}/apps/web/network?limit=50",
            ),
            (
                f"app upgrades, {args.upgrades} of {args.instances} each",
                "/console/b/bench/apps/web/upgrade",
                f"{BIZ}/apps/web/upgrades?limit=20",
            ),
            (
                f"apps list, an app of {args.instances}",
                "/console/apps",
                f"{BIZ}/apps",
            ),
            (
                f"alert records, {args.alerts} records",
                "/console/alerts",
                "/api/v1/alerts/records?limit=50",
            ),
            (
                f"alert records, resolved of {args.alerts}",
                "/console/alerts?status=resolved&severity=critical",
                "/api/v1/alerts/records?status=resolved&severity=critical&limit=50",
            ),
        ]
        if args.only:
            pages = [p for p in pages if any(word in p[0] for word in args.only)]
        rows: list[tuple[str, float, float | None, float]] = []
        with (
            httpx.Client(base_url=origin, cookies={"gaia_session": token}, timeout=60) as web,
            httpx.Client(
                base_url=origin, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as api,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1366, "height": 800})
            context.add_cookies([{"name": "gaia_session", "value": token, "url": origin}])
            page = context.new_page()
            for label, console_path, api_path in pages:
                ttfb(web, console_path)  # warm caches once
                firsts = [ttfb(web, console_path) for _ in range(args.loads)]
                loads = [full_load(page, origin + console_path) for _ in range(args.loads)]
                floors = [ttfb(api, api_path) for _ in range(args.loads)]
                rows.append(
                    (
                        label,
                        statistics.median(firsts),
                        statistics.median(loads),
                        statistics.median(floors),
                    )
                )
                print(f"measured {label}", flush=True)
            if not args.only or any(word in "scale-in" for word in args.only):
                try:
                    rows.append(time_scale_in(web, api, token=token, origin=origin, args=args))
                    print("measured scale-in", flush=True)
                except (httpx.HTTPError, RuntimeError) as exc:  # the pages' rows still print
                    print(f"scale-in not measured: {exc}", flush=True)
            browser.close()
        server.should_exit = True
        thread.join(timeout=10)
        platform.db.dispose()

    print()
    print(
        f"median of {args.loads} loads each; "
        f"budget: TTFB {BUDGET_TTFB_S:g} s, full load {BUDGET_LOAD_S:g} s"
    )
    print(f"{'page':42} {'TTFB':>9} {'full load':>10} {'API JSON':>10}  budget")
    for label, first, load, floor in rows:
        within = "within" if first <= BUDGET_TTFB_S and (load or 0) <= BUDGET_LOAD_S else "OVER"
        shown = "-" if load is None else f"{load * 1000:.0f} ms"
        print(f"{label:42} {first * 1000:6.0f} ms {shown:>10} {floor * 1000:7.0f} ms  {within}")
    print(
        "(API JSON: the API call the page is built from, the floor: time to its first byte;"
        " for the app page and its instances tab one page of GET .../instances, which filters"
        " and counts every instance)"
    )


if __name__ == "__main__":
    main()
