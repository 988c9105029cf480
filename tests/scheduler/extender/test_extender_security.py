"""Issue 15, the scheduler extender beyond loopback: whoever reaches its port can bind pods.

The mistakes reproduced:

- ``gaia scheduler-extender --host 0.0.0.0`` with no authentication used to start with only a
  warning in its log: anyone on the network could call ``/bind``. It now refuses to start and
  says what to give: a client CA (mutual TLS, what kube-scheduler's ``tlsConfig`` can present)
  or the bearer token.
- The extender could not serve TLS at all, so kube-scheduler's ``enableHTTPS``/``tlsConfig``
  had nothing to talk to. With ``--tls-cert-file``/``--tls-private-key-file`` it serves HTTPS,
  and with ``--client-ca-file`` the handshake requires a client certificate of that CA: none, or
  one of another CA, gets no answer at all. A token, when set too, is still required (401).
- Bad TLS files (a key of another pair, a missing file) are refused before listening, with the
  option named, instead of failing every handshake later.

The real command runs in a subprocess; the clients are httpx with real certificates
(``conftest.py``). ``test_kube_extender.py`` has a real kube-scheduler talk to it over TLS.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import httpx
import pytest

from gaia.scheduler.extender.server import ExtenderSetupError, ServingTLS, check_serving
from tests.scheduler.extender.conftest import (
    ExtenderPki,
    extender_command,
    extender_env,
    start_extender,
)
from tests.scheduler.extender.test_extender import GOLDEN_ARGS, GOLDEN_FILTER_RESULT
from tests.support.kube import free_port

TOKEN = "t0ken-for-the-extender-" + "x" * 20


def run_briefly(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command, expected to exit at once; one that starts serving instead fails the test."""
    try:
        return subprocess.run(
            extender_command(*args),
            env=extender_env(token),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"gaia scheduler-extender {' '.join(args)} started serving instead of refusing")


def test_it_refuses_to_listen_beyond_loopback_without_authentication() -> None:
    done = run_briefly("--host", "0.0.0.0", "--port", str(free_port()))  # noqa: S104
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr, done.stderr
    assert "--client-ca-file" in done.stderr and "GAIA_EXTENDER_TOKEN" in done.stderr


def test_tls_without_a_client_ca_is_not_authentication_beyond_loopback(
    extender_pki: ExtenderPki,
) -> None:
    encrypted_only = ServingTLS(extender_pki.server_cert, extender_pki.server_key)
    with pytest.raises(ExtenderSetupError, match="without authentication"):
        check_serving(host="10.1.2.3", token=None, tls=encrypted_only)
    mutual = ServingTLS(extender_pki.server_cert, extender_pki.server_key, extender_pki.ca)
    check_serving(host="10.1.2.3", token=None, tls=mutual)
    check_serving(host="10.1.2.3", token=TOKEN, tls=encrypted_only)
    check_serving(host="127.0.0.1", token=None, tls=None)
    check_serving(host="::1", token=None, tls=None)


def test_a_token_in_clear_text_beyond_loopback_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gaia.scheduler.extender"):
        check_serving(host="10.1.2.3", token=TOKEN, tls=None)
    assert "clear text" in caplog.text
    assert TOKEN not in caplog.text


def test_bad_tls_files_are_refused_before_listening(
    extender_pki: ExtenderPki, tmp_path: Path
) -> None:
    port = str(free_port())
    cert, key = str(extender_pki.server_cert), str(extender_pki.server_key)
    alone = run_briefly("--port", port, "--tls-cert-file", cert)
    assert alone.returncode == 2 and "go together" in alone.stderr, alone.stderr
    ca_only = run_briefly("--port", port, "--client-ca-file", str(extender_pki.ca))
    assert ca_only.returncode == 2 and "--client-ca-file needs" in ca_only.stderr, ca_only.stderr
    wrong_key = run_briefly(
        "--port",
        port,
        "--tls-cert-file",
        cert,
        "--tls-private-key-file",
        str(extender_pki.client_key),
    )
    assert wrong_key.returncode == 2, wrong_key.stderr
    assert "cannot load the certificate and key" in wrong_key.stderr, wrong_key.stderr
    missing = run_briefly(
        "--port",
        port,
        "--tls-cert-file",
        cert,
        "--tls-private-key-file",
        key,
        "--client-ca-file",
        str(tmp_path / "nope.pem"),
    )
    assert missing.returncode == 2 and "--client-ca-file: no file at" in missing.stderr


def test_mutual_tls_admits_only_clients_with_a_certificate_of_the_ca_and_the_token(
    extender_pki: ExtenderPki, tmp_path: Path
) -> None:
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    args = ["--port", str(port), *extender_pki.server_args()]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    trusted_context = extender_pki.client_context()
    with (
        start_extender(
            args, log=tmp_path / "extender.log", base=base, verify=trusted_context, token=TOKEN
        ),
        httpx.Client(verify=trusted_context, timeout=5) as trusted,
    ):
        answered = trusted.post(f"{base}/filter", json=GOLDEN_ARGS, headers=auth)
        assert answered.status_code == 200, answered.text
        assert answered.json() == GOLDEN_FILTER_RESULT
        without_token = trusted.post(f"{base}/filter", json=GOLDEN_ARGS)
        assert without_token.status_code == 401
        wrong_token = trusted.post(
            f"{base}/bind", json=GOLDEN_ARGS, headers={"Authorization": "Bearer nope"}
        )
        assert wrong_token.status_code == 401

        for name, context in (
            ("no client certificate", extender_pki.client_context(with_cert=False)),
            ("a certificate of another CA", extender_pki.client_context(stranger=True)),
        ):
            with (
                httpx.Client(verify=context, timeout=5) as client,
                pytest.raises(httpx.TransportError),
            ):
                client.post(f"{base}/filter", json=GOLDEN_ARGS, headers=auth)
                pytest.fail(f"the extender answered a client with {name}")
        with httpx.Client(timeout=5) as plain, pytest.raises(httpx.TransportError):
            plain.post(f"http://127.0.0.1:{port}/filter", json=GOLDEN_ARGS, headers=auth)
