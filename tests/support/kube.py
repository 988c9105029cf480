"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and KWOK, on this machine.

The binaries come from ``scripts/build-control-plane.sh`` (pinned upstream Go modules, built into
a cache folder; a no-op when already built). ``ControlPlane.start()`` makes a private CA and the
certificates with ``cryptography`` (a serving certificate for 127.0.0.1, an admin client in group
``system:masters``, the service-account signing key), starts etcd (``--unsafe-no-fsync``: tests
need no durability) and kube-apiserver with the flags controller-runtime's envtest uses (RBAC,
client certificates; the Node authorizer, NodeRestriction and a kubelet client certificate for
real kubelets), waits for ``/readyz``, writes an admin kubeconfig, and starts KWOK managing the
nodes annotated ``kwok.x-k8s.io/node: fake``. ``Pki.issue`` signs more certificates with the same
CA (a real node's, ``tests/support/node.py``). kube-scheduler and kube-controller-manager start
on demand (``start_scheduler``, ``start_controller_manager``). ``stop()`` ends them all, youngest
first. Logs go to files in the work folder, named in any error. Two control planes can run at
once (free ports, a work folder each).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
GAIA_KWOK_STAGES = ROOT / "tools" / "kwok" / "gaia-stages.yaml"  # after KWOK's own
BUILD_SCRIPT = ROOT / "scripts" / "build-control-plane.sh"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class ControlPlaneUnavailable(RuntimeError):
    """The control plane could not be built or started; the message says how to fix it."""


def build_control_plane(timeout_s: float = 3600) -> Path:
    """Run the build script (a no-op when built) and return the folder with the binaries."""
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable(
            "no Go toolchain: install Go 1.26+ and run scripts/build-control-plane.sh"
        )
    done = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise ControlPlaneUnavailable(
            f"scripts/build-control-plane.sh failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])


def wait_healthy(base: str, timeout_s: float = 10.0) -> None:
    """Wait until ``GET {base}/healthz`` answers 200 (a server the test just started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{base} did not come up within {timeout_s:g} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------ certificates


def _name(cn: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A throwaway certificate authority, valid from an hour ago for two days."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, ca_key


def sign_leaf(
    ca: x509.Certificate,
    ca_key: Any,
    *,
    cn: str,
    org: str | None,
    usage: x509.ObjectIdentifier,
    sans: Sequence[Any] = (),
) -> tuple[bytes, bytes]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
        False,
    )
    return _pem_cert(builder.sign(ca_key, hashes.SHA256())), _pem_key(key)


@dataclass
class Pki:
    ca_cert: bytes
    ca_key: bytes
    serving_cert: bytes
    serving_key: bytes
    admin_cert: bytes
    admin_key: bytes
    kubelet_client_cert: bytes
    kubelet_client_key: bytes
    sa_private: bytes
    sa_public: bytes

    def issue(
        self,
        cn: str,
        *,
        org: str | None = None,
        usage: x509.ObjectIdentifier = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
        sans: Sequence[Any] = (),
    ) -> tuple[bytes, bytes]:
        """A certificate and key signed by this CA (a kubelet's client or serving pair)."""
        ca = x509.load_pem_x509_certificate(self.ca_cert)
        ca_key = serialization.load_pem_private_key(self.ca_key, password=None)
        return sign_leaf(ca, ca_key, cn=cn, org=org, usage=usage, sans=sans)

    @classmethod
    def make(cls) -> Pki:
        ca, ca_key = make_ca("gaia-test-ca")

        def leaf(
            cn: str, org: str | None, usage: x509.ObjectIdentifier, sans: Sequence[Any] = ()
        ) -> tuple[bytes, bytes]:
            return sign_leaf(ca, ca_key, cn=cn, org=org, usage=usage, sans=sans)

        serving = leaf(
            "kube-apiserver",
            None,
            x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
            [
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            ],
        )
        admin = leaf("gaia-test-admin", "system:masters", x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
        # how kube-apiserver authenticates to kubelets (pods/log, pods/exec, nodes/proxy)
        kubelet_client = leaf(
            "kube-apiserver-kubelet-client",
            "system:masters",
            x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            ca_cert=_pem_cert(ca),
            ca_key=_pem_key(ca_key),
            serving_cert=serving[0],
            serving_key=serving[1],
            admin_cert=admin[0],
            admin_key=admin[1],
            kubelet_client_cert=kubelet_client[0],
            kubelet_client_key=kubelet_client[1],
            sa_private=_pem_key(sa),
            sa_public=sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


# ------------------------------------------------------------------------------ processes


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_for_process(
    process: Process,
    probe: Callable[[], bool],
    what: str,
    timeout_s: float,
    *,
    error: type[ControlPlaneUnavailable] = ControlPlaneUnavailable,
) -> None:
    """Poll ``probe`` until it holds; ``error`` (with the log's tail) if the process exits first
    or ``timeout_s`` passes. Connection errors and failed commands count as "not yet"."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise error(
                f"{process.name} exited ({process.popen.returncode}) before {what}; "
                f"its log {process.log}:\n{process.tail()}"
            )
        try:
            if probe():
                return
        except (httpx.HTTPError, OSError, subprocess.SubprocessError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise error(
        f"{process.name} not {what} after {timeout_s:.0f} s ({last}); log {process.log}:\n"
        f"{process.tail()}"
    )


@dataclass
class ControlPlane:
    bin_dir: Path
    work: Path
    pki: Pki = field(default_factory=Pki.make)
    processes: list[Process] = field(default_factory=list)
    api_port: int = 0
    etcd_port: int = 0
    # the API server's audit log (see ``_audit_args``): off unless a path is given here or in
    # ``GAIA_KUBE_AUDIT_LOG``
    audit_log: Path | None = None
    audit_verbs: Sequence[str] = ("list",)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.work / "admin.kubeconfig"

    def kubeconfig(self) -> dict[str, Any]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "gaia-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(self.pki.admin_cert),
                        "client-key-data": b64(self.pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": "gaia-test", "context": {"cluster": "gaia-test", "user": "admin"}}
            ],
            "current-context": "gaia-test",
        }

    def kubeconfig_text(self) -> str:
        return yaml.safe_dump(self.kubeconfig())

    # -- lifecycle -----------------------------------------------------------------------

    def _audit_args(self) -> list[str]:
        """The API server's audit log, only when ``audit_log`` or ``GAIA_KUBE_AUDIT_LOG`` names
        a file.

        Who sends which requests: the log has each one's verb, resource, user and user agent
        (the Metadata level: no bodies), one line per request (``ResponseComplete``; a watch's
        ``ResponseStarted`` is left out). ``bench/kube_scale.py`` reads it to tell Gaia's
        requests from the controllers', KWOK's and the lease renewals; off in the tests.
        ``audit_verbs`` (or ``GAIA_KUBE_AUDIT_VERBS``, comma-separated; default ``list``)
        picks the verbs logged. The file is never rotated (the API server would rotate it at
        100 MB), so a reader can keep its place in it.
        """
        path = os.environ.get("GAIA_KUBE_AUDIT_LOG") or self.audit_log
        if not path:
            return []
        verbs = os.environ.get("GAIA_KUBE_AUDIT_VERBS", ",".join(self.audit_verbs)).split(",")
        policy = self.work / "audit-policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived", "ResponseStarted"],
                    "rules": [{"level": "Metadata", "verbs": verbs}, {"level": "None"}],
                }
            )
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={path}",
            "--audit-log-maxsize=1000000",  # megabytes: never rotated
        ]

    def _spawn(self, name: str, args: list[str]) -> Process:
        log = self.work / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            [str(self.bin_dir / args[0]), *args[1:]],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def _wait(self, process: Process, probe: Any, what: str, timeout_s: float = 120) -> None:
        wait_for_process(process, probe, what, timeout_s)

    def start(self) -> ControlPlane:
        self.work.mkdir(parents=True, exist_ok=True)
        files = {
            "ca.crt": self.pki.ca_cert,
            "serving.crt": self.pki.serving_cert,
            "serving.key": self.pki.serving_key,
            "sa.key": self.pki.sa_private,
            "sa.pub": self.pki.sa_public,
            "kubelet-client.crt": self.pki.kubelet_client_cert,
            "kubelet-client.key": self.pki.kubelet_client_key,
        }
        for name, data in files.items():
            path = self.work / name
            path.write_bytes(data)
            path.chmod(0o600)
        self.etcd_port, peer = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                "etcd",
                f"--data-dir={self.work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        self._wait(
            etcd,
            lambda: (
                httpx.get(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2).status_code == 200
            ),
            "healthy",
        )
        self.api_port = free_port()
        api = self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={self.work / 'apiserver-certs'}",
                f"--tls-cert-file={self.work / 'serving.crt'}",
                f"--tls-private-key-file={self.work / 'serving.key'}",
                f"--client-ca-file={self.work / 'ca.crt'}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # a loopback address cannot be an endpoint
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                # real kubelets (tests/support/node.py) are authorised as kubeadm's are: the Node
                # authorizer and NodeRestriction limit a kubelet to its own node and pods
                "--enable-admission-plugins=NodeRestriction",
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={self.work / 'kubelet-client.crt'}",
                f"--kubelet-client-key={self.work / 'kubelet-client.key'}",
                f"--kubelet-certificate-authority={self.work / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}/",
                f"--service-account-key-file={self.work / 'sa.pub'}",
                f"--service-account-signing-key-file={self.work / 'sa.key'}",
                # a test cluster of a thousand fake nodes makes many requests at once
                "--max-requests-inflight=2000",
                "--max-mutating-requests-inflight=1000",
                "--enable-priority-and-fairness=false",
                "--v=1",
                *self._audit_args(),
            ],
        )
        self.kubeconfig_path.write_text(self.kubeconfig_text())
        self.kubeconfig_path.chmod(0o600)
        client = self.http_client()
        try:
            self._wait(
                api,
                lambda: client.get("/readyz").status_code == 200,
                "ready",
                timeout_s=180,
            )
            # /readyz can answer before the bootstrap controller has made the `default/kubernetes`
            # service, which tests (and real clusters) take for granted
            self._wait(
                api,
                lambda: (
                    client.get("/api/v1/namespaces/default/services/kubernetes").status_code == 200
                ),
                "serving default/kubernetes",
                timeout_s=60,
            )
        finally:
            client.close()
        self._spawn(
            "kwok",
            [
                "kwok",
                f"--kubeconfig={self.kubeconfig_path}",
                f"--config={self.bin_dir / 'kwok-stages.yaml'}",
                f"--config={GAIA_KWOK_STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.128.0.0/12",
                "--node-ip=10.127.0.1",
            ],
        )
        return self

    def start_scheduler(self, *, config: Path | None = None) -> Process:
        args = [
            "kube-scheduler",
            f"--kubeconfig={self.kubeconfig_path}",
            f"--authentication-kubeconfig={self.kubeconfig_path}",
            f"--authorization-kubeconfig={self.kubeconfig_path}",
            "--leader-elect=false",
            f"--secure-port={free_port()}",
            "--bind-address=127.0.0.1",
        ]
        if config is not None:
            args.append(f"--config={config}")
        return self._spawn("kube-scheduler", args)

    def ensure_controller_manager(self) -> Process:
        """kube-controller-manager with every controller (EndpointSlices for services, the
        ResourceQuota usage that quota admission needs, Deployments for the benchmark's
        baseline); started once per control plane."""
        for process in self.processes:
            if process.name == "kube-controller-manager" and process.popen.poll() is None:
                return process
        return self.start_controller_manager()

    def start_controller_manager(self, controllers: str = "*") -> Process:
        return self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig_path}",
                f"--authentication-kubeconfig={self.kubeconfig_path}",
                f"--authorization-kubeconfig={self.kubeconfig_path}",
                "--leader-elect=false",
                f"--secure-port={free_port()}",
                "--bind-address=127.0.0.1",
                f"--controllers={controllers}",
                f"--service-account-private-key-file={self.work / 'sa.key'}",
                f"--root-ca-file={self.work / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )

    def stop(self) -> None:
        # one at a time: a kube-apiserver whose etcd is already gone spends its whole grace
        # period (10 s and more) retrying storage before it exits
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                os.killpg(process.popen.pid, signal.SIGTERM)
            try:
                process.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(timeout=10)
        self.processes.clear()

    # -- clients -------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.pki.ca_cert.decode())
        cert, key = self.work / "admin.crt", self.work / "admin.key"
        cert.write_bytes(self.pki.admin_cert)
        key.write_bytes(self.pki.admin_key)
        key.chmod(0o600)
        context.load_cert_chain(cert, key)
        return context

    def http_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.ssl_context(), timeout=30)

    def kubectl(self, *args: str, binary: str = "kubectl") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, f"--kubeconfig={self.kubeconfig_path}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def fake_node(
    name: str,
    *,
    cpu: str = "32",
    memory: str = "128Gi",
    gpus: int = 0,
    gpu_memory_mib: int = 0,
    gpu_model: str = "",
    gpu_topology: Sequence[Sequence[str]] | None = None,
    labels: dict[str, str] | None = None,
    zone: str = "",
) -> dict[str, Any]:
    """A Node object for KWOK to run: capacity, GPU extended resources and the GPU annotations
    the Gaia scheduler reads."""
    import json

    capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "500Gi"}
    annotations = {KWOK_ANNOTATION: "fake"}
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "type": "kwok",
        **(labels or {}),
    }
    if zone:
        node_labels["topology.kubernetes.io/zone"] = zone
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
        if gpu_memory_mib:
            capacity["gaia.io/gpu-memory"] = str(gpus * gpu_memory_mib)
        if gpu_model:
            node_labels["gaia.io/gpu-model"] = gpu_model
        if gpu_topology is not None:
            annotations["gaia.io/gpu-topology"] = json.dumps([list(r) for r in gpu_topology])
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels, "annotations": annotations},
        "spec": {"taints": []},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
