"""Gaia's running replicas, as each reports itself (issue 21, the components page).

Every replica upserts its row in ``platform_replicas`` at each heartbeat
(``gaia.controllers.replicas.ReplicaHeartbeat``): version, host, process, address, the schema
revision it found, and each of its loops' state (last pass, failures, last error, whether it
leads the loop's group). A replica not seen for ``STALE_AFTER`` is shown as gone; rows gone for
``FORGET_AFTER`` are deleted. An administrator's request to restart a loop is written into the
replica's ``restart_loops``; that replica takes (and clears) the list at its next heartbeat, in
the same transaction, so a request is carried out once, by the replica it names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gaia.store.models import PlatformReplica

STALE_AFTER = dt.timedelta(seconds=30)
FORGET_AFTER = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Report:
    """What a replica says of itself at a heartbeat."""

    name: str
    version: str
    host: str
    pid: int
    address: str
    schema_revision: str
    started_at: dt.datetime
    loops: Sequence[dict[str, Any]]


def beat(session: Session, report: Report, *, now: dt.datetime) -> list[str]:
    """Write ``report`` as the replica's row; answers the loop restarts asked of it (cleared)."""
    row = session.get(PlatformReplica, report.name, with_for_update=True)
    if row is None:
        row = PlatformReplica(name=report.name, restart_loops=[])
        session.add(row)
    row.version = report.version[:64]
    row.host = report.host[:255]
    row.pid = report.pid
    row.address = report.address[:255]
    row.schema_revision = report.schema_revision[:64]
    row.started_at = report.started_at
    row.seen_at = now
    row.loops = list(report.loops)
    asked = list(row.restart_loops or [])
    row.restart_loops = []
    session.execute(delete(PlatformReplica).where(PlatformReplica.seen_at < now - FORGET_AFTER))
    return asked


def listed(session: Session) -> list[PlatformReplica]:
    """Every replica seen within ``FORGET_AFTER``, by name."""
    return list(session.scalars(select(PlatformReplica).order_by(PlatformReplica.name)))


def ask_restart(session: Session, *, replica: str, loop: str) -> PlatformReplica | None:
    """Ask ``replica`` to restart ``loop`` at its next heartbeat; None when no such replica."""
    row = session.get(PlatformReplica, replica, with_for_update=True)
    if row is None:
        return None
    if loop not in (row.restart_loops or []):
        row.restart_loops = [*(row.restart_loops or []), loop]
    return row


def is_stale(row: PlatformReplica, *, now: dt.datetime) -> bool:
    return now - row.seen_at > STALE_AFTER
