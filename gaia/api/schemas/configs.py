"""Request and response bodies of ConfigMaps and Secrets, with Kubernetes' naming and size rules.

A config is a name (a DNS-1123 subdomain, as Kubernetes names a ConfigMap) and ``data``: string
values under keys that may become file names when mounted (``[-._a-zA-Z0-9]+``, never ``.`` or
``..``). The whole of ``data`` is at most 1 MiB, the limit Kubernetes puts on one object, so that
anything Gaia accepts can be applied to a cluster.

Validation messages name the offending key or field but never quote a value: the message of a
422 ends up in the operation record, and the value may be a password.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from gaia.api.schemas.base import Description, Strict, check_plain_text

CONFIG_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_NAME_MAX = 253
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
CONFIG_KEY_MAX = 253
MAX_DATA_BYTES = 1024 * 1024


def _key_is_a_file_name(key: str) -> str:
    # Mounted as a volume, each key becomes a file: '.', '..' and '..x' would escape or clash
    # with the directory entries Kubernetes manages (its own IsConfigMapKey refuses them too).
    if key in (".", "..") or key.startswith(".."):
        raise ValueError("a key must not be '.' or '..' nor start with '..'")
    return key


def _utf8(value: str) -> str:
    # JSON may carry lone surrogates ("\ud800"): they cannot be stored or sent to a cluster.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a value must be valid UTF-8 text") from None
    return value


def _plain_text(value: str) -> str:
    # A config file or a secret is multi-line text, but without control, bidi or invisible format
    # characters, which would make it read differently from what the container gets.
    return check_plain_text(value, multiline=True)


def data_size(data: dict[str, str]) -> int:
    """Bytes of ``data`` as Kubernetes counts them: every key and every value, UTF-8."""
    return sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in data.items())


def _within_size_limit(data: dict[str, str]) -> dict[str, str]:
    size = data_size(data)
    if size > MAX_DATA_BYTES:
        raise ValueError(
            f"keys and values add up to {size} bytes, over the limit of {MAX_DATA_BYTES} "
            "bytes (1 MiB); split the data into several configs"
        )
    return data


ConfigName = Annotated[
    str, Field(pattern=CONFIG_NAME_PATTERN, min_length=1, max_length=CONFIG_NAME_MAX)
]
ConfigKey = Annotated[
    str,
    Field(pattern=CONFIG_KEY_PATTERN, min_length=1, max_length=CONFIG_KEY_MAX),
    AfterValidator(_key_is_a_file_name),
]
ConfigValue = Annotated[str, AfterValidator(_utf8), AfterValidator(_plain_text)]
ConfigData = Annotated[
    dict[ConfigKey, ConfigValue],
    AfterValidator(_within_size_limit),
    Field(description="string values by key; keys and values together at most 1 MiB"),
]


class ConfigCreate(Strict):
    name: ConfigName
    data: ConfigData = Field(default_factory=dict)
    description: Description = ""


class ConfigReplace(Strict):
    """PUT replaces the whole config: keys left out are removed, an omitted description is ''."""

    data: ConfigData
    description: Description = ""


class ConfigMapOut(BaseModel):
    name: str
    business: str
    description: str
    data: dict[str, str]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class SecretKeyOut(BaseModel):
    key: str
    size: int = Field(description="bytes of the value (UTF-8)")


class SecretOut(BaseModel):
    name: str
    business: str
    description: str
    keys: list[SecretKeyOut] = Field(description="key names and value sizes, never the values")
    data: dict[str, str] | None = Field(
        default=None, description="the values; only with ?reveal=true, otherwise null"
    )
    revealed: bool = False
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
