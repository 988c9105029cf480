"""The access layer end to end on a real kubelet (issue 19, "Access"): an app's domain
resolves through the dnsmasq Gaia runs, HAProxy (run by Gaia) sends its requests to the ready
instances only, and during a gray upgrade every instance is drained before its container is
swapped in place, so a client loop against the domain sees **no failed request**.

Everything is real but the DNS client's resolver choice: the platform under uvicorn with all
its loops, the app controller placing pods through the Kubernetes provider on a control plane
of its own with one real kubelet node (containerd, runc, the busybox web images of
``tests/support/images.py``, readiness on ``/ready``), HAProxy and dnsmasq from Debian.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.platform import Platform
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store.models import Business, User
from tests.conftest import QUOTA, TEST_SECRET_KEY, missing_component, start_real_bed
from tests.support.apps_harness import template
from tests.support.kube import ControlPlane, free_port
from tests.support.live import serve
from tests.support.node import RealNode
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

PASSWORD = "admin-password-1"
DOMAIN = "web.apps.example.com"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, RealNode]]:
    for tool in ("haproxy", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            missing_component(tool, "scripts/test.sh installs it (Debian)")
    plane, node = start_real_bed(tmp_path_factory, "access")
    try:
        yield plane, node
    finally:
        node.stop()
        plane.stop()


class Loop:
    """Clients that ask the domain through the balancer, each one request after another
    (``clients`` at once), and count the answers by body (a failure is anything but a 200 from
    a version)."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        with httpx.Client(timeout=10, headers={"Host": DOMAIN}) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(self.url)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code == 200 and r.text.startswith("web "):
                    self.answers[r.text.strip()] += 1
                else:
                    self.failures.append(f"{r.status_code}: {r.text[:100]}")
                time.sleep(0.005)


def test_a_gray_upgrade_behind_the_domain_fails_no_request(
    bed: tuple[ControlPlane, RealNode], database_url: str, tmp_path: Path
) -> None:
    import dns.resolver

    plane, node = bed
    access, dns_port, port = free_port(), free_port(), free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        demo=False,
        external_url=f"http://127.0.0.1:{port}",
        access_listen=f"127.0.0.1:{access}",
        access_dns_listen=f"127.0.0.1:{dns_port}",
        app_reconcile_interval_seconds=0.5,
    )
    plat = Platform.open(settings, run_migrations=False)
    with plat.db.write_session() as session:
        session.add(
            User(username="admin", password_hash=hash_password(PASSWORD), is_platform_admin=True)
        )
        session.add(Business(name="alpha"))
    loop: Loop | None = None
    try:
        with serve(plat, port=port, run_loops=True) as origin:
            api = httpx.Client(base_url=origin, timeout=30)
            r = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
            api.headers["Authorization"] = f"Bearer {r.json()['token']}"
            cluster = {
                "name": "real",
                "kind": "kubernetes",
                "region": "r",
                "zone": "z",
                "kubeconfig": plane.kubeconfig_text(),
            }
            assert api.post("/api/v1/clusters", json=cluster).status_code == 201
            biz = "/api/v1/businesses/alpha"
            r = api.put(f"{biz}/quotas/real", json={"hard": QUOTA})
            assert r.status_code == 200, r.text
            images = node.images
            v1 = template("v1", images.web_v1, cpu=0.1, memory=64)
            v2 = template("v2", images.web_v2, cpu=0.1, memory=64)
            for t in (v1, v2):
                t["readiness"]["period_s"] = 1
            app = {
                "name": "web",
                "cluster": "real",
                "templates": [v1, v2],
                "replicas": 3,
                "domain": DOMAIN,
            }
            r = api.post(f"{biz}/apps", json=app)
            assert r.status_code == 201, r.text

            def instances() -> list[dict[str, Any]]:
                items: list[dict[str, Any]] = api.get(f"{biz}/apps/web/instances").json()["items"]
                return items

            eventually(
                lambda: len(instances()) == 3 and all(i["ready"] for i in instances()),
                "3 ready instances",
                timeout_s=120,
                interval_s=0.5,
            )
            # the domain resolves to the balancer, through the DNS server Gaia runs
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
            resolver.port = dns_port
            eventually(lambda: _resolves(resolver, DOMAIN) == ["127.0.0.1"], "the domain resolves")
            url = f"http://127.0.0.1:{access}/"
            eventually(
                lambda: httpx.get(url, headers={"Host": DOMAIN}).text == "web v1\n",
                "the balancer serves v1",
                timeout_s=30,
            )
            unknown = httpx.get(url, headers={"Host": "nobody.example.com"})
            assert unknown.status_code == 503

            loop = Loop(url)
            loop.start()
            time.sleep(2)
            r = api.post(
                f"{biz}/apps/web/upgrades",
                json={"template": "v2", "instance_ids": [0, 1, 2], "max_unavailable": 1},
            )
            assert r.status_code == 201, r.text
            upgrade = r.json()["id"]

            def done() -> bool:
                state = api.get(f"{biz}/apps/web/upgrades/{upgrade}").json()["state"]
                return bool(state == "Succeeded") and all(
                    i["ready"] and i["version"] == "v2" for i in instances()
                )

            eventually(done, "the gray upgrade", timeout_s=180, interval_s=0.5)
            eventually(
                lambda: loop is not None and loop.answers["web v2"] > 20,
                "v2 answering through the balancer",
                timeout_s=30,
            )
            loop.join()
            # in place: same pods, restarted containers
            assert {i["restarts"] for i in instances()} == {1}, instances()
            # each of the three was drained before its container was swapped
            assert plat.access is not None and plat.access.drains_started == 3
            scraped = api.get("/metrics").text
            assert "gaia_access_drains_total 3.0" in scraped, scraped
            assert 'gaia_access_servers{state="ready"} 3.0' in scraped
            api.close()
    finally:
        if loop is not None:
            loop.stop.set()
        plat.db.dispose()
    assert loop.answers["web v1"] > 20 and loop.answers["web v2"] > 20, loop.answers
    assert loop.failures == [], (
        f"{len(loop.failures)} failed of {loop.answers}: {loop.failures[:5]}"
    )


def _resolves(resolver: Any, name: str) -> list[str]:
    import dns.exception

    try:
        return [a.to_text() for a in resolver.resolve(name, "A")]
    except dns.exception.DNSException:
        return []
