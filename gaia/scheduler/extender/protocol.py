"""The wire types of the Kubernetes scheduler-extender protocol
(``k8s.io/kube-scheduler/extender/v1``).

kube-scheduler, configured with an extender, asks it three questions per pod, each an HTTP POST
whose body is one of these types: **filter** ``ExtenderArgs -> ExtenderFilterResult``,
**prioritize** ``ExtenderArgs -> HostPriorityList`` (an integer score per node in
``MIN_EXTENDER_PRIORITY..MAX_EXTENDER_PRIORITY``; kube-scheduler multiplies it by the extender's
``weight``) and **bind** ``ExtenderBindingArgs -> ExtenderBindingResult``. This module reads and
writes them and decides nothing (``decisions`` and ``bind`` do).

**Wire format.** The upstream types carry no json tags, so Go's field names *are* the keys
(``Pod``, ``Nodes``, ``NodeNames``, ``FailedNodes``, ``FailedAndUnresolvableNodes``, ``Error``,
``Host``, ``Score``, ``PodName``, ``PodNamespace``, ``PodUID``, ``Node``) and Go omits none of
them. We write exactly that; we read keys case-insensitively, as Go's decoder does (the upstream
``TestCompatibility`` relies on it). ``Pod`` and the items of ``Nodes`` are core/v1 objects, read
with the Kubernetes vocabulary of ``gaia.kube``.

A call we cannot answer as asked raises ``BadExtenderRequest``; its message lands in the result's
``Error`` field, where kube-scheduler reports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gaia.kube.errors import UnreadableObject
from gaia.kube.fields import json_object, member, string, string_map

MIN_EXTENDER_PRIORITY = 0
MAX_EXTENDER_PRIORITY = 10  # k8s.io/kube-scheduler/extender/v1.MaxExtenderPriority

# A call we cannot answer as asked (a malformed pod, node or envelope): exactly a Kubernetes
# document Gaia cannot read, so the extender answers with the Kubernetes vocabulary's own error.
BadExtenderRequest = UnreadableObject


def _node_items(nodes: Any) -> list[Mapping[str, Any]] | None:
    if nodes is None:
        return None
    items = json_object(nodes, "Nodes (a NodeList)").get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadExtenderRequest("Nodes.items must be a list of nodes")
    return [json_object(item, "each of Nodes.items") for item in items]


def _names(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadExtenderRequest(f"{what} must be a list of node names")
    return list(value)


def _node_list(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    # Go marshals an empty ListMeta as {} and keeps the (absent) TypeMeta out.
    return None if items is None else {"metadata": {}, "items": list(items)}


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """``ExtenderArgs``: the pod and its candidate nodes (``nodes`` when kube-scheduler sends
    Node objects, ``node_names`` when the extender is configured as cache-capable)."""

    pod: Mapping[str, Any]
    nodes: list[Mapping[str, Any]] | None = None
    node_names: list[str] | None = None

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderArgs:
        body = json_object(doc, "the request body (ExtenderArgs)")
        pod = member(body, "Pod")
        return cls(
            pod=json_object(pod, "Pod") if pod is not None else {},
            nodes=_node_items(member(body, "Nodes")),
            node_names=_names(member(body, "NodeNames"), "NodeNames"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "Pod": dict(self.pod) if self.pod else None,
            "Nodes": _node_list(self.nodes),
            "NodeNames": self.node_names,
        }


@dataclass(frozen=True, slots=True)
class ExtenderFilterResult:
    """``ExtenderFilterResult``: the nodes that fit, and a message per node that does not."""

    nodes: list[Mapping[str, Any]] | None = None
    node_names: list[str] | None = None
    failed_nodes: dict[str, str] = field(default_factory=dict)
    failed_and_unresolvable_nodes: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderFilterResult:
        body = json_object(doc, "ExtenderFilterResult")
        return cls(
            nodes=_node_items(member(body, "Nodes")),
            node_names=_names(member(body, "NodeNames"), "NodeNames"),
            failed_nodes=string_map(member(body, "FailedNodes"), "FailedNodes"),
            failed_and_unresolvable_nodes=string_map(
                member(body, "FailedAndUnresolvableNodes"), "FailedAndUnresolvableNodes"
            ),
            error=string(member(body, "Error"), "Error"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "Nodes": _node_list(self.nodes),
            "NodeNames": self.node_names,
            "FailedNodes": dict(self.failed_nodes),
            "FailedAndUnresolvableNodes": dict(self.failed_and_unresolvable_nodes),
            "Error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HostPriority:
    """One entry of a ``HostPriorityList``: a node and its score, 0..10 (higher is better)."""

    host: str
    score: int

    @classmethod
    def list_from_wire(cls, doc: Any) -> list[HostPriority]:
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise BadExtenderRequest("a HostPriorityList must be a JSON list")
        out = []
        for item in doc:
            body = json_object(item, "each HostPriority")
            score = member(body, "Score")
            if score is None:
                score = 0
            if isinstance(score, bool) or not isinstance(score, int):
                raise BadExtenderRequest("HostPriority.Score must be an integer")
            out.append(cls(host=string(member(body, "Host"), "HostPriority.Host"), score=score))
        return out

    def to_wire(self) -> dict[str, Any]:
        return {"Host": self.host, "Score": self.score}


@dataclass(frozen=True, slots=True)
class ExtenderBindingArgs:
    """``ExtenderBindingArgs``: which pod (name, namespace, uid) goes to which node."""

    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderBindingArgs:
        body = json_object(doc, "the request body (ExtenderBindingArgs)")
        args = cls(
            pod_name=string(member(body, "PodName"), "PodName"),
            pod_namespace=string(member(body, "PodNamespace"), "PodNamespace"),
            pod_uid=string(member(body, "PodUID"), "PodUID"),
            node=string(member(body, "Node"), "Node"),
        )
        if not args.pod_name or not args.node:
            raise BadExtenderRequest("ExtenderBindingArgs needs PodName and Node")
        return args

    def to_wire(self) -> dict[str, Any]:
        return {
            "PodName": self.pod_name,
            "PodNamespace": self.pod_namespace,
            "PodUID": self.pod_uid,
            "Node": self.node,
        }


@dataclass(frozen=True, slots=True)
class ExtenderBindingResult:
    """``ExtenderBindingResult``: empty ``error`` on success."""

    error: str = ""

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderBindingResult:
        body = json_object(doc, "ExtenderBindingResult")
        return cls(error=string(member(body, "Error"), "Error"))

    def to_wire(self) -> dict[str, Any]:
        return {"Error": self.error}
