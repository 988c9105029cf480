"""Configs and secrets: ``ConfigData`` as a ConfigMap or an ``Opaque`` Secret, and back, as pure
functions.

A config is a ConfigMap with ``data``; a secret is an ``Opaque`` Secret whose values are base64
``data``. Keys are what Kubernetes accepts in either (letters, digits, ``-``, ``_``, ``.``); one
object holds at most ``CONFIG_SIZE_LIMIT`` bytes (etcd's object limit), so a bigger config is
refused with a message that says to split it. Reading back, a ConfigMap's ``binaryData`` and any
binary Secret value are decoded as UTF-8 with replacement characters.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.kube.labels import MANAGED_BY, MANAGED_BY_LABEL
from gaia.providers.kubernetes.fields import (
    as_object,
    as_str_map,
    as_text,
    check_dns_label,
    check_dns_subdomain,
)
from gaia.providers.port import ConfigData

CONFIG_SIZE_LIMIT = 1024 * 1024  # bytes of data in one ConfigMap or Secret (etcd's object limit)
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def config_manifest(config: ConfigData) -> dict[str, Any]:
    """A ConfigMap, or an ``Opaque`` Secret with base64 ``data`` when ``config.secret``."""
    kind = "Secret" if config.secret else "ConfigMap"
    check_dns_label(config.namespace, "namespace")
    check_dns_subdomain(config.name, f"{kind} name")
    what = f"{kind} {config.namespace}/{config.name}"
    size = 0
    for key, value in config.data.items():
        if not isinstance(key, str) or len(key) > 253 or not _CONFIG_KEY.match(key):
            raise InvalidRequest(
                f"{what}: key {key!r} must be at most 253 letters, digits, '-', '_' or '.'"
            )
        if key in (".", ".."):
            raise InvalidRequest(f"{what}: key {key!r} is not allowed")
        if not isinstance(value, str):
            raise InvalidRequest(f"{what}: the value of {key!r} must be a string")
        size += len(key) + len(value.encode())
    if size > CONFIG_SIZE_LIMIT:
        raise InvalidRequest(
            f"{what} holds {size} bytes; Kubernetes keeps at most {CONFIG_SIZE_LIMIT} bytes in one "
            "object: split it"
        )
    metadata = {
        "name": config.name,
        "namespace": config.namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
    }
    if not config.secret:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {k: config.data[k] for k in sorted(config.data)},
        }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {
            k: base64.b64encode(config.data[k].encode()).decode("ascii")
            for k in sorted(config.data)
        },
    }


def _decode(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidRequest(f"{what} must be base64 text")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} is not valid base64") from None
    return data.decode("utf-8", errors="replace")


def config_from_k8s(obj: Mapping[str, Any], *, secret: bool | None = None) -> ConfigData:
    """A ConfigMap or Secret as ``ConfigData``. Items of a list carry no ``kind``: pass
    ``secret``, or a ``type`` field (which only Secrets have) decides. Binary values are decoded
    as UTF-8 with replacement characters."""
    if secret is None:
        kind = obj.get("kind")
        secret = kind == "Secret" if kind else "type" in obj
    meta = as_object(obj.get("metadata"), "metadata")
    name = as_text(meta.get("name"), "metadata.name")
    namespace = as_text(meta.get("namespace"), "metadata.namespace")
    what = f"{'Secret' if secret else 'ConfigMap'} {namespace}/{name}"
    data: dict[str, str] = {}
    if secret:
        for key, raw in as_object(obj.get("data"), f"{what}: data").items():
            data[key] = _decode(raw, f"{what}: data[{key}]")
    else:
        data.update(as_str_map(obj.get("data"), f"{what}: data"))
        for key, raw in as_object(obj.get("binaryData"), f"{what}: binaryData").items():
            data[key] = _decode(raw, f"{what}: binaryData[{key}]")
    return ConfigData(namespace=namespace, name=name, secret=secret, data=data)
