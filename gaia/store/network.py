"""Floating-IP pools and instances' network attachments (issue 19; rules in gaia.domain.network).

Flows in: platform admins' pool edits (the API), and the nodes' CNI plugin (``gaia-cni``,
through the API's node routes) adding and deleting sandboxes. Flows out: the address an
instance gets, what the API shows (an app's addresses and policies, a cluster's pools and how
full they are), and the subnets the scheduler may place an instance in (``subnets_for``).

**No address is given twice**, whatever runs at once: ``attach`` picks a free address and
inserts it inside a savepoint, and the database's unique constraints (``(pool, ip)`` and
``(cluster, business, pod)``) refuse the loser of a race; the loser re-reads and tries the
next free address (or finds the instance's own row, when the race was two ADDs of one
instance). On SQLite writers are serialised anyway (``write_session`` begins IMMEDIATE); on
PostgreSQL the constraint is the only judge, which the concurrency tests exercise.

**An instance keeps its address** across sandboxes and nodes: the row is keyed by the pod's
name, not the sandbox; a DEL only clears ``container_id`` (and only the holder's DEL does: a late
DEL from the node an instance left does not take the address from its new node). Rows are
freed by ``sweep`` according to each one's release policy.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, not_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.network import (
    AllocationFacts,
    InstanceName,
    IpPool,
    NetworkMode,
    ReleasePolicy,
    parse_pool,
    policy_of,
    releasable,
)
from gaia.store.models import (
    App,
    AppTemplate,
    Business,
    Cluster,
    FloatingIpPool,
    NetworkAttachment,
    utcnow,
)
from gaia.store.paging import page_of

# Tries of ``attach`` before it gives up: each lost race means another ADD took an address,
# so this many in a row happens only when the pool runs out under our feet.
MAX_ATTACH_TRIES = 64


class PoolExhausted(Conflict):
    code = "pool_exhausted"


class InstanceBusy(Conflict):
    """Another sandbox of the same instance on the same node still holds its address."""

    code = "instance_busy"


# ---------------------------------------------------------------- pools


def create_pool(
    session: Session,
    *,
    cluster: Cluster,
    name: str,
    subnet: str,
    zone: str = "",
    gateway: str | None = None,
    range_start: str | None = None,
    range_end: str | None = None,
    actor: str = "",
) -> FloatingIpPool:
    pool = parse_pool(subnet=subnet, gateway=gateway, first=range_start, last=range_end)
    for other in session.scalars(
        select(FloatingIpPool).where(FloatingIpPool.cluster_id == cluster.id)
    ):
        if other.name == name:
            raise Conflict(f"cluster '{cluster.name}' already has a pool named '{name}'")
        if ipaddress.IPv4Network(other.subnet).overlaps(pool.subnet):
            raise Conflict(
                f"subnet {pool.subnet} overlaps pool '{other.name}' ({other.subnet}) of cluster "
                f"'{cluster.name}'; one pool per subnet",
                details={"field": "subnet", "pool": other.name},
            )
    row = FloatingIpPool(
        cluster_id=cluster.id,
        name=name,
        subnet=str(pool.subnet),
        zone=zone,
        gateway=str(pool.gateway),
        range_start=str(pool.first),
        range_end=str(pool.last),
        created_by=actor,
    )
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name or subnet
        raise Conflict(f"pool '{name}' or subnet {pool.subnet} was just created") from exc
    return row


def find_pool(session: Session, *, cluster: Cluster, name: str) -> FloatingIpPool:
    row = session.scalars(
        select(FloatingIpPool).where(
            FloatingIpPool.cluster_id == cluster.id, FloatingIpPool.name == name
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"cluster '{cluster.name}' has no floating-IP pool '{name}'")
    return row


def pools_of(session: Session, *, cluster: Cluster) -> list[FloatingIpPool]:
    return list(
        session.scalars(
            select(FloatingIpPool)
            .where(FloatingIpPool.cluster_id == cluster.id)
            .order_by(FloatingIpPool.name)
        )
    )


def used_counts(session: Session, pool_ids: Sequence[int]) -> dict[int, int]:
    if not pool_ids:
        return {}
    rows = session.execute(
        select(NetworkAttachment.pool_id, func.count())
        .where(NetworkAttachment.pool_id.in_(pool_ids))
        .group_by(NetworkAttachment.pool_id)
    )
    return {int(pool_id): int(count) for pool_id, count in rows if pool_id is not None}


def delete_pool(session: Session, *, pool: FloatingIpPool) -> None:
    used = used_counts(session, [pool.id]).get(pool.id, 0)
    if used:
        raise Conflict(
            f"pool '{pool.name}' still has {used} address(es) given to instances; delete those "
            "allocations (or the apps) first",
            details={"allocations": used},
        )
    session.delete(pool)


def subnets_for(
    session: Session, *, cluster_id: int, business_id: int, pod: str, zone: str = ""
) -> frozenset[str]:
    """The subnets a floating-IP instance may be placed in: its own address's, when it has one
    (it keeps it), else every subnet of the cluster with a pool (in ``zone``, when given) that
    still has a free address. Empty: nowhere."""
    own = session.execute(
        select(FloatingIpPool.subnet)
        .join(NetworkAttachment, NetworkAttachment.pool_id == FloatingIpPool.id)
        .where(
            NetworkAttachment.cluster_id == cluster_id,
            NetworkAttachment.business_id == business_id,
            NetworkAttachment.pod == pod,
        )
    ).scalar_one_or_none()
    if own is not None:
        return frozenset({own})
    stmt = select(FloatingIpPool).where(FloatingIpPool.cluster_id == cluster_id)
    if zone:
        stmt = stmt.where(FloatingIpPool.zone == zone)
    pools = list(session.scalars(stmt))
    used = used_counts(session, [p.id for p in pools])
    return frozenset(p.subnet for p in pools if used.get(p.id, 0) < _pool_of(p).size)


def floating_view(
    session: Session, *, cluster_id: int, business_id: int, app: str
) -> tuple[dict[int, str], frozenset[tuple[str, str]]]:
    """For placing a floating-IP app's instances: instance id -> the subnet of the address it
    keeps, and the (subnet, zone) of the cluster's pools with a free address."""
    kept: dict[int, str] = {}
    rows = session.execute(
        select(NetworkAttachment.pod, FloatingIpPool.subnet)
        .join(FloatingIpPool, NetworkAttachment.pool_id == FloatingIpPool.id)
        .where(
            NetworkAttachment.cluster_id == cluster_id,
            NetworkAttachment.business_id == business_id,
            NetworkAttachment.pod.startswith(f"{app}-", autoescape=True),
        )
    )
    for pod, subnet in rows:
        name = InstanceName.parse(pod)
        if name.app == app and name.instance is not None:
            kept[name.instance] = subnet
    pools = list(
        session.scalars(select(FloatingIpPool).where(FloatingIpPool.cluster_id == cluster_id))
    )
    used = used_counts(session, [p.id for p in pools])
    free = frozenset((p.subnet, p.zone) for p in pools if used.get(p.id, 0) < _pool_of(p).size)
    return kept, free


def _pool_of(row: FloatingIpPool) -> IpPool:
    return parse_pool(
        subnet=row.subnet, gateway=row.gateway, first=row.range_start, last=row.range_end
    )


# ---------------------------------------------------------------- attachments


@dataclass(frozen=True, slots=True)
class Attached:
    """What a CNI ADD gets back: the address, its subnet's prefix and gateway."""

    ip: str
    prefix_len: int
    gateway: str
    pool: str
    policy: str
    reused: bool  # the instance had this address already


@dataclass(frozen=True, slots=True)
class InstanceNetwork:
    """What an instance's template asks of the node's CNI plugin."""

    mode: str  # overlay | floating-ip | nat | host; "" when the pod is no app's instance
    ports: tuple[str, ...]  # "<port>/<tcp|udp>"
    policy: str


def instance_network(
    session: Session, *, business_id: int, cluster_id: int, pod: str
) -> InstanceNetwork:
    """The network mode, ports and release policy of the template that instance ``pod`` runs
    (its entry in the app's instance map), so that a plugin asks Gaia instead of the runtime."""
    body = _template_body(session, business_id=business_id, cluster_id=cluster_id, pod=pod)
    if body is None:
        return InstanceNetwork(mode="", ports=(), policy="")
    policy = policy_of(body)
    return InstanceNetwork(
        mode=str(body.get("network_mode") or NetworkMode.OVERLAY.value),
        ports=tuple(
            f"{int(p['port'])}/{str(p.get('protocol') or 'TCP').lower()}"
            for p in body.get("ports") or []
        ),
        policy=policy.value if policy else "",
    )


def _template_body(
    session: Session, *, business_id: int, cluster_id: int, pod: str
) -> dict[str, Any] | None:
    name = InstanceName.parse(pod)
    if name.instance is None:
        return None
    app = session.scalars(
        select(App).where(
            App.business_id == business_id, App.cluster_id == cluster_id, App.name == name.app
        )
    ).one_or_none()
    if app is None:
        return None
    version = app.instances.get(str(name.instance)) or app.default_template
    spec = session.scalars(
        select(AppTemplate.spec).where(AppTemplate.app_id == app.id, AppTemplate.name == version)
    ).one_or_none()
    return dict(spec) if spec is not None else None


def policy_for(session: Session, *, business_id: int, cluster_id: int, pod: str) -> str:
    """The release policy of the app whose instance ``pod`` is (its template's ``ip_release``),
    or "" when the pod is no floating-IP instance of an app of the platform."""
    body = _template_body(session, business_id=business_id, cluster_id=cluster_id, pod=pod)
    policy = policy_of(body or {})
    return policy.value if policy else ""


def attach_floating(
    session: Session,
    *,
    cluster: Cluster,
    business: Business,
    pod: str,
    subnet: str,
    node: str,
    container_id: str,
) -> Attached:
    """The instance's floating IP for a CNI ADD on ``node`` (whose underlay is ``subnet``): the
    address it has, or a free one of the subnet's pool. Idempotent for one sandbox."""
    pool = session.scalars(
        select(FloatingIpPool).where(
            FloatingIpPool.cluster_id == cluster.id, FloatingIpPool.subnet == subnet
        )
    ).one_or_none()
    if pool is None:
        raise NotFound(
            f"cluster '{cluster.name}' has no floating-IP pool for subnet {subnet}; a platform "
            "admin creates one (POST /api/v1/clusters/{cluster}/ip-pools)",
            details={"subnet": subnet},
        )
    policy = policy_for(session, business_id=business.id, cluster_id=cluster.id, pod=pod)
    spec = _pool_of(pool)
    rng = random.Random()  # noqa: S311 - spreads racing ADDs over the free addresses; no secret
    for attempt in range(MAX_ATTACH_TRIES):
        own = _attachment(session, cluster_id=cluster.id, business_id=business.id, pod=pod)
        if own is not None:
            return _rebind(
                own, pool=pool, node=node, container_id=container_id, policy=policy, spec=spec
            )
        taken = set(
            session.scalars(
                select(NetworkAttachment.ip).where(NetworkAttachment.pool_id == pool.id)
            )
        )
        free = [str(a) for a in spec.hosts() if str(a) not in taken]
        if not free:
            raise PoolExhausted(
                f"pool '{pool.name}' ({pool.subnet}) has no free address: {len(taken)} given; "
                "free some (release policies, or DELETE allocations) or add a pool",
                details={"pool": pool.name, "given": len(taken)},
            )
        # the lowest free address first; after a lost race, any free one (the racers all saw
        # the same lowest)
        ip = free[0] if attempt == 0 else rng.choice(free)
        row = NetworkAttachment(
            cluster_id=cluster.id,
            business_id=business.id,
            pod=pod,
            mode=NetworkMode.FLOATING_IP.value,
            pool_id=pool.id,
            ip=ip,
            policy=policy,
            node=node,
            container_id=container_id,
            ports={},
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            continue  # the savepoint's rollback dropped ``row``; re-read and try again
        return _attached(row, pool=pool, spec=spec, reused=False)
    raise PoolExhausted(
        f"could not take an address of pool '{pool.name}' in {MAX_ATTACH_TRIES} tries: it is "
        "being emptied by concurrent allocations; retry"
    )


def _attachment(
    session: Session, *, cluster_id: int, business_id: int, pod: str
) -> NetworkAttachment | None:
    return session.scalars(
        select(NetworkAttachment).where(
            NetworkAttachment.cluster_id == cluster_id,
            NetworkAttachment.business_id == business_id,
            NetworkAttachment.pod == pod,
        )
    ).one_or_none()


def _rebind(
    row: NetworkAttachment,
    *,
    pool: FloatingIpPool,
    node: str,
    container_id: str,
    policy: str,
    spec: IpPool,
) -> Attached:
    if row.pool_id is None:
        raise Conflict(
            f"instance {row.pod} has a NAT sandbox on node '{row.node}'; delete it before the "
            "instance takes a floating IP",
            details={"node": row.node},
        )
    if row.pool_id != pool.id:
        raise Conflict(
            f"instance {row.pod} keeps floating IP {row.ip} of another subnet than node "
            f"'{node}' ({pool.subnet}); it can only run on nodes of its own subnet",
            details={"ip": row.ip},
        )
    if row.container_id and row.container_id != container_id and row.node == node:
        raise InstanceBusy(
            f"address {row.ip} of {row.pod} is still held by sandbox {row.container_id} on "
            f"node '{node}'; retry once that sandbox is deleted"
        )
    # A holder on another node is an instance that moved (its old node is lost or has not
    # deleted the old sandbox yet): the address follows the instance.
    row.node, row.container_id, row.policy = node, container_id, policy
    row.updated_at = utcnow()
    return _attached(row, pool=pool, spec=spec, reused=True)


def _attached(
    row: NetworkAttachment, *, pool: FloatingIpPool, spec: IpPool, reused: bool
) -> Attached:
    return Attached(
        ip=row.ip,
        prefix_len=ipaddress.IPv4Network(pool.subnet).prefixlen,
        gateway=pool.gateway,
        pool=pool.name,
        policy=row.policy,
        reused=reused,
    )


def attach_nat(
    session: Session,
    *,
    cluster: Cluster,
    business: Business,
    pod: str,
    node: str,
    node_ip: str,
    container_id: str,
    ports: dict[str, int],
) -> NetworkAttachment:
    """Record a NAT instance's node address and host ports (the API shows them)."""
    row = _attachment(session, cluster_id=cluster.id, business_id=business.id, pod=pod)
    if row is not None and row.mode != NetworkMode.NAT.value:
        raise Conflict(
            f"instance {pod} holds floating IP {row.ip}; a NAT sandbox of it needs the app's "
            "floating IP released first",
            details={"ip": row.ip},
        )
    if row is None:
        row = NetworkAttachment(
            cluster_id=cluster.id,
            business_id=business.id,
            pod=pod,
            mode=NetworkMode.NAT.value,
            pool_id=None,
            ip=node_ip,
            policy="",
        )
        session.add(row)
    row.ip, row.node, row.container_id, row.ports = node_ip, node, container_id, dict(ports)
    row.updated_at = utcnow()
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise InstanceBusy(f"instance {pod} was attached by a concurrent ADD; retry") from exc
    return row


def _drop(session: Session, row: NetworkAttachment) -> None:
    """Delete ``row`` by a statement, not the unit of work: a concurrent DEL, GC or sweep may
    have deleted it first, which is no error (the unit of work would raise StaleDataError)."""
    session.execute(delete(NetworkAttachment).where(NetworkAttachment.id == row.id))
    session.expunge(row)


def detach(
    session: Session, *, cluster: Cluster, business: Business, pod: str, container_id: str
) -> bool:
    """A CNI DEL: the sandbox lets go of its address. Idempotent, and only the holder's DEL
    counts. A NAT attachment, or one of no app (no policy), is gone with its sandbox; an app's
    floating IP stays the instance's until ``sweep`` frees it by policy. True if anything
    changed."""
    row = _attachment(session, cluster_id=cluster.id, business_id=business.id, pod=pod)
    if row is None or row.container_id != container_id:
        return False
    if row.mode == NetworkMode.NAT.value or not row.policy:
        _drop(session, row)
    else:
        row.container_id = ""
        row.updated_at = utcnow()
    return True


def held_by(
    session: Session, *, cluster: Cluster, business: Business, pod: str, container_id: str
) -> NetworkAttachment | None:
    """The attachment ``container_id`` holds (a CNI CHECK), if it holds one."""
    row = _attachment(session, cluster_id=cluster.id, business_id=business.id, pod=pod)
    return row if row is not None and row.container_id == container_id else None


def forget_sandboxes(
    session: Session, *, cluster: Cluster, node: str, valid: set[str]
) -> list[str]:
    """A CNI GC of ``node``: every sandbox of that node not in ``valid`` (the runtime's
    ``cni.dev/valid-attachments``) lets go of its address as a DEL would. Returns the pods."""
    rows = list(
        session.scalars(
            select(NetworkAttachment).where(
                NetworkAttachment.cluster_id == cluster.id,
                NetworkAttachment.node == node,
                NetworkAttachment.container_id != "",
            )
        )
    )
    gone: list[str] = []
    for row in rows:
        if row.container_id in valid:
            continue
        gone.append(row.pod)
        if row.mode == NetworkMode.NAT.value or not row.policy:
            _drop(session, row)
        else:
            row.container_id = ""
            row.updated_at = utcnow()
    return gone


# The instance-id part of an app's pod name as ``InstanceName.parse`` takes it: digits with no
# leading zero (``web-api-3`` is no pod of app ``web``, though it starts with ``web-``)
_INSTANCE_ID = "^(0|[1-9][0-9]*)$"


@dataclass(frozen=True, slots=True)
class AppAddressCounts:
    """How many addresses an app's instances hold (``total``) and how many of them are kept
    for instances the app no longer wants (``kept``: scaled in, or the app stopped)."""

    total: int
    kept: int


def _instance_part(app: App) -> ColumnElement[str]:
    return func.substr(NetworkAttachment.pod, len(app.name) + 2)


def _of_app(app: App) -> ColumnElement[bool]:
    """The attachments of ``app``'s instances (pods ``<app>-<id>`` in its cluster and business)."""
    return and_(
        NetworkAttachment.cluster_id == app.cluster_id,
        NetworkAttachment.business_id == app.business_id,
        NetworkAttachment.pod.startswith(f"{app.name}-", autoescape=True),
        _instance_part(app).regexp_match(_INSTANCE_ID),
    )


def _kept(session: Session, app: App) -> ColumnElement[bool]:
    """Whether an attachment of ``app`` is kept: its instance id is no key of the app's stored
    instance map (every one is, once the app is stopped). The database reads the map's keys
    itself (``json_each`` on SQLite, ``json_object_keys`` on PostgreSQL), so telling them apart
    loads neither the attachments nor 10,000 ids as parameters."""
    if app.state != "running":
        return true()
    stored = select(App.instances).where(App.id == app.id).scalar_subquery()
    wanted: Select[Any]
    if session.get_bind().dialect.name == "postgresql":
        wanted = select(func.json_object_keys(stored))
    else:
        keys = func.json_each(stored).table_valued("key")
        wanted = select(keys.c.key)
    return _instance_part(app).not_in(wanted)


def app_address_counts(session: Session, *, app: App) -> AppAddressCounts:
    """``AppAddressCounts`` of ``app``, counted by the database (one row back)."""
    total, kept = session.execute(
        select(func.count(), func.count(case((_kept(session, app), 1)))).where(_of_app(app))
    ).one()
    return AppAddressCounts(total=int(total), kept=int(kept))


def page_app_addresses(
    session: Session,
    *,
    app: App,
    limit: int,
    cursor: str | None,
    instance_ids: Collection[int] = (),
    kept: bool | None = None,
) -> tuple[list[NetworkAttachment], str | None]:
    """One page of the addresses of ``app``'s instances by pod name: only those of
    ``instance_ids`` when given, only the kept ones (``kept=True``) or only the wanted ones
    (``kept=False``)."""
    stmt = select(NetworkAttachment).where(_of_app(app))
    if instance_ids:
        stmt = stmt.where(NetworkAttachment.pod.in_({f"{app.name}-{i}" for i in instance_ids}))
    if kept is not None:
        kept_clause = _kept(session, app)
        stmt = stmt.where(kept_clause if kept else not_(kept_clause))
    which = "" if kept is None else (":kept" if kept else ":wanted")
    return page_of(
        session,
        stmt,
        key=NetworkAttachment.pod,
        limit=limit,
        cursor=cursor,
        scope=f"app:{app.id}{which}",
    )


def attachment_by_id(
    session: Session, *, cluster: Cluster, attachment_id: int
) -> NetworkAttachment:
    row = session.get(NetworkAttachment, attachment_id)
    if row is None or row.cluster_id != cluster.id:
        raise NotFound(f"cluster '{cluster.name}' has no allocation {attachment_id}")
    return row


def release_attachment(session: Session, *, row: NetworkAttachment) -> None:
    """A platform admin frees an address (whatever its policy). A sandbox still holding it
    keeps working until its next ADD, which takes a new address: refused while held."""
    if row.container_id:
        raise Conflict(
            f"{row.ip} is in use by sandbox {row.container_id} of {row.pod} on node "
            f"'{row.node}'; delete the instance first",
            details={"pod": row.pod, "node": row.node},
        )
    session.delete(row)


def sweep(session: Session) -> list[NetworkAttachment]:
    """Free every address its release policy lets go (``gaia.domain.network.releasable``);
    returns the rows freed."""
    rows = list(session.scalars(select(NetworkAttachment)))
    freed: list[NetworkAttachment] = []
    groups: dict[tuple[int, int], list[NetworkAttachment]] = {}
    for row in rows:
        groups.setdefault((row.cluster_id, row.business_id), []).append(row)
    for (cluster_id, business_id), members in groups.items():
        apps = session.scalars(
            select(App).where(
                App.cluster_id == cluster_id,
                App.business_id == business_id,
                App.state != "deleting",
            )
        )
        live = {a.name: frozenset(int(i) for i in a.instances) for a in apps}
        facts = [
            AllocationFacts(
                id=r.id,
                pod=r.pod,
                policy=ReleasePolicy(r.policy) if r.policy else None,
                held=bool(r.container_id),
            )
            for r in members
        ]
        ids = set(releasable(facts, live_instances=live))
        for r in members:
            if r.id in ids:
                _drop(session, r)
                freed.append(r)
    return freed


def business_named(session: Session, name: str) -> Business | None:
    return session.scalars(select(Business).where(Business.name == name)).one_or_none()


def business_names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(Business.id, Business.name).where(Business.id.in_(ids)))
    return {int(i): str(n) for i, n in rows}


def pool_names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(FloatingIpPool.id, FloatingIpPool.name).where(FloatingIpPool.id.in_(ids))
    )
    return {int(i): str(n) for i, n in rows}


def page_pool_allocations(
    session: Session, *, pool: FloatingIpPool, limit: int, cursor: str | None
) -> tuple[list[NetworkAttachment], str | None]:
    return page_of(
        session,
        select(NetworkAttachment).where(NetworkAttachment.pool_id == pool.id),
        key=NetworkAttachment.id,
        limit=limit,
        cursor=cursor,
        numeric=True,
        scope=f"pool:{pool.id}",
    )


def check_subnet(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        raise InvalidRequest(f"subnet: {value!r} is not an IPv4 network in CIDR form") from exc
