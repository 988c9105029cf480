"""The restore drill (issue 21, docs/backup.md), on SQLite and on PostgreSQL.

A platform with two businesses, quotas, an app with two templates, a ConfigMap and a Secret, an
alert channel with credentials and an alert policy, a sim cluster and a kubernetes cluster (the
real test control plane) whose etcd Gaia may snapshot. ``gaia backup`` takes it all; then the
platform is destroyed (SQLite: the data dir is deleted; PostgreSQL: the database is dropped) and
the cluster's objects are deleted from the live etcd; ``gaia restore`` brings the database back
into a fresh data dir or database and makes a fresh etcd data dir from the snapshot. A new
platform opened on the restored database must answer the API exactly as before (every business,
quota, app and its templates, config, channel, policy and cluster), decrypt the Secret and the
kubeconfig with the key given; a fresh control plane (etcd and kube-apiserver) started on the
restored etcd data dir must serve the cluster's objects the live one no longer has.

Refusals, on both databases: a corrupt archive, a truncated one, one from a newer schema, and a
wrong key restore nothing and leave what was there as it was.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from gaia.app import Platform, create_app
from gaia.cli import main as gaia
from gaia.clock import ManualClock
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store import migrate
from gaia.store.backup.archive import MANIFEST, Manifest
from gaia.store.clusters import cluster_named
from gaia.store.database import Database
from gaia.store.models import User
from tests.conftest import QUOTA, TEST_SECRET_KEY, missing_component
from tests.support.apps_harness import template
from tests.support.etcd_tools import build_etcdutl
from tests.support.kube import ControlPlane, ControlPlaneUnavailable
from tests.support.postgres import PostgresServer

ADMIN_PASSWORD = "drill-admin-password-1"
SECRET_VALUE = "drill-s3cret-VALUE"


@dataclass
class Site:
    """Where one platform keeps its data: a data dir, and a database in it or on the server."""

    data_dir: Path
    database_url: str
    destroy: Any  # () -> None: the disaster
    exists: Any  # () -> bool: is there a database at database_url?
    databases: Any = None  # () -> set of the server's databases named like this site's

    def settings(self) -> Settings:
        return Settings(
            data_dir=self.data_dir,
            database_url=self.database_url,
            secret_key=TEST_SECRET_KEY,
            demo=False,
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'gaia.db'}"
        yield Site(
            data_dir,
            url,
            destroy=lambda: shutil.rmtree(data_dir),
            exists=lambda: (data_dir / "gaia.db").exists(),
        )
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"drill_{uuid.uuid4().hex[:8]}"
    url = server.create_database(name)

    def run_sql(sql: str) -> list[Any]:
        import psycopg

        with psycopg.connect(server.url_for("postgres", driver=False), autocommit=True) as conn:
            cursor = conn.execute(sql)
            return list(cursor) if cursor.description else []

    yield Site(
        data_dir,
        url,
        destroy=lambda: run_sql(f'DROP DATABASE "{name}" WITH (FORCE)'),
        exists=lambda: bool(run_sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")),  # noqa: S608
        databases=lambda: {
            row[0]
            for row in run_sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'")  # noqa: S608
        },
    )
    for (other,) in run_sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'"):  # noqa: S608
        run_sql(f'DROP DATABASE "{other}" WITH (FORCE)')


@pytest.fixture(scope="module")
def etcdutl() -> Path:
    try:
        return build_etcdutl()
    except ControlPlaneUnavailable as exc:
        missing_component("etcdutl", str(exc))
        raise AssertionError("unreachable") from exc


def open_platform(site: Site, *, migrate_first: bool) -> Platform:
    if migrate_first:
        db = Database(site.database_url)
        migrate.upgrade(db.engine)
        db.dispose()
    return Platform.open(
        site.settings(), run_migrations=False, clock=ManualClock(dt.datetime.now(dt.UTC))
    )


@pytest.fixture
def environment(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gaia backup`` and ``gaia restore`` read the same settings as the platform."""
    monkeypatch.setenv("GAIA_DATA_DIR", str(site.data_dir))
    monkeypatch.setenv("GAIA_DATABASE_URL", site.database_url)
    monkeypatch.setenv("GAIA_SECRET_KEY", TEST_SECRET_KEY)


def login(client: TestClient) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def post(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def populate(platform: Platform, plane: ControlPlane) -> None:
    with platform.db.write_session() as session:
        session.add(
            User(
                username="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                is_platform_admin=True,
            )
        )
    with TestClient(create_app(platform, run_loops=False), base_url="https://localhost") as c:
        admin = login(c)
        for biz in ("alpha", "beta"):
            post(c, "/api/v1/businesses", {"name": biz}, admin)
        post(c, "/api/v1/clusters", {"name": "sim-1", "kind": "sim", "zone": "z1"}, admin)
        post(
            c,
            "/api/v1/clusters",
            {"name": "k8s", "kind": "kubernetes", "kubeconfig": plane.kubeconfig_text()},
            admin,
        )
        for biz in ("alpha", "beta"):
            r = c.put(f"/api/v1/businesses/{biz}/quotas/sim-1", json={"hard": QUOTA}, headers=admin)
            assert r.status_code == 200, r.text
        biz = "/api/v1/businesses/alpha"
        post(
            c,
            f"{biz}/apps",
            {
                "name": "web",
                "cluster": "sim-1",
                "templates": [
                    template("v1", "registry.local/web:v1", cpu=1, memory=512),
                    template("v2", "registry.local/web:v2", cpu=1, memory=512),
                ],
                "replicas": 2,
            },
            admin,
        )
        post(c, f"{biz}/configmaps", {"name": "settings", "data": {"LOG": "debug"}}, admin)
        post(c, f"{biz}/secrets", {"name": "db", "data": {"password": SECRET_VALUE}}, admin)
        channel = post(
            c,
            "/api/v1/alerts/channels",
            {
                "business": "alpha",
                "name": "ops-hook",
                "kind": "webhook",
                "config": {
                    "url": "https://hooks.example.com/gaia",
                    "hmac_secret": "drill-hmac-0123456789",
                },
            },
            admin,
        )
        post(
            c,
            "/api/v1/alerts/policies",
            {
                "business": "alpha",
                "name": "web cpu",
                "scope": {"kind": "app", "app": "web"},
                "metric": "gaia_instance_cpu_usage_percent",
                "comparison": ">",
                "threshold": 80,
                "for_seconds": 60,
                "severity": "critical",
                "channel_ids": [channel["id"]],
            },
            admin,
        )
        r = c.put(
            "/api/v1/clusters/k8s/etcd",
            json={"endpoints": [f"http://127.0.0.1:{plane.etcd_port}"]},
            headers=admin,
        )
        assert r.status_code == 200 and r.json()["configured"], r.text


def observed(platform: Platform) -> dict[str, Any]:
    """What the API answers about everything the drill put in (volatile fields left out)."""
    with TestClient(create_app(platform, run_loops=False), base_url="https://localhost") as c:
        admin = login(c)

        def get(path: str, **params: Any) -> Any:
            r = c.get(path, headers=admin, params=params)
            assert r.status_code == 200, f"{path}: {r.text}"
            return r.json()

        def items(path: str) -> list[Any]:
            return list(get(path, limit=500)["items"])

        biz = "/api/v1/businesses/alpha"
        clusters = items("/api/v1/clusters")
        for cluster in clusters:
            for volatile in ("health", "health_message", "health_checked_at", "health_changed_at"):
                cluster.pop(volatile, None)
        return {
            "businesses": items("/api/v1/businesses"),
            "quotas": {b: get(f"/api/v1/businesses/{b}/quotas/sim-1") for b in ("alpha", "beta")},
            "clusters": clusters,
            "etcd access": get("/api/v1/clusters/k8s/etcd"),
            "apps": items(f"{biz}/apps"),
            "app": get(f"{biz}/apps/web"),
            "templates": items(f"{biz}/apps/web/templates"),
            "configmaps": items(f"{biz}/configmaps"),
            "secret": get(f"{biz}/secrets/db", reveal="true"),
            "channels": items("/api/v1/alerts/channels"),
            "policies": items("/api/v1/alerts/policies"),
        }


def kubeconfig_decrypts(platform: Platform) -> bool:
    with platform.db.read_session() as session:
        row = cluster_named(session, "k8s")
        return "certificate-authority-data" in platform.secrets.decrypt(
            row.kubeconfig_encrypted or b""
        )


def kube(plane: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    with plane.http_client() as http:
        r = http.request(method, path, json=body)
        assert r.status_code < 300, r.text
        return r.json()


def etcd_get(etcdctl: Path, port: int, key: str) -> str:
    done = subprocess.run(
        [str(etcdctl), f"--endpoints=http://127.0.0.1:{port}", "get", key, "--print-value-only"],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
        check=True,
    )
    return done.stdout


def test_restore_drill_brings_back_the_platform_and_the_clusters_etcd(
    site: Site,
    control_plane: ControlPlane,
    environment: None,
    etcdutl: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plane = control_plane
    monkeypatch.setenv("GAIA_ETCDCTL", str(plane.bin_dir / "etcdctl"))
    namespace = f"drill-{uuid.uuid4().hex[:6]}"
    kube(plane, "POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    kube(
        plane,
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "cluster-side"}, "data": {"marker": "drill-etcd-marker"}},
    )
    platform = open_platform(site, migrate_first=True)
    populate(platform, plane)
    before = observed(platform)
    assert before["secret"]["data"] == {"password": SECRET_VALUE}
    assert [t["name"] for t in before["templates"]] == ["v1", "v2"]
    assert before["policies"] and before["channels"] and before["apps"]
    platform.db.dispose()

    archive = tmp_path / "backups" / "drill.tar"
    assert gaia(["backup", "--out", str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = Manifest.from_json(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert names[0] == MANIFEST
    assert {p.kind for p in manifest.parts} == {"database", "etcd"}
    assert [p.cluster for p in manifest.parts if p.kind == "etcd"] == ["k8s"]
    assert manifest.key.included is False and manifest.key.source == "GAIA_SECRET_KEY"
    assert TEST_SECRET_KEY.encode() not in archive.read_bytes()

    # the disaster: the platform's database and data dir are gone, the cluster's objects too
    site.destroy()
    shutil.rmtree(site.data_dir, ignore_errors=True)
    assert not site.exists()
    kube(plane, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/cluster-side")
    key = f"/registry/configmaps/{namespace}/cluster-side"
    assert etcd_get(plane.bin_dir / "etcdctl", plane.etcd_port, key) == ""

    monkeypatch.setenv("GAIA_ETCDUTL", str(etcdutl))
    etcd_out = tmp_path / "etcd-restored"
    capsys.readouterr()
    assert gaia(["restore", str(archive), "--etcd-out", str(etcd_out)]) == 0
    said = capsys.readouterr().out
    assert "secrets decrypted" in said and str(etcd_out / "k8s") in said

    platform = open_platform(site, migrate_first=False)
    try:
        assert observed(platform) == before
        assert kubeconfig_decrypts(platform)
    finally:
        platform.db.dispose()

    # a fresh control plane on the restored etcd data dir serves what the live one lost
    restored = ControlPlane(bin_dir=plane.bin_dir, work=tmp_path / "restored-plane")
    restored.work.mkdir()
    shutil.move(etcd_out / "k8s", restored.work / "etcd")
    try:
        restored.start()
        back = kube(restored, "GET", f"/api/v1/namespaces/{namespace}/configmaps/cluster-side")
        assert back["data"] == {"marker": "drill-etcd-marker"}
        assert etcd_get(plane.bin_dir / "etcdctl", restored.etcd_port, key)
    finally:
        restored.stop()


def backup_of_a_small_platform(site: Site, tmp_path: Path) -> tuple[Path, Platform]:
    platform = open_platform(site, migrate_first=True)
    with platform.db.write_session() as session:
        session.add(
            User(username="admin", password_hash=hash_password("x"), is_platform_admin=True)
        )
    platform.db.dispose()
    archive = tmp_path / "small.tar"
    assert gaia(["backup", "--out", str(archive)]) == 0
    return archive, platform


def rewrite(archive: Path, target: Path, *, manifest: Any = None, part: Any = None) -> Path:
    """A copy of ``archive`` with its manifest (dict -> dict) or a part's bytes changed."""
    with tarfile.open(archive) as tar, tarfile.open(target, "w") as out:
        for member in tar:
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == MANIFEST and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            elif member.name != MANIFEST and part is not None:
                data = part(data)
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return target


@pytest.mark.parametrize(
    "damage, refusal",
    [
        ("flipped byte", "is corrupt"),
        ("truncated", "damaged"),
        ("newer schema", "does not know"),
        ("newer format", "backup format 99"),
        ("wrong key", "not the one this backup's secrets were encrypted with"),
        # checked only after the database was restored into its fresh place: then removed
        ("altered row counts", "differs from the backup"),
    ],
)
def test_restore_refuses_a_bad_archive_and_restores_nothing(
    site: Site,
    environment: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    refusal: str,
) -> None:
    archive, _ = backup_of_a_small_platform(site, tmp_path)
    bad = tmp_path / "bad.tar"
    if damage == "flipped byte":
        rewrite(archive, bad, part=lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:])
    elif damage == "truncated":
        bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    elif damage == "newer schema":
        rewrite(archive, bad, manifest=lambda m: {**m, "schema_revision": "9999"})
    elif damage == "newer format":
        rewrite(archive, bad, manifest=lambda m: {**m, "format": 99})
    elif damage == "altered row counts":
        rewrite(
            archive, bad, manifest=lambda m: {**m, "row_counts": {**m["row_counts"], "users": 7}}
        )
    else:
        shutil.copy(archive, bad)
        monkeypatch.setenv("GAIA_SECRET_KEY", Fernet.generate_key().decode())
    # something happens after the backup; a refused restore must not undo it
    platform = open_platform(site, migrate_first=False)
    with platform.db.write_session() as session:
        session.add(User(username="after-backup", password_hash=hash_password("y")))
    platform.db.dispose()
    capsys.readouterr()
    assert gaia(["restore", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "nothing restored" in err and refusal in err
    monkeypatch.setenv("GAIA_SECRET_KEY", TEST_SECRET_KEY)
    platform = open_platform(site, migrate_first=False)
    try:
        with platform.db.read_session() as session:
            users = {u.username for u in session.query(User)}
        assert users == {"admin", "after-backup"}
    finally:
        platform.db.dispose()
    leftovers = [p.name for p in site.data_dir.iterdir() if "restore" in p.name]
    assert leftovers == []
    if site.databases is not None:  # no staging database left on the server either
        assert site.databases() == {make_url(site.database_url).database}
