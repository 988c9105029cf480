"""``gaia up`` as a newcomer runs it: a real process, a real port, the printed credentials.

The embedded default (SQLite in the data dir) and PostgreSQL through ``GAIA_DATABASE_URL``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support.postgres import PostgresServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gaia", "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Uvicorn running" in line:  # printed once the socket listens (startup is earlier)
            return proc, "".join(lines)
    proc.kill()
    raise AssertionError("gaia up did not start:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _newcomer_session(output: str, port: int) -> None:
    assert f"Console: http://127.0.0.1:{port}/" in output
    match = re.search(r"user 'admin', password '([^']+)'", output)
    assert match, output
    base = f"http://127.0.0.1:{port}"
    token = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": match.group(1)}
    ).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert [
        b["name"] for b in httpx.get(f"{base}/api/v1/businesses", headers=h).json()["items"]
    ] == ["demo"]
    clusters = httpx.get(f"{base}/api/v1/clusters", headers=h).json()["items"]
    assert [(c["name"], c["kind"]) for c in clusters] == [("sim-demo", "sim")]
    quota = httpx.get(f"{base}/api/v1/businesses/demo/quotas/sim-demo", headers=h).json()
    assert len(quota["dimensions"]) == 8
    # the demo app runs on the demo sim cluster in real (simulated) time
    deadline = time.monotonic() + 60
    while True:
        app = httpx.get(f"{base}/api/v1/businesses/demo/apps/hello", headers=h).json()
        if app["ready"] == app["replicas"] == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (app["state"], app["ready"], app["versions"]) == ("running", 4, {"v1": 4}), app
    page = httpx.get(f"{base}/console/login")
    assert page.status_code == 200 and "Log in" in page.text


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    env.update(extra)
    return env


def test_gaia_up_on_the_embedded_default(tmp_path: Path) -> None:
    port = _free_port()
    proc, output = _start(tmp_path / "data", port, _env())
    try:
        assert "SQLite" in output
        _newcomer_session(output, port)
    finally:
        _stop(proc)
    assert (tmp_path / "data" / "gaia.db").exists()
    assert oct((tmp_path / "data" / "secret.key").stat().st_mode & 0o777) == "0o600"
    # A second start keeps the data and does not print (or reset) a password.
    proc, output = _start(tmp_path / "data", port, _env())
    _stop(proc)
    assert "password '" not in output and "demo business" not in output


def test_a_stdout_nobody_reads_does_not_stall_requests(tmp_path: Path) -> None:
    """Every request's access line goes to stdout; a pipe nobody reads holds 64 KiB. The lines
    are written by a thread of their own (``gaia.monitor.logs.stream``): before, the event loop
    wrote them and stopped, with every request, once the pipe was full."""
    port = _free_port()
    proc, _ = _start(tmp_path / "data", port, _env(GAIA_DEMO="false"))
    try:
        started = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(2_000):  # some 130 KB of access lines, twice what the pipe holds
                assert client.get("/api/healthz").status_code == 200
        assert time.monotonic() - started < 60
    finally:
        assert proc.stdout is not None
        drained: list[str] = []
        reader = threading.Thread(target=lambda: drained.extend(proc.stdout or []), daemon=True)
        reader.start()  # read now, so the lines held can go out and the process can stop
        _stop(proc)
        reader.join(10)
    assert sum('"GET /api/healthz HTTP/1.1" 200' in line for line in drained) >= 1_000


def test_gaia_up_on_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("gaia_up")
    port = _free_port()
    # a shared database needs the shared key (gaia up refuses without it: tests/security)
    env = _env(GAIA_DATABASE_URL=url, GAIA_SECRET_KEY=Fernet.generate_key().decode())
    proc, output = _start(tmp_path / "data", port, env)
    try:
        assert "on PostgreSQL" in output
        _newcomer_session(output, port)
    finally:
        _stop(proc)


@pytest.mark.parametrize("password", ["from-env-password"])
def test_admin_password_from_the_environment(tmp_path: Path, password: str) -> None:
    port = _free_port()
    proc, output = _start(tmp_path / "d", port, _env(GAIA_ADMIN_PASSWORD=password))
    try:
        assert password not in output and "GAIA_ADMIN_PASSWORD" in output
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"username": "admin", "password": password},
        )
        assert r.status_code == 200
    finally:
        _stop(proc)


def test_registry_config_writes_what_a_registry_run_apart_needs(tmp_path: Path) -> None:
    """``gaia registry-config``: the registry's config.yml (token auth against this Gaia, its
    events to this Gaia) and the certificate of Gaia's token key; the same key signs on every
    replica with the same secret key, so the certificate is the one ``gaia up`` would write."""
    import yaml

    from gaia.platform import registry_service
    from gaia.security import SecretBox
    from gaia.settings import Settings

    key = Fernet.generate_key().decode()
    env = {**os.environ, "GAIA_SECRET_KEY": key, "GAIA_EXTERNAL_URL": "https://gaia.example.com"}
    out = tmp_path / "reg"
    done = subprocess.run(
        [sys.executable, "-m", "gaia", "registry-config", "--out", str(out), "--listen",
         "0.0.0.0:5001", "--data-dir", str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((out / "config.yml").read_text())
    assert config["http"]["addr"] == "0.0.0.0:5001"
    assert config["auth"]["token"]["realm"] == "https://gaia.example.com/api/v1/registry/token"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(out / "storage")
    (hook,) = config["notifications"]["endpoints"]
    assert hook["url"] == "https://gaia.example.com/api/v1/registry/events"
    assert (out / "config.yml").stat().st_mode & 0o077 == 0  # it holds the events token
    settings = Settings(secret_key=key, data_dir=tmp_path / "data")
    service = registry_service(settings, SecretBox(key))
    assert (out / "token-ca.pem").read_bytes() == service.signer.certificate_pem
    assert hook["headers"]["Authorization"] == [f"Bearer {service.signer.notification_token}"]
