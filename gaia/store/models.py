"""ORM models: what the platform owns (docs/architecture.md, the store).

Runtime state of clusters (nodes, instances, IPs) is *not* here: the cluster is the truth for it
and controllers read it through the provider. Every schema change comes with an Alembic migration
in ``gaia/store/migrations/versions``; ``tests/store/test_migrations.py`` fails when the two
disagree.

Resource amounts are integer columns in internal units (``gaia.domain.resources``); a quota row
carries the hard limits and the running ``used_*`` counters that admission updates under a lock.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
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


# Row ids are 32-bit INTEGER columns: an id above this is no row's, and PostgreSQL refuses to
# compare one with an INTEGER column ("integer out of range") instead of finding nothing.
ROW_ID_MAX = 2**31 - 1


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
    # bytes its registry namespace may hold (None: the platform's default,
    # GAIA_REGISTRY_QUOTA_BYTES)
    registry_quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


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
    # How Gaia reaches the cluster's etcd for snapshots (gaia.store.backup.etcd): Fernet
    # ciphertext of {"endpoints", "ca", "cert", "key"}; None: no etcd access, no snapshot.
    etcd_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sim_spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    health: Mapped[str] = mapped_column(String(16), default="Unknown")
    health_message: Mapped[str] = mapped_column(Text, default="")
    health_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    health_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Node counts as of the last successful probe (None: never seen).
    node_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ready_node_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Random per registration, part of every key derived from the cluster (agent, node and
    # IPAM tokens, ticket keys): a cluster registered again, even under a reused id, is a new
    # one to them. Empty for clusters registered before migration 0016 (their keys unchanged).
    key_salt: Mapped[str] = mapped_column(
        String(32), default=lambda: secrets.token_hex(8), server_default=""
    )
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
    # what the call changed of what the app controller reads (``gaia.store.apps.changed_apps``):
    # "<business>/<app>" one app, "" nothing (a failed call, a login, an alert rule...), "*"
    # anything else; None: written before revision 0017 (read as "*")
    touches: Mapped[str | None] = mapped_column(String(110), nullable=True)


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
    upgrade edits entries of this map batch by batch (``AppUpgrade``).
    """

    __tablename__ = "apps"
    __table_args__ = (
        UniqueConstraint("business_id", "name"),
        # one app per domain (migration 0011): the access layer routes it
        Index(
            "ix_apps_domain_unique",
            "domain",
            unique=True,
            sqlite_where=text("domain <> ''"),
            postgresql_where=text("domain <> ''"),
        ),
    )

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
    # ids of the map stopped one by one: kept in the map (id and version), not running, their
    # quota given back; ``start`` runs them again
    stopped: Mapped[list[int]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    next_instance_id: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="running")  # "running" | "stopped"
    domain: Mapped[str] = mapped_column(String(253), default="")
    # what the platform may pull onto the app's nodes ahead of time (``gaia.domain.upgrades.
    # Prepull``; migration 0018)
    prepull: Mapped[str] = mapped_column(
        String(16), default="upgrades", server_default=text("'upgrades'")
    )
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


class AppUpgrade(Base):
    """A gray upgrade (a rolling one when it takes every instance in id order): move
    ``instance_ids`` to ``target`` in batches of at most ``max_unavailable``; ``previous``
    remembers each instance's template for roll back. The plan and its states are
    ``gaia.domain.upgrades``; migration 0006 renamed the table from ``app_rollouts``."""

    __tablename__ = "app_upgrades"

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


# ---------------------------------------------------------------- alerting
#
# Owner: ``business_id`` set for a business's channels, receivers, policies and silences;
# NULL for the platform's own (cluster and node policies, built-in rules), which platform admins
# manage. Lists of ids (a policy's receivers, groups, channels) are JSON: deleting a channel or a
# receiver that a policy still names is refused with the policies' names.


class AlertChannel(Base):
    __tablename__ = "alert_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))  # "email" | "sms" | "wecom" | "webhook"
    # Fernet ciphertext of the channel's JSON config (credentials included); never logged.
    config_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=60)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertReceiver(Base):
    """A person (or a duty phone) notifications go to: addresses per channel kind."""

    __tablename__ = "alert_receivers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")  # E.164, SMS and WeCom mentions
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertReceiverGroup(Base):
    __tablename__ = "alert_receiver_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    receiver_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertPolicy(Base):
    __tablename__ = "alert_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))  # gaia.domain.alerts.ScopeKind
    matchers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    metric: Mapped[str] = mapped_column(String(200))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    for_seconds: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    repeat_seconds: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    receiver_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    group_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    channel_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # per channel kind: {"subject": "...", "body": "..."} (jinja2, sandboxed)
    templates: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    builtin_key: Mapped[str] = mapped_column(String(100), default="")
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertSilence(Base):
    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), nullable=True, index=True
    )
    matchers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AlertRecord(Base):
    """One alert from firing to resolved. At most one firing record per fingerprint (a partial
    unique index), so two evaluators, or the platform and Alertmanager, cannot fire it twice."""

    __tablename__ = "alert_records"
    __table_args__ = (
        Index(
            "uq_alert_records_firing_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text("status = 'firing'"),
            postgresql_where=text("status = 'firing'"),
        ),
        Index("ix_alert_records_business_id_id", "business_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    business_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_policies.id", ondelete="SET NULL"), nullable=True, index=True
    )
    policy_name: Mapped[str] = mapped_column(String(100))
    fingerprint: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True)  # "firing" | "resolved"
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    resolved_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    comparison: Mapped[str] = mapped_column(String(2), default="")
    metric: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(16), default="platform")  # or "alertmanager"
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    fired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_notified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    repeats: Mapped[int] = mapped_column(Integer, default=0)
    silenced_by: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AlertNotification(Base):
    """The outbox: one notification of one record event to one receiver over one channel.

    Queued in the same transaction as the record change that causes it, so a crash cannot lose
    it; the delivery loop claims due rows (``sending`` with a lease), sends, and writes the result.
    A row still ``sending`` after its lease (the process died mid-send) is sent again with the same
    idempotency key: delivery is at least once, and receivers can drop the duplicate.
    """

    __tablename__ = "alert_notifications"
    __table_args__ = (
        Index("ix_alert_notifications_due", "state", "next_attempt_at"),
        Index("ix_alert_notifications_record_id", "record_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    record_id: Mapped[int] = mapped_column(
        ForeignKey("alert_records.id", ondelete="CASCADE"),
    )
    business_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    event: Mapped[str] = mapped_column(String(16))  # "firing" | "repeat" | "resolved"
    channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_channels.id", ondelete="SET NULL"), nullable=True
    )
    channel_name: Mapped[str] = mapped_column(String(63))
    channel_kind: Mapped[str] = mapped_column(String(16))
    # "" for a channel the policy names itself (channel_ids): the whole channel, no receiver
    receiver: Mapped[str] = mapped_column(String(63), default="")
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    # pending | sending | retrying | sent | failed
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    receipt: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LoginThrottleBucket(Base):
    """Failed logins of one client address, for one username or (``account == "*"``) for all.

    A leaky bucket (``gaia.store.throttle``): ``level`` failures as of ``updated_at``, draining
    at a steady rate. The username is kept only as its SHA-256: people type passwords into the
    username field, and this table must not become a list of them.
    """

    __tablename__ = "login_throttle"

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class RegistryRepository(Base):
    """A repository of Gaia's image registry, first seen in a push notification
    (``gaia.store.registry``). ``namespace`` is ``u/<user>``, ``public`` or a business's name;
    repositories outlive a deleted business (their images stay until deleted on purpose)."""

    __tablename__ = "registry_repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    namespace: Mapped[str] = mapped_column(String(127), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # personal | public | business
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RegistryTag(Base):
    """One tag of a repository: the manifest it names now, its size (the manifest and every
    blob it references) and who pushed it when."""

    __tablename__ = "registry_tags"
    __table_args__ = (UniqueConstraint("repository_id", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("registry_repositories.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(71))
    media_type: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # [[digest, size], ...] of the blobs the manifest references: the namespace's usage counts
    # each distinct blob once
    blobs: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)
    pushed_by: Mapped[str] = mapped_column(String(255), default="")
    pushed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


# ---------------------------------------------------------------- pipelines (CI/CD)


class Pipeline(Base):
    """A business's build pipeline: clone ``git_url`` at ``branch``, build ``dockerfile`` in
    ``context`` with ``build_args``, push to ``repository`` (in the business's registry
    namespace) and, when ``deploy_app`` is set, gray-upgrade its instances to the new image.

    ``git_credentials_encrypted`` and ``webhook_secret_encrypted`` are Fernet ciphertexts
    (``platform.secrets``): written through the API, never returned nor logged.
    ``deploy_instances`` None means every instance of the app.
    """

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("business_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    git_url: Mapped[str] = mapped_column(String(2048))
    branch: Mapped[str] = mapped_column(String(255), default="main")
    dockerfile: Mapped[str] = mapped_column(String(1024), default="Dockerfile")
    context: Mapped[str] = mapped_column(String(1024), default=".")
    build_args: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    repository: Mapped[str] = mapped_column(String(255))
    git_credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    deploy_app: Mapped[str | None] = mapped_column(String(40), nullable=True)
    deploy_instances: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    schedule_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    webhook_secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    next_run_number: Mapped[int] = mapped_column(Integer, default=1)
    last_scheduled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PipelineRun(Base):
    """One run of a pipeline, numbered per pipeline. The runner loop claims ``queued`` rows
    (``running`` with a lease, renewed while the build goes on), so several replicas never build
    one run twice; ``cancel_requested`` asks the replica that holds it to stop the build."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "number"),
        Index("ix_pipeline_runs_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), index=True
    )
    business_id: Mapped[int] = mapped_column(Integer, index=True)
    number: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))  # manual | webhook | schedule
    started_by: Mapped[str] = mapped_column(String(63), default="")
    # queued | running | succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # [{"name", "state", "started_at", "finished_at", "duration", "exit_code"}, ...]
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # {"step", "instruction", "line", "reason"} when failed
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    commit: Mapped[str] = mapped_column(String(64), default="")
    image: Mapped[str] = mapped_column(String(512), default="")
    digest: Mapped[str] = mapped_column(String(71), default="")
    upgrade_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_lines: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PipelineRunLog(Base):
    """The (redacted) log lines of a run, in order; at most ``MAX_LOG_LINES`` per run, each cut
    to ``MAX_LOG_LINE_BYTES`` (gaia.store.pipelines)."""

    __tablename__ = "pipeline_run_logs"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[str] = mapped_column(String(16))
    line: Mapped[str] = mapped_column(Text)


# ---------------------------------------------------------------- floating IPs (issue 19)


class FloatingIpPool(Base):
    """A range of one subnet of a cluster's underlay, in one zone, that Gaia hands out as
    floating IPs (``gaia.store.network``; the rules in ``gaia.domain.network``). One pool per
    subnet and cluster: the subnet is how a node's CNI plugin names the pool it draws from."""

    __tablename__ = "floating_ip_pools"
    __table_args__ = (
        UniqueConstraint("cluster_id", "name"),
        UniqueConstraint("cluster_id", "subnet", name="uq_floating_ip_pools_subnet"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    subnet: Mapped[str] = mapped_column(String(18))  # CIDR, e.g. 10.0.3.0/24
    zone: Mapped[str] = mapped_column(String(63), default="")
    gateway: Mapped[str] = mapped_column(String(15))
    range_start: Mapped[str] = mapped_column(String(15))
    range_end: Mapped[str] = mapped_column(String(15))
    created_by: Mapped[str] = mapped_column(String(63), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NetworkAttachment(Base):
    """An instance's network as its node's CNI plugin set it up (``pod``, in its business's
    namespace): the floating IP of a pool (``mode`` floating-ip) or the node address and mapped
    host ports of a NAT instance (``mode`` nat, no pool).

    Two unique constraints make the database, not a lock, the judge: an address is given once
    per pool (rows without a pool never collide: NULLs are distinct), and an instance has one
    attachment per cluster. ``container_id`` is the sandbox that holds it now (empty between a
    CNI DEL and the next ADD); ``policy`` the app's release policy when it was last added
    (empty: a sandbox of no app, or a NAT one: gone at its DEL)."""

    __tablename__ = "network_attachments"
    __table_args__ = (
        UniqueConstraint("pool_id", "ip"),
        UniqueConstraint("cluster_id", "business_id", "pod", name="uq_network_attachments_owner"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    pod: Mapped[str] = mapped_column(String(253))
    mode: Mapped[str] = mapped_column(String(16))  # floating-ip | nat
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("floating_ip_pools.id", ondelete="CASCADE"), index=True, nullable=True
    )
    ip: Mapped[str] = mapped_column(String(15))
    policy: Mapped[str] = mapped_column(String(16), default="")
    node: Mapped[str] = mapped_column(String(253), default="")
    container_id: Mapped[str] = mapped_column(String(128), default="")
    # NAT: {"<container port>/<protocol>": host port}, as the plugin mapped them
    ports: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LeaderLease(Base):
    """Which replica leads a group of background loops (``gaia.store.leases``), until
    ``expires_at``; ``epoch`` grows at every change of leader and fences a deposed one."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    epoch: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    acquired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class PlatformReplica(Base):
    """One running Gaia replica as it last reported itself (``gaia.store.replicas``): what it
    runs, where, and its loops' state; ``restart_loops`` holds the loops an administrator asked
    it to restart, which it takes at its next heartbeat."""

    __tablename__ = "platform_replicas"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(255))
    schema_revision: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    loops: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    restart_loops: Mapped[list[str]] = mapped_column(JSON, default=list)


class Backup(Base):
    """One backup of the platform (``gaia.store.backups``): asked for (``Pending``), taken by the
    ``controllers`` leader (``Running``, with the step it is at in ``progress``), then
    ``Succeeded`` with its archive's file and size, or ``Failed`` with why."""

    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # "schedule" | "api"
    state: Mapped[str] = mapped_column(String(16), default="Pending")
    progress: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    file_name: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    parts: Mapped[list[str]] = mapped_column(JSON, default=list)
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# ---------------------------------------------------------------- the shared log store
# Written and read by ``gaia.monitor.logs.postgres`` (raw SQL, one statement per batch) when the
# platform database is PostgreSQL; on SQLite these tables stay empty and the lines live in
# <data_dir>/logs.db (``gaia.monitor.logs.store``). Why one table with indexes and not day
# partitions: see the docstring of ``gaia.monitor.logs.postgres``.


class LogGroupRow(Base):
    """An app of a business in a cluster (``kind`` instance), or the platform (``kind`` system)."""

    __tablename__ = "log_groups"
    __table_args__ = (UniqueConstraint("kind", "cluster", "namespace", "app"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    cluster: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(255))
    app: Mapped[str] = mapped_column(String(255))


class LogSourceRow(Base):
    """One instance of a group; ``lines`` counts its lines (kept by the writers, under the
    store's advisory lock), so the per-source and total bounds need no ``count(*)``."""

    __tablename__ = "log_sources"
    __table_args__ = (UniqueConstraint("grp", "instance"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    grp: Mapped[int] = mapped_column(BigInteger, ForeignKey("log_groups.id", ondelete="CASCADE"))
    instance: Mapped[str] = mapped_column(String(255))
    lines: Mapped[int] = mapped_column(BigInteger, default=0)


class LogLineRow(Base):
    """A line: ``at`` in microseconds since the epoch (UTC), as the SQLite store and the
    cursors hold it; ``level`` a ``logging`` level number (0 for container lines)."""

    __tablename__ = "log_lines"
    __table_args__ = (
        # a page of one instance / of one app walks one of these backwards
        Index("ix_log_lines_source_at", "source", "at", "id"),
        Index("ix_log_lines_grp_at", "grp", "at", "id"),
        # retention by age: lines arrive roughly in time order, so a BRIN index (a few pages)
        # finds the old blocks without a third B-tree to update on every insert
        Index("ix_log_lines_at", "at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    grp: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[int] = mapped_column(BigInteger)
    stream: Mapped[str] = mapped_column(String(16))
    level: Mapped[int] = mapped_column(Integer)
    logger: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
