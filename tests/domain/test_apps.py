"""The pure rules of apps: reconcile, gray-upgrade plans, restart decisions, placement."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import pytest

from gaia.domain.apps import (
    AppDesired,
    Create,
    Delete,
    ReplaceImage,
    Restart,
    TemplateSpec,
    demand,
    reconcile_instances,
    restart_due,
)
from gaia.domain.errors import Conflict, InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.domain.restarts import (
    Cause,
    RestartAction,
    backoff_delay,
    decide_restart,
    should_blacklist,
)
from gaia.domain.upgrades import (
    UpgradeState,
    new_plan,
    step_upgrade,
    template_to_prepull,
    upcoming,
)
from gaia.scheduler import (
    ClusterView,
    NodeView,
    PlacementRequest,
    ResourceFitScheduler,
    Unschedulable,
)

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
GPU2 = ResourceVector(cpu=4000, memory=10240, gpu=200)
V7 = TemplateSpec("v7", "ocr:7", GPU2, {"command": ["serve"]})
V8 = TemplateSpec("v8", "ocr:8", GPU2, {"command": ["serve"]})
V9_BIGGER = TemplateSpec("v9", "ocr:9", replace(GPU2, memory=20480), {"command": ["serve"]})
TEMPLATES = {"v7": V7, "v8": V8, "v9": V9_BIGGER}


@dataclass(frozen=True)
class Failure:
    cause: str
    at: dt.datetime


@dataclass(frozen=True)
class Inst:
    instance_id: int
    version: str = "v7"
    node: str = "n1"
    phase: str = "Running"
    ready: bool = True
    last_failure: Failure | None = None

    @property
    def name(self) -> str:
        return f"ocr-{self.instance_id}"


def desired(instances: dict[int, str], running: bool = True) -> AppDesired:
    return AppDesired(name="ocr", running=running, instances=instances, templates=TEMPLATES)


def reconcile(instances: dict[int, str], observed: list[Inst], **kw: object) -> list[object]:
    args: dict[str, object] = {
        "recent_failures": {},
        "blacklist": frozenset(),
        "now": NOW,
    }
    args.update(kw)
    return list(
        reconcile_instances(desired=desired(instances), observed=observed, **args)  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- reconcile


def test_missing_instances_are_created_and_extra_ones_deleted() -> None:
    actions = reconcile({0: "v7", 1: "v7"}, [Inst(1), Inst(5)])
    assert actions == [Delete(5, "ocr-5", "scale-in"), Create(0, "v7")]


def test_converged_app_needs_nothing_and_reconcile_is_idempotent() -> None:
    assert reconcile({0: "v7", 1: "v8"}, [Inst(0), Inst(1, version="v8")]) == []


def test_image_only_change_is_in_place() -> None:
    actions = reconcile({0: "v8"}, [Inst(0)])
    assert actions == [ReplaceImage(0, "ocr-0", "v8", "ocr:8", "v7")]


def test_any_other_change_recreates() -> None:
    actions = reconcile({0: "v9"}, [Inst(0)])
    assert actions == [Delete(0, "ocr-0", "template changed from v7 to v9"), Create(0, "v9")]


def test_stopped_app_removes_every_instance() -> None:
    actions = reconcile_instances(
        desired=desired({0: "v7"}, running=False),
        observed=[Inst(0)],
        recent_failures={},
        blacklist=frozenset(),
        now=NOW,
    )
    assert actions == [Delete(0, "ocr-0", "stopped")]


def test_instances_stopped_one_by_one_are_removed_and_not_recreated() -> None:
    stopped = AppDesired(
        name="ocr",
        running=True,
        instances={0: "v7", 1: "v7", 2: "v7"},
        templates=TEMPLATES,
        stopped=frozenset({1}),
    )
    args = {"recent_failures": {}, "blacklist": frozenset(), "now": NOW}
    actions = reconcile_instances(desired=stopped, observed=[Inst(0), Inst(1)], **args)  # type: ignore[arg-type]
    assert actions == [Delete(1, "ocr-1", "stopped"), Create(2, "v7")]
    # converged: the stopped instance stays away, the others run
    assert reconcile_instances(desired=stopped, observed=[Inst(0), Inst(2)], **args) == []  # type: ignore[arg-type]


def test_app_failure_restarts_locally_after_backoff() -> None:
    failed = Inst(0, phase="Failed", ready=False, last_failure=Failure("AppExit", NOW))
    assert reconcile({0: "v7"}, [failed], now=NOW + dt.timedelta(seconds=5)) == []
    later = reconcile({0: "v7"}, [failed], now=NOW + dt.timedelta(seconds=10))
    assert later == [Restart(0, "ocr-0", "back-off restarting failed container")]
    # the third failure in a row waits 40 s
    third = reconcile(
        {0: "v7"}, [failed], now=NOW + dt.timedelta(seconds=39), recent_failures={0: 3}
    )
    assert third == []


def test_restart_due_is_when_reconcile_first_restarts_a_waiting_instance() -> None:
    """The work queue looks at the app again at that moment (``restart_due``): it must agree
    with ``reconcile_instances`` to the second."""
    first = Inst(0, phase="Failed", ready=False, last_failure=Failure("AppExit", NOW))
    third = Inst(1, phase="Failed", ready=False, last_failure=Failure("AppExit", NOW))
    args: dict[str, object] = {
        "desired": desired({0: "v7", 1: "v7"}),
        "observed": [first, third],
        "recent_failures": {1: 3},
        "blacklist": frozenset(),
    }
    due = restart_due(**args, now=NOW)  # type: ignore[arg-type]
    assert due == NOW + dt.timedelta(seconds=10)
    just_before = {k: v for k, v in args.items() if k != "desired"}
    assert reconcile({0: "v7", 1: "v7"}, **just_before, now=due - dt.timedelta(seconds=1)) == []  # type: ignore[arg-type]
    assert reconcile({0: "v7", 1: "v7"}, **just_before, now=due) == [  # type: ignore[arg-type]
        Restart(0, "ocr-0", "back-off restarting failed container")
    ]
    # the first restarted, the third failure waits 40 s
    assert restart_due(**{**args, "observed": [third]}, now=due) == NOW + dt.timedelta(seconds=40)  # type: ignore[arg-type]
    # nothing waits: an instance rescheduled at once, one of another version, a stopped app
    lost = Inst(0, phase="Failed", ready=False, last_failure=Failure("NodeLost", NOW))
    assert restart_due(**{**args, "observed": [lost]}, now=NOW) is None  # type: ignore[arg-type]
    assert restart_due(**{**args, "desired": desired({0: "v8", 1: "v8"})}, now=NOW) is None  # type: ignore[arg-type]
    stopped = desired({0: "v7", 1: "v7"}, running=False)
    assert restart_due(**{**args, "desired": stopped}, now=NOW) is None  # type: ignore[arg-type]


def test_node_loss_reschedules_elsewhere_at_once() -> None:
    lost = Inst(0, phase="Failed", ready=False, last_failure=Failure("NodeLost", NOW))
    actions = reconcile({0: "v7"}, [lost])
    assert actions == [Delete(0, "ocr-0", "node lost"), Create(0, "v7", frozenset({"n1"}))]


def test_image_pull_failure_backs_off_without_rescheduling() -> None:
    failed = Inst(0, phase="Failed", ready=False, last_failure=Failure("ImagePullError", NOW))
    actions = reconcile(
        {0: "v7"}, [failed], now=NOW + dt.timedelta(minutes=1), blacklist=frozenset({"n1"})
    )
    assert actions == [Restart(0, "ocr-0", "back-off pulling image")]


def test_failure_on_a_blacklisted_node_moves_the_instance() -> None:
    failed = Inst(0, phase="Failed", ready=False, last_failure=Failure("OOMKilled", NOW))
    actions = reconcile({0: "v7"}, [failed], blacklist=frozenset({"n1"}))
    assert actions == [
        Delete(0, "ocr-0", "node is blacklisted for this app"),
        Create(0, "v7", frozenset({"n1"})),
    ]


def test_demand_sums_templates() -> None:
    assert demand({0: "v7", 1: "v9"}, TEMPLATES) == GPU2 + replace(GPU2, memory=20480)


# ---------------------------------------------------------------- restarts


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (50, 300)]
)
def test_backoff_doubles_up_to_five_minutes(failures: int, seconds: int) -> None:
    assert backoff_delay(failures) == dt.timedelta(seconds=seconds)


def test_restart_decision_by_cause() -> None:
    def action(cause: Cause, blacklisted: bool = False) -> RestartAction:
        decision = decide_restart(cause=cause, recent_failures=1, node_blacklisted=blacklisted)
        return decision.action

    assert action(Cause.APP_EXIT) is RestartAction.LOCAL
    assert action(Cause.OOM) is RestartAction.LOCAL
    assert action(Cause.LIVENESS) is RestartAction.LOCAL
    assert action(Cause.IMAGE_PULL) is RestartAction.LOCAL
    assert action(Cause.NODE_LOST) is RestartAction.RESCHEDULE
    assert action(Cause.APP_EXIT, blacklisted=True) is RestartAction.RESCHEDULE
    assert action(Cause.IMAGE_PULL, blacklisted=True) is RestartAction.LOCAL
    assert not should_blacklist(2)
    assert should_blacklist(3)


# ---------------------------------------------------------------- gray upgrade plans


def plan(ids: list[int], target: str = "v8", max_unavailable: int = 1, n: int = 6):  # type: ignore[no-untyped-def]
    instances = dict.fromkeys(range(n), "v7")
    return new_plan(
        target=target,
        instance_ids=ids,
        instances=instances,
        templates=list(TEMPLATES),
        max_unavailable=max_unavailable,
    ), instances


def test_plan_validation_names_the_problem() -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        plan([0], target="v99")
    with pytest.raises(InvalidRequest, match="not in the app"):
        plan([0, 42])
    with pytest.raises(InvalidRequest, match="twice"):
        plan([1, 1])
    with pytest.raises(Conflict, match="already runs"):
        plan([0], target="v7")


def test_gray_upgrade_moves_chosen_instances_in_batches() -> None:
    p, instances = plan([0, 2, 4], max_unavailable=2)
    observed = {i: Inst(i) for i in instances}
    step = step_upgrade(p, instances=instances, observed=observed)
    assert step.assignments == {0: "v8", 2: "v8"}
    instances.update(step.assignments)
    # nothing more while two are in flight
    assert step_upgrade(p, instances=instances, observed=observed).assignments == {}
    observed[0] = Inst(0, version="v8")
    step = step_upgrade(p, instances=instances, observed=observed)
    assert step.assignments == {4: "v8"}
    instances.update(step.assignments)
    observed[2] = Inst(2, version="v8")
    observed[4] = Inst(4, version="v8")
    done = step_upgrade(p, instances=instances, observed=observed)
    assert done.state is UpgradeState.SUCCEEDED
    assert done.progress.done == 3
    # 1, 3 and 5 were never touched
    assert {i: instances[i] for i in (1, 3, 5)} == {1: "v7", 3: "v7", 5: "v7"}


def test_upcoming_names_the_next_batches_after_the_one_in_flight() -> None:
    p, instances = plan([5, 0, 3, 1, 4], max_unavailable=2)
    observed = {i: Inst(i) for i in instances}
    assert upcoming(p, instances=instances, batches=1) == (5, 0)  # nothing assigned yet
    step = step_upgrade(p, instances=instances, observed=observed)
    instances.update(step.assignments)  # 5 and 0 are in flight
    assert upcoming(p, instances=instances, batches=1) == (3, 1)
    assert upcoming(p, instances=instances, batches=2) == (3, 1, 4)  # in the plan's order
    assert upcoming(p, instances=instances, batches=0) == ()


@pytest.mark.parametrize(
    "state", [UpgradeState.PAUSED, UpgradeState.ROLLING_BACK, UpgradeState.SUCCEEDED]
)
def test_upcoming_is_empty_unless_the_plan_runs(state: UpgradeState) -> None:
    p, instances = plan([0, 1, 2])
    assert upcoming(replace(p, state=state), instances=instances, batches=2) == ()


def test_failure_on_the_new_version_pauses_the_upgrade() -> None:
    p, instances = plan([0, 1])
    instances[0] = "v8"
    failed = Inst(
        0, version="v8", phase="Failed", ready=False, last_failure=Failure("OOMKilled", NOW)
    )
    step = step_upgrade(p, instances=instances, observed={0: failed, 1: Inst(1)})
    assert step.state is UpgradeState.PAUSED
    assert "ocr-0 (OOMKilled)" in step.message
    paused = replace(p, state=UpgradeState.PAUSED)
    assert step_upgrade(paused, instances=instances, observed={0: failed}).assignments == {}


def test_rollback_returns_each_instance_to_its_previous_version() -> None:
    p, instances = plan([0, 2], max_unavailable=5)
    instances.update({0: "v8", 2: "v8"})
    back = replace(p, state=UpgradeState.ROLLING_BACK)
    observed = {i: Inst(i, version=v) for i, v in instances.items()}
    step = step_upgrade(back, instances=instances, observed=observed)
    assert step.assignments == {0: "v7", 2: "v7"}
    instances.update(step.assignments)
    observed = {i: Inst(i, version=v) for i, v in instances.items()}
    assert step_upgrade(back, instances=instances, observed=observed).state is (
        UpgradeState.ROLLED_BACK
    )


def test_instances_scaled_in_during_an_upgrade_leave_the_plan() -> None:
    p, instances = plan([0, 1])
    del instances[1]
    instances[0] = "v8"
    step = step_upgrade(p, instances=instances, observed={0: Inst(0, version="v8")})
    assert step.state is UpgradeState.SUCCEEDED
    assert step.progress.total == 1


# ---------------------------------------------------------------- placement


def node(name: str, *, cpu: int = 8000, gpus: int = 0, **kw: object) -> NodeView:
    return NodeView(
        name=name,
        ready=bool(kw.get("ready", True)),
        schedulable=bool(kw.get("schedulable", True)),
        free=ResourceVector(cpu=cpu, memory=65536, local_disk=100, bandwidth=1000, gpu=gpus * 100),
        gpu_free={i: 100 for i in range(gpus)},
    )


def test_fit_scheduler_spreads_and_accounts_for_its_own_placements() -> None:
    view = ClusterView([node("a"), node("b")])
    scheduler = ResourceFitScheduler()
    request = PlacementRequest("ocr-0", ResourceVector(cpu=6000))
    first = scheduler.place(request, view)
    view.bind(first, request.resources)
    second = scheduler.place(request, view)
    view.bind(second, request.resources)
    assert {first.node, second.node} == {"a", "b"}
    with pytest.raises(Unschedulable, match=r"0/2 nodes are available.*2 Insufficient cpu"):
        scheduler.place(request, view)


def test_fit_scheduler_gpus_whole_and_fractional() -> None:
    view = ClusterView([node("g", gpus=4)])
    scheduler = ResourceFitScheduler()
    whole = scheduler.place(PlacementRequest("a", ResourceVector(gpu=200)), view)
    assert whole.gpu_ids == (0, 1)
    view.bind(whole, ResourceVector(gpu=200))
    half = scheduler.place(PlacementRequest("b", ResourceVector(gpu=50)), view)
    view.bind(half, ResourceVector(gpu=50))
    quarter = scheduler.place(PlacementRequest("c", ResourceVector(gpu=25)), view)
    assert half.gpu_ids == quarter.gpu_ids == (2,)  # fractions pack onto one card
    with pytest.raises(Unschedulable):
        scheduler.place(PlacementRequest("d", ResourceVector(gpu=300)), view)


def test_fit_scheduler_skips_avoided_cordoned_and_lost_nodes() -> None:
    view = ClusterView([node("a", ready=False), node("b", schedulable=False), node("c"), node("d")])
    scheduler = ResourceFitScheduler()
    placement = scheduler.place(
        PlacementRequest("x", ResourceVector(cpu=1), avoid_nodes=frozenset({"c"})), view
    )
    assert placement.node == "d"


def test_the_template_to_prepull_is_the_newest_when_no_instance_has_it_yet() -> None:
    templates = {"v7": V7, "v8": V8}  # in the order they were declared
    assert template_to_prepull(templates, {0: "v7", 1: "v7"}) == "v8"
    # a canary already runs it: the upgrade's own look-ahead takes over from there
    assert template_to_prepull(templates, {0: "v7", 1: "v8"}) is None
    # everyone on the newest: the older one is a roll back's, its image ran on these nodes
    assert template_to_prepull(templates, {0: "v8", 1: "v8"}) is None
    assert template_to_prepull(templates, {}) is None  # nothing runs: no node to warm
    assert template_to_prepull({}, {0: "v7"}) is None


def test_no_template_to_prepull_unless_instances_move_to_it_in_place() -> None:
    # v9 asks for more memory: its instances are recreated wherever the scheduler puts them
    assert template_to_prepull({"v7": V7, "v9": V9_BIGGER}, {0: "v7"}) is None
    # declared order, not name order: v8 was declared before v7 here, so v7 is the newest
    assert template_to_prepull({"v8": V8, "v7": V7}, {0: "v8"}) == "v7"
    # the same image under another name: nothing to pull
    same = TemplateSpec("v7b", "ocr:7", GPU2, {"command": ["serve"]})
    assert template_to_prepull({"v7": V7, "v7b": same}, {0: "v7"}) is None
