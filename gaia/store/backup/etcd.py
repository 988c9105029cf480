"""A cluster's etcd into a backup part and back, with etcd's own tools.

Taking (``save_snapshot``): ``etcdctl snapshot save`` streams a consistent snapshot of the
keyspace from one member over the client API (etcd's Maintenance.Snapshot RPC); etcdctl checks
the snapshot's own SHA-256 trailer before it renames the file into place. Gaia reaches etcd with
what the cluster's registration holds (``EtcdAccess``: endpoints, and the client certificate
and CA a TLS etcd wants), written to a private temporary folder for the call and removed after.

Restoring (``restore_snapshot``): ``etcdutl snapshot restore`` (etcd's offline tool; etcdctl
3.6 no longer restores) makes a fresh member's data dir from the snapshot, with a new cluster
ID, for a fresh etcd to start on; the old members' data dirs are never touched. Gaia does not
restart a cluster's control plane itself: it makes the data dir and says how to start etcd on
it (the upstream procedure: docs "Disaster recovery" of etcd and of Kubernetes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from gaia.store.backup.archive import BackupError


@dataclass(frozen=True)
class EtcdAccess:
    """How to reach a cluster's etcd: its client URLs, and PEM texts for TLS (empty: none)."""

    endpoints: list[str]
    ca: str = ""
    cert: str = ""
    key: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EtcdAccess:
        raw = json.loads(text)
        return cls(
            endpoints=[str(e) for e in raw["endpoints"]],
            ca=raw.get("ca", ""),
            cert=raw.get("cert", ""),
            key=raw.get("key", ""),
        )


@dataclass(frozen=True)
class EtcdTools:
    etcdctl: str = "etcdctl"
    etcdutl: str = "etcdutl"
    timeout_s: float = 300.0


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found: install etcd's client tools (scripts/build-control-plane.sh builds "
            f"etcdctl) or set GAIA_{Path(name).name.upper()} to its path"
        )
    return found


def save_snapshot(access: EtcdAccess, *, into: Path, tools: EtcdTools) -> str:
    """Write a snapshot of the etcd behind ``access`` to ``into``; etcdctl's version line."""
    etcdctl = _binary(tools.etcdctl)
    with tempfile.TemporaryDirectory(prefix="gaia-etcd-") as folder:
        # a refused TLS handshake is retried by gRPC until a deadline: the dial timeout makes
        # an unreachable or refusing etcd fail in seconds, not at the whole command's limit
        args = [etcdctl, f"--endpoints={','.join(access.endpoints)}", "--dial-timeout=10s"]
        for flag, pem in (("--cacert", access.ca), ("--cert", access.cert), ("--key", access.key)):
            if pem:
                path = Path(folder) / flag.strip("-")
                path.write_text(pem)
                path.chmod(0o600)
                args.append(f"{flag}={path}")
        # etcdctl saves to <file>.part and renames only a snapshot whose checksum it verified
        # first a health check bounded by the command timeout: a snapshot stream has no
        # deadline of its own, and one that cannot connect would wait for timeout_s
        health = subprocess.run(  # noqa: S603 - the configured etcdctl, arguments built here
            [*args, "--command-timeout=10s", "endpoint", "health"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if health.returncode != 0:
            raise BackupError(
                f"etcdctl snapshot save from {', '.join(access.endpoints)} failed: etcd is not "
                f"reachable with the access given: {health.stderr.strip()[-1000:]}"
            )
        try:
            done = subprocess.run(  # noqa: S603 - the configured etcdctl, arguments built here
                [*args, "snapshot", "save", str(into)],
                capture_output=True,
                text=True,
                timeout=tools.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            into.unlink(missing_ok=True)
            raise BackupError(
                f"etcdctl snapshot save from {', '.join(access.endpoints)} failed: no snapshot "
                f"within {tools.timeout_s:g} s (is etcd reachable, and are its CA and Gaia's "
                "client certificate right?)"
            ) from None
    if done.returncode != 0 or not into.exists():
        raise BackupError(
            f"etcdctl snapshot save from {', '.join(access.endpoints)} failed "
            f"({done.returncode}): {done.stderr.strip()[-1500:]}"
        )
    version = subprocess.run(  # noqa: S603 - the configured etcdctl
        [etcdctl, "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return version.stdout.strip().splitlines()[0] if version.stdout.strip() else "etcdctl"


def restore_snapshot(
    snapshot: Path, *, data_dir: Path, name: str, peer_url: str, tools: EtcdTools
) -> None:
    """A fresh single-member data dir at ``data_dir`` (which must not exist) from
    ``snapshot``; that member is ``name`` and advertises ``peer_url`` to its peers."""
    if data_dir.exists():
        raise BackupError(f"{data_dir} exists: etcd restores only into a fresh data dir")
    etcdutl = _binary(tools.etcdutl)
    done = subprocess.run(  # noqa: S603 - the configured etcdutl, arguments built here
        [
            etcdutl,
            "snapshot",
            "restore",
            str(snapshot),
            f"--data-dir={data_dir}",
            f"--name={name}",
            f"--initial-cluster={name}={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
        ],
        capture_output=True,
        text=True,
        timeout=tools.timeout_s,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise BackupError(f"etcdutl snapshot restore failed: {done.stderr.strip()[-1500:]}")
