"""Gray upgrades: move chosen instances to a target template, a batch at a time.

A ``GrayUpgradePlan`` names the instances (any ids, in the order given), the target template and
``max_unavailable``. It never touches the cluster: each step only edits the app's map *instance
id → template*, and ``gaia.domain.apps.reconcile_instances`` turns the map into actions (an
in-place image swap when only the image differs). So a rolling upgrade of the whole app in id
order is the same plan with every id, and roll back is the same plan run toward each instance's
previous template.

``step_upgrade`` is pure: given the plan, the map and what the cluster reports, it returns the
new assignments and state. An instance counts as *done* when it runs the goal version and is
ready; at most ``max_unavailable`` instances of the plan are in flight at once. An instance that
fails on the new version pauses the plan (the operator decides: resume or roll back) — a gray
upgrade exists to stop a bad version before it is everywhere.

``upcoming`` names the next batches (the ids still waiting, in plan order), so the platform can
pull the target image onto their nodes while the current batch restarts (a batch then costs the
restart, not the pull too). An app whose ``Prepull`` is ``templates`` goes one step further:
with no upgrade in flight, ``template_to_prepull`` names the newest version it declared that no
instance is assigned yet, so its image is on the nodes before the upgrade to it begins (the
first batch then costs its restart only as well).

States: Running → Succeeded, Running ⇄ Paused, any → RollingBack → RolledBack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gaia.domain.apps import InstanceView, TemplateSpec
from gaia.domain.errors import Conflict, InvalidRequest


class UpgradeState(StrEnum):
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


ACTIVE = frozenset({UpgradeState.RUNNING, UpgradeState.PAUSED, UpgradeState.ROLLING_BACK})


@dataclass(frozen=True, slots=True)
class GrayUpgradePlan:
    target: str
    instance_ids: tuple[int, ...]
    previous: Mapping[int, str]  # id -> template before the plan touched it
    max_unavailable: int
    state: UpgradeState

    def goal(self, instance_id: int) -> str:
        if self.state in (UpgradeState.ROLLING_BACK, UpgradeState.ROLLED_BACK):
            return self.previous[instance_id]
        return self.target


@dataclass(frozen=True, slots=True)
class UpgradeProgress:
    total: int
    done: int
    in_flight: tuple[int, ...]
    waiting: int


@dataclass(frozen=True, slots=True)
class UpgradeStep:
    assignments: dict[int, str] = field(default_factory=dict)
    state: UpgradeState = UpgradeState.RUNNING
    message: str = ""
    progress: UpgradeProgress = UpgradeProgress(0, 0, (), 0)


def new_plan(
    *,
    target: str,
    instance_ids: Sequence[int],
    instances: Mapping[int, str],
    templates: Sequence[str],
    max_unavailable: int,
) -> GrayUpgradePlan:
    """Validate an upgrade request against the app; raises ``InvalidRequest`` saying what is
    wrong."""
    if target not in templates:
        raise InvalidRequest(
            f"template {target!r} does not exist; the app has: {', '.join(sorted(templates))}"
        )
    if not instance_ids:
        raise InvalidRequest("choose at least one instance to upgrade")
    if len(set(instance_ids)) != len(instance_ids):
        raise InvalidRequest("an instance id is listed twice")
    missing = [i for i in instance_ids if i not in instances]
    if missing:
        raise InvalidRequest(
            f"instance id(s) {', '.join(map(str, missing[:10]))} are not in the app",
            details={"missing": missing[:100]},
        )
    if max_unavailable < 1:
        raise InvalidRequest("max_unavailable must be at least 1")
    already = [i for i in instance_ids if instances[i] == target]
    if len(already) == len(instance_ids):
        raise Conflict(f"every chosen instance already runs {target}")
    return GrayUpgradePlan(
        target=target,
        instance_ids=tuple(instance_ids),
        previous={i: instances[i] for i in instance_ids},
        max_unavailable=max_unavailable,
        state=UpgradeState.RUNNING,
    )


def step_upgrade(
    plan: GrayUpgradePlan,
    *,
    instances: Mapping[int, str],
    observed: Mapping[int, InstanceView],
) -> UpgradeStep:
    # instances scaled in while the plan runs are simply no longer part of it
    ids = [i for i in plan.instance_ids if i in instances]
    done: list[int] = []
    in_flight: list[int] = []
    waiting: list[int] = []
    failed: list[str] = []
    for iid in ids:
        goal = plan.goal(iid)
        inst = observed.get(iid)
        if instances[iid] != goal:
            waiting.append(iid)
        elif inst is not None and inst.version == goal and inst.ready:
            done.append(iid)
        else:
            in_flight.append(iid)
            if inst is not None and inst.version == goal and inst.phase == "Failed":
                cause = inst.last_failure.cause if inst.last_failure else "failed"
                failed.append(f"{inst.name} ({cause})")

    def progress(extra: Sequence[int] = ()) -> UpgradeProgress:
        return UpgradeProgress(
            total=len(ids),
            done=len(done),
            in_flight=tuple(in_flight) + tuple(extra),
            waiting=len(waiting) - len(extra),
        )

    if plan.state is UpgradeState.PAUSED:
        return UpgradeStep(state=plan.state, progress=progress())
    if plan.state in (UpgradeState.SUCCEEDED, UpgradeState.ROLLED_BACK):
        return UpgradeStep(state=plan.state, progress=progress())
    if not waiting and not in_flight:
        finished = (
            UpgradeState.ROLLED_BACK
            if plan.state is UpgradeState.ROLLING_BACK
            else UpgradeState.SUCCEEDED
        )
        return UpgradeStep(state=finished, progress=progress())
    if failed and plan.state is UpgradeState.RUNNING:
        return UpgradeStep(
            state=UpgradeState.PAUSED,
            message=f"paused: {', '.join(failed[:5])} failed on {plan.target}; "
            "resume to go on or roll back",
            progress=progress(),
        )
    room = plan.max_unavailable - len(in_flight)
    batch = waiting[: max(0, room)]
    return UpgradeStep(
        assignments={iid: plan.goal(iid) for iid in batch},
        state=plan.state,
        progress=progress(batch),
    )


class Prepull(StrEnum):
    """What an app lets the platform pull onto its nodes before an instance needs it.

    - ``upgrades`` (the default): while a gray upgrade runs, the target image onto the nodes of
      its next batches, so a batch costs its restart and not its pull;
    - ``templates``: that, and with no upgrade in flight the newest declared version that no
      instance is assigned yet onto the nodes of the running instances that would move to it
      in place, so the first batch of its upgrade finds the image too. It costs disk and link
      on those nodes for a version that may never roll out;
    - ``off``: nothing ahead of time; each instance pulls in its turn (a cluster short of
      disk or of registry bandwidth)."""

    # upgrades: ``upcoming``; templates: ``template_to_prepull`` (the app controller's step 6)
    UPGRADES = "upgrades"
    TEMPLATES = "templates"
    OFF = "off"


def template_to_prepull(
    templates: Mapping[str, TemplateSpec], instances: Mapping[int, str]
) -> str | None:
    """The version an app with ``Prepull.TEMPLATES`` has pulled ahead of its upgrade: the
    newest of ``templates`` (given in the order they were declared), if it was declared after
    every version the map assigns and an assigned one moves to it in place (same shape, another
    image; an instance recreated lands wherever the scheduler puts it, so no node can be
    warmed for it). None otherwise: an older version is a roll back's, whose image the nodes
    ran already. One version, not all of them: each costs disk on every node of the app, and
    the newest is the one an upgrade goes to next."""
    if not templates:
        return None
    assigned = set(instances.values())
    newest = list(templates)[-1]
    if newest in assigned:
        return None
    candidate = templates[newest]
    running = [templates[name] for name in assigned if name in templates]
    if any(candidate.image != t.image and candidate.same_shape(t) for t in running):
        return newest
    return None


def upcoming(
    plan: GrayUpgradePlan, *, instances: Mapping[int, str], batches: int
) -> tuple[int, ...]:
    """The ids the plan's next ``batches`` batches will move, in the plan's order: those not yet
    assigned their goal (the batch in flight is not among them). What the platform may prepare
    before their turn (pull the target's image onto their nodes). Nothing unless the plan is
    Running: a paused plan waits for the operator, and a roll back goes to images the nodes
    already ran."""
    if plan.state is not UpgradeState.RUNNING or batches < 1:
        return ()
    waiting = [i for i in plan.instance_ids if i in instances and instances[i] != plan.goal(i)]
    return tuple(waiting[: batches * plan.max_unavailable])
