"""etcd snapshots over TLS with a client certificate (``gaia.store.backup.etcd``), as a
production etcd wants them: a real etcd (the control plane's build) serving HTTPS and requiring
client certificates signed by its CA. The snapshot taken with Gaia's certificate restores with
etcdutl into a fresh data dir that a new etcd serves the keys from; without the certificate etcd
refuses and the backup says so, naming the endpoint."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gaia.store.backup import BackupError, EtcdAccess, EtcdTools
from gaia.store.backup.etcd import restore_snapshot, save_snapshot
from tests.conftest import missing_component
from tests.support.etcd_tools import build_etcdutl
from tests.support.kube import ControlPlaneUnavailable, Pki, build_control_plane, free_port


@dataclass
class TlsEtcd:
    bin_dir: Path
    endpoint: str
    pki: Pki
    client: tuple[bytes, bytes]

    def etcdctl(self, *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
        folder = Path(self.bin_dir)
        return subprocess.run(
            [str(folder / "etcdctl"), f"--endpoints={endpoint or self.endpoint}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    try:
        return build_control_plane()
    except ControlPlaneUnavailable as exc:
        missing_component("etcd (scripts/build-control-plane.sh)", str(exc))
        raise AssertionError("unreachable") from exc


@pytest.fixture
def tls_etcd(bin_dir: Path, tmp_path: Path) -> Iterator[TlsEtcd]:
    pki = Pki.make()
    files = {"ca.crt": pki.ca_cert, "server.crt": pki.serving_cert, "server.key": pki.serving_key}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    port, peer = free_port(), free_port()
    etcd = subprocess.Popen(
        [
            str(bin_dir / "etcd"),
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls=https://127.0.0.1:{port}",
            f"--advertise-client-urls=https://127.0.0.1:{port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            f"--cert-file={tmp_path / 'server.crt'}",
            f"--key-file={tmp_path / 'server.key'}",
            f"--trusted-ca-file={tmp_path / 'ca.crt'}",
            "--client-cert-auth",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = TlsEtcd(bin_dir, f"https://127.0.0.1:{port}", pki, pki.issue("gaia-backup"))
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.write_bytes(server.client[0])
    key.write_bytes(server.client[1])
    tls = [f"--cacert={tmp_path / 'ca.crt'}", f"--cert={cert}", f"--key={key}"]
    try:
        deadline = time.monotonic() + 30
        while server.etcdctl(*tls, "put", "/registry/drill", "over-tls").returncode != 0:
            assert etcd.poll() is None, "etcd exited"
            assert time.monotonic() < deadline, "etcd did not start serving"
            time.sleep(0.2)
        yield server
    finally:
        etcd.terminate()
        etcd.wait(timeout=20)


def test_a_snapshot_over_tls_restores_into_a_fresh_etcd(tls_etcd: TlsEtcd, tmp_path: Path) -> None:
    access = EtcdAccess(
        endpoints=[tls_etcd.endpoint],
        ca=tls_etcd.pki.ca_cert.decode(),
        cert=tls_etcd.client[0].decode(),
        key=tls_etcd.client[1].decode(),
    )
    tools = EtcdTools(etcdctl=str(tls_etcd.bin_dir / "etcdctl"), etcdutl=str(build_etcdutl()))
    snapshot = tmp_path / "snap.db"
    version = save_snapshot(access, into=snapshot, tools=tools)
    assert snapshot.stat().st_size > 0 and "etcdctl version" in version

    port, peer = free_port(), free_port()
    restore_snapshot(
        snapshot,
        data_dir=tmp_path / "restored",
        name="default",
        peer_url=f"http://127.0.0.1:{peer}",
        tools=tools,
    )
    with pytest.raises(BackupError, match="fresh data dir"):
        restore_snapshot(
            snapshot, data_dir=tmp_path / "restored", name="x", peer_url="http://a:1", tools=tools
        )
    fresh = subprocess.Popen(
        [
            str(tls_etcd.bin_dir / "etcd"),
            f"--data-dir={tmp_path / 'restored'}",
            f"--listen-client-urls=http://127.0.0.1:{port}",
            f"--advertise-client-urls=http://127.0.0.1:{port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            "--log-level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            got = tls_etcd.etcdctl(
                "get", "/registry/drill", "--print-value-only", endpoint=f"http://127.0.0.1:{port}"
            )
            if got.returncode == 0:
                break
            assert time.monotonic() < deadline, got.stderr
            time.sleep(0.2)
        assert got.stdout.strip() == "over-tls"
    finally:
        fresh.terminate()
        fresh.wait(timeout=20)


def test_without_gaias_client_certificate_etcd_refuses_and_the_backup_says_so(
    tls_etcd: TlsEtcd, tmp_path: Path
) -> None:
    access = EtcdAccess(endpoints=[tls_etcd.endpoint], ca=tls_etcd.pki.ca_cert.decode())
    tools = EtcdTools(etcdctl=str(tls_etcd.bin_dir / "etcdctl"), timeout_s=45)
    began = time.monotonic()
    with pytest.raises(BackupError, match=f"snapshot save from {tls_etcd.endpoint} failed") as e:
        save_snapshot(access, into=tmp_path / "snap.db", tools=tools)
    assert "not reachable with the access given" in str(e.value)
    assert time.monotonic() - began < 40  # the health check's deadline, not the snapshot's
    assert not (tmp_path / "snap.db").exists()
