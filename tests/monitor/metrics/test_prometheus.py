"""A real Prometheus (Debian's ``prometheus`` 2.42) scraping a real Gaia over HTTP.

One Gaia per module runs under uvicorn on a free port, with ``GAIA_METRICS_STORE=prometheus``;
one Prometheus scrapes it every second with two jobs: ``gaia`` (``GET /metrics``, the platform's
own metrics, with an administrator's API token) and ``gaia-clusters`` (``GET /metrics/clusters``,
the collected series, with the metrics token, configured by ``scrape_config()``). The tests then
read back through ``PrometheusStore`` what went round: the platform's metrics, and samples
written to the store, with their labels, values and times intact.

Without the ``prometheus`` binary the module is skipped locally and fails in CI.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient

from gaia import __version__
from gaia.app import Platform, create_app
from gaia.domain.errors import InvalidRequest
from gaia.monitor.metrics.prometheus import PrometheusStore, scrape_config
from gaia.monitor.metrics.series import MetricStoreUnavailable, Sample
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store.models import User
from tests.conftest import ADMIN_PASSWORD, TEST_SECRET_KEY, missing_component

T = TypeVar("T")
METRICS_TOKEN = "scrape-token-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bed:
    gaia: str  # base URL
    prometheus: str
    platform: Platform
    loop: asyncio.AbstractEventLoop  # Gaia's event loop: the store is used on it
    admin: dict[str, str]

    def on_gaia(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    @property
    def store(self) -> PrometheusStore:
        store = self.platform.metric_store
        assert isinstance(store, PrometheusStore)
        return store


def _wait(what: str, check: Callable[[], bool], *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _targets_up(prometheus: str) -> bool:
    try:
        targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return len(targets) == 2 and all(t["health"] == "up" for t in targets)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Bed]:
    binary = shutil.which("prometheus")
    if binary is None:
        missing_component("Prometheus", "apt-get install prometheus (Debian's package)")
        raise AssertionError("unreachable")
    work = tmp_path_factory.mktemp("prometheus-bed")
    shutil.copy(sqlite_template, work / "gaia.db")
    gaia_port, prom_port = _free_port(), _free_port()
    gaia = f"http://127.0.0.1:{gaia_port}"
    prometheus = f"http://127.0.0.1:{prom_port}"
    settings = Settings(
        data_dir=work / "data",
        database_url=f"sqlite:///{work / 'gaia.db'}",
        secret_key=TEST_SECRET_KEY,
        demo=False,
        metrics_store="prometheus",
        prometheus_url=prometheus,
        metrics_token=METRICS_TOKEN,
    )
    plat = Platform.open(settings, run_migrations=False)
    with plat.db.write_session() as session:
        session.add(
            User(
                username="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                is_platform_admin=True,
            )
        )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(plat, run_loops=False), host="127.0.0.1", port=gaia_port, log_level="warning"
        )
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gaia-under-test", daemon=True)
    thread.start()
    serving = asyncio.run_coroutine_threadsafe(server.serve(), loop)
    proc: subprocess.Popen[bytes] | None = None
    try:
        _wait("Gaia to start", lambda: server.started)
        session = httpx.post(
            f"{gaia}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["token"]
        api_token = httpx.post(
            f"{gaia}/api/v1/tokens",
            json={"name": "prometheus"},
            headers={"Authorization": f"Bearer {session}"},
        ).json()["token"]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "gaia",
                    "metrics_path": "/metrics",
                    "authorization": {"credentials": api_token},
                    "static_configs": [{"targets": [f"127.0.0.1:{gaia_port}"]}],
                },
                scrape_config(
                    job="gaia-clusters",
                    target=f"127.0.0.1:{gaia_port}",
                    token=METRICS_TOKEN,
                    interval="1s",
                ),
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(work / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait("Prometheus to scrape both targets", lambda: _targets_up(prometheus))
        except AssertionError:
            if proc.poll() is not None:
                missing_component(
                    "Prometheus", f"it exited: {(work / 'prometheus.log').read_text()[-2000:]}"
                )
            raise
        yield Bed(
            gaia=gaia,
            prometheus=prometheus,
            platform=plat,
            loop=loop,
            admin={"Authorization": f"Bearer {api_token}"},
        )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.should_exit = True
        serving.result(timeout=30)
        asyncio.run_coroutine_threadsafe(plat.metric_store.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        plat.db.dispose()


def _eventually(what: str, probe: Callable[[], T | None], *, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_the_platform_metrics_are_queryable_in_prometheus(bed: Bed) -> None:
    store = bed.store
    build = _eventually(
        "gaia_build_info", lambda: bed.on_gaia(store.latest("gaia_build_info", at=time.time()))
    )
    assert build[0].labels["version"] == __version__ and build[0].points[0][1] == 1.0
    # Prometheus' own scrapes of /metrics are requests, counted under the route template
    scrapes = _eventually(
        "gaia_http_requests_total of /metrics",
        lambda: bed.on_gaia(
            store.latest(
                "gaia_http_requests_total",
                {"route": "/metrics", "status": "200", "method": "GET"},
                at=time.time(),
            )
        ),
    )
    assert scrapes[0].points[0][1] >= 1
    routes = bed.on_gaia(store.label_values("gaia_http_requests_total", "route"))
    assert {"/metrics", "/api/v1/auth/login", "/api/v1/tokens"} <= set(routes)


def test_collected_samples_come_back_through_prometheus(bed: Bed) -> None:
    store = bed.store
    labels = {"cluster": "c1", "app": "web", "instance": "web-0", "note": 'q"b\\s\nx'}
    bare = {"cluster": "c1", "app": "db"}  # no `instance`: the scrape's must not appear
    base = round(time.time()) - 5.0
    written = []
    for i in range(4):
        at = base + i + 0.25
        bed.on_gaia(
            store.write(
                [
                    Sample("gaia_test_cpu_cores", labels, 0.5 + i, at),
                    Sample("gaia_test_cpu_cores", bare, 10.0 + i, at),
                ]
            )
        )
        written.append((at, 0.5 + i))
        # one sample per series is exposed at a time: wait for the scrape to take it in
        _eventually(
            f"sample {i}",
            lambda at=at: [
                s
                for s in bed.on_gaia(
                    store.latest("gaia_test_cpu_cores", {"app": "web"}, at=time.time())
                )
                if s.points[0][0] == at
            ],
        )
    now = time.time()
    latest = bed.on_gaia(store.latest("gaia_test_cpu_cores", {"cluster": "c1"}, at=now))
    assert sorted(((s.labels, s.points) for s in latest), key=lambda x: x[0]["app"]) == [
        (bare, [(base + 3.25, 13.0)]),
        (labels, [(base + 3.25, 3.5)]),
    ]
    [web] = bed.on_gaia(
        store.query_range(
            "gaia_test_cpu_cores", {"note": labels["note"]}, start=base, end=base + 4, step=0.5
        )
    )
    assert web.labels == labels
    # at each step, the last sample at or before it
    assert web.points == [
        (base + k / 2, next(v for t, v in reversed(written) if t <= base + k / 2))
        for k in range(1, 9)
    ]
    # latest() before the last sample: the one before, at its own time
    [earlier] = bed.on_gaia(store.latest("gaia_test_cpu_cores", {"app": "web"}, at=base + 2.5))
    assert earlier.points == [(base + 2.25, 2.5)]
    # a lookback longer than Prometheus' own 5 minutes still finds the real time
    [far] = bed.on_gaia(
        store.latest("gaia_test_cpu_cores", {"app": "web"}, at=base + 400, lookback=600)
    )
    assert far.points == [(base + 3.25, 3.5)]
    assert bed.on_gaia(store.latest("gaia_test_cpu_cores", {"app": "web"}, at=base + 400)) == []


def test_prometheus_errors_are_clear(bed: Bed) -> None:
    with pytest.raises(InvalidRequest, match="resolution"):
        bed.on_gaia(bed.store.query_range("up", start=0, end=100_000, step=1))

    async def dead() -> None:
        store = PrometheusStore(f"http://127.0.0.1:{_free_port()}", timeout=2)
        try:
            await store.latest("up", at=time.time())
        finally:
            await store.close()

    with pytest.raises(MetricStoreUnavailable, match="did not answer"):
        asyncio.run(dead())


def test_metrics_need_an_admin_token_or_the_metrics_token(bed: Bed) -> None:
    url = f"{bed.gaia}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
    r = httpx.get(url, headers=bed.admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert f'gaia_build_info{{version="{__version__}"}} 1.0' in r.text
    assert "process_resident_memory_bytes" in r.text and "gaia_tsdb_series" in r.text
    clusters = httpx.get(f"{bed.gaia}/metrics/clusters", headers=bed.admin)
    assert clusters.status_code == 200
    assert httpx.get(f"{bed.gaia}/metrics/clusters").status_code == 401


# ------------------------------------------------------- the endpoint on the embedded store


def test_metrics_refuse_a_user_who_is_not_a_platform_admin(
    client: TestClient, admin: dict[str, str], make_user: Callable[..., dict[str, str]]
) -> None:
    assert client.get("/metrics").status_code == 401
    user = make_user("someone")
    r = client.get("/metrics", headers=user)
    assert r.status_code == 401 and "platform administrator" in r.json()["message"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics", headers=admin).status_code == 200


def test_metrics_token_is_optional_and_compared_exactly(
    client: TestClient, platform: Platform
) -> None:
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    platform.settings.metrics_token = "s3cret"
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cre"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic s3cret"}).status_code == 401


def test_requests_are_counted_by_route_template_not_raw_path(
    client: TestClient, admin: dict[str, str]
) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert client.get(f"/api/v1/businesses/{name}", headers=admin).status_code == 404
    client.get("/no/such/path/123")
    body = client.get("/metrics", headers=admin).text
    assert (
        'gaia_http_requests_total{method="GET",route="/api/v1/businesses/{biz}",status="404"} 3.0'
        in body
    )
    assert 'route="unmatched",status="404"' in body
    assert "/no/such/path" not in body and "alpha" not in body
    count = (
        'gaia_http_request_duration_seconds_count{method="GET",route="/api/v1/businesses/{biz}"}'
    )
    assert f"{count} 3.0" in body


def test_cluster_series_are_not_exposed_with_the_embedded_store(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    r = client.get("/metrics/clusters", headers=admin)
    assert r.status_code == 404 and "GAIA_METRICS_STORE=prometheus" in r.json()["message"]
    # the embedded store's size is reported
    asyncio.run(platform.metric_store.write([Sample("cpu", {"instance": "a"}, 1.0, time.time())]))
    body = client.get("/metrics", headers=admin).text
    assert "gaia_tsdb_series 1.0" in body and "gaia_tsdb_points 1.0" in body


def test_platform_metrics_record_loops_and_alert_notifications(platform: Platform) -> None:
    metrics = platform.metrics
    with metrics.loop_pass("cluster-health"):
        pass
    with pytest.raises(RuntimeError), metrics.loop_pass("cluster-health"):
        raise RuntimeError("boom")
    metrics.notification(channel="email", result="sent")
    with pytest.raises(ValueError):
        metrics.notification(channel="email", result="lost")
    body = metrics.render().decode()
    assert 'gaia_loop_passes_total{loop="cluster-health"} 2.0' in body
    assert 'gaia_loop_failures_total{loop="cluster-health"} 1.0' in body
    assert 'gaia_alert_notifications_total{channel="email",result="sent"} 1.0' in body
