"""What the four app routers share: path parameters, the stored form of a template, and the
answers (store rows plus what the cluster reports → response bodies).

Nothing here changes the store. Answers merge the stored spec with an observation of the
cluster (``observed``, None when the cluster could not be reached: counts that need it are then
None rather than a wrong zero). An app's answer reads one small state per instance for its
counts and its latest upgrade's progress (``AppObservation``), and an upgrade's progress is its
plan stepped against those small states (``upgrade_progress``), so no answer builds a list of
10,000 views to count the ready ones or the upgraded ones (issue 22). See
docs/architecture.md, "the API".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Path
from sqlalchemy.orm import Session

from gaia.api.schemas.apps import (
    AppOut,
    FailureOut,
    InstanceOut,
    TemplateIn,
    TemplateOut,
    UpgradeOut,
    UpgradeProgressOut,
    UpgradeSummaryOut,
)
from gaia.api.schemas.base import NAME_PATTERN, ResourceAmounts
from gaia.domain import apps as domain_apps
from gaia.domain.upgrades import Prepull, step_upgrade
from gaia.providers.port import Instance, InstanceState
from gaia.store import apps as store_apps
from gaia.store.models import App, AppTemplate, AppUpgrade, Business, InstanceFailure

BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
AppPath = Path(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", max_length=40, description="app")
VersionPath = Path(pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", max_length=63)
InstancePath = Path(ge=0, le=1_000_000, description="instance id")
UpgradePath = Path(ge=1, le=2**31 - 1, description="upgrade id")
NodePath = Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def new_template(body: TemplateIn) -> store_apps.NewTemplate:
    """A template as the store takes it: resources in internal units, or the name of the
    instance configuration that gives them; everything else as given."""
    doc = body.model_dump(mode="json", exclude={"name", "resources", "instance_config"})
    if doc.get("ip_release") is None:
        doc.pop("ip_release", None)  # the documents of apps without floating IPs stay as they were
    return store_apps.NewTemplate(
        name=body.name,
        document=doc,
        resources=None if body.resources is None else body.resources.to_vector(),
        instance_config=body.instance_config,
    )


@dataclass(frozen=True, slots=True)
class _StateView:
    """An instance's small state (``InstanceState``) as an upgrade's plan reads it: progress
    counts versions and readiness, and needs neither the full view nor a failure's cause."""

    name: str
    instance_id: int
    version: str
    node: str
    phase: str
    ready: bool
    last_failure: None = None


def upgrade_progress(
    row: AppUpgrade, states: Mapping[int, InstanceState], app: App
) -> UpgradeProgressOut:
    """The upgrade's plan stepped against the cluster's small states of its instances (as the
    controller steps it; only the counts and the batch in flight are kept)."""
    plan = store_apps.plan_of(row)
    observed = {
        iid: _StateView(
            name=f"{app.name}-{iid}",
            instance_id=iid,
            version=state.version,
            node=state.node,
            phase=state.phase,
            ready=state.ready,
        )
        for iid in plan.instance_ids
        if (state := states.get(iid)) is not None
    }
    step = step_upgrade(
        plan, instances=domain_apps.parse_instance_map(app.instances), observed=observed
    )
    p = step.progress
    return UpgradeProgressOut(
        total=p.total, done=p.done, in_flight=list(p.in_flight), waiting=p.waiting
    )


def upgrade_out(
    row: AppUpgrade, states: Mapping[int, InstanceState] | None, app: App
) -> UpgradeOut:
    """One upgrade in full (its instance lists), with its progress when ``states`` (the
    cluster's, None: not asked or unreachable) are given."""
    return UpgradeOut(
        id=row.id,
        target=row.target,
        instance_count=len(row.instance_ids),
        instance_ids=list(row.instance_ids),
        previous=dict(row.previous),
        max_unavailable=row.max_unavailable,
        state=row.state,
        message=row.message,
        progress=None if states is None else upgrade_progress(row, states, app),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def upgrade_summary_out(
    row: AppUpgrade, *, instance_count: int, states: Mapping[int, InstanceState] | None, app: App
) -> UpgradeSummaryOut:
    """An upgrade as a list shows it; ``states`` only for one in progress (reading its
    instance lists, which a finished one's row leaves unloaded)."""
    return UpgradeSummaryOut(
        id=row.id,
        target=row.target,
        instance_count=instance_count,
        max_unavailable=row.max_unavailable,
        state=row.state,
        message=row.message,
        progress=None if states is None else upgrade_progress(row, states, app),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


@dataclass(frozen=True, slots=True)
class AppObservation:
    """What an app's answer needs of the cluster: phase, node, version and readiness of every
    instance (``instance_states``): the ready and running counts, and the latest upgrade's
    progress, without any instance's full view."""

    states: Mapping[int, InstanceState]


NOTHING_RUNS = AppObservation(states={})  # a new app: the cluster has none of it yet


def app_out(
    session: Session, business: Business, app: App, observed: AppObservation | None
) -> AppOut:
    cluster = store_apps.cluster_of(session, app)
    instances = domain_apps.parse_instance_map(app.instances)
    templates = store_apps.load_templates(session, app.id)
    upgrade = store_apps.latest_upgrade(session, app=app)
    return AppOut(
        name=app.name,
        business=business.name,
        cluster=cluster.name,
        description=app.description,
        state=app.state,
        default_template=app.default_template,
        templates=sorted(templates),
        replicas=len(instances),
        versions=dict(sorted(Counter(instances.values()).items())),
        ready=None if observed is None else sum(1 for s in observed.states.values() if s.ready),
        running=None
        if observed is None
        else sum(1 for s in observed.states.values() if s.phase == "Running"),
        domain=app.domain,
        prepull=Prepull(app.prepull),
        resources=ResourceAmounts.from_vector(domain_apps.demand(instances, templates)),
        upgrade=None
        if upgrade is None
        else upgrade_out(upgrade, None if observed is None else observed.states, app),
        created_by=app.created_by,
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def template_out(row: AppTemplate, instances: dict[int, str]) -> TemplateOut:
    spec = domain_apps.template_from_document(row.name, row.spec)
    return TemplateOut(
        name=row.name,
        image=spec.image,
        resources=ResourceAmounts.from_vector(spec.resources),
        spec=dict(row.spec),
        created_at=row.created_at,
        instances=sum(1 for v in instances.values() if v == row.name),
    )


def instance_out(
    iid: int,
    app: App,
    template: str,
    inst: Instance | None,
    last_failure: InstanceFailure | None,
    *,
    stopped: bool = False,
) -> InstanceOut:
    """One instance as the API shows it: what the cluster reports when it has the instance,
    else the stored intent (Pending, or Stopped for an instance stopped on its own)."""
    failure = None
    if inst is not None and inst.last_failure is not None:
        f = inst.last_failure
        failure = FailureOut(cause=str(f.cause), at=f.at, message=f.message, exit_code=f.exit_code)
    elif last_failure is not None:
        failure = FailureOut(
            cause=last_failure.cause,
            at=last_failure.at,
            message=last_failure.message,
            exit_code=last_failure.exit_code,
        )
    if inst is None:
        return InstanceOut(
            id=iid,
            name=domain_apps.instance_name(app.name, iid),
            template=template,
            version=None,
            status="Stopped" if stopped else "Pending",
            ready=False,
            node="",
            pod_ip="",
            host_ip="",
            gpu_ids=[],
            restarts=0,
            created_at=None,
            started_at=None,
            last_failure=failure,
            pull_progress=None,
        )
    pull = None
    if inst.pull is not None and inst.pull.total_bytes:
        pull = round(inst.pull.done_bytes / inst.pull.total_bytes, 4)
    return InstanceOut(
        id=iid,
        name=inst.name,
        template=template,
        version=inst.version,
        status=str(inst.phase),
        ready=inst.ready,
        node=inst.node,
        pod_ip=inst.pod_ip,
        host_ip=inst.host_ip,
        gpu_ids=list(inst.gpu_ids),
        cpu_ids=list(inst.cpu_ids),
        restarts=inst.restarts,
        created_at=inst.created_at,
        started_at=inst.started_at,
        last_failure=failure,
        pull_progress=pull,
    )
