"""Apps in the TApp model, and the pure reconcile that drives a cluster toward one.

An app is a pool of templates (versions) and a map *instance id → template*. Ids are stable: the
instance ``ocr-4`` is instance 4 of app ``ocr`` for as long as the app lives, whatever version
it runs and however often it restarts. Several versions may run at once; that is what makes a
gray upgrade possible (``gaia.domain.upgrades`` edits the map batch by batch).

``reconcile_instances(desired, observed, ...) -> [actions]`` compares the map with what the
cluster reports and says what to do, one instance at a time:

- an id in the map with no instance → ``Create`` (the controller places it with the scheduler);
- an instance whose id is not in the map, or of a stopped app → ``Delete``;
- an instance on another version: when the two templates differ **only in the image** →
  ``ReplaceImage`` (in place: same node, IP, GPUs and name); otherwise ``Delete`` + ``Create``;
- a failed instance → the restart rules of ``gaia.domain.restarts``: ``Restart`` in place once
  its back-off has passed, or ``Delete`` + ``Create`` avoiding the node (lost or blacklisted).

It is level-triggered: the same inputs after the actions took effect give no actions, so a
controller killed half-way and started again converges without losing or duplicating instances.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.domain.restarts import (
    DEFAULT_POLICY,
    RestartAction,
    RestartDecision,
    RestartPolicy,
    decide_restart,
)

APP_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
MAX_INSTANCES = 10_000


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """One version. ``body`` is everything but the name, image and resources, in canonical JSON
    form (command, args, env, ports, probes, configs, network mode, profile)."""

    name: str
    image: str
    resources: ResourceVector
    body: Mapping[str, Any] = field(default_factory=dict)

    def same_shape(self, other: TemplateSpec) -> bool:
        """True when an instance can move between the two by swapping its image in place."""
        return self.resources == other.resources and _canonical(self.body) == _canonical(other.body)


def _canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def parse_instance_map(raw: Mapping[str, str]) -> dict[int, str]:
    return {int(k): v for k, v in raw.items()}


def dump_instance_map(instances: Mapping[int, str]) -> dict[str, str]:
    return {str(k): v for k, v in sorted(instances.items())}


def choose_default_template(names: Sequence[str], default: str | None) -> str:
    """The default version of a new app: ``default`` or the first template. Each template is
    one version, so two may not share a name."""
    if len(set(names)) != len(names):
        raise InvalidRequest("two templates share a name; each template is one version")
    chosen = default or names[0]
    if chosen not in names:
        raise InvalidRequest(f"default_template {chosen!r} is not one of the templates: {names}")
    return chosen


def instance_name(app: str, instance_id: int) -> str:
    return f"{app}-{instance_id}"


def check_app_name(name: str) -> None:
    if not APP_NAME.match(name):
        raise InvalidRequest(
            f"app name {name!r} is invalid: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )


# ---------------------------------------------------------------- what the cluster reports


class FailureView(Protocol):
    @property
    def cause(self) -> str: ...

    @property
    def at(self) -> dt.datetime: ...


class InstanceView(Protocol):
    """What reconcile reads of an observed instance (``gaia.providers.port.Instance`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def instance_id(self) -> int: ...

    @property
    def version(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def phase(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def last_failure(self) -> FailureView | None: ...


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Create:
    instance_id: int
    version: str
    avoid_nodes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ReplaceImage:
    instance_id: int
    name: str
    version: str
    image: str
    from_version: str


@dataclass(frozen=True, slots=True)
class Delete:
    instance_id: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Restart:
    instance_id: int
    name: str
    reason: str


Action = Create | ReplaceImage | Delete | Restart


@dataclass(frozen=True, slots=True)
class AppDesired:
    name: str
    running: bool
    instances: Mapping[int, str]  # id -> template name
    templates: Mapping[str, TemplateSpec]
    stopped: frozenset[int] = frozenset()  # ids of the map stopped one by one


def reconcile_instances(
    *,
    desired: AppDesired,
    observed: Sequence[InstanceView],
    recent_failures: Mapping[int, int],
    blacklist: frozenset[str],
    now: dt.datetime,
    policy: RestartPolicy = DEFAULT_POLICY,
) -> list[Action]:
    """The actions that move ``observed`` toward ``desired`` (see the module docstring).

    ``recent_failures``: per instance id, failures within the policy's memory (back-off length).
    ``blacklist``: nodes this app must not be placed on.
    """
    actions: list[Action] = []
    wanted = (
        {iid: v for iid, v in desired.instances.items() if iid not in desired.stopped}
        if desired.running
        else {}
    )
    seen: set[int] = set()
    for inst in sorted(observed, key=lambda i: i.instance_id):
        iid = inst.instance_id
        version = wanted.get(iid)
        if version is None or iid in seen:
            stopped = not desired.running or iid in desired.stopped
            actions.append(Delete(iid, inst.name, "stopped" if stopped else "scale-in"))
            continue
        seen.add(iid)
        if inst.phase == "Terminating":
            continue
        if inst.version != version:
            actions.extend(_change_version(desired, inst, version))
            continue
        failure = inst.last_failure
        if inst.phase == "Failed" and failure is not None:
            decision = _restart_decision(inst, failure.cause, recent_failures, blacklist, policy)
            if decision.action is RestartAction.RESCHEDULE:
                actions.append(Delete(iid, inst.name, decision.reason))
                actions.append(Create(iid, version, frozenset({inst.node}) | blacklist))
            elif now >= failure.at + decision.delay:
                actions.append(Restart(iid, inst.name, decision.reason))
    for iid in sorted(set(wanted) - seen):
        actions.append(Create(iid, wanted[iid], blacklist))
    return actions


def restart_due(
    *,
    desired: AppDesired,
    observed: Sequence[InstanceView],
    recent_failures: Mapping[int, int],
    blacklist: frozenset[str],
    now: dt.datetime,
    policy: RestartPolicy = DEFAULT_POLICY,
) -> dt.datetime | None:
    """When the first failed instance that ``reconcile_instances`` leaves waiting out its
    restart back-off comes due (None: none waits). The controller's work queue looks at the app
    again then, whatever else it waits for."""
    wanted = desired.instances if desired.running else {}
    due: dt.datetime | None = None
    for inst in observed:
        failure = inst.last_failure
        if (
            inst.phase != "Failed"
            or failure is None
            or inst.instance_id in desired.stopped
            or wanted.get(inst.instance_id) != inst.version
        ):
            continue
        decision = _restart_decision(inst, failure.cause, recent_failures, blacklist, policy)
        at = failure.at + decision.delay
        if decision.action is RestartAction.LOCAL and at > now and (due is None or at < due):
            due = at
    return due


def _restart_decision(
    inst: InstanceView,
    cause: str,
    recent_failures: Mapping[int, int],
    blacklist: frozenset[str],
    policy: RestartPolicy,
) -> RestartDecision:
    """What a failed instance's restart will be: one rule for ``reconcile_instances`` and
    ``restart_due``, so the queue's moment and the reconcile's restart never disagree."""
    return decide_restart(
        cause=cause,
        recent_failures=max(1, recent_failures.get(inst.instance_id, 1)),
        node_blacklisted=inst.node in blacklist,
        policy=policy,
    )


def _change_version(desired: AppDesired, inst: InstanceView, version: str) -> list[Action]:
    target = desired.templates.get(version)
    if target is None:
        # the map names a template that does not exist: nothing sensible to run; leave it
        return []
    current = desired.templates.get(inst.version)
    if current is not None and current.same_shape(target):
        # also for a failed instance: starting it with the new image is its restart
        return [ReplaceImage(inst.instance_id, inst.name, version, target.image, inst.version)]
    return [
        Delete(inst.instance_id, inst.name, f"template changed from {inst.version} to {version}"),
        Create(inst.instance_id, version),
    ]


def demand(instances: Mapping[int, str], templates: Mapping[str, TemplateSpec]) -> ResourceVector:
    """What the app's instances request in total: the amount its quota reservation holds."""
    total = ResourceVector()
    counts: dict[str, int] = {}
    for version in instances.values():
        counts[version] = counts.get(version, 0) + 1
    for version, count in counts.items():
        template = templates.get(version)
        if template is not None:
            total = total + template.resources.scaled(count)
    return total


def template_from_document(name: str, doc: Mapping[str, Any]) -> TemplateSpec:
    """A stored template document (``AppTemplate.spec``) as a ``TemplateSpec``: ``resources``
    are internal units, everything else but ``image`` is the shape body."""
    body = {k: v for k, v in doc.items() if k not in ("image", "resources")}
    return TemplateSpec(
        name=name,
        image=str(doc["image"]),
        resources=ResourceVector(**{k: int(v) for k, v in doc["resources"].items()}),
        body=body,
    )
