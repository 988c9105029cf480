"""Reading fields of JSON-decoded Kubernetes documents, with errors that say where.

Small typed readers (an object, a string, a string map) shared by the rest of ``gaia.kube`` and
the scheduler extender; each raises ``UnreadableObject`` naming the field. ``member`` reads a key
case-insensitively, as Go's ``encoding/json`` does, for the types without json tags (the
extender's envelopes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gaia.kube.errors import UnreadableObject


def member(doc: Mapping[str, Any], name: str) -> Any:
    """``doc[name]``, matching keys case-insensitively as Go's encoding/json does."""
    if name in doc:
        return doc[name]
    folded = name.casefold()
    for key, value in doc.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return None


def json_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnreadableObject(f"{what} must be a JSON object")
    return value


def optional_object(value: Any, what: str) -> Mapping[str, Any]:
    """An object, or ``{}`` when the field is absent (null)."""
    return {} if value is None else json_object(value, what)


def string(value: Any, what: str) -> str:
    """A string, or ``""`` when the field is absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UnreadableObject(f"{what} must be a string")
    return value


def string_map(value: Any, what: str) -> dict[str, str]:
    """Labels, annotations, a node selector: ``{}`` when absent."""
    doc = optional_object(value, what)
    if not all(isinstance(v, str) for v in doc.values()):
        raise UnreadableObject(f"{what} must map strings to strings")
    return dict(doc)
