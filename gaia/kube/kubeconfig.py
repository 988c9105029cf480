"""Kubeconfigs: validation at the API edge, credentials, and the TLS context they make.

Registration validates the kubeconfig (current context, server URL, credentials) so a broken one
is refused at the API edge with a message naming what is missing. Only inline data is accepted.
Client certificates must reach ``ssl`` as files; they are written to a private temporary
directory, loaded, and removed at once. The kubeconfig's content never appears in messages.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gaia.domain.errors import InvalidRequest
from gaia.domain.yaml_safe import UnsafeYaml, load_untrusted_yaml


@dataclass(frozen=True)
class KubeCredentials:
    server: str
    ca_data: bytes | None
    insecure: bool
    client_cert: bytes | None
    client_key: bytes | None
    token: str | None


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"kubeconfig: {field} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"kubeconfig: {field} is not valid base64") from None


def _named(entries: Any, name: str, kind: str) -> dict[str, Any]:
    if not isinstance(entries, list):
        raise InvalidRequest(f"kubeconfig: '{kind}s' must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(kind)
            if not isinstance(body, dict):
                raise InvalidRequest(f"kubeconfig: {kind} '{name}' has no '{kind}' section")
            return body
    raise InvalidRequest(f"kubeconfig: the current context names {kind} '{name}', not present")


def parse_kubeconfig(text: str) -> KubeCredentials:
    """The current context's server and credentials; ``InvalidRequest`` saying what is wrong.

    Only inline data is accepted (``certificate-authority-data``, ``client-certificate-data``,
    ``client-key-data``, ``token``): paths on the uploader's disk mean nothing to the platform.
    """
    try:
        # a kubeconfig never needs anchors or aliases; the API bounds it to 1 MB already
        doc = load_untrusted_yaml(text, max_bytes=1_000_000)
    except UnsafeYaml as exc:
        raise InvalidRequest(f"kubeconfig: {exc.message}") from None
    except yaml.YAMLError:
        raise InvalidRequest("kubeconfig is not valid YAML") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("kubeconfig must be a YAML mapping (kind: Config)")
    current_raw = doc.get("current-context")
    if not isinstance(current_raw, str) or not current_raw:
        raise InvalidRequest("kubeconfig has no current-context")
    context = _named(doc.get("contexts"), current_raw, "context")
    cluster = _named(doc.get("clusters"), str(context.get("cluster", "")), "cluster")
    user_name = context.get("user")
    user = _named(doc.get("users"), str(user_name), "user") if user_name else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise InvalidRequest("kubeconfig: the cluster's server must be an http(s) URL")
    for ref in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
        if ref in cluster or ref in user:
            raise InvalidRequest(
                f"kubeconfig: '{ref}' refers to a file; embed it as '{ref}-data' instead"
            )
    if "exec" in user or "auth-provider" in user:
        raise InvalidRequest(
            "kubeconfig: exec and auth-provider plugins are not supported; use a client "
            "certificate or a service-account token"
        )
    ca = cluster.get("certificate-authority-data")
    cert = user.get("client-certificate-data")
    key = user.get("client-key-data")
    token = user.get("token")
    if (cert is None) != (key is None):
        raise InvalidRequest("kubeconfig: client-certificate-data and client-key-data go together")
    if token is not None and not isinstance(token, str):
        raise InvalidRequest("kubeconfig: token must be a string")
    return KubeCredentials(
        server=server.rstrip("/"),
        ca_data=_b64(ca, "certificate-authority-data") if ca is not None else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        client_cert=_b64(cert, "client-certificate-data") if cert is not None else None,
        client_key=_b64(key, "client-key-data") if key is not None else None,
        token=token,
    )


def ssl_context(creds: KubeCredentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https://"):
        return False
    if creds.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_data is not None:
        ctx = ssl.create_default_context(cadata=creds.ca_data.decode("ascii", "replace"))
    else:
        ctx = ssl.create_default_context()
    if creds.client_cert is not None and creds.client_key is not None:
        with tempfile.TemporaryDirectory(prefix="gaia-kube-") as tmp:
            cert_path = Path(tmp) / "client.crt"
            key_path = Path(tmp) / "client.key"
            for path, data in ((cert_path, creds.client_cert), (key_path, creds.client_key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


__all__ = ["KubeCredentials", "parse_kubeconfig", "ssl_context"]
