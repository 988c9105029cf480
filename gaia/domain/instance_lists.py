"""An app's instance list: which instances a filter matches, and how many there are per status.

What flows in: the app's stored map (*instance id → template*, ``gaia.domain.apps``), the ids
stopped one by one, and what the cluster reports of each instance it has, as a small
``ObservedState`` (phase, node, running version: ``gaia.providers.port.InstanceState`` fits),
not the instance's whole view. What flows out: ``InstanceTally``, the matching ids in id order
(which the API pages by keyset) and the counts a page shows above its table (every instance per
status and per running version, however the list is filtered).

An instance's status is the one the API shows (``gaia.api.routes.apps.shapes.instance_out``):
the cluster's phase when the cluster has it, else ``Stopped`` for an id stopped on its own and
``Pending`` for an id still to be created. Keeping the rule here, and the API building its page
from it, is what lets the console show one page of 10,000 instances with the right counts
without reading the other 9,950 (issue 20).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gaia.domain.apps import instance_name

PENDING = "Pending"  # wanted, not in the cluster yet
STOPPED = "Stopped"  # wanted, stopped on its own (``gaia.store.apps.stop_or_start_instances``)


class ObservedState(Protocol):
    """What the list reads of an instance the cluster has."""

    @property
    def phase(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def version(self) -> str: ...


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    """Which instances a list shows; an empty field matches every instance.

    ``status`` and ``version`` are exact (``version`` is the running version, or the target
    template of an instance not running yet); ``node`` and ``name`` are parts of the node's and
    the instance's name, ignoring case (a search box)."""

    status: str = ""
    version: str = ""
    node: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class InstanceTally:
    ids: list[int]  # the matching instances, in id order
    total: int  # every instance of the app, matching or not
    by_status: dict[str, int] = field(default_factory=dict)  # every instance, per status
    by_version: dict[str, int] = field(default_factory=dict)  # running instances, per version


def status_of(iid: int, *, observed: Mapping[int, ObservedState], stopped: Collection[int]) -> str:
    state = observed.get(iid)
    if state is not None:
        return str(state.phase)
    return STOPPED if iid in stopped else PENDING


def tally_instances(
    *,
    app: str,
    wanted: Mapping[int, str],
    stopped: Collection[int],
    observed: Mapping[int, ObservedState],
    chosen: InstanceFilter,
) -> InstanceTally:
    """The instances of ``app`` (the ids it wants, and those the cluster still has that it no
    longer wants) that ``chosen`` matches, with the counts of all of them."""
    node_part, name_part = chosen.node.strip().lower(), chosen.name.strip().lower()
    by_status: Counter[str] = Counter()
    by_version: Counter[str] = Counter()
    ids = []
    for iid in sorted(wanted.keys() | observed.keys()):
        state = observed.get(iid)
        status = status_of(iid, observed=observed, stopped=stopped)
        version = state.version if state is not None else ""
        by_status[status] += 1
        if version:
            by_version[version] += 1
        if chosen.status and status != chosen.status:
            continue
        if chosen.version and (version or wanted.get(iid, "")) != chosen.version:
            continue
        if node_part and (state is None or node_part not in state.node.lower()):
            continue
        if name_part and name_part not in instance_name(app, iid):
            continue
        ids.append(iid)
    return InstanceTally(
        ids=ids,
        total=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        by_version=dict(sorted(by_version.items())),
    )
