"""A private PostgreSQL server for tests and benchmarks, from Debian's ``postgresql`` package.

``PostgresServer.start()`` runs ``initdb`` into a temporary directory and starts ``postgres`` on
a free loopback port with a Unix socket in the same directory, as the ``postgres`` system user
when we are root (PostgreSQL refuses to run as root). Nothing is shared with a system cluster;
``stop()`` removes everything; ``halt()`` and ``resume()`` stop and restart the server on the same
data (an outage). ``find_bin_dir()`` returns None when PostgreSQL is not installed,
and callers decide whether that is a skip (locally) or a failure (CI).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin_dir() -> Path | None:
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if (p / "bin" / "postgres").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin"
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gaia-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.dir.chmod(0o700)

    def _cmd(self, *args: str) -> list[str]:
        if self._user:
            return ["runuser", "-u", self._user, "--", *args]
        return list(args)

    def start(self, timeout: float = 60) -> None:
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "gaia",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        self.resume(timeout)

    def resume(self, timeout: float = 60) -> None:
        """Start the server on the data directory ``start()`` made (again, after ``halt()``)."""
        log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 (owned by the process)
        self.proc = subprocess.Popen(
            self._cmd(
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "postgres exited: " + (self.dir / "postgres.log").read_text()[-2000:]
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                ready = subprocess.run(
                    [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                    capture_output=True,
                )
                if ready.returncode == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError("postgres did not become ready in time")

    def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.url_for("postgres", driver=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def url_for(self, database: str, *, driver: bool = True) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://gaia@127.0.0.1:{self.port}/{database}"

    def halt(self) -> None:
        """Shut the server down and keep its data, so ``resume()`` brings the same databases
        back: a database outage, for tests. A fast shutdown ends open sessions (a plain SIGTERM
        is a smart shutdown, which waits for every client to leave)."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                self._cmd(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast"),
                check=True,
                capture_output=True,
            )
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
