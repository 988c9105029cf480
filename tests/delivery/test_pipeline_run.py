"""A pipeline end to end (issue 18): a real git repository, real buildah, and Gaia's registry
(docker-registry behind Gaia's token auth), driven by the pipeline runner loop. The run pushes
with the repository's build account, and the run records the digest the registry serves; a
Dockerfile failing at RUN on line 3 shows step build, line 3, first; a pipeline that names an
app adds a version with the image by digest and starts a gray upgrade of the chosen instances."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.delivery.builds import DEFAULT_BUILD_USER
from gaia.platform import Platform
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store.models import Business, User
from tests.conftest import QUOTA, TEST_SECRET_KEY, missing_component
from tests.delivery.test_builds import repository
from tests.support.images import OciImage, busybox_layer, oci_layout
from tests.support.kube import free_port
from tests.support.live import serve
from tests.support.p2p import Registry
from tests.support.tls import server_pki

PASSWORD = "admin-password-1"
# httpx's default (5 s) is shorter than a busy 2-core machine can take to answer while a build
# runs beside the server: test_cancel_stops_a_running_build once failed on a read timeout
TIMEOUT_S = 30


@dataclass
class Served:
    platform: Platform
    origin: str
    headers: dict[str, str]
    base: str  # a base image the Dockerfiles start FROM
    shared: Path  # builds and test repositories: reachable by the build user


def build_user_uid() -> int | None:
    """The uid builds run as here: gaia-build's when the tests run as root (scripts/test.sh
    adds it), else None (the tests' own user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(DEFAULT_BUILD_USER).pw_uid
    except KeyError:
        missing_component(f"the user {DEFAULT_BUILD_USER}", "scripts/test.sh adds it")
        raise


@contextlib.contextmanager
def running(
    database_url: str, tmp_path: Path, *, tls: bool = False, build_user: str = ""
) -> Iterator[Served]:
    for tool in ("buildah", "git", "docker-registry", "busybox", "skopeo"):
        if shutil.which(tool) is None:
            missing_component(tool, "scripts/test.sh installs it")
    base_image = OciImage(layers=(busybox_layer(),), entrypoint=("/bin/sh",), history=True)
    bases = None
    files: dict[str, Path] = {}
    pki = server_pki(tmp_path / "pki") if tls else None
    if pki is not None:
        files = pki.registry_settings()
    else:
        bases = Registry(tmp_path / "bases").start()
        bases.push(base_image, "base", "1")
    # pytest's tmp_path is private to root: the build user needs folders it can reach
    shared = Path(tempfile.mkdtemp(prefix="gaia-pipelines-"))
    shared.chmod(0o755)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        demo=False,
        external_url=f"http://127.0.0.1:{port}",
        registry_listen=f"127.0.0.1:{free_port()}",
        pipeline_local_git=True,  # the test repositories are local folders
        build_dir=shared / "builds",
        build_user=build_user,
        **files,
    )
    plat = Platform.open(settings, run_migrations=False)
    with plat.db.write_session() as session:
        session.add(
            User(username="admin", password_hash=hash_password(PASSWORD), is_platform_admin=True)
        )
        session.add(Business(name="alpha"))
    try:
        with serve(plat, port=port) as origin:
            r = httpx.post(
                f"{origin}/api/v1/auth/login",
                json={"username": "admin", "password": PASSWORD},
                timeout=TIMEOUT_S,
            )
            assert r.status_code == 200, r.text
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
            if pki is None:
                assert bases is not None
                base = f"{bases.host}/base:1"
            else:
                # over HTTPS the base comes from Gaia's own registry (public/), as a real
                # platform's would: the build then pulls and pushes through one private CA
                token = httpx.post(
                    f"{origin}/api/v1/tokens",
                    json={"name": "t"},
                    headers=headers,
                    timeout=TIMEOUT_S,
                )
                base = f"{plat.registry.address}/public/base:1"
                layout = oci_layout(base_image, tmp_path / "base-layout")
                copied = subprocess.run(
                    ["skopeo", "copy", f"--dest-cert-dir={pki.cert_dir}",
                     f"--dest-creds=admin:{token.json()['token']}", f"oci:{layout}",
                     f"docker://{base}"],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert copied.returncode == 0, copied.stderr
            yield Served(plat, origin, headers, base, shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        if bases is not None:
            bases.stop()
        plat.db.dispose()


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with running(database_url, tmp_path) as found:
        yield found


def _run(served: Served, name: str, dockerfile: str, tmp_path: Path) -> dict[str, Any]:
    repo = repository(served.shared / name, {"Dockerfile": dockerfile, "hello.txt": "hello\n"})
    pipes = f"{served.origin}/api/v1/businesses/alpha/pipelines"
    r = httpx.post(
        pipes,
        json={"name": name, "git_url": f"file://{repo}"},
        headers=served.headers,
        timeout=TIMEOUT_S,
    )
    assert r.status_code == 201, r.text
    r = httpx.post(f"{pipes}/{name}/runs", headers=served.headers, timeout=TIMEOUT_S)
    assert r.status_code == 201, r.text
    runner = served.platform.pipeline_runner()

    async def drive() -> None:
        await runner.start(loops=1)
        await runner.drain()

    asyncio.run(drive())
    r = httpx.get(f"{pipes}/{name}/runs/1", headers=served.headers, timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    logs = httpx.get(
        f"{pipes}/{name}/runs/1/logs?limit=5000", headers=served.headers, timeout=TIMEOUT_S
    ).json()
    run["log"] = "\n".join(x["line"] for x in logs["items"])
    return run


def test_a_pipeline_run_pushes_to_gaias_registry_and_records_the_digest(
    served: Served, tmp_path: Path
) -> None:
    run = _run(
        served,
        "web",
        f"FROM {served.base}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt /proc/self/uid_map\n",
        tmp_path,
    )
    assert run["state"] == "succeeded", run
    uid = build_user_uid()
    if uid is not None:
        # a root platform built rootless, as gaia-build: the build's root is that user outside
        assert re.search(rf"^\s*0\s+{uid}\s+1\s*$", run["log"], re.MULTILINE), run["log"]
    assert [s["name"] for s in run["steps"]] == ["clone", "build", "push"]
    assert run["failure"] is None
    registry = served.platform.registry
    assert run["image"] == f"{registry.address}/alpha/web:run-1"
    _user, password = registry.build_credentials("alpha/web")
    assert password not in run["log"]
    # the digest the registry serves for the tag, asked with a token Gaia signs
    token = registry.signer.issue(
        subject="test",
        access=[{"type": "repository", "name": "alpha/web", "actions": ["pull"]}],
    ).token
    head = httpx.head(
        f"{registry.url}/v2/alpha/web/manifests/run-1",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json",
        },
        timeout=TIMEOUT_S,
    )
    assert head.status_code == 200, head.text
    assert run["digest"] == head.headers["docker-content-digest"]


def test_a_failing_run_shows_step_build_and_line_3_first(served: Served, tmp_path: Path) -> None:
    run = _run(
        served,
        "broken",
        f"FROM {served.base}\nRUN echo before\nRUN echo failing; exit 3\n",
        tmp_path,
    )
    assert run["state"] == "failed", run
    assert next(iter(run)) == "failure"
    assert run["failure"]["step"] == "build" and run["failure"]["line"] == 3
    assert run["failure"]["instruction"] == "RUN echo failing; exit 3"
    assert "failing" in run["log"]


def test_a_run_deploys_a_new_version_by_a_gray_upgrade(served: Served, tmp_path: Path) -> None:
    h, origin = served.headers, served.origin
    r = httpx.post(
        f"{origin}/api/v1/clusters",
        json={"name": "sim-1", "kind": "sim", "region": "r", "zone": "z"},
        headers=h,
        timeout=TIMEOUT_S,
    )
    assert r.status_code == 201, r.text
    r = httpx.put(
        f"{origin}/api/v1/businesses/alpha/quotas/sim-1",
        json={"hard": QUOTA},
        headers=h,
        timeout=TIMEOUT_S,
    )
    assert r.status_code == 200, r.text
    v1 = {"name": "v1", "image": "alpha/web:1", "resources": {"cpu": 1, "memory": 256}}
    r = httpx.post(
        f"{origin}/api/v1/businesses/alpha/apps",
        json={"name": "web", "cluster": "sim-1", "templates": [v1], "replicas": 2},
        headers=h,
        timeout=TIMEOUT_S,
    )
    assert r.status_code == 201, r.text
    repo = repository(served.shared / "deployed", {"Dockerfile": f"FROM {served.base}\nRUN true\n"})
    pipes = f"{origin}/api/v1/businesses/alpha/pipelines"
    r = httpx.post(
        pipes,
        json={
            "name": "web",
            "git_url": f"file://{repo}",
            "deploy": {"app": "web", "instance_ids": [1]},
        },
        headers=h,
        timeout=TIMEOUT_S,
    )
    assert r.status_code == 201, r.text
    assert httpx.post(f"{pipes}/web/runs", headers=h, timeout=TIMEOUT_S).status_code == 201
    runner = served.platform.pipeline_runner()

    async def drive() -> None:
        await runner.start(loops=1)
        await runner.drain()

    asyncio.run(drive())
    run = httpx.get(f"{pipes}/web/runs/1", headers=h, timeout=TIMEOUT_S).json()
    assert run["state"] == "succeeded", run
    assert run["upgrade_id"] is not None
    app = f"{origin}/api/v1/businesses/alpha/apps/web"
    upgrade = httpx.get(f"{app}/upgrades/{run['upgrade_id']}", headers=h, timeout=TIMEOUT_S).json()
    assert upgrade["target"] == "web-1" and upgrade["instance_ids"] == [1], upgrade
    template = httpx.get(f"{app}/templates/web-1", headers=h, timeout=TIMEOUT_S).json()
    address = served.platform.registry.address
    assert template["image"] == f"{address}/alpha/web@{run['digest']}", template


def test_cancel_stops_a_running_build(served: Served, tmp_path: Path) -> None:
    h = served.headers
    repo = repository(served.shared / "slow", {"Dockerfile": f"FROM {served.base}\nRUN sleep 60\n"})
    pipes = f"{served.origin}/api/v1/businesses/alpha/pipelines"
    r = httpx.post(
        pipes, json={"name": "slow", "git_url": f"file://{repo}"}, headers=h, timeout=TIMEOUT_S
    )
    assert r.status_code == 201, r.text
    assert httpx.post(f"{pipes}/slow/runs", headers=h, timeout=TIMEOUT_S).status_code == 201
    runner = served.platform.pipeline_runner()

    def cancel_when_building() -> dict[str, Any]:
        for _ in range(300):
            got = httpx.get(f"{pipes}/slow/runs/1/logs", headers=h, timeout=TIMEOUT_S)
            logs = got.json()["items"]
            if any("RUN sleep 60" in x["line"] for x in logs):
                break
            time.sleep(0.1)
        r = httpx.post(f"{pipes}/slow/runs/1/cancel", headers=h, timeout=TIMEOUT_S)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def drive() -> dict[str, Any]:
        await runner.start(loops=1)
        asked = await asyncio.to_thread(cancel_when_building)
        started = time.monotonic()
        await runner.drain()
        assert time.monotonic() - started < 30
        return asked

    asked = asyncio.run(drive())
    assert asked["state"] == "running" and asked["cancel_requested"] is True
    run = httpx.get(f"{pipes}/slow/runs/1", headers=h, timeout=TIMEOUT_S).json()
    assert run["state"] == "cancelled", run


def test_deleting_a_pipeline_mid_build_stops_the_build_cleanly(
    served: Served, tmp_path: Path
) -> None:
    h = served.headers
    repo = repository(served.shared / "gone", {"Dockerfile": f"FROM {served.base}\nRUN sleep 60\n"})
    pipes = f"{served.origin}/api/v1/businesses/alpha/pipelines"
    r = httpx.post(
        pipes, json={"name": "gone", "git_url": f"file://{repo}"}, headers=h, timeout=TIMEOUT_S
    )
    assert r.status_code == 201, r.text
    assert httpx.post(f"{pipes}/gone/runs", headers=h, timeout=TIMEOUT_S).status_code == 201
    runner = served.platform.pipeline_runner()

    def delete_when_building() -> None:
        for _ in range(300):
            logs = httpx.get(f"{pipes}/gone/runs/1/logs", headers=h, timeout=TIMEOUT_S).json()[
                "items"
            ]
            if any("RUN sleep 60" in x["line"] for x in logs):
                break
            time.sleep(0.1)
        assert httpx.delete(f"{pipes}/gone", headers=h, timeout=TIMEOUT_S).status_code == 204

    async def drive() -> list[BaseException | None]:
        await runner.start(loops=1)
        tasks = list(runner.tasks.values())
        await asyncio.to_thread(delete_when_building)
        started = time.monotonic()
        await asyncio.wait(tasks, timeout=60)
        assert time.monotonic() - started < 30  # the build was stopped, not waited out
        return [t.exception() for t in tasks]

    assert asyncio.run(drive()) == [None]
    assert httpx.get(f"{pipes}/gone/runs/1", headers=h, timeout=TIMEOUT_S).status_code == 404


def test_a_run_builds_from_and_pushes_to_an_https_registry_with_a_private_ca(
    database_url: str, tmp_path: Path
) -> None:
    """``GAIA_REGISTRY_TLS_*``: buildah pulls the base and pushes the result over HTTPS,
    trusting the platform's private CA through the build's own cert dir."""
    with running(database_url, tmp_path, tls=True) as served:
        assert served.platform.registry.url.startswith("https://")
        run = _run(served, "secure", f"FROM {served.base}\nRUN true\n", tmp_path)
    assert run["state"] == "succeeded", run
    assert run["digest"].startswith("sha256:")
    assert "--tls-verify=false" not in run["log"]


def test_a_root_platform_without_its_build_user_refuses_to_build(
    database_url: str, tmp_path: Path
) -> None:
    """A RUN step must not run as root on the host: a run fails at once, saying why and how
    to fix it, and nothing is built."""
    if os.geteuid() != 0:
        pytest.skip("only a root platform hands builds to a build user")
    with running(database_url, tmp_path, build_user="gaia-no-such-user") as served:
        run = _run(served, "refused", f"FROM {served.base}\nRUN true\n", tmp_path)
        assert not (served.shared / "builds" / "work").exists()
    assert run["state"] == "failed", run
    assert run["failure"]["step"] == "prepare"
    assert "GAIA_BUILD_USER: no user 'gaia-no-such-user'" in run["failure"]["reason"], run
