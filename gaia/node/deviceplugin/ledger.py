"""What the device plugin has granted on this node, kept across its own restarts.

Each ``Allocate`` that succeeds adds a ``Granted`` (the container, its unit ids, its cards and
limits). The ledger answers what the kubelet's later calls need: ``PreStartContainer`` carries
only unit ids, so the grant is found by them; the next allocation needs the memory already
granted per card and which containers already have units. When a pod leaves the node, the
agent's sweep drops its grants (``forget_gone``) and the enforcement releases them.

The file is JSON, rewritten whole through a temporary file and ``os.replace`` after every
change, so a crash leaves the old or the new ledger, never half of one. A plugin restarted
after the kubelet allocated is told nothing again by the kubelet (it reuses its checkpoint),
so without this file PreStartContainer would not know the limits of a container that restarts.
An unreadable file is set aside (``.corrupt``), logged, and the ledger starts empty.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gaia.node.deviceplugin.assign import ContainerKey
from gaia.node.deviceplugin.units import CORE, RESOURCES
from gaia.node.vgpu import CardShare

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Granted:
    allocation_id: str
    uid: str  # the pod's uid; "" when the container could not be identified
    namespace: str
    pod: str
    container: str
    device_ids: tuple[str, ...]
    shares: tuple[CardShare, ...]
    resource: str = CORE  # gaia.io/gpu-core or nvidia.com/gpu

    @property
    def key(self) -> ContainerKey:
        return (self.uid, self.container)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["device_ids"] = list(self.device_ids)
        doc["shares"] = [asdict(share) for share in self.shares]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Granted:
        return cls(
            allocation_id=str(doc["allocation_id"]),
            uid=str(doc["uid"]),
            namespace=str(doc["namespace"]),
            pod=str(doc["pod"]),
            container=str(doc["container"]),
            device_ids=tuple(str(d) for d in doc["device_ids"]),
            shares=tuple(CardShare(**share) for share in doc["shares"]),
            resource=str(doc.get("resource", CORE)),
        )


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._grants: dict[str, Granted] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            docs = json.loads(path.read_text())
            grants = [Granted.from_json(doc) for doc in docs]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = path.with_suffix(".corrupt")
            log.error(
                "the device plugin's ledger %s cannot be read (%s); set aside as %s",
                path,
                exc,
                aside,
            )
            os.replace(path, aside)
            return
        self._grants = {g.allocation_id: g for g in grants}

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self._path.with_name(self._path.name + ".tmp")
        scratch.write_text(json.dumps([g.to_json() for g in self._grants.values()], indent=1))
        os.replace(scratch, self._path)

    def add(self, granted: Granted) -> None:
        # a unit set belongs to one container: a new grant of the same units replaces the old
        for other in [
            g for g in self._grants.values() if set(g.device_ids) & set(granted.device_ids)
        ]:
            del self._grants[other.allocation_id]
        self._grants[granted.allocation_id] = granted
        self._save()

    def by_units(self, device_ids: Iterable[str]) -> Granted | None:
        wanted = set(device_ids)
        for granted in self._grants.values():
            if set(granted.device_ids) == wanted:
                return granted
        return None

    def keys(self) -> set[ContainerKey]:
        return {g.key for g in self._grants.values() if g.uid}

    def memory_used(self) -> dict[int, int]:
        """MiB granted per card (shares only: a whole card's memory is its own)."""
        used: dict[int, int] = {}
        for granted in self._grants.values():
            for share in granted.shares:
                used[share.index] = used.get(share.index, 0) + share.memory_mib
        return used

    def busy_for(self, resource: str) -> set[int]:
        """The cards held through the other resource than ``resource``."""
        return {
            share.index
            for granted in self._grants.values()
            if granted.resource != resource and granted.resource in RESOURCES
            for share in granted.shares
        }

    def grants(self) -> list[Granted]:
        return list(self._grants.values())

    def forget_gone(self, live_uids: Iterable[str]) -> list[Granted]:
        """Drop and return the grants of pods not among ``live_uids`` (grants of unidentified
        containers stay until their units are granted again)."""
        live = set(live_uids)
        gone = [g for g in self._grants.values() if g.uid and g.uid not in live]
        for granted in gone:
            del self._grants[granted.allocation_id]
        if gone:
            self._save()
        return gone
