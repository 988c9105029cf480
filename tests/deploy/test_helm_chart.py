"""Gaia's Helm chart (``deploy/helm/gaia``) against the real tools and a real kube-apiserver.

- ``helm`` is the one ``scripts/build-control-plane.sh`` builds from its pinned Go module (v4),
  beside the control plane's binaries; without it the tests skip locally and fail in CI.
- ``helm lint --strict`` and ``helm template``; the rendered objects are read as YAML and checked
  as a specification of how Gaia runs on Kubernetes (docs/ha.md, "Running on Kubernetes").
- The same objects go to the test control plane (``tests/support/kube.py``: etcd and
  kube-apiserver) with ``kubectl apply --server-side --dry-run=server --validate=strict``: the API
  server decodes, defaults, validates and runs its admission on each (an unknown field, a bad
  selector or a missing namespace is refused), then stores nothing.
- RBAC is applied for real and asked with ``kubectl auth can-i --as`` the service account: the
  apiserver's RBAC authorizer answers, not the chart's text.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import missing_component
from tests.support.kube import ControlPlane, ControlPlaneUnavailable, build_control_plane

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "gaia"
RELEASE = "gaia-test"

Render = Callable[..., dict[tuple[str, str], dict[str, Any]]]


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        binary = build_control_plane() / "helm"
    except ControlPlaneUnavailable as exc:
        missing_component("helm (scripts/build-control-plane.sh)", str(exc))
        raise AssertionError("unreachable") from exc
    if not binary.is_file():
        missing_component("helm", f"scripts/build-control-plane.sh built no {binary}")
    return binary


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def template_text(
    helm: Path, *sets: str, namespace: str = "gaia", only: tuple[str, ...] = ()
) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for value in sets:
        args += ["--set", value]
    for template in only:
        args += ["--show-only", f"templates/{template}"]
    done = helm_run(helm, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def render(helm: Path) -> Render:
    """``helm template`` with ``--set`` values, as {(kind, name): object}."""

    def rendered(*sets: str, namespace: str = "gaia") -> dict[tuple[str, str], dict[str, Any]]:
        documents = yaml.safe_load_all(template_text(helm, *sets, namespace=namespace))
        return {(d["kind"], d["metadata"]["name"]): d for d in documents if d}

    return rendered


def gaia_container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def test_chart_passes_helm_lint_strictly(helm: Path) -> None:
    for sets in ([], ["adminPassword.secretName=gaia-admin", "rbac.rules[0].apiGroups[0]="]):
        args = ["lint", "--strict", str(CHART)]
        for value in sets:
            args += ["--set", value]
        done = helm_run(helm, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


def test_default_release_is_the_platform_objects_and_nothing_else(render: Render) -> None:
    assert set(render()) == {
        ("Deployment", RELEASE),
        ("Service", RELEASE),
        ("PodDisruptionBudget", RELEASE),
        ("ServiceAccount", RELEASE),
        ("Role", RELEASE),
        ("RoleBinding", RELEASE),
    }


def test_three_replicas_share_postgres_and_the_secret_key_from_secrets(render: Render) -> None:
    objects = render()
    assert objects[("Deployment", RELEASE)]["spec"]["replicas"] == 3
    env = env_of(gaia_container(objects))
    assert env["GAIA_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "gaia-database", "key": "url"}
    }
    assert env["GAIA_SECRET_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "gaia-secret-key", "key": "key"}
    }
    # no secret is ever a plain value in the pod spec
    assert "value" not in env["GAIA_DATABASE_URL"]
    assert "value" not in env["GAIA_SECRET_KEY"]
    assert "GAIA_ADMIN_PASSWORD" not in env
    assert env["GAIA_DEMO"]["value"] == "false"


def test_each_replica_is_named_by_its_pod_in_the_leader_leases(render: Render) -> None:
    env = env_of(gaia_container(render()))
    assert env["GAIA_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_probes_ask_the_paths_the_api_answers(render: Render, client: TestClient) -> None:
    container = gaia_container(render())
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness == {"path": "/api/readyz", "port": "http"}
    assert liveness == {"path": "/api/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == liveness
    assert [p["name"] for p in container["ports"]] == ["http"]
    # the real app (SQLite and PostgreSQL) answers both without a login
    assert client.get(readiness["path"]).status_code == 200
    assert client.get(liveness["path"]).status_code == 200
    assert client.get("/api/no-such-probe").status_code == 404


def test_pods_run_as_non_root_on_a_read_only_root_with_writable_data_and_tmp(
    render: Render,
) -> None:
    objects = render()
    pod = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    container = gaia_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {"/var/lib/gaia", "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert env_of(container)["GAIA_DATA_DIR"]["value"] == "/var/lib/gaia"
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}


def test_disruption_budget_and_service_select_exactly_the_replicas(render: Render) -> None:
    objects = render()
    deployment = objects[("Deployment", RELEASE)]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
    budget = objects[("PodDisruptionBudget", RELEASE)]["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    service = objects[("Service", RELEASE)]["spec"]
    assert service["selector"] == selector
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    # upgrades start the new replica before stopping an old one
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_service_account_gets_no_token_and_no_rules_by_default(render: Render) -> None:
    objects = render()
    account = objects[("ServiceAccount", RELEASE)]
    assert account["automountServiceAccountToken"] is False
    pod = objects[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == RELEASE
    assert pod["automountServiceAccountToken"] is False
    assert objects[("Role", RELEASE)]["rules"] == []
    binding = objects[("RoleBinding", RELEASE)]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": RELEASE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "gaia"}]


def test_values_change_replicas_image_settings_and_optional_objects(render: Render) -> None:
    objects = render(
        "replicaCount=5",
        "image.repository=registry.example.com/platform/gaia",
        "image.tag=1.2.3",
        "adminPassword.secretName=gaia-admin",
        "env.GAIA_METRICS_STORE=prometheus",
        "leaderLeaseSeconds=20",
        "podDisruptionBudget.enabled=false",
        "serviceAccount.create=false",
        "serviceAccount.name=platform",
        "rbac.create=false",
        namespace="platform",
    )
    deployment = objects[("Deployment", RELEASE)]
    assert deployment["metadata"]["namespace"] == "platform"
    assert deployment["spec"]["replicas"] == 5
    container = gaia_container(objects)
    assert container["image"] == "registry.example.com/platform/gaia:1.2.3"
    env = env_of(container)
    assert env["GAIA_ADMIN_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "gaia-admin", "key": "password"}
    }
    assert env["GAIA_METRICS_STORE"]["value"] == "prometheus"
    assert env["GAIA_LEADER_LEASE_SECONDS"]["value"] == "20"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "platform"
    assert set(objects) == {("Deployment", RELEASE), ("Service", RELEASE)}


def test_image_tag_defaults_to_the_charts_app_version(render: Render) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert gaia_container(render())["image"] == f"localhost/gaia:{app_version}"


def test_values_outside_the_schema_are_refused(helm: Path) -> None:
    for value, why in [
        ("replicaCount=0", "minimum"),
        ("env.METRICS_STORE=prometheus", "GAIA_"),
        ("database.secretName=", "minLength"),
    ]:
        done = helm_run(helm, "template", RELEASE, str(CHART), "--set", value)
        assert done.returncode != 0, value
        assert why in done.stderr, done.stderr


def kubectl_apply(plane: ControlPlane, manifest: Path, *flags: str) -> dict[str, Any]:
    done = plane.kubectl("apply", "--server-side", *flags, "-f", str(manifest), "-o", "json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"gaia-chart-{uuid.uuid4().hex[:8]}"
    done = control_plane.kubectl("create", "namespace", name)
    assert done.returncode == 0, done.stderr
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def test_rendered_objects_are_accepted_by_the_api_server(
    helm: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    for name, sets in {
        "defaults": (),
        "changed": (
            "replicaCount=5",
            "adminPassword.secretName=gaia-admin",
            "env.GAIA_METRICS_STORE=prometheus",
            "rbac.rules[0].apiGroups[0]=",
            "rbac.rules[0].resources[0]=configmaps",
            "rbac.rules[0].verbs[0]=get",
        ),
    }.items():
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(template_text(helm, *sets, namespace=namespace))
        answer = kubectl_apply(control_plane, manifest, "--dry-run=server", "--validate=strict")
        kinds = sorted(item["kind"] for item in answer["items"])
        assert kinds == sorted(
            [
                "Deployment",
                "PodDisruptionBudget",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
            ]
        )
        deployment = next(i for i in answer["items"] if i["kind"] == "Deployment")
        # the server's own defaults: the objects went through the apiserver, not only kubectl
        assert deployment["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
        assert deployment["spec"]["replicas"] == (5 if name == "changed" else 3)
    # dry run: nothing was stored
    listed = control_plane.kubectl("get", "deployments,services,pdb", "-n", namespace, "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == ""


def test_api_server_refuses_a_broken_render(
    helm: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The dry run is a real check: the same objects with a field the API does not know, or a
    Service selecting nothing valid, are refused."""
    text = template_text(helm, namespace=namespace)
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(
        text.replace("maxUnavailable: 1\n", "maxUnavailable: 1\n  maxUnavailible: 2\n")
    )
    done = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", str(manifest)
    )
    assert done.returncode != 0
    assert "maxUnavailible" in done.stderr


def test_service_account_may_do_only_what_rbac_rules_grant(
    helm: Path, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    account = f"system:serviceaccount:{namespace}:{RELEASE}"

    def can(verb: str, resource: str) -> bool:
        done = control_plane.kubectl(
            "auth", "can-i", verb, resource, "-n", namespace, "--as", account
        )
        assert done.stdout.strip() in ("yes", "no"), done.stdout + done.stderr
        return done.stdout.strip() == "yes"

    # applied for real, the RBAC objects only: a Deployment would start pods on the session's
    # control plane
    rbac = ("serviceaccount.yaml", "rbac.yaml")
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(template_text(helm, namespace=namespace, only=rbac))
    kubectl_apply(control_plane, manifest)
    assert not can("get", "configmaps")
    assert not can("list", "pods")
    assert not can("create", "leases.coordination.k8s.io")

    manifest.write_text(
        template_text(
            helm,
            "rbac.rules[0].apiGroups[0]=",
            "rbac.rules[0].resources[0]=configmaps",
            "rbac.rules[0].verbs[0]=get",
            namespace=namespace,
            only=rbac,
        )
    )
    kubectl_apply(control_plane, manifest)
    assert can("get", "configmaps")
    assert not can("list", "configmaps")
    assert not can("list", "pods")
