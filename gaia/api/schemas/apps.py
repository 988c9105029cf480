"""Request and response bodies of the apps API (``/businesses/{biz}/apps``).

A template arrives in API units (cores, MiB, cards) and is stored as a document in internal units
(``gaia.api.routes.apps.shapes.new_template``, then ``gaia.store.apps``);
``gaia.domain.apps.template_from_document`` reads it back. A gray upgrade is ``Upgrade*`` here
as everywhere in the code (the table is ``app_upgrades``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gaia.api.schemas.base import (
    NAME_PATTERN,
    MultiLineText,
    OneLineText,
    Page,
    ResourceAmounts,
    Strict,
)
from gaia.domain.gpu_links import RequiredLink
from gaia.domain.upgrades import Prepull

VERSION_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$"
APP_PATTERN = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
IMAGE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]{0,511}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
CONFIG_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

Version = Annotated[str, Field(pattern=VERSION_PATTERN, min_length=1, max_length=63)]
AppName = Annotated[str, Field(pattern=APP_PATTERN, min_length=1, max_length=40)]
Image = Annotated[str, Field(pattern=IMAGE_PATTERN, min_length=1, max_length=512)]
Arg = Annotated[MultiLineText, Field(max_length=4096)]  # a script may span lines


class PortIn(Strict):
    port: int = Field(ge=1, le=65535)
    name: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?)?$")
    protocol: Literal["TCP", "UDP"] = "TCP"


class ProbeIn(Strict):
    kind: Literal["http", "tcp", "exec"] = "http"
    path: OneLineText = Field(default="/", max_length=1024, pattern=r"^/[^\s]*$")
    port: int = Field(default=0, ge=0, le=65535)
    command: list[Arg] = Field(default_factory=list, max_length=64)
    initial_delay_s: float = Field(default=0, ge=0, le=3600)
    period_s: float = Field(default=10, gt=0, le=3600)
    timeout_s: float = Field(default=1, gt=0, le=3600)
    failure_threshold: int = Field(default=3, ge=1, le=100)
    success_threshold: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="after")
    def _complete(self) -> ProbeIn:
        if self.kind == "exec" and not self.command:
            raise ValueError("an exec probe needs a command")
        if self.kind in ("http", "tcp") and self.port == 0:
            raise ValueError(f"a {self.kind} probe needs a port")
        return self


class ConfigRefIn(Strict):
    name: str = Field(pattern=CONFIG_NAME_PATTERN, max_length=253)
    secret: bool = False
    mount_path: OneLineText = Field(
        default="",
        max_length=1024,
        pattern=r"^(/[^\s]*)?$",
        description="mount as files here; empty: expose the keys as environment variables",
    )


class TemplateIn(Strict):
    name: Version = Field(description="the version label, e.g. v7")
    image: Image
    command: list[Arg] = Field(default_factory=list, max_length=64)
    args: list[Arg] = Field(default_factory=list, max_length=256)
    env: dict[
        Annotated[str, Field(pattern=ENV_NAME_PATTERN)],
        Annotated[MultiLineText, Field(max_length=32768)],
    ] = Field(default_factory=dict, max_length=256)
    resources: ResourceAmounts | None = Field(
        default=None, description="per instance; or name an instance_config"
    )
    instance_config: str | None = Field(
        default=None, pattern=NAME_PATTERN, max_length=63, description="a named instance shape"
    )
    ports: list[PortIn] = Field(default_factory=list, max_length=32)
    liveness: ProbeIn | None = None
    readiness: ProbeIn | None = None
    configs: list[ConfigRefIn] = Field(default_factory=list, max_length=32)
    network_mode: Literal["overlay", "floating-ip", "nat", "host"] = Field(
        default="overlay",
        description="overlay: the cluster's pod network (the default); floating-ip: an address "
        "of a Gaia pool of the node's subnet, kept across reschedules; nat: the node's address "
        "with the ports mapped to host ports; host: the node's network (docs/network.md)",
    )
    ip_release: Literal["on-delete", "app", "never"] | None = Field(
        default=None,
        description="floating-ip only: when an instance's address goes back to its pool: "
        "on-delete (the instance is deleted; the default), app (the app is deleted), never "
        "(a platform admin frees it)",
    )
    profile: Literal["web", "batch", "gpu-inference", "idle"] = Field(
        default="web", description="workload profile the simulated cluster uses for metrics"
    )
    node_selector: dict[
        Annotated[OneLineText, Field(max_length=253)], Annotated[OneLineText, Field(max_length=63)]
    ] = Field(default_factory=dict, max_length=32)
    placement: Literal["binpack", "spread"] | None = Field(
        default=None,
        description="node choice: binpack fills nodes (default for GPU apps), spread empties them "
        "(default otherwise)",
    )
    zone: str = Field(default="", max_length=63, pattern=r"^[-a-z0-9.]*$")
    zone_max_skew: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="spread the instances across zones: no zone holds more than this many "
        "instances above the emptiest zone that has a ready node for them (kube-scheduler's "
        "topologySpreadConstraints maxSkew with DoNotSchedule); a zone whose nodes are all lost "
        "drops out, and its instances are placed again in the others",
    )
    gpu_model: OneLineText = Field(
        default="", max_length=63, description="run only on this GPU model; empty: any model"
    )
    gpu_link: RequiredLink | None = Field(
        default=None,
        description="multi-GPU instances: every pair of their GPUs at least this close",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> TemplateIn:
        if self.zone_max_skew is not None and self.zone:
            raise ValueError(
                "zone_max_skew spreads instances across zones; a template pinned to one zone "
                f"({self.zone}) cannot spread: drop one of the two"
            )
        if self.resources is None and self.instance_config is None:
            raise ValueError("give resources or an instance_config")
        if self.resources is not None and self.instance_config is not None:
            raise ValueError("give resources or an instance_config, not both")
        if self.resources is not None:
            gpu = self.resources.gpu
            if gpu > 1 and gpu != gpu.to_integral_value():
                raise ValueError("GPU amounts above one card must be whole cards (e.g. 2, not 1.5)")
            if self.resources.gpu_memory and not gpu:
                raise ValueError("gpu_memory needs a GPU request")
        ports = [p.port for p in self.ports]
        if len(set(ports)) != len(ports):
            raise ValueError("a port is listed twice")
        if self.ip_release is not None and self.network_mode != "floating-ip":
            raise ValueError(
                f"ip_release applies to network_mode 'floating-ip' only, not "
                f"'{self.network_mode}'; drop it or choose floating-ip"
            )
        names = [(c.name, c.secret) for c in self.configs]
        if len(set(names)) != len(names):
            raise ValueError("a config is referenced twice")
        return self


class TemplateOut(Strict):
    name: str
    image: str
    resources: ResourceAmounts
    spec: dict[str, Any]
    created_at: dt.datetime
    instances: int = Field(description="instances the app map assigns to this template")


PREPULL_DOC = (
    "what the platform pulls onto the app's nodes ahead of time: 'upgrades' (the default) the "
    "target image onto the nodes of a running gray upgrade's next batches; 'templates' that, and "
    "with no upgrade in flight the newest declared version no instance is assigned yet (if "
    "instances move to it in place) onto the nodes of the running instances, so the first "
    "batch of its upgrade does not wait for the pull either; 'off' nothing (each instance "
    "pulls in its turn)"
)


class AppIn(Strict):
    name: AppName
    cluster: str = Field(pattern=NAME_PATTERN, max_length=63)
    description: MultiLineText = Field(default="", max_length=2000)
    templates: list[TemplateIn] = Field(min_length=1, max_length=50)
    default_template: Version | None = Field(
        default=None, description="the template new instances use; default: the first"
    )
    replicas: int = Field(default=1, ge=0, le=10_000)
    domain: str = Field(default="", max_length=253)
    prepull: Prepull = Field(default=Prepull.UPGRADES, description=PREPULL_DOC)
    allow_pending: bool = Field(
        default=False,
        description="accept templates whose one instance fits no node of the cluster even when "
        "empty (422 otherwise); their instances wait for such a node, and the app's events say so",
    )

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return check_domain(value)


def check_domain(value: str) -> str:
    if value and not re.fullmatch(
        r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?", value
    ):
        raise ValueError("domain must be a DNS name such as ocr.example.com")
    return value


class AppUpdate(Strict):
    description: MultiLineText | None = Field(default=None, max_length=2000)
    default_template: Version | None = None
    domain: str | None = Field(default=None, max_length=253)
    prepull: Prepull | None = Field(default=None, description=PREPULL_DOC)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else check_domain(value)


class UpgradeProgressOut(Strict):
    total: int
    done: int
    in_flight: list[int]
    waiting: int


class UpgradeSummaryOut(Strict):
    """An upgrade as the list shows it: its instances counted, not listed (``GET
    .../upgrades/{id}`` answers the lists)."""

    id: int
    target: str
    instance_count: int = Field(description="instances the upgrade covers")
    max_unavailable: int
    state: str
    message: str
    progress: UpgradeProgressOut | None = Field(
        default=None,
        description="against the cluster now; in a list only for an upgrade in progress "
        "(Running, Paused, RollingBack): a finished one's state says how it ended",
    )
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None


class UpgradeOut(UpgradeSummaryOut):
    instance_ids: list[int]
    previous: dict[str, str] = Field(description="instance id -> its version before")


class UpgradePage(Page[UpgradeSummaryOut]):
    """A page of an app's upgrades, newest first, with what the page shows above it, counted
    by the database over every upgrade of the app (one ``GROUP BY``)."""

    total: int = Field(description="upgrades of the app, whatever the filter")
    by_state: dict[str, int] = Field(description="upgrades of the app per state")
    active: int | None = Field(
        description="the id of the upgrade in progress (Running, Paused or RollingBack), on "
        "whichever page; null when none is"
    )


class AppOut(Strict):
    name: str
    business: str
    cluster: str
    description: str
    state: str
    default_template: str
    templates: list[str]
    replicas: int
    versions: dict[str, int] = Field(description="desired instances per template")
    ready: int | None = Field(description="ready instances; null if the cluster is unreachable")
    running: int | None
    domain: str
    prepull: Prepull = Field(description=PREPULL_DOC)
    resources: ResourceAmounts = Field(description="what the app's instances request in total")
    upgrade: UpgradeOut | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class FailureOut(Strict):
    cause: str
    at: dt.datetime
    message: str
    exit_code: int | None


class InstanceOut(Strict):
    id: int
    name: str
    cpu_ids: list[int] = Field(default_factory=list, description="cores bound, nearest the GPUs")
    template: str = Field(description="the template the app assigns to this instance")
    version: str | None = Field(description="the version the instance runs now")
    status: str
    ready: bool
    node: str
    pod_ip: str
    host_ip: str
    gpu_ids: list[int]
    restarts: int
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    last_failure: FailureOut | None
    pull_progress: float | None = Field(description="0..1 while the image is being pulled")


class InstancePage(Page[InstanceOut]):
    """A page of an app's instances, with what a page shows above its table: counted by the
    API over every instance, so a client showing one page reads one page (issue 20)."""

    prev_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the previous page; null on page one"
    )
    matched: int = Field(description="instances the filters match, on every page")
    total: int = Field(description="instances of the app, whatever the filters")
    by_status: dict[str, int] = Field(description="every instance of the app, per status")
    by_version: dict[str, int] = Field(
        description="the app's instances in the cluster, per version they run"
    )


class ScaleOutIn(Strict):
    count: int = Field(ge=1, le=10_000)
    template: Version | None = Field(default=None, description="default: the app's default")


class InstanceIdsIn(Strict):
    instance_ids: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=10_000)


class ScaleInIn(Strict):
    instance_ids: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=10_000)


class UpgradeIn(Strict):
    template: Version
    instance_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=10_000, description="the instances to upgrade, in this order"
    )
    all: bool = Field(default=False, description="every instance, in id order (rolling)")
    max_unavailable: int = Field(default=1, ge=1, le=10_000)
    allow_pending: bool = Field(
        default=False,
        description="recreating upgrades: go on even if one instance of the target fits no node "
        "of the cluster even when empty (422 otherwise); the upgraded instances wait for one",
    )

    @model_validator(mode="after")
    def _which(self) -> UpgradeIn:
        if self.all == (self.instance_ids is not None):
            raise ValueError("give instance_ids or all=true (one of them)")
        return self


class BlacklistOut(Strict):
    node: str
    failures: int
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime


class EndpointOut(Strict):
    instance: str
    ip: str
    node: str
    ready: bool


class ServiceOut(Strict):
    name: str
    cluster_ip: str
    domain: str
    ports: list[PortIn]
    endpoints: list[EndpointOut]
    ready_endpoints: int


class ExecIn(Strict):
    command: list[Arg] = Field(min_length=1, max_length=64)
    timeout_s: float = Field(default=10, gt=0, le=300)


class ExecOut(Strict):
    exit_code: int
    stdout: str
    stderr: str


class LogLineOut(Strict):
    # Two API models are named LogLineOut: this one (an instance's recent lines) and the log
    # store's line (``gaia.api.routes.logs``). OpenAPI tells same-named models apart by module,
    # so the component name published before the schemas moved here,
    # ``gaia__api__app_schemas__LogLineOut``, is kept: generated clients must not see a rename.
    __module__ = "gaia.api.app_schemas"

    at: dt.datetime
    stream: str
    text: str


# its annotations are resolved here, not in the module it names
LogLineOut.model_rebuild(_types_namespace={"dt": dt})
