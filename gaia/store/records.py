"""Operation records at rest: appended once, then only read.

Every mutating API call (and a Secret reveal, which changes nothing but is worth a trail) leaves
one ``OperationRecord``. A call that succeeded adds its record to its own transaction (the API's
``db_session``); ``append_record`` writes one in a transaction of its own, so a request that
failed and rolled back is still recorded, and ``correct_status`` fixes the status of a record
whose response turned out other than the route declared. ``page_records`` and
``record_visible_to`` are the filtered, newest-first reads behind ``GET /records``.
See docs/architecture.md, "store".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from gaia.store.database import Database
from gaia.store.models import OperationRecord
from gaia.store.paging import page_of


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What ``GET /records`` narrows by; an empty field does not narrow. ``target`` is a
    prefix, ``since`` inclusive, ``until`` exclusive."""

    actor: str | None = None
    business: str | None = None
    cluster: str | None = None
    action: str | None = None
    target: str | None = None
    result: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def append_record(db: Database, *, record: OperationRecord) -> None:
    """Write ``record`` in its own transaction, whatever became of the request's."""
    with db.write_session() as session:
        session.add(record)


def correct_status(db: Database, *, record_id: int, status: int, error: str) -> None:
    """Set the status (and result) of record ``record_id`` to what the response carried."""
    with db.write_session() as session:
        record = session.get(OperationRecord, record_id)
        if record is not None:
            record.status_code = status
            record.result = "success" if status < 400 else "failure"
            if error and not record.error:
                record.error = error[:4000]


def _visible(business_ids: set[int] | None) -> Select[OperationRecord]:
    stmt = select(OperationRecord)
    if business_ids is not None:
        stmt = stmt.where(OperationRecord.business_id.in_(business_ids))
    return stmt


def page_records(
    session: Session,
    *,
    business_ids: set[int] | None,
    where: RecordFilter,
    limit: int,
    cursor: str | None,
) -> tuple[list[OperationRecord], str | None]:
    """Records of ``business_ids`` (all for ``None``) matching ``where``, newest first."""
    stmt = _visible(business_ids)
    if where.actor:
        stmt = stmt.where(OperationRecord.actor == where.actor)
    if where.business:
        stmt = stmt.where(OperationRecord.business == where.business)
    if where.cluster:
        stmt = stmt.where(OperationRecord.cluster == where.cluster)
    if where.action:
        stmt = stmt.where(OperationRecord.action == where.action)
    if where.target:
        stmt = stmt.where(OperationRecord.target.startswith(where.target, autoescape=True))
    if where.result:
        stmt = stmt.where(OperationRecord.result == where.result)
    if where.since:
        stmt = stmt.where(OperationRecord.at >= where.since)
    if where.until:
        stmt = stmt.where(OperationRecord.at < where.until)
    return page_of(
        session,
        stmt,
        key=OperationRecord.id,
        limit=limit,
        cursor=cursor,
        descending=True,
        numeric=True,
    )


def record_visible_to(
    session: Session, *, business_ids: set[int] | None, record_id: int
) -> OperationRecord | None:
    """The record ``record_id`` if one of ``business_ids`` (any for ``None``) owns it."""
    return session.scalars(
        _visible(business_ids).where(OperationRecord.id == record_id)
    ).one_or_none()
