"""Issue 15, tenancy and data safety: a cluster holding apps is not removed silently, system
namespaces cannot be taken by a business, and the secret key is shared and rotatable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import select

from gaia import cli
from gaia.domain.errors import NotManaged
from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import ConfigData, PortSpec, ServiceSpec
from gaia.security import SecretBox, SecretKeyError
from gaia.settings import Settings
from gaia.store.models import AlertChannel, Business, Cluster, ConfigItem, Event
from gaia.store.secrets import ENCRYPTED_COLUMNS
from tests.conftest import TEST_SECRET_KEY, World
from tests.support.apps_harness import template
from tests.support.kube import ControlPlane

# ---------------------------------------------------------------- cluster removal


def _app(world: World, business: str, name: str) -> None:
    body = {"name": name, "cluster": "sim-1", "templates": [template("v1", "registry.local/x:1")]}
    headers = world.admin
    r = world.client.post(f"/api/v1/businesses/{business}/apps", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _succeeded(client: TestClient, headers: dict[str, str], action: str) -> list[dict[str, str]]:
    page = client.get("/api/v1/records", params={"action": action}, headers=headers).json()
    return [r for r in page["items"] if r["result"] == "success"]


def test_cluster_with_apps_is_refused_naming_them_and_force_records_them(world: World) -> None:
    c, admin = world.client, world.admin
    _app(world, "alpha", "web")
    _app(world, "alpha", "api")
    _app(world, "beta", "batch")

    r = c.delete("/api/v1/clusters/sim-1", headers=admin)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "conflict"
    for name in ("alpha/api", "alpha/web", "beta/batch", "force=true"):
        assert name in body["message"]
    assert body["details"] == {
        "apps": {"alpha": ["api", "web"], "beta": ["batch"]},
        "quotas": ["alpha", "beta"],
    }
    assert c.get("/api/v1/clusters/sim-1", headers=admin).status_code == 200
    assert _succeeded(c, admin, "cluster.delete") == []

    r = c.delete("/api/v1/clusters/sim-1", params={"force": "true"}, headers=admin)
    assert r.status_code == 204, r.text
    assert c.get("/api/v1/clusters/sim-1", headers=admin).status_code == 404
    [record] = _succeeded(c, admin, "cluster.delete")
    summary = record["summary"]
    for name in ("alpha/api", "alpha/web", "beta/batch", "quota(s) of: alpha, beta"):
        assert name in summary, summary


def test_empty_cluster_is_removed_without_force(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/api/v1/clusters", json={"name": "idle", "kind": "sim"}, headers=admin)
    assert r.status_code == 201, r.text
    assert client.delete("/api/v1/clusters/idle", headers=admin).status_code == 204


# ---------------------------------------------------------------- system namespaces


@pytest.mark.parametrize(
    "name", ["default", "kube-system", "kube-public", "kube-node-lease", "kube-anything", "gaia"]
)
def test_system_namespaces_cannot_be_businesses(
    client: TestClient, admin: dict[str, str], name: str
) -> None:
    r = client.post("/api/v1/businesses", json={"name": name}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"
    assert "reserved" in r.json()["message"] and name in r.json()["message"]
    assert client.get(f"/api/v1/businesses/{name}", headers=admin).status_code == 404


def test_names_that_only_look_like_system_namespaces_are_fine(
    client: TestClient, admin: dict[str, str]
) -> None:
    for name in ("defaults", "my-kube-system", "kube", "gaia-team"):
        r = client.post("/api/v1/businesses", json={"name": name}, headers=admin)
        assert r.status_code == 201, r.text


# ------------------------------------------------ the provider touches only Gaia's objects
# (a real etcd + kube-apiserver: the session's ``control_plane`` fixture, tests/support/kube.py)


@pytest.fixture
def kube(control_plane: ControlPlane) -> Iterator[tuple[KubernetesCluster, httpx.Client]]:
    provider = KubernetesCluster(name="tenancy", kubeconfig=control_plane.kubeconfig_text())
    api = control_plane.http_client()
    yield provider, api
    asyncio.run(provider.close())
    api.close()


def _service_fingerprint(api: httpx.Client, namespace: str, name: str) -> tuple[str, str]:
    got = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
    assert got.status_code == 200, got.text
    return got.json()["metadata"]["uid"], got.json()["metadata"]["resourceVersion"]


def test_provider_never_applies_into_or_deletes_from_the_default_namespace(
    kube: tuple[KubernetesCluster, httpx.Client],
) -> None:
    provider, api = kube
    before = _service_fingerprint(api, "default", "kubernetes")
    spec = ServiceSpec(
        namespace="default", name="kubernetes", app="kubernetes", ports=(PortSpec(8080),)
    )
    with pytest.raises(NotManaged, match=r"namespace default .*not created by Gaia"):
        asyncio.run(provider.apply_service(spec))
    with pytest.raises(NotManaged, match="default/kubernetes"):
        asyncio.run(provider.delete_service(namespace="default", name="kubernetes"))
    with pytest.raises(NotManaged):
        asyncio.run(provider.apply_quota(namespace="default", hard=ResourceVector(cpu=1000)))
    assert _service_fingerprint(api, "default", "kubernetes") == before
    assert api.get("/api/v1/namespaces/default/resourcequotas").json()["items"] == []


def test_provider_refuses_objects_made_by_hand_in_a_gaia_namespace(
    kube: tuple[KubernetesCluster, httpx.Client],
) -> None:
    provider, api = kube
    ns = f"tenancy-{int(time.time() * 1000) % 10**8}"
    # Gaia makes the namespace (and a config of its own), someone adds objects by hand
    asyncio.run(provider.apply_config(ConfigData(ns, "ours", secret=False, data={"a": "1"})))
    hand_made = {"metadata": {"name": "theirs"}, "data": {"keep": "me"}}
    assert api.post(f"/api/v1/namespaces/{ns}/configmaps", json=hand_made).status_code == 201
    service = {
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "theirs"}},
    }
    assert api.post(f"/api/v1/namespaces/{ns}/services", json=service).status_code == 201
    pod = {
        "metadata": {"name": "web-0"},
        "spec": {"containers": [{"name": "main", "image": "registry.local/theirs:1"}]},
    }
    assert api.post(f"/api/v1/namespaces/{ns}/pods", json=pod).status_code == 201
    before = _service_fingerprint(api, ns, "web")

    with pytest.raises(NotManaged, match=f"config {ns}/theirs"):
        asyncio.run(provider.apply_config(ConfigData(ns, "theirs", secret=False, data={})))
    with pytest.raises(NotManaged):
        asyncio.run(provider.delete_config(namespace=ns, name="theirs", secret=False))
    with pytest.raises(NotManaged):
        asyncio.run(provider.apply_service(ServiceSpec(ns, "web", "web", (PortSpec(8080),))))
    with pytest.raises(NotManaged):
        asyncio.run(provider.delete_service(namespace=ns, name="web"))
    with pytest.raises(NotManaged, match=f"pod {ns}/web-0"):
        asyncio.run(provider.delete_instance(namespace=ns, name="web-0"))

    assert api.get(f"/api/v1/namespaces/{ns}/configmaps/theirs").json()["data"] == {"keep": "me"}
    assert _service_fingerprint(api, ns, "web") == before
    assert api.get(f"/api/v1/namespaces/{ns}/pods/web-0").status_code == 200
    # Gaia's own objects are still Gaia's to change and remove
    asyncio.run(provider.apply_config(ConfigData(ns, "ours", secret=False, data={"a": "2"})))
    assert api.get(f"/api/v1/namespaces/{ns}/configmaps/ours").json()["data"] == {"a": "2"}
    asyncio.run(provider.delete_config(namespace=ns, name="ours", secret=False))
    assert api.get(f"/api/v1/namespaces/{ns}/configmaps/ours").status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_namespace_that_is_not_gaias_is_a_warning_and_stalls_no_other_business(
    platform: Platform, world: World, control_plane: ControlPlane
) -> None:
    c, admin = world.client, world.admin
    # sorts before "alpha": the refusal comes first in the controller's pass
    taken = f"a0-taken-{int(time.time() * 1000) % 10**8}"
    with control_plane.http_client() as api:
        assert api.post("/api/v1/namespaces", json={"metadata": {"name": taken}}).is_success
        assert c.post("/api/v1/businesses", json={"name": taken}, headers=admin).is_success
        cluster = f"tenancy-{taken[-8:]}"
        body = {
            "name": cluster,
            "kind": "kubernetes",
            "kubeconfig": control_plane.kubeconfig_text(),
        }
        assert c.post("/api/v1/clusters", json=body, headers=admin).status_code == 201
        for business in (taken, "alpha"):
            r = c.put(
                f"/api/v1/businesses/{business}/quotas/{cluster}",
                json={"hard": {"cpu": 2}},
                headers=admin,
            )
            assert r.status_code == 200, r.text

        asyncio.run(platform.app_controller().run_once())

        assert api.get(f"/api/v1/namespaces/{taken}/resourcequotas").json()["items"] == []
        assert api.get("/api/v1/namespaces/alpha/resourcequotas").json()["items"] != []
    with platform.db.read_session() as session:
        warnings = session.scalars(select(Event).where(Event.reason == "NotManaged")).all()
    assert [(e.business, e.type) for e in warnings] == [(taken, "Warning")]
    assert "not created by Gaia" in warnings[0].message


# ---------------------------------------------------------------- one key for every replica

PG_URL = "postgresql+psycopg://gaia:gaia@127.0.0.1:1/gaia"  # never reached: refused before


def test_shared_database_without_a_secret_key_refuses_to_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=PG_URL, secret_key="")
    with pytest.raises(SecretKeyError, match="GAIA_SECRET_KEY is required"):
        Platform.open(settings, run_migrations=False)
    assert not (tmp_path / "secret.key").exists()  # no per-replica key was made


def test_gaia_up_on_a_shared_database_without_a_key_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GAIA_DATABASE_URL", PG_URL)
    monkeypatch.delenv("GAIA_SECRET_KEY", raising=False)
    assert cli.main(["up", "--data-dir", str(tmp_path), "--no-demo"]) == 2
    assert "GAIA_SECRET_KEY is required" in capsys.readouterr().err


def test_sqlite_without_a_key_keeps_the_generated_key_file(tmp_path: Path) -> None:
    first = SecretBox.from_settings(secret_key="", data_dir=tmp_path)
    again = SecretBox.from_settings(secret_key="", data_dir=tmp_path)
    assert again.decrypt(first.encrypt("x")) == "x"
    assert (tmp_path / "secret.key").exists()


def test_a_malformed_key_is_refused_naming_its_position() -> None:
    with pytest.raises(SecretKeyError, match="key 2 of 2 is not a Fernet key"):
        SecretBox(f"{TEST_SECRET_KEY},not-a-key")


def test_every_encrypted_column_is_rotated() -> None:
    from gaia.store.models import Base

    encrypted = {
        (mapper.class_, column.key)
        for mapper in Base.registry.mappers
        for column in mapper.columns
        if column.key.endswith("_encrypted")
    }
    assert encrypted == {(entity, column) for _, entity, column in ENCRYPTED_COLUMNS}


def _store_secrets(platform: Platform) -> None:
    old = platform.secrets
    with platform.db.write_session() as s:
        biz = Business(name="alpha")
        s.add(biz)
        s.add(Cluster(name="k", kind="kubernetes", kubeconfig_encrypted=old.encrypt("kc")))
        s.add(Cluster(name="sim", kind="sim"))  # nothing encrypted: skipped
        s.flush()
        s.add(
            ConfigItem(business_id=biz.id, name="db", secret=True, data_encrypted=old.encrypt("{}"))
        )
        s.add(ConfigItem(business_id=biz.id, name="plain", secret=False, data={"a": "b"}))
        s.add(
            AlertChannel(
                business_id=biz.id, name="hook", kind="webhook", config_encrypted=old.encrypt("c")
            )
        )


def _ciphertexts(platform: Platform) -> list[bytes]:
    with platform.db.read_session() as s:
        return [
            value
            for _, entity, column in ENCRYPTED_COLUMNS
            for value in s.scalars(select(getattr(entity, column)))
            if value is not None
        ]


def test_rotation_reencrypts_everything_so_the_old_key_can_be_dropped(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_secrets(platform)
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("GAIA_DATABASE_URL", platform.settings.resolved_database_url())
    monkeypatch.setenv("GAIA_DATA_DIR", str(platform.settings.data_dir))
    monkeypatch.setenv("GAIA_SECRET_KEY", f"{new_key}, {TEST_SECRET_KEY}")

    assert cli.main(["secrets", "rotate"]) == 0
    out = capsys.readouterr().out
    for line in (
        "re-encrypted 1 cluster kubeconfigs",
        "re-encrypted 1 config secrets",
        "re-encrypted 1 alert channel credentials",
    ):
        assert line in out, out

    values = _ciphertexts(platform)
    assert len(values) == 3
    new_only, old_only = SecretBox(new_key), SecretBox(TEST_SECRET_KEY)
    assert sorted(new_only.decrypt(v) for v in values) == ["c", "kc", "{}"]
    for value in values:
        with pytest.raises(ValueError, match="cannot be decrypted"):
            old_only.decrypt(value)


def test_rotation_changes_nothing_when_a_secret_cannot_be_read(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_secrets(platform)
    before = _ciphertexts(platform)
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("GAIA_DATABASE_URL", platform.settings.resolved_database_url())
    monkeypatch.setenv("GAIA_SECRET_KEY", new_key)  # the old key is missing: nothing readable
    assert cli.main(["secrets", "rotate"]) == 1
    assert "nothing changed" in capsys.readouterr().err
    assert _ciphertexts(platform) == before
