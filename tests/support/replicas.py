"""Gaia replicas as real processes: ``gaia up`` started N times on one database, for the HA
tests (``tests/ha``) and ``bench/ha.py``.

Each ``Replica`` is a ``python -m gaia up`` child with its own port, data dir, log file and
``GAIA_REPLICA_ID``; every replica shares the environment of its ``ReplicaSet`` (the database
URL, the secret key, the first admin's password, short loop intervals). ``kill()`` is
``SIGKILL``: no shutdown hook runs, no lease is released, as when a machine dies.
``leader_of(group)`` reads each live replica's ``/metrics`` (``gaia_leader{group, replica}``),
the way an operator would find the leader. ``code`` is the source tree a replica runs: this
repository, or an older Gaia unpacked from git (``older_gaia``) for a rolling upgrade.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
_LEADER = re.compile(r"^gaia_leader\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+-]+)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    port: int
    data_dir: Path
    env: dict[str, str]
    code: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "gaia.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gaia",
                "up",
                "--no-demo",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            env={
                **os.environ,
                **self.env,
                "GAIA_REPLICA_ID": self.name,
                "PYTHONPATH": str(self.code),
            },
            cwd=self.code,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.alive():
            return False
        try:
            return httpx.get(f"{self.url}/api/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"replica {self.name} not ready; its log:\n{self.tail()}")

    def leads(self, metrics_token: str) -> set[str]:
        """The groups this replica says it leads (its ``/metrics``)."""
        try:
            text = httpx.get(
                f"{self.url}/metrics",
                headers={"Authorization": f"Bearer {metrics_token}"},
                timeout=2,
            ).text
        except httpx.HTTPError:
            return set()
        groups = set()
        for m in _LEADER.finditer(text):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
            if float(m["value"]) == 1 and labels.get("replica") == self.name:
                groups.add(labels.get("group", ""))
        return groups

    def kill(self) -> None:
        """``SIGKILL``: nothing is handed over."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """A clean stop (``SIGTERM``): the replica releases its leases."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ReplicaSet:
    work: Path
    env: dict[str, str]
    metrics_token: str
    replicas: list[Replica] = field(default_factory=list)

    def add(self, count: int) -> list[Replica]:
        added = []
        for _ in range(count):
            i = len(self.replicas)
            replica = Replica(
                name=f"r{i}", port=free_port(), data_dir=self.work / f"r{i}", env=self.env
            )
            self.replicas.append(replica)
            added.append(replica)
        return added

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive()]

    def leader_of(self, group: str) -> Replica | None:
        for replica in self.live():
            if group in replica.leads(self.metrics_token):
                return replica
        return None

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


def newest_migration_commit() -> str | None:
    """The commit that added the newest migration, or None without that git history."""
    versions = "gaia/store/migrations/versions"
    try:
        newest = sorted(p.name for p in (REPO / versions).glob("*.py"))[-1]
        out = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--diff-filter=A", "--", f"{versions}/{newest}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, IndexError, subprocess.CalledProcessError):
        return None
    return out or None


def older_gaia(into: Path) -> tuple[str, Path] | None:
    """The Gaia of the commit just before the newest migration was added, unpacked from git
    into ``into`` (with this tree's browser assets, which git does not hold): the previous
    schema's code, for a rolling upgrade. None when the clone lacks that history."""
    added = newest_migration_commit()
    if added is None:
        return None
    previous = f"{added}^"
    check = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{previous}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        return None
    rev = check.stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "gaia"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for assets in ("gaia/console/static/vendor", "gaia/api/static"):
        source = REPO / assets
        if source.is_dir() and not (into / assets).exists():
            shutil.copytree(source, into / assets)
    return rev, into
