"""A private CA and a server certificate for 127.0.0.1, as files: for a real server that
speaks HTTPS under a CA no system trusts (an enterprise's registry), and the certificate folder
its clients are given (containers/image's ``--cert-dir``: ``*.crt`` files are extra CAs)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.kube import make_ca, sign_leaf


@dataclass(frozen=True)
class ServerPki:
    cert: Path  # the server's certificate (PEM)
    key: Path  # its key (PEM)
    ca: Path  # the CA's certificate (PEM)
    cert_dir: Path  # a folder with the CA as ca.crt, for clients

    def registry_settings(self) -> dict[str, Path]:
        """Gaia's settings for a registry with this certificate."""
        return {
            "registry_tls_cert_file": self.cert,
            "registry_tls_key_file": self.key,
            "registry_ca_file": self.ca,
        }


def server_pki(folder: Path, *, name: str = "gaia-test-ca") -> ServerPki:
    ca, ca_key = make_ca(name)
    cert, key = sign_leaf(
        ca,
        ca_key,
        cn="127.0.0.1",
        org=None,
        usage=x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    cert_dir = folder / "clients"
    cert_dir.mkdir(parents=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (folder / "ca.pem").write_bytes(ca_pem)
    (cert_dir / "ca.crt").write_bytes(ca_pem)
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    return ServerPki(folder / "cert.pem", folder / "key.pem", folder / "ca.pem", cert_dir)
