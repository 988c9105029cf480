"""Certificates and a running ``gaia scheduler-extender`` for the extender's TLS tests.

``extender_pki`` writes a CA, the extender's serving pair (for 127.0.0.1 and localhost), a client
pair signed by the CA (what kube-scheduler's ``tlsConfig`` presents) and a client pair of another
CA (a stranger). ``start_extender`` runs the real command in a subprocess, as an operator would.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.kube import make_ca, sign_leaf

SERVER_AUTH = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass(frozen=True)
class ExtenderPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path

    def server_args(self) -> list[str]:
        """``gaia extender``'s options for mutual TLS with this PKI."""
        return [
            "--tls-cert-file",
            str(self.server_cert),
            "--tls-private-key-file",
            str(self.server_key),
            "--client-ca-file",
            str(self.ca),
        ]

    def client_context(self, *, with_cert: bool = True, stranger: bool = False) -> ssl.SSLContext:
        """A client that trusts the extender's CA and presents a certificate (or none)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if stranger:
            context.load_cert_chain(self.stranger_cert, self.stranger_key)
        elif with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


@pytest.fixture(scope="module")
def extender_pki(tmp_path_factory: pytest.TempPathFactory) -> ExtenderPki:
    work = tmp_path_factory.mktemp("extender-pki")
    ca, ca_key = make_ca("gaia-extender-test-ca")
    stranger_ca, stranger_ca_key = make_ca("someone-else-ca")
    server = sign_leaf(
        ca,
        ca_key,
        cn="gaia-scheduler-extender",
        org=None,
        usage=SERVER_AUTH,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client = sign_leaf(ca, ca_key, cn="kube-scheduler", org=None, usage=CLIENT_AUTH)
    stranger = sign_leaf(
        stranger_ca, stranger_ca_key, cn="kube-scheduler", org=None, usage=CLIENT_AUTH
    )
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "server_cert": server[0],
        "server_key": server[1],
        "client_cert": client[0],
        "client_key": client[1],
        "stranger_cert": stranger[0],
        "stranger_key": stranger[1],
    }
    paths = {}
    for name, data in files.items():
        path = work / f"{name}.pem"
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = path
    return ExtenderPki(**paths)


def extender_env(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GAIA_EXTENDER_TOKEN"}
    if token is not None:
        env["GAIA_EXTENDER_TOKEN"] = token
    return env


def extender_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gaia", "scheduler-extender", *args]


@contextmanager
def start_extender(
    args: list[str],
    *,
    log: Path,
    base: str,
    verify: ssl.SSLContext | bool = True,
    token: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The extender in a subprocess; ready once ``GET {base}/healthz`` answers 200 to a client
    with ``verify`` (the TLS context: trusted CA and client certificate)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            extender_command(*args), stdout=out, stderr=subprocess.STDOUT, env=extender_env(token)
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{base}/healthz", verify=verify, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"the extender did not come up:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.1)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a client still holds a connection open
                proc.kill()
                proc.wait(timeout=10)
