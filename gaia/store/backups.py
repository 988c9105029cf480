"""The platform's backups as rows, and the clusters' etcd access they read.

A backup is asked for (``request_backup``: the API's POST, or the schedule) as a ``Pending`` row;
the ``controllers`` leader claims the oldest (``claim_next``, a conditional UPDATE, so two
passes never take the same one), moves it through ``Running`` with the step it is at
(``set_progress``) to ``Succeeded`` or ``Failed`` (``finish``). ``due`` says whether the schedule
wants a new one; ``expired`` which succeeded backups fall out of the retention (the newest
``keep`` stay). The archive itself is the source of truth (it carries its manifest); a row
lists it. ``etcd_targets`` decrypts the etcd access of every cluster that has one.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict
from gaia.security import SecretBox
from gaia.store.backup import ClusterEtcd, EtcdAccess
from gaia.store.models import Backup, Cluster
from gaia.store.paging import page_of

ACTIVE = ("Pending", "Running")


def page_backups(
    session: Session, *, limit: int, cursor: str | None
) -> tuple[list[Backup], str | None]:
    """Backups, newest first."""
    return page_of(
        session,
        select(Backup),
        key=Backup.id,
        limit=limit,
        cursor=cursor,
        descending=True,
        numeric=True,
    )


def request_backup(session: Session, *, trigger: str, by: str, now: dt.datetime) -> Backup:
    """A new ``Pending`` backup; ``Conflict`` while another is pending or running (one at a
    time: two would copy the same database twice and compete for the disk)."""
    busy = session.scalars(select(Backup).where(Backup.state.in_(ACTIVE))).first()
    if busy is not None:
        raise Conflict(f"backup {busy.id} is {busy.state.lower()}: wait for it to finish")
    backup = Backup(trigger=trigger, state="Pending", requested_by=by, requested_at=now)
    session.add(backup)
    session.flush()
    return backup


def claim_next(session: Session, *, now: dt.datetime) -> Backup | None:
    """The oldest ``Pending`` backup, now ``Running``; None if there is none."""
    pending = session.scalars(
        select(Backup).where(Backup.state == "Pending").order_by(Backup.id).limit(1)
    ).first()
    if pending is None:
        return None
    claimed = session.execute(
        update(Backup)
        .where(Backup.id == pending.id, Backup.state == "Pending")
        .values(state="Running", started_at=now, progress="starting")
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.refresh(pending)
    return pending


def set_progress(session: Session, *, backup_id: int, step: str) -> None:
    session.execute(update(Backup).where(Backup.id == backup_id).values(progress=step))


def finish(
    session: Session,
    *,
    backup_id: int,
    now: dt.datetime,
    error: str = "",
    file_name: str = "",
    size: int = 0,
    parts: list[str] | None = None,
) -> None:
    session.execute(
        update(Backup)
        .where(Backup.id == backup_id)
        .values(
            state="Failed" if error else "Succeeded",
            message=error,
            progress="",
            finished_at=now,
            file_name=file_name,
            size_bytes=size,
            parts=parts or [],
        )
    )


def abandon_running(session: Session, *, now: dt.datetime) -> int:
    """Mark ``Running`` backups ``Failed``: a new leader finds them left by one that died."""
    done = session.execute(
        update(Backup)
        .where(Backup.state == "Running")
        .values(state="Failed", message="the replica taking it stopped", finished_at=now)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def anything_to_claim(session: Session, *, every: dt.timedelta | None, now: dt.datetime) -> bool:
    """Whether a pass of the scheduled backups has work: a backup pending or left running, or
    the schedule (``every``; None: no schedule) due. A read: the pass asks every few seconds,
    and should take the writer's turn only when there is something to write."""
    active = session.scalars(select(Backup.id).where(Backup.state.in_(ACTIVE)).limit(1)).first()
    return active is not None or (every is not None and due(session, every=every, now=now))


def due(session: Session, *, every: dt.timedelta, now: dt.datetime) -> bool:
    """Whether the schedule wants a backup: none asked for within ``every``."""
    last = session.scalars(
        select(Backup.requested_at)
        .where(Backup.trigger == "schedule")
        .order_by(Backup.requested_at.desc())
        .limit(1)
    ).first()
    return last is None or now - last >= every


def expired(session: Session, *, keep: int) -> list[Backup]:
    """Succeeded backups beyond the newest ``keep``, and failed ones older than the oldest
    kept: the retention drops them (their files and rows)."""
    succeeded = list(
        session.scalars(
            select(Backup).where(Backup.state == "Succeeded").order_by(Backup.id.desc())
        )
    )
    kept, dropped = succeeded[:keep], succeeded[keep:]
    if kept:
        dropped += list(
            session.scalars(select(Backup).where(Backup.state == "Failed", Backup.id < kept[-1].id))
        )
    return dropped


def last_succeeded(session: Session) -> Backup | None:
    return session.scalars(
        select(Backup).where(Backup.state == "Succeeded").order_by(Backup.id.desc()).limit(1)
    ).first()


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Backup.state, func.count()).group_by(Backup.state))
    return {state: int(n) for state, n in rows}


def etcd_targets(session: Session, secrets: SecretBox) -> list[ClusterEtcd]:
    """Every kubernetes cluster whose etcd Gaia may snapshot, with its access, by name."""
    clusters = session.scalars(
        select(Cluster)
        .where(Cluster.kind == "kubernetes", Cluster.etcd_encrypted.is_not(None))
        .order_by(Cluster.name)
    )
    return [
        ClusterEtcd(c.name, EtcdAccess.from_json(secrets.decrypt(c.etcd_encrypted or b"")))
        for c in clusters
    ]


def set_etcd_access(
    session: Session, *, cluster: Cluster, access: EtcdAccess | None, secrets: SecretBox
) -> None:
    """Give (or with None, take away) Gaia's access to ``cluster``'s etcd."""
    if access is not None and cluster.kind != "kubernetes":
        raise Conflict(f"cluster '{cluster.name}' is {cluster.kind}: only kubernetes has an etcd")
    cluster.etcd_encrypted = None if access is None else secrets.encrypt(access.to_json())
    session.flush()
