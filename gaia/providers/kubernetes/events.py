"""Events: a core/v1 Event or an events.k8s.io/v1 Event as the port's ``ClusterEvent``.

The two APIs name the same things differently (``regarding`` / ``involvedObject``, ``note`` /
``message``, ``deprecatedLastTimestamp`` / ``lastTimestamp``); ``event_from_k8s`` reads both. The
object kinds are the port's: a Pod's events are an ``Instance``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gaia.providers.kubernetes.fields import EPOCH, as_object, as_text, as_time
from gaia.providers.port import ClusterEvent

_OBJECT_KINDS = {"Pod": "Instance", "Node": "Node", "Service": "Service"}


def event_from_k8s(event: Mapping[str, Any], seq: int) -> ClusterEvent:
    """A core/v1 Event or an events.k8s.io/v1 Event as a ``ClusterEvent`` numbered ``seq``.

    ``at`` is the last occurrence: ``series.lastObservedTime``, ``lastTimestamp`` /
    ``deprecatedLastTimestamp``, ``eventTime``, ``firstTimestamp`` / ``deprecatedFirstTimestamp``,
    ``metadata.creationTimestamp``, the first one set (the epoch when none is). Node events
    have no namespace (``""``), as nodes have none."""
    meta = as_object(event.get("metadata"), "Event.metadata")
    regarding = event.get("regarding")
    if regarding is None:
        regarding = event.get("involvedObject")
    involved = as_object(regarding, "Event.regarding")
    kind = as_text(involved.get("kind"), "Event.regarding.kind")
    message = event.get("note") if "note" in event else event.get("message")
    series = as_object(event.get("series"), "Event.series")
    at = None
    for value, what in (
        (series.get("lastObservedTime"), "series.lastObservedTime"),
        (event.get("lastTimestamp"), "lastTimestamp"),
        (event.get("deprecatedLastTimestamp"), "deprecatedLastTimestamp"),
        (event.get("eventTime"), "eventTime"),
        (event.get("firstTimestamp"), "firstTimestamp"),
        (event.get("deprecatedFirstTimestamp"), "deprecatedFirstTimestamp"),
        (meta.get("creationTimestamp"), "metadata.creationTimestamp"),
    ):
        at = as_time(value, f"Event.{what}")
        if at is not None:
            break
    namespace = as_text(involved.get("namespace"), "Event.regarding.namespace")
    if kind == "Node":
        namespace = ""  # cluster-scoped; its events are filed under "default"
    elif not namespace:
        namespace = as_text(meta.get("namespace"), "Event.metadata.namespace")
    return ClusterEvent(
        seq=seq,
        at=at or EPOCH,
        namespace=namespace,
        object_kind=_OBJECT_KINDS.get(kind, kind),
        object_name=as_text(involved.get("name"), "Event.regarding.name"),
        reason=as_text(event.get("reason"), "Event.reason"),
        message=as_text(message, "Event.note"),
        type=as_text(event.get("type"), "Event.type") or "Normal",
    )
