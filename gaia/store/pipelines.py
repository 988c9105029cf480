"""CI/CD pipelines at rest (issue 18): pipelines, their runs, and the runs' log lines.

- A pipeline's git credentials and webhook secret are stored only as ``SecretBox`` ciphertexts;
  ``git_credentials`` and ``webhook_secret`` are the two places that decrypt them, for the runner
  and the webhook check. Nothing here returns them to a route that answers a client.
- ``enqueue_run`` numbers runs per pipeline (``next_run_number``, bumped under the row's update)
  and queues them; the runner loop of any replica takes one with ``claim_run``, a conditional
  UPDATE (``queued`` -> ``running`` with a lease), so two replicas never build one run.
- Log lines are bounded: at most ``MAX_LOG_LINES`` per run (a last line says the rest was
  dropped) and ``MAX_LOG_LINE_BYTES`` per line, so a chatty build cannot fill the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, NotFound
from gaia.security import SecretBox
from gaia.store.models import Business, Pipeline, PipelineRun, PipelineRunLog, utcnow
from gaia.store.paging import page_of

MAX_LOG_LINES = 20_000
MAX_LOG_LINE_BYTES = 4096
RUN_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


# --- pipelines -----------------------------------------------------------------------------


def find_pipeline(session: Session, *, business_id: int, name: str) -> Pipeline | None:
    return session.scalars(
        select(Pipeline).where(Pipeline.business_id == business_id, Pipeline.name == name)
    ).one_or_none()


def pipeline(session: Session, *, business: Business, name: str) -> Pipeline:
    row = find_pipeline(session, business_id=business.id, name=name)
    if row is None:
        raise NotFound(f"pipeline '{name}' not found in business '{business.name}'")
    return row


def page_pipelines(
    session: Session, *, business_id: int, limit: int, cursor: str | None
) -> tuple[list[Pipeline], str | None]:
    stmt = select(Pipeline).where(Pipeline.business_id == business_id)
    return page_of(session, stmt, key=Pipeline.name, limit=limit, cursor=cursor)


def last_runs(session: Session, *, pipeline_ids: Sequence[int]) -> dict[int, PipelineRun]:
    """The newest run of each of these pipelines (one query; a page of pipelines at a time)."""
    if not pipeline_ids:
        return {}
    newest = (
        select(PipelineRun.pipeline_id, func.max(PipelineRun.number).label("number"))
        .where(PipelineRun.pipeline_id.in_(pipeline_ids))
        .group_by(PipelineRun.pipeline_id)
        .subquery()
    )
    rows = session.scalars(
        select(PipelineRun).join(
            newest,
            (PipelineRun.pipeline_id == newest.c.pipeline_id)
            & (PipelineRun.number == newest.c.number),
        )
    )
    return {r.pipeline_id: r for r in rows}


def create_pipeline(
    session: Session,
    *,
    secrets: SecretBox,
    business: Business,
    name: str,
    fields: dict[str, Any],
    git_credentials: str | None,
    webhook_secret: str,
    created_by: str,
) -> Pipeline:
    """A new pipeline; ``fields`` are its plain columns (git_url, branch, ..., repository)."""
    if find_pipeline(session, business_id=business.id, name=name) is not None:
        raise Conflict(f"pipeline '{name}' already exists in business '{business.name}'")
    row = Pipeline(
        business_id=business.id,
        name=name,
        webhook_secret_encrypted=secrets.encrypt(webhook_secret),
        git_credentials_encrypted=(
            secrets.encrypt(git_credentials) if git_credentials is not None else None
        ),
        created_by=created_by,
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def update_pipeline(
    session: Session,
    *,
    secrets: SecretBox,
    row: Pipeline,
    fields: dict[str, Any],
    git_credentials: str | None,
    clear_git_credentials: bool = False,
) -> Pipeline:
    """Change the given columns; credentials are replaced only when given (write-only)."""
    for key, value in fields.items():
        setattr(row, key, value)
    if clear_git_credentials:
        row.git_credentials_encrypted = None
    elif git_credentials is not None:
        row.git_credentials_encrypted = secrets.encrypt(git_credentials)
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_pipeline(session: Session, *, row: Pipeline) -> None:
    session.delete(row)
    session.flush()


def git_credentials(row: Pipeline, *, secrets: SecretBox) -> str | None:
    """``user:password`` (or a token) for the clone, in the clear: for the runner only."""
    if row.git_credentials_encrypted is None:
        return None
    return secrets.decrypt(row.git_credentials_encrypted)


def webhook_secret(row: Pipeline, *, secrets: SecretBox) -> str:
    return secrets.decrypt(row.webhook_secret_encrypted)


# --- runs ----------------------------------------------------------------------------------


def enqueue_run(
    session: Session, *, row: Pipeline, trigger: str, started_by: str, commit: str = ""
) -> PipelineRun:
    """Queue run number ``next_run_number`` of ``row``. The number is taken with a conditional
    UPDATE so that two requests at once (two replicas) cannot take the same one."""
    while True:
        number = row.next_run_number
        taken = session.execute(
            update(Pipeline)
            .where(Pipeline.id == row.id, Pipeline.next_run_number == number)
            .values(next_run_number=number + 1)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            break
        session.refresh(row)
    session.refresh(row)
    run = PipelineRun(
        pipeline_id=row.id,
        business_id=row.business_id,
        number=number,
        trigger=trigger,
        started_by=started_by,
        commit=commit,
        state="queued",
    )
    session.add(run)
    session.flush()
    return run


def run_of(session: Session, *, row: Pipeline, number: int) -> PipelineRun:
    run = session.scalars(
        select(PipelineRun).where(PipelineRun.pipeline_id == row.id, PipelineRun.number == number)
    ).one_or_none()
    if run is None:
        raise NotFound(f"run {number} of pipeline '{row.name}' not found")
    return run


def page_runs(
    session: Session, *, row: Pipeline, limit: int, cursor: str | None
) -> tuple[list[PipelineRun], str | None]:
    """Runs of a pipeline, newest first."""
    stmt = select(PipelineRun).where(PipelineRun.pipeline_id == row.id)
    return page_of(
        session,
        stmt,
        key=PipelineRun.number,
        limit=limit,
        cursor=cursor,
        descending=True,
        numeric=True,
    )


def request_cancel(session: Session, *, run: PipelineRun) -> PipelineRun:
    """A queued run is cancelled at once; a running one is asked to stop (the runner that holds
    it sees ``cancel_requested`` and stops the build). A finished run is a conflict."""
    if run.state in FINISHED:
        raise Conflict(f"run {run.number} has already finished ({run.state})")
    if run.state == "queued":
        done = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run.id, PipelineRun.state == "queued")
            .values(state="cancelled", finished_at=utcnow(), cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(run)
            return run
    run.cancel_requested = True
    session.flush()
    session.refresh(run)
    return run


def _claimable(now: dt.datetime) -> ColumnElement[bool]:
    """A run a runner may take: queued, or running past its lease (its replica died)."""
    return (PipelineRun.state == "queued") | (
        (PipelineRun.state == "running") & (PipelineRun.lease_until <= now)
    )


def claim_run(
    session: Session,
    *,
    lease: dt.timedelta,
    per_business: int,
    total: int,
    now: dt.datetime | None = None,
) -> PipelineRun | None:
    """Take the oldest queued run whose business is under ``per_business`` running builds, if
    fewer than ``total`` run in all; ``None`` when there is nothing to take. Runs ``running``
    past their lease (their replica died) count as free again."""
    now = now or utcnow()
    live = (PipelineRun.state == "running") & (PipelineRun.lease_until > now)
    running = session.scalar(select(func.count()).select_from(PipelineRun).where(live)) or 0
    if running >= total:
        return None
    busy = {
        business_id
        for business_id, count in session.execute(
            select(PipelineRun.business_id, func.count())
            .where(live)
            .group_by(PipelineRun.business_id)
        )
        if count >= per_business
    }
    candidates = session.scalars(
        select(PipelineRun.id)
        .where(_claimable(now))
        .where(PipelineRun.business_id.not_in(busy or {-1}))
        .order_by(PipelineRun.id)
        .limit(10)
    ).all()
    for run_id in candidates:
        taken = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id)
            .where(_claimable(now))
            .values(
                state="running",
                lease_until=now + lease,
                started_at=func.coalesce(PipelineRun.started_at, now),
            )
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            run = session.get(PipelineRun, run_id)
            if run is not None:
                session.refresh(run)
            return run
    return None


def renew_lease(
    session: Session, *, run_id: int, lease: dt.timedelta, now: dt.datetime | None = None
) -> bool:
    """Extend the lease of a run this replica holds; whether a cancel was requested."""
    now = now or utcnow()
    session.execute(
        update(PipelineRun)
        .where(PipelineRun.id == run_id, PipelineRun.state == "running")
        .values(lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(
        session.scalar(select(PipelineRun.cancel_requested).where(PipelineRun.id == run_id))
    )


def finish_run(
    session: Session,
    *,
    run_id: int,
    state: str,
    steps: list[dict[str, Any]],
    failure: dict[str, Any] | None,
    commit: str,
    image: str,
    digest: str,
) -> PipelineRun:
    run = session.get(PipelineRun, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    run.state = state
    run.steps = steps
    run.failure = failure
    run.commit = commit
    run.image = image
    run.digest = digest
    run.lease_until = None
    run.finished_at = utcnow()
    session.flush()
    return run


# --- log lines -----------------------------------------------------------------------------


def _cut(line: str) -> str:
    data = line.encode("utf-8")
    if len(data) <= MAX_LOG_LINE_BYTES:
        return line
    return data[:MAX_LOG_LINE_BYTES].decode("utf-8", errors="ignore") + " [line cut]"


def append_logs(session: Session, *, run_id: int, lines: Sequence[tuple[str, str]]) -> int:
    """Store ``(step, line)`` pairs after the run's last line, within the bounds; returns how
    many lines the run has now."""
    run = session.get(PipelineRun, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    count = run.log_lines
    for step, line in lines:
        if count > MAX_LOG_LINES:
            break
        if count == MAX_LOG_LINES:
            text = f"[log cut: more than {MAX_LOG_LINES} lines, the rest is not kept]"
        else:
            text = _cut(line)
        session.add(PipelineRunLog(run_id=run_id, seq=count, step=step, line=text))
        count += 1
    run.log_lines = count
    session.flush()
    return count


def log_lines(session: Session, *, run_id: int, after: int, limit: int) -> list[PipelineRunLog]:
    """Lines with ``seq > after`` in order (``after=-1`` from the first)."""
    return list(
        session.scalars(
            select(PipelineRunLog)
            .where(PipelineRunLog.run_id == run_id, PipelineRunLog.seq > after)
            .order_by(PipelineRunLog.seq)
            .limit(limit)
        )
    )


def _schedule_due(row: Pipeline, now: dt.datetime) -> bool:
    assert row.schedule_minutes is not None
    since = row.last_scheduled_at or row.created_at
    return now - since >= dt.timedelta(minutes=row.schedule_minutes)


def anything_to_do(session: Session, *, now: dt.datetime | None = None) -> bool:
    """Whether the runner's pass has work: a scheduled pipeline due, a run queued, or one left
    running past its lease. A read: the runner asks every few seconds, and should take the
    writer's turn only when there is something to write."""
    now = now or utcnow()
    waiting = session.scalars(select(PipelineRun.id).where(_claimable(now)).limit(1)).first()
    if waiting is not None:
        return True
    scheduled = session.scalars(select(Pipeline).where(Pipeline.schedule_minutes.is_not(None)))
    return any(_schedule_due(row, now) for row in scheduled)


def enqueue_scheduled(session: Session, *, now: dt.datetime | None = None) -> list[PipelineRun]:
    """Queue a ``schedule`` run of every pipeline whose interval has passed since its last
    scheduled run (or its creation). Each pipeline's turn is taken with a conditional UPDATE of
    ``last_scheduled_at``, so two replicas in the same pass queue it once."""
    now = now or utcnow()
    queued: list[PipelineRun] = []
    rows = session.scalars(select(Pipeline).where(Pipeline.schedule_minutes.is_not(None))).all()
    for row in rows:
        if not _schedule_due(row, now):
            continue
        since = row.last_scheduled_at or row.created_at
        previous = Pipeline.last_scheduled_at
        taken = session.execute(
            update(Pipeline)
            .where(
                Pipeline.id == row.id,
                previous.is_(None) if row.last_scheduled_at is None else previous == since,
            )
            .values(last_scheduled_at=now)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(row)
            queued.append(enqueue_run(session, row=row, trigger="schedule", started_by="schedule"))
    return queued
