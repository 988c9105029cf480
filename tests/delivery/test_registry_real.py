"""Gaia's registry for real: Debian's docker-registry started by ``gaia up``'s lifespan, trusting
Gaia's tokens, telling Gaia of its pushes; skopeo logging in with a Gaia API token.

- a developer logs in with an API token and pushes into the business's namespace; the push
  shows in Gaia's API with who pushed it;
- a user of another business cannot pull it (the registry answers 401), anyone can pull a public
  image, without logging in; the business's pull account pulls its images only;
- a push that takes the namespace over its quota is removed at once, and the next push is
  refused with the quota's figures in skopeo's error;
- a tag deleted through Gaia's API is gone from the registry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.clock import ManualClock
from gaia.platform import Platform
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store.models import User
from tests.conftest import ADMIN_PASSWORD, TEST_SECRET_KEY
from tests.support.images import OciImage, oci_layout
from tests.support.kube import free_port
from tests.support.live import serve
from tests.support.p2p import need, random_image
from tests.support.tls import server_pki


@dataclass
class Up:
    origin: str
    registry: str  # host:port
    platform: Platform
    work: Path
    admin: dict[str, str]
    tokens: dict[str, str]  # user -> API token
    cert_dir: Path | None = None  # with TLS: where clients find the registry's CA

    def tls(self, flag: str) -> list[str]:
        """skopeo's flags for the registry's TLS (``flag``: ``--tls`` or ``--dest-tls``)."""
        if self.cert_dir is None:
            return [f"{flag}-verify=false"]
        return [f"{flag}-verify=true", f"{flag.removesuffix('-tls')}-cert-dir={self.cert_dir}"]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.origin, timeout=30)


@contextlib.contextmanager
def running(database_url: str, tmp_path: Path, *, tls: bool = False) -> Iterator[Up]:
    need("docker-registry")
    need("skopeo")
    port, registry_port = free_port(), free_port()
    files: dict[str, Path] = {}
    cert_dir = None
    if tls:  # a private CA, as an enterprise's registry has; clients get a cert dir
        pki = server_pki(tmp_path / "pki", name="gaia-test-registry-ca")
        files, cert_dir = pki.registry_settings(), pki.cert_dir
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        demo=False,
        registry_listen=f"127.0.0.1:{registry_port}",
        external_url=f"http://127.0.0.1:{port}",
        **files,
    )
    plat = Platform.open(settings, run_migrations=False, clock=ManualClock(dt.datetime.now(dt.UTC)))
    with plat.db.write_session() as session:
        session.add(
            User(
                username="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                is_platform_admin=True,
            )
        )
    with serve(plat, port=port) as origin, httpx.Client(base_url=origin, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        tokens = {}
        for business, user in (("alpha", "dev"), ("beta", "other")):
            assert c.post("/api/v1/businesses", json={"name": business}, headers=admin).is_success
            r = c.post(
                "/api/v1/users", json={"username": user, "password": f"{user}-pw-1"}, headers=admin
            )
            assert r.status_code == 201, r.text
            r = c.put(
                f"/api/v1/businesses/{business}/members/{user}",
                json={"role": "developer"},
                headers=admin,
            )
            assert r.status_code == 200, r.text
            r = c.post("/api/v1/auth/login", json={"username": user, "password": f"{user}-pw-1"})
            session = {"Authorization": f"Bearer {r.json()['token']}"}
            r = c.post("/api/v1/tokens", json={"name": "registry"}, headers=session)
            assert r.status_code == 201, r.text
            tokens[user] = r.json()["token"]
        yield Up(
            origin, f"127.0.0.1:{registry_port}", plat, tmp_path, admin, tokens, cert_dir=cert_dir
        )
    plat.db.dispose()


@pytest.fixture
def up(database_url: str, tmp_path: Path) -> Iterator[Up]:
    with running(database_url, tmp_path) as found:
        yield found


@pytest.fixture
def up_tls(database_url: str, tmp_path: Path) -> Iterator[Up]:
    with running(database_url, tmp_path, tls=True) as found:
        yield found


def skopeo(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("skopeo"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REGISTRY_AUTH_FILE": str(up.work / "auth.json")},
    )


def push(
    up: Up, image: OciImage, reference: str, creds: str | None
) -> subprocess.CompletedProcess[str]:
    layout = oci_layout(image, up.work / f"layout-{time.monotonic_ns()}")
    args = ["copy", *up.tls("--dest-tls")]
    args += ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    return skopeo(up, *args, f"oci:{layout}", f"docker://{up.registry}/{reference}")


def inspect(up: Up, reference: str, creds: str | None) -> subprocess.CompletedProcess[str]:
    args = ["inspect", "--raw", *up.tls("--tls")]
    args += ["--creds", creds] if creds else ["--no-creds"]
    return skopeo(up, *args, f"docker://{up.registry}/{reference}")


def wait_for(probe: Callable[[], Any], what: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.2)


def tags(up: Up, repository: str) -> dict[str, dict[str, Any]]:
    with up.api() as c:
        r = c.get(f"/api/v1/registry/repositories/{repository}/tags", headers=up.admin)
    return {t["tag"]: t for t in r.json().get("items", [])} if r.status_code == 200 else {}


def test_login_push_and_who_may_pull(up: Up) -> None:
    dev = f"dev:{up.tokens['dev']}"
    r = skopeo(up, "login", "--tls-verify=false", "-u", "dev", "-p", up.tokens["dev"], up.registry)
    assert r.returncode == 0, r.stderr
    r = skopeo(up, "login", "--tls-verify=false", "-u", "dev", "-p", "gaia_wrong", up.registry)
    assert r.returncode != 0 and "invalid username/password" in r.stderr, r.stderr

    image = random_image(2, 300_000, seed=1)
    r = push(up, image, "alpha/web:v1", dev)
    assert r.returncode == 0, r.stderr
    pushed = wait_for(lambda: tags(up, "alpha/web").get("v1"), "the push notification")
    assert pushed["digest"] == image.manifest().digest
    assert pushed["pushed_by"] == "dev"
    assert pushed["size"] == sum(len(x.blob.data) for x in image.layers) + len(
        image.config().data
    ) + len(image.manifest().data)

    # the other business's developer cannot read it, nor can anyone anonymous
    other = inspect(up, "alpha/web:v1", f"other:{up.tokens['other']}")
    assert other.returncode != 0
    assert "unauthorized" in other.stderr.lower() or "denied" in other.stderr.lower()
    assert inspect(up, "alpha/web:v1", None).returncode != 0
    # nor push into it
    assert push(up, image, "alpha/web:stolen", f"other:{up.tokens['other']}").returncode != 0
    # the business's pull account (what the platform puts in its apps' pull secrets) pulls
    user, password = up.platform.registry.pull_credentials("alpha")
    pulled = inspect(up, "alpha/web:v1", f"{user}:{password}")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout) == json.loads(image.manifest().data)
    assert push(up, image, "alpha/web:v9", f"{user}:{password}").returncode != 0
    beta_pull = up.platform.registry.pull_credentials("beta")
    assert inspect(up, "alpha/web:v1", ":".join(beta_pull)).returncode != 0

    # public: the admin pushes, everyone pulls, even without credentials
    r = push(up, random_image(1, 100_000, seed=2), "public/base:1", f"admin:{ADMIN_PASSWORD}")
    assert r.returncode == 0, r.stderr
    assert inspect(up, "public/base:1", None).returncode == 0
    assert push(up, image, "public/base:2", dev).returncode != 0


def test_quota_and_tag_deletion(up: Up) -> None:
    dev = f"dev:{up.tokens['dev']}"
    small = random_image(1, 200_000, seed=3)
    assert push(up, small, "alpha/app:v1", dev).returncode == 0
    used = wait_for(lambda: tags(up, "alpha/app").get("v1"), "the first push")["size"]
    with up.api() as c:
        r = c.put(
            "/api/v1/registry/namespaces/alpha/quota",
            json={"quota_bytes": used + 100_000},
            headers=up.admin,
        )
        assert r.status_code == 200, r.text

    # a push that crosses the quota lands (the registry cannot refuse it mid-stream) and is
    # removed at once: neither the registry nor Gaia shows it
    big = random_image(1, 400_000, seed=4)
    assert push(up, big, "alpha/app:v2", dev).returncode == 0
    wait_for(
        lambda: inspect(up, "alpha/app:v2", dev).returncode != 0, "the over-quota image removed"
    )
    assert "v2" not in tags(up, "alpha/app") and "v1" in tags(up, "alpha/app")

    # at the quota, a push gets no token, and skopeo says why
    with up.api() as c:
        r = c.put(
            "/api/v1/registry/namespaces/alpha/quota", json={"quota_bytes": used}, headers=up.admin
        )
        assert r.status_code == 200
    refused = push(up, random_image(1, 1000, seed=5), "alpha/app:v3", dev)
    assert refused.returncode != 0
    # skopeo (containers/image) prints only the token endpoint's status; docker prints the
    # error body, which names the figures
    assert "403 (Forbidden)" in refused.stderr, refused.stderr
    with up.api() as c:
        r = c.get(
            "/api/v1/registry/token",
            params={"service": "gaia-registry", "scope": "repository:alpha/app:pull,push"},
            auth=("dev", up.tokens["dev"]),
        )
    assert r.status_code == 403
    assert f"{used} bytes of its {used}-byte registry quota" in r.json()["errors"][0]["message"]

    # a tag deleted through Gaia is gone from the registry; pulls of others go on
    with up.api() as c:
        r = c.delete("/api/v1/registry/repositories/alpha/app/tags/v1", headers=up.admin)
        assert r.status_code == 200, r.text
    assert inspect(up, "alpha/app:v1", dev).returncode != 0
    assert "v1" not in tags(up, "alpha/app")


def test_the_registry_figures_reach_the_platform_metrics(up: Up) -> None:
    dev = f"dev:{up.tokens['dev']}"
    assert push(up, random_image(1, 50_000, seed=6), "alpha/web:v1", dev).returncode == 0
    assert inspect(up, "alpha/web:v1", dev).returncode == 0
    registry = up.registry

    def series() -> dict[str, float]:
        with up.api() as c:
            text = c.get("/metrics", headers=up.admin).text
        out = {}
        for line in text.splitlines():
            if line.startswith("gaia_registry_"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    labels = f'{{business="alpha",registry="{registry}"}}'
    found = wait_for(
        lambda: (s := series()).get(f"gaia_registry_pulls_total{labels}", 0) >= 1 and s,
        "the pull counted",
    )
    assert found[f'gaia_registry_up{{registry="{registry}"}}'] == 1
    assert found[f"gaia_registry_pushes_total{labels}"] == 1
    assert found[f"gaia_registry_images{labels}"] == 1
    assert found[f"gaia_registry_repositories{labels}"] == 1
    assert found[f'gaia_registry_storage_bytes{{registry="{registry}"}}'] > 50_000
    assert found[f"gaia_registry_pull_errors_total{labels}"] == 0

    # failed pulls: a tag the registry does not have (its log), a business's image another
    # business may not pull (the token endpoint), a namespace nobody owns (not a label)
    assert inspect(up, "alpha/web:missing", dev).returncode != 0
    assert inspect(up, "alpha/web:v1", f"other:{up.tokens['other']}").returncode != 0
    assert inspect(up, "nobody-owns-this/web:v1", dev).returncode != 0
    found = wait_for(
        lambda: (s := series()).get(f"gaia_registry_pull_errors_total{labels}", 0) >= 2 and s,
        "the failed pulls counted",
    )
    assert found[f"gaia_registry_pull_errors_total{labels}"] == 2, found
    assert not [k for k in found if "nobody-owns-this" in k]


def test_an_https_registry_signed_by_a_private_ca(up_tls: Up) -> None:
    """``GAIA_REGISTRY_TLS_CERT_FILE``/``KEY_FILE``: the registry ``gaia up`` runs speaks HTTPS;
    clients that trust the CA push and pull, one that does not is refused the certificate, and
    Gaia's own calls (deleting a tag) trust ``GAIA_REGISTRY_CA_FILE``."""
    up = up_tls
    assert up.platform.registry.url == f"https://{up.registry}"
    dev = f"dev:{up.tokens['dev']}"
    assert push(up, random_image(1, 50_000, seed=11), "alpha/tls:v1", dev).returncode == 0
    assert inspect(up, "alpha/tls:v1", dev).returncode == 0
    untrusted = skopeo(
        up, "inspect", "--raw", "--creds", dev, f"docker://{up.registry}/alpha/tls:v1"
    )
    assert untrusted.returncode != 0
    assert "certificate signed by unknown authority" in untrusted.stderr, untrusted.stderr
    wait_for(lambda: "v1" in tags(up, "alpha/tls"), "the push recorded")
    with up.api() as c:
        r = c.delete("/api/v1/registry/repositories/alpha/tls/tags/v1", headers=up.admin)
        assert r.status_code == 200, r.text
    assert inspect(up, "alpha/tls:v1", dev).returncode != 0


def test_garbage_collection_frees_what_no_tag_names(up: Up) -> None:
    dev = f"dev:{up.tokens['dev']}"
    kept, dropped = random_image(1, 300_000, seed=7), random_image(2, 800_000, seed=8)
    assert push(up, kept, "alpha/gc:kept", dev).returncode == 0
    assert push(up, dropped, "alpha/gc:dropped", dev).returncode == 0
    wait_for(lambda: len(tags(up, "alpha/gc")) == 2, "both pushes recorded")
    with up.api() as c:
        r = c.delete("/api/v1/registry/repositories/alpha/gc/tags/dropped", headers=up.admin)
        assert r.status_code == 200, r.text
        r = c.post("/api/v1/registry/gc", headers={"Authorization": f"Bearer {up.tokens['dev']}"})
        assert r.status_code == 403  # the platform's to run
        r = c.post("/api/v1/registry/gc", headers=up.admin, timeout=120)
        assert r.status_code == 200, r.text
    result = r.json()
    dropped_bytes = sum(len(x.blob.data) for x in dropped.layers)
    assert result["freed_bytes"] >= dropped_bytes, result
    assert result["blobs_deleted"] >= len(dropped.layers)
    # the registry is back, and the kept image is whole
    pulled = inspect(up, "alpha/gc:kept", dev)
    assert pulled.returncode == 0, pulled.stderr
    copy = skopeo(up, "copy", "--src-tls-verify=false", "--src-creds", dev,
                  f"docker://{up.registry}/alpha/gc:kept", f"dir:{up.work / 'kept'}")  # fmt: skip
    assert copy.returncode == 0, copy.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_node_agent_pulls_with_the_node_account_the_platform_gives_it(
    database_url: str, tmp_path: Path, tls: bool
) -> None:
    """``gaia p2p-agent`` with no credentials of its own: the coordinator hands it the node's
    account for the platform's registry when it registers (and, over HTTPS, the private CA that
    signs the registry's certificate). Through that agent, a node running an instance of
    ``alpha`` gets alpha's private image; a node running none of alpha's gets 401, whatever its
    agent cached for others (the Spegel leak, closed at the node boundary)."""
    with running(database_url, tmp_path, tls=tls) as up:
        _node_agents_pull(up)


def _node_agents_pull(up: Up) -> None:
    import asyncio

    from tests.support.apps_harness import template
    from tests.support.p2p import AgentProcess

    dev = f"dev:{up.tokens['dev']}"
    image = random_image(1, 200_000, seed=9)
    assert push(up, image, "alpha/web:v1", dev).returncode == 0
    with up.api() as c:
        r = c.post(
            "/api/v1/clusters",
            json={"name": "sim-1", "kind": "sim", "region": "r", "zone": "z"},
            headers=up.admin,
        )
        assert r.status_code == 201, r.text
        r = c.put(
            "/api/v1/businesses/alpha/quotas/sim-1",
            json={"hard": {"cpu": 4, "memory": 4096}},
            headers=up.admin,
        )
        assert r.status_code == 200, r.text
        body = {
            "name": "web",
            "cluster": "sim-1",
            "templates": [template("v1", f"{up.registry}/alpha/web:v1")],
            "replicas": 1,
        }
        r = c.post("/api/v1/businesses/alpha/apps", json=body, headers=up.admin)
        assert r.status_code == 201, r.text
        asyncio.run(up.platform.app_controller().start(loops=1))
        (instance,) = c.get("/api/v1/businesses/alpha/apps/web/instances", headers=up.admin).json()[
            "items"
        ]
        nodes = [
            n["name"]
            for n in c.get("/api/v1/clusters/sim-1/nodes", headers=up.admin).json()["items"]
        ]
        token = c.get("/api/v1/clusters/sim-1/p2p/agent-token", headers=up.admin).json()["token"]
    busy = instance["node"]
    idle = next(n for n in nodes if n != busy)
    agents = []
    try:
        for node in (busy, idle):
            agent = AgentProcess(
                node=node,
                work=up.work / f"agent-{node}",
                registries={},
                coordinator=up.origin,
                cluster="sim-1",
                token=token,
            ).start()
            agents.append(agent)
        manifest = f"/v2/alpha/web/manifests/{image.manifest().digest}?ns={up.registry}"
        layer = image.layers[0].blob
        blob = f"/v2/alpha/web/blobs/{layer.digest}?ns={up.registry}"

        def through(agent: AgentProcess, path: str) -> httpx.Response:
            # an OCI manifest is served only to a client that accepts its media type
            accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
            return httpx.get(f"http://{agent.mirror}{path}", headers=accept, timeout=30)

        # the agents register in the background: the busy node's agent serves once it has
        r = wait_for(lambda: (r := through(agents[0], blob)).status_code == 200 and r, "served")
        assert r.content == layer.data
        assert through(agents[0], manifest).status_code == 200
        # the idle node's agent has its own account, which alpha's images are not for
        wait_for(
            lambda: through(agents[1], "/v2/").status_code == 200, "the idle node's agent is up"
        )
        refused = through(agents[1], blob)
        assert refused.status_code == 401, refused.text
        assert through(agents[1], manifest).status_code == 401
    finally:
        for agent in agents:
            agent.stop()
