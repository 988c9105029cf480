"""ORM models: what the platform owns (ARCHITECTURE.md, "platform store").

Runtime state of clusters (nodes, instances, IPs) is *not* here: the cluster is the truth for it
and controllers read it through the provider. Every schema change comes with an Alembic migration
in ``gaia/store/migrations/versions``; ``tests/test_migrations.py`` fails when the two disagree.

Resource amounts are integer columns in internal units (``gaia.domain.resources``); a quota row
carries the hard limits and the running ``used_*`` counters that admission updates under a lock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from gaia.domain.resources import DIMENSION_NAMES, ResourceVector

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    is_platform_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(16), default="en")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Token(Base):
    """A session (from login, expires) or an API token (long-lived, named); both revocable."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "session" | "api"
    name: Mapped[str] = mapped_column(String(63), default="")
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Business(Base):
    __tablename__ = "businesses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("business_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "sim" | "kubernetes"
    region: Mapped[str] = mapped_column(String(63), default="")
    zone: Mapped[str] = mapped_column(String(63), default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    # Fernet ciphertext; never returned by the API, logged or recorded.
    kubeconfig_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sim_spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    health: Mapped[str] = mapped_column(String(16), default="Unknown")
    health_message: Mapped[str] = mapped_column(Text, default="")
    health_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    health_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Node counts as of the last successful probe (None: never seen).
    node_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ready_node_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ResourceAmounts:
    """The eight quota dimensions as columns, in internal units (``gaia.domain.resources``)."""

    cpu: Mapped[int] = mapped_column(BigInteger, default=0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    local_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    cloud_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    shared_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    bandwidth: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu_memory: Mapped[int] = mapped_column(BigInteger, default=0)

    def amounts(self) -> ResourceVector:
        return ResourceVector(**{n: getattr(self, n) for n in DIMENSION_NAMES})

    def set_amounts(self, vector: ResourceVector) -> None:
        for n in DIMENSION_NAMES:
            setattr(self, n, getattr(vector, n))


class Quota(Base):
    """A business's hard limits in one cluster and what is reserved or in use against them."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("business_id", "cluster_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    cluster_id: Mapped[int] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    hard_cpu: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_local_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_cloud_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_shared_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_bandwidth: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_gpu: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_gpu_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    used_cpu: Mapped[int] = mapped_column(BigInteger, default=0)
    used_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    used_local_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    used_cloud_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    used_shared_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    used_bandwidth: Mapped[int] = mapped_column(BigInteger, default=0)
    used_gpu: Mapped[int] = mapped_column(BigInteger, default=0)
    used_gpu_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def hard(self) -> ResourceVector:
        return ResourceVector(**{n: getattr(self, f"hard_{n}") for n in DIMENSION_NAMES})

    def used(self) -> ResourceVector:
        return ResourceVector(**{n: getattr(self, f"used_{n}") for n in DIMENSION_NAMES})

    def set_hard(self, vector: ResourceVector) -> None:
        for n in DIMENSION_NAMES:
            setattr(self, f"hard_{n}", getattr(vector, n))

    def set_used(self, vector: ResourceVector) -> None:
        for n in DIMENSION_NAMES:
            setattr(self, f"used_{n}", getattr(vector, n))


class QuotaReservation(ResourceAmounts, Base):
    """Resources held against a quota for one owner (an instance, a disk, ...).

    ``pending`` reservations are taken before the work starts and expire if nobody confirms them
    (a crashed request must not leak quota); ``committed`` ones last until released.
    """

    __tablename__ = "quota_reservations"
    __table_args__ = (UniqueConstraint("quota_id", "owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    quota_id: Mapped[int] = mapped_column(ForeignKey("quotas.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))  # "pending" | "committed"
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class InstanceConfig(ResourceAmounts, Base):
    """A named instance shape; ``business_id`` NULL means offered platform-wide."""

    __tablename__ = "instance_configs"
    __table_args__ = (UniqueConstraint("scope", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))  # "platform" | "business:<id>"
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OperationRecord(Base):
    """Who did what, when, with what result. Append-only: no API updates or deletes one."""

    __tablename__ = "operation_records"
    __table_args__ = (
        Index("ix_operation_records_business_id_id", "business_id", "id"),
        Index("ix_operation_records_actor_id", "actor", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(63))
    business_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    business: Mapped[str] = mapped_column(String(63), default="")
    cluster: Mapped[str] = mapped_column(String(63), default="")
    action: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    target: Mapped[str] = mapped_column(String(500), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(String(16))  # "success" | "failure"
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(String(100), default="")


class Event(Base):
    """A Kubernetes-style event; repeats of the same (object, reason, message) are aggregated."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_business_id_last_seen", "business_id", "last_seen"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    business_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    business: Mapped[str] = mapped_column(String(63), default="")
    cluster: Mapped[str] = mapped_column(String(63), default="")
    object_kind: Mapped[str] = mapped_column(String(63))
    object_name: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))  # "Normal" | "Warning"
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(63), default="")


# ---------------------------------------------------------------- applications


class App(Base):
    """An application (the TApp model): a pool of templates and a map instance id -> template.

    ``instances`` is the desired state the app controller drives the cluster toward: JSON
    ``{"0": "v7", "1": "v7", ...}``. Ids are stable and never reused while the app exists
    (``next_instance_id``), so ``<app>-<id>`` names one instance for its whole life. A gray
    upgrade edits entries of this map batch by batch (``AppRollout``).
    """

    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("business_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    cluster_id: Mapped[int] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    default_template: Mapped[str] = mapped_column(String(63))
    instances: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    next_instance_id: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="running")  # "running" | "stopped"
    domain: Mapped[str] = mapped_column(String(253), default="")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppTemplate(Base):
    """One version of an app: image, command, env, resources, probes, ... (``spec`` is the
    validated document of ``gaia.domain.apps.TemplateSpec``). Templates are immutable: a new
    version is a new template."""

    __tablename__ = "app_templates"
    __table_args__ = (UniqueConstraint("app_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppRollout(Base):
    """A gray (or rolling) upgrade: move ``instance_ids`` to ``target`` in batches of at most
    ``max_unavailable``; ``previous`` remembers each instance's template for roll back."""

    __tablename__ = "app_rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(63))
    instance_ids: Mapped[list[int]] = mapped_column(JSON)
    previous: Mapped[dict[str, str]] = mapped_column(JSON)
    max_unavailable: Mapped[int] = mapped_column(Integer, default=1)
    # "Running" | "Paused" | "Succeeded" | "RollingBack" | "RolledBack"
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class InstanceFailure(Base):
    """Each observed failure of an instance, once (the restart back-off and the blacklist
    count these; the instance list shows the last one)."""

    __tablename__ = "instance_failures"
    __table_args__ = (UniqueConstraint("app_id", "instance_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    instance_id: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(253))
    cause: Mapped[str] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AppBlacklist(Base):
    """A node an app is kept off because its instances kept failing there (expires)."""

    __tablename__ = "app_blacklist"
    __table_args__ = (UniqueConstraint("app_id", "node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    node: Mapped[str] = mapped_column(String(253))
    failures: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ConfigItem(Base):
    """A ConfigMap (``secret`` False, ``data`` in clear) or a Secret (``data_encrypted``: the
    Fernet-encrypted JSON of its data; ``data`` then holds only the key names)."""

    __tablename__ = "config_items"
    __table_args__ = (UniqueConstraint("business_id", "secret", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(253))
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    data_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GpuModelLimit(Base):
    """How many cards of one GPU model a business may hold in a cluster (heterogeneous GPUs:
    the quota's ``gpu`` counts every model; this caps one of them)."""

    __tablename__ = "gpu_model_limits"
    __table_args__ = (UniqueConstraint("business_id", "cluster_id", "model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(63))
    gpu: Mapped[int] = mapped_column(BigInteger)  # hundredths of a card
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
