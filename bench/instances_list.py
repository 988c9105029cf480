"""The instances list of one app of 10,000 instances: the time of one page, and of a whole walk.

Run ``.venv/bin/python bench/instances_list.py`` from the repository root (``--instances`` for
another size, ``--loads`` for more samples). In one process, on SQLite in a temporary directory:
a sim cluster with room for everything, an app of ``--instances`` instances created through the
real HTTP API (TestClient), one pass of the real ``AppController`` so the cluster runs them, then
``GET .../instances`` is timed:

- **one page** (``?limit=100``, the default, and ``?limit=500``, the most a page holds): what a
  client that shows a page waits;
- **the whole list** walked page by page with ``limit=500`` (the console's ``every_item``): what a
  client that needs everything waits, the baseline of the same run.

Before issue 15 the list had no pages: one answer of every instance. That figure comes from
this script run on the commit before (the answer is a bare array there: the script times that
one call as "one page" and as the walk).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gaia.app import Platform, create_app
from gaia.clock import ManualClock
from gaia.security import hash_password, use_cheap_password_hashing
from gaia.settings import Settings
from gaia.store.models import User

BIZ = "/api/v1/businesses/bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    use_cheap_password_hashing()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        settings = Settings(
            data_dir=data_dir,
            database_url=f"sqlite:///{data_dir / 'gaia.db'}",
            secret_key=Fernet.generate_key().decode(),
            demo=False,
        )
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

            def call(method: str, path: str, body: Any = None, **params: Any) -> Any:
                r = client.request(method, path, json=body, headers=headers, params=params)
                if r.status_code >= 400:
                    raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
                return r.json() if r.content else None

            call("POST", "/api/v1/businesses", {"name": "bench"})
            nodes = max(2, args.instances // 50)
            sim = {"nodes": nodes, "cpu": 64, "memory_mib": 262144, "gpus": 0}
            call("POST", "/api/v1/clusters", {"name": "scale", "kind": "sim", "sim": sim})
            huge = {"cpu": 1_000_000, "memory": 10**9, "local_disk": 10**6, "bandwidth": 10**8}
            call("PUT", f"{BIZ}/quotas/scale", {"hard": huge})
            template = {"name": "v1", "image": "bench/web:1", "resources": {"cpu": 0.5}}
            app = {"name": "web", "cluster": "scale", "templates": [template]}
            call("POST", f"{BIZ}/apps", {**app, "replicas": args.instances})
            clock.step(1.0)
            asyncio.run(platform.app_controller().run_once())
            path = f"{BIZ}/apps/web/instances"

            def one_page(limit: int) -> tuple[float, int]:
                started = time.perf_counter()
                body = call("GET", path, limit=limit)
                took = time.perf_counter() - started
                return took, len(body["items"] if isinstance(body, dict) else body)

            def walk() -> tuple[float, int]:
                started, seen, cursor = time.perf_counter(), 0, None
                while True:
                    body = call("GET", path, limit=500, **({"cursor": cursor} if cursor else {}))
                    if isinstance(body, list):  # before issue 15: one bare array
                        return time.perf_counter() - started, len(body)
                    seen += len(body["items"])
                    cursor = body["next_cursor"]
                    if not cursor:
                        return time.perf_counter() - started, seen

            rows = [
                ("one page, limit=100", lambda: one_page(100)),
                ("one page, limit=500", lambda: one_page(500)),
                ("whole list, pages of 500", walk),
            ]
            print(f"GET .../instances of one app of {args.instances:,} instances, SQLite")
            print(f"{'':28} {'median s':>9} {'min s':>7} {'items':>7}")
            for label, run in rows:
                run()  # warm
                samples = [run() for _ in range(args.loads)]
                times = [t for t, _ in samples]
                print(
                    f"{label:28} {statistics.median(times):9.3f} {min(times):7.3f}"
                    f" {samples[0][1]:7,}"
                )
        platform.db.dispose()


if __name__ == "__main__":
    main()
