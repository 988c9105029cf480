"""Checks and field readers shared by the object modules of the ``kubernetes`` provider.

The checks refuse, before anything is sent, what the API server would refuse (names that are not
DNS labels or subdomains, label values and keys, ports), with a message that says what to use
instead. The readers take fields of objects as the API server returns them (JSON-decoded dicts)
and raise ``InvalidRequest`` naming the object and the field; ``from_kube`` turns the Kubernetes
vocabulary's own ``UnreadableObject`` (``gaia.kube``) into the same error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from gaia.domain.errors import InvalidRequest
from gaia.kube.errors import UnreadableObject
from gaia.providers.port import PortSpec

T = TypeVar("T")

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")

# ------------------------------------------------------------------------------- checks


def check_label_value(value: str, what: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise InvalidRequest(
            f"{what} {value!r} cannot be a Kubernetes label value: use at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )


def check_key(key: str, what: str) -> None:
    """A label or annotation key: an optional DNS-subdomain prefix, '/', a qualified name."""
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and _QUALIFIED_NAME.match(name) is not None
    if prefix:
        ok = ok and len(prefix) <= 253 and DNS_SUBDOMAIN.match(prefix) is not None
    if not ok:
        raise InvalidRequest(
            f"{what} key {key!r} is not a valid Kubernetes key: an optional DNS prefix and '/', "
            "then at most 63 letters, digits, '-', '_' or '.'"
        )


def check_dns_label(value: str, what: str) -> None:
    if len(value) > 63 or not DNS_LABEL.match(value):
        raise InvalidRequest(
            f"{what} {value!r} must be a DNS label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )


def check_dns_subdomain(value: str, what: str) -> None:
    if len(value) > 253 or not DNS_SUBDOMAIN.match(value):
        raise InvalidRequest(
            f"{what} {value!r} must be a DNS subdomain: lowercase letters, digits, '-' and '.', "
            "at most 253 characters, starting and ending with a letter or digit"
        )


def check_port(port: PortSpec, what: str) -> None:
    if isinstance(port.port, bool) or not isinstance(port.port, int) or not 0 < port.port < 65536:
        raise InvalidRequest(f"{what}: port {port.port!r} must be between 1 and 65535")
    if port.protocol not in _PROTOCOLS:
        raise InvalidRequest(
            f"{what}: protocol {port.protocol!r} of port {port.port} must be one of "
            + ", ".join(_PROTOCOLS)
        )


def check_port_name(name: str, what: str, *, limit: int) -> None:
    if (
        len(name) > limit
        or not _PORT_NAME.match(name)
        or "--" in name
        or not any(c.isalpha() for c in name)
    ):
        raise InvalidRequest(
            f"{what}: port name {name!r} must be at most {limit} lowercase letters, digits and "
            "single '-', with at least one letter"
        )


def check_ids(ids: tuple[int, ...], what: str) -> None:
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise InvalidRequest(f"{what} must be non-negative integers, got {i!r}")
    if len(set(ids)) != len(ids):
        raise InvalidRequest(f"{what} {list(ids)} names an id twice")


# ------------------------------------------------------------------------------- reading


def as_object(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def as_items(value: Any, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{what} must be a list")
    return [as_object(item, f"each of {what}") for item in value]


def as_text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    return value


def as_int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{what} must be an integer")
    return value


def as_str_map(value: Any, what: str) -> dict[str, str]:
    doc = as_object(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise InvalidRequest(f"{what} must map strings to strings")
    return dict(doc)


def as_time(value: Any, what: str) -> dt.datetime | None:
    """An RFC 3339 time (``Time`` or ``MicroTime``) as an aware datetime; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be an RFC 3339 time string")
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{what} {value!r} is not an RFC 3339 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def pod_name(meta: Mapping[str, Any]) -> str:
    name = as_text(meta.get("name"), "Pod.metadata.name")
    namespace = as_text(meta.get("namespace"), "Pod.metadata.namespace")
    return f"{namespace}/{name}" if namespace else name


def condition_of(status: Mapping[str, Any], kind: str, where: str) -> Mapping[str, Any] | None:
    for cond in as_items(status.get("conditions"), f"{where}: status.conditions"):
        if cond.get("type") == kind:
            return cond
    return None


def from_kube(read: Callable[[], T], where: str = "") -> T:
    """``read()``, with the Kubernetes vocabulary's ``UnreadableObject`` raised as the provider's
    ``InvalidRequest`` (prefixed with ``where``, when given)."""
    try:
        return read()
    except UnreadableObject as exc:
        raise InvalidRequest(f"{where}: {exc}" if where else str(exc)) from None
