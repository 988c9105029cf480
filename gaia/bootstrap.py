"""First start: the first platform admin, and the demo business, sim cluster and app.

The admin is created only when no user exists, from ``GAIA_ADMIN_PASSWORD`` or a generated
password that the caller prints once (it is stored only as an argon2 hash). The demo objects are
created only on the first start and only when asked for, so deleting them sticks.

Replicas starting together on one empty database (docs/ha.md) would all see "no user yet" and
all insert one: each check-then-insert runs in a transaction that first takes a lock every
replica takes (PostgreSQL: a transaction-level advisory lock; SQLite: its write lock, which
every write transaction takes up front), so the second replica counts the first one's admin.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gaia.domain.rbac import Role
from gaia.domain.resources import ResourceVector
from gaia.monitor.alerting.builtin_rules import BUILTIN_RULES, cluster_policy
from gaia.providers.sim import validate_sim_spec
from gaia.security import generate_password, hash_password
from gaia.store.apps import hold_app_quota
from gaia.store.database import Database
from gaia.store.models import (
    AlertPolicy,
    App,
    AppTemplate,
    Business,
    Cluster,
    InstanceConfig,
    Membership,
    Quota,
    User,
    utcnow,
)

DEMO_BUSINESS = "demo"
DEMO_CLUSTER = "sim-demo"
# pg_advisory_xact_lock's key for the first-start transactions ("gaia" and 1; the migrations'
# lock is "gaia" alone, gaia.store.migrate)
FIRST_START_LOCK = 0x67616961_00000001


def _one_replica_at_a_time(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_START_LOCK})


def ensure_admin(db: Database, *, password: str = "") -> str | None:
    """Create user ``admin`` if there are no users; returns the password if one was set now."""
    with db.write_session() as session:
        _one_replica_at_a_time(session)
        if session.scalar(select(func.count(User.id))):
            return None
        chosen = password or generate_password()
        session.add(
            User(
                username="admin",
                display_name="Platform administrator",
                password_hash=hash_password(chosen),
                is_platform_admin=True,
                created_at=utcnow(),
            )
        )
        return chosen


def ensure_demo(db: Database) -> bool:
    """A demo business with a quota in a demo sim cluster; only into an empty platform."""
    with db.write_session() as session:
        _one_replica_at_a_time(session)
        if session.scalar(select(func.count(Business.id))) or session.scalar(
            select(func.count(Cluster.id))
        ):
            return False
        now = utcnow()
        cluster = Cluster(
            name=DEMO_CLUSTER,
            kind="sim",
            region="ap-beijing",
            zone="ap-beijing-1",
            labels={"env": "demo"},
            description="simulated cluster for trying Gaia out",
            sim_spec=validate_sim_spec({"nodes": 4, "gpus": 8}),
            created_at=now,
            updated_at=now,
        )
        business = Business(
            name=DEMO_BUSINESS,
            display_name="Demo business",
            description="created on first start; delete it when you no longer need it",
            created_at=now,
        )
        session.add_all([cluster, business])
        session.flush()
        quota = Quota(business_id=business.id, cluster_id=cluster.id, updated_at=now)
        quota.set_hard(
            ResourceVector.from_api(
                {
                    "cpu": 64,
                    "memory": 256 * 1024,
                    "local_disk": 1000,
                    "cloud_disk": 2000,
                    "shared_disk": 500,
                    "bandwidth": 10000,
                    "gpu": 16,
                    "gpu_memory": 16 * 32768,
                }
            )
        )
        quota.set_used(ResourceVector())
        session.add(quota)
        shape = InstanceConfig(
            scope="platform",
            name="gpu-4c10g-2gpu",
            description="4 cores, 10 GB memory, 4 GB disk, 10 Mbit/s, 2 GPUs",
            created_at=now,
        )
        shape.set_amounts(
            ResourceVector.from_api(
                {
                    "cpu": 4,
                    "memory": 10240,
                    "local_disk": 4,
                    "bandwidth": 10,
                    "gpu": 2,
                    "gpu_memory": 2 * 16384,
                }
            )
        )
        session.add(shape)
        _demo_app(session, business=business, cluster=cluster, now=now)
        _demo_alerts(session, business=business, cluster=cluster, now=now)
        admin = session.scalars(select(User).where(User.username == "admin")).one_or_none()
        if admin is not None:
            session.add(
                Membership(
                    business_id=business.id,
                    user_id=admin.id,
                    role=Role.BUSINESS_ADMIN.value,
                    created_at=now,
                )
            )
        return True


DEMO_APP = "hello"


def _demo_app(session: Session, *, business: Business, cluster: Cluster, now: dt.datetime) -> None:
    """A small web app with two versions, so a newcomer can try a gray upgrade at once."""
    resources = ResourceVector.from_api({"cpu": 0.5, "memory": 512, "bandwidth": 10})
    common: dict[str, Any] = {
        "command": [],
        "args": [],
        "env": {"GREETING": "hello from gaia"},
        "ports": [{"port": 8080, "name": "http", "protocol": "TCP"}],
        "readiness": {"kind": "http", "path": "/healthz", "port": 8080, "period_s": 5},
        "liveness": {"kind": "http", "path": "/healthz", "port": 8080, "period_s": 10},
        "configs": [],
        "network_mode": "overlay",
        "profile": "web",
        "node_selector": {},
        "resources": resources.as_internal(),
    }
    app = App(
        business_id=business.id,
        cluster_id=cluster.id,
        name=DEMO_APP,
        description="demo web service: try a gray upgrade of a few instances to v2",
        default_template="v1",
        instances={str(i): "v1" for i in range(4)},
        next_instance_id=4,
        state="running",
        created_by="gaia",
        created_at=now,
        updated_at=now,
    )
    session.add(app)
    session.flush()
    for version in ("v1", "v2"):
        session.add(
            AppTemplate(
                app_id=app.id,
                name=version,
                spec={**common, "image": f"demo/hello:{version}"},
                created_by="gaia",
                created_at=now,
            )
        )
    session.flush()
    hold_app_quota(
        session, business=business, cluster=cluster, app_id=app.id, amount=resources.scaled(4)
    )


def _demo_alerts(
    session: Session, *, business: Business, cluster: Cluster, now: dt.datetime
) -> None:
    """The built-in rules on the demo cluster and a CPU policy on the demo app (no channels:
    records only), so ``{"kind": "load", ...}`` on the demo cluster shows an alert fire."""
    for rule in BUILTIN_RULES:
        session.add(cluster_policy(rule, cluster.name, created_by="gaia", now=now))
    session.add(
        AlertPolicy(
            business_id=business.id,
            name=f"{DEMO_APP} CPU high",
            scope="app",
            matchers={"business": business.name, "app": DEMO_APP},
            metric="gaia_app_cpu_usage_percent",
            comparison=">",
            threshold=80.0,
            for_seconds=60,
            severity="warning",
            repeat_seconds=0,
            enabled=True,
            receiver_ids=[],
            group_ids=[],
            channel_ids=[],
            templates={},
            summary=f"{DEMO_APP} uses over 80% of its CPU request",
            created_by="gaia",
            created_at=now,
            updated_at=now,
        )
    )
