"""Real parts for the P2P agent's tests: a registry, agents as processes, a containerd.

- ``Registry``: Debian's ``docker-registry`` on a free port of 127.0.0.1 with filesystem storage,
  optionally behind ``htpasswd`` (bcrypt) Basic authentication or the distribution token flow
  (``tests/support/registry_token.TokenService``), so an agent's credentials can be right, wrong
  or missing. ``Registry.client`` pushes images (``tests/support/images.py``).
- ``random_image(layers, size)``: an OCI image of incompressible layers (fixed seed), so pieces
  are real and every byte counts.
- ``AgentProcess``: ``gaia p2p-agent`` as its own process (the way a node runs it), killable
  mid-transfer, with its ``/metrics`` read back as a dict.
- ``served_coordinator(platform)``: the platform's API under uvicorn with a ``sim-1`` cluster
  and its agent token, for agents that reach the coordinator over HTTP.
- ``Containerd``: Debian's containerd with its own root, state and socket (no CRI), and a
  ``certs.d`` folder, for ``ctr images pull --hosts-dir`` through the agent.
- ``write_containerd_hosts(folder, registries_file, mirror)``: ``certs.d`` as the DaemonSet's
  init container writes it, for that containerd or the real node's
  (``tests/node/p2p/test_kubelet_pull.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import yaml

from gaia.platform import Platform
from tests.support.images import Blob, Layer, OciImage, RegistryClient
from tests.support.kube import free_port
from tests.support.live import serve
from tests.support.netns import Host, NetBed
from tests.support.paths import REPO
from tests.support.registry_token import BearerAuth, TokenService

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class PartMissing(RuntimeError):
    """A real component the P2P tests need is not installed or did not start."""


def need(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise PartMissing(f"{binary} is not installed (scripts/test.sh installs it)")
    return found


def _wait(check: object, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PartMissing(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise PartMissing(f"{what} did not start in 30 s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Registry:
    """docker-registry on 127.0.0.1, or on ``host`` of a ``NetBed`` (inside its namespace)."""

    work: Path
    users: dict[str, str] = field(default_factory=dict)
    bed: NetBed | None = None
    host_in_bed: Host | None = None
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    client: RegistryClient | None = None
    token: TokenService | None = None  # the distribution token flow instead of htpasswd

    def start(self) -> Registry:
        self.work.mkdir(parents=True, exist_ok=True)
        address = f"{self.host_in_bed.ip}:5000" if self.host_in_bed else f"127.0.0.1:{free_port()}"
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.work / "data")}},
            "http": {"addr": address, "secret": os.urandom(16).hex()},
        }
        if self.token is not None:
            config["auth"] = self.token.registry_auth()
        elif self.users:
            lines = [
                f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
                for user, pw in self.users.items()
            ]
            (self.work / "htpasswd").write_text("\n".join(lines) + "\n")
            config["auth"] = {
                "htpasswd": {"realm": "gaia-test", "path": str(self.work / "htpasswd")}
            }
        (self.work / "registry.yaml").write_text(yaml.safe_dump(config))
        log = self.work / "registry.log"
        argv = [need("docker-registry"), "serve", str(self.work / "registry.yaml")]
        output = {"stdout": log.open("wb"), "stderr": subprocess.STDOUT}
        if self.bed is not None and self.host_in_bed is not None:
            self.process = self.bed.run(self.host_in_bed, argv, **output)
        else:
            self.process = subprocess.Popen(argv, **output)  # type: ignore[call-overload]
        self.url = f"http://{address}"
        _wait(
            lambda: httpx.get(f"{self.url}/v2/", timeout=2).status_code in (200, 401),
            "docker-registry",
            self.process,
            log,
        )
        self.client = RegistryClient(url=self.url, host=self.host)
        if self.token is not None:
            user, pw = next(iter(self.token.users.items()))
            self.client.http.auth = BearerAuth(user, pw)
        elif self.users:
            user, pw = next(iter(self.users.items()))
            self.client.http.auth = httpx.BasicAuth(user, pw)
        return self

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def push(self, image: OciImage, repository: str, tag: str) -> None:
        assert self.client is not None
        self.client.push(image, repository=repository, tag=tag)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None:
            _stop(self.process)


def random_layer(size: int, seed: int) -> Layer:
    """A layer of one file of ``size`` random bytes; gzip cannot shrink it."""
    data = random.Random(seed).randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/blob-{seed}")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=1) as gz:
        gz.write(tar_bytes)
    return Layer(
        Blob(OCI_LAYER, packed.getvalue()), f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"
    )


def random_image(layers: int, size: int, *, seed: int = 17) -> OciImage:
    return OciImage(
        layers=tuple(random_layer(size, seed * 1000 + i) for i in range(layers)),
        entrypoint=("/bin/true",),
    )


@dataclass
class AgentProcess:
    """``gaia p2p-agent`` in its own process."""

    node: str
    work: Path
    registries: dict[str, dict[str, object]]
    coordinator: str = ""
    cluster: str = ""
    token: str = ""
    extra: tuple[str, ...] = ()
    mirror: str = ""
    peer: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "registries.json").write_text(json.dumps(self.registries))
        (self.work / "token").write_text(self.token)
        self.mirror = f"127.0.0.1:{free_port()}"
        self.peer = f"127.0.0.1:{free_port()}"
        args = [
            sys.executable, "-m", "gaia", "p2p-agent",
            "--node-name", self.node, "--zone", "z1",
            "--listen", self.mirror, "--peer-listen", self.peer,
            "--registries-file", str(self.work / "registries.json"),
            "--cache-dir", str(self.work / "cache"),
            *self.extra,
        ]  # fmt: skip
        if self.coordinator:
            args += ["--coordinator", self.coordinator, "--cluster", self.cluster]
            args += ["--token-file", str(self.work / "token")]
        log = self.work / "agent.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env
        )
        _wait(
            lambda: httpx.get(f"http://{self.mirror}/v2/", timeout=2).status_code == 200,
            f"p2p agent {self.node}",
            self.process,
            log,
        )
        return self

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://{self.mirror}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def log(self) -> str:
        return (self.work / "agent.log").read_text()


def write_containerd_hosts(folder: Path, registries_file: Path, mirror: str) -> Path:
    """``certs.d`` as the DaemonSet's init container writes it (``gaia p2p-agent
    --write-containerd-hosts``): the agent first, the registry as the fallback."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gaia",
            "p2p-agent",
            "--registries-file",
            str(registries_file),
            "--listen",
            mirror,
            "--write-containerd-hosts",
            str(folder),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return folder


@dataclass
class Containerd:
    """containerd with its own folders and socket; no CRI, for ``ctr``."""

    work: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.work / "containerd.sock"

    def start(self) -> Containerd:
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.work / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.work / "root"}"\n'
            f'state = "{self.work / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
        )
        log = self.work / "containerd.log"
        self.process = subprocess.Popen(
            [need("containerd"), "--config", str(config)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        _wait(lambda: self.socket.exists(), "containerd", self.process, log)
        return self

    def hosts(self, registries_file: Path, mirror: str) -> Path:
        """``certs.d`` as the DaemonSet's init container writes it: the agent first."""
        return write_containerd_hosts(self.work / "certs.d", registries_file, mirror)

    def pull(self, reference: str, hosts_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                need("ctr"),
                "--address",
                str(self.socket),
                "--namespace",
                "p2p-test",
                "images",
                "pull",
                "--hosts-dir",
                str(hosts_dir),
                "--plain-http",
                reference,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@dataclass
class Served:
    """The platform served over HTTP: its origin, the cluster's agent token, an admin header."""

    origin: str
    token: str
    admin: dict[str, str]


@contextmanager
def served_coordinator(
    platform: Platform, cluster: str = "sim-1", *, host: str = "127.0.0.1"
) -> Iterator[Served]:
    from tests.conftest import ADMIN_PASSWORD  # the test platform's first admin

    with serve(platform, host=host) as origin, httpx.Client(base_url=origin, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        r = c.post(
            "/api/v1/clusters",
            json={"name": cluster, "kind": "sim", "region": "r", "zone": "z"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        token = c.get(f"/api/v1/clusters/{cluster}/p2p/agent-token", headers=admin).json()["token"]
        yield Served(origin, token, admin)
