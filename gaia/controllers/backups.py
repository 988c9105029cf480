"""Scheduled backups, with retention, on the ``controllers`` leader (docs/backup.md).

One pass::

    Running rows left by a leader that died  ->  Failed ("the replica taking it stopped")
    the schedule due (none in GAIA_BACKUP_EVERY_SECONDS)  ->  a Pending row (trigger schedule)
    the oldest Pending row (the schedule's, or POST /backups)  ->  Running -> take_backup ->
        Succeeded (file, size, parts) | Failed (why)
    retention: succeeded backups beyond the newest GAIA_BACKUP_KEEP  ->  file and row removed

A pass takes at most one backup and runs it to the end before it returns, so a ``Running`` row
found at the start of a pass was left by another process: the lease moved, or the process
died. The backup itself (a database copy, etcd snapshots: seconds to minutes) runs in a worker
thread; its progress is written to the row as it goes, so the API and console show the step.
Every write is fenced like every write of a gated loop (``gaia.controllers.leadership``): a
deposed leader cannot mark a backup the new leader is taking.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from pathlib import Path

from gaia.clock import Clock
from gaia.domain.errors import Conflict
from gaia.loop import LoopService
from gaia.security import SecretBox
from gaia.settings import Settings
from gaia.store import backups
from gaia.store.backup import BackupError, EtcdTools, SecretKeys, secret_keys, take_backup
from gaia.store.database import Database

log = logging.getLogger(__name__)

# how often a pass looks for a backup asked for through the API
POLL_SECONDS = 5.0


class ScheduledBackups(LoopService):
    name = "backups"

    def __init__(
        self, *, db: Database, settings: Settings, secrets: SecretBox, clock: Clock
    ) -> None:
        super().__init__(interval=POLL_SECONDS)
        self.db = db
        self.settings = settings
        self.secrets = secrets
        self.clock = clock

    @property
    def folder(self) -> Path:
        return self.settings.resolved_backup_dir()

    async def run_once(self) -> None:
        # In a worker thread: waiting for SQLite's writer turn on the event loop's thread would
        # stall every request, and deadlock with one whose transaction needs the loop to commit.
        backup_id = await asyncio.to_thread(self._claim, self.clock.now())
        if backup_id is not None:
            await asyncio.to_thread(self._take, backup_id)
        await asyncio.to_thread(self._prune)

    def _claim(self, now: dt.datetime) -> int | None:
        """The backup to take now, if any: a scheduled one is asked for when it is due."""
        every = self.settings.backup_every_seconds
        schedule = dt.timedelta(seconds=every) if every > 0 else None
        with self.db.read_session() as session:
            if not backups.anything_to_claim(session, every=schedule, now=now):
                return None  # nothing to write: the writer's turn stays with the API
        with self.db.write_session() as session:
            backups.abandon_running(session, now=now)
            if schedule is not None and backups.due(session, every=schedule, now=now):
                # one asked for through the API is pending or running: it serves the schedule
                with contextlib.suppress(Conflict):
                    backups.request_backup(session, trigger="schedule", by="schedule", now=now)
            claimed = backups.claim_next(session, now=now)
            return claimed.id if claimed else None

    def _keys(self) -> SecretKeys:
        return secret_keys(secret_key=self.settings.secret_key, data_dir=self.settings.data_dir)

    def _take(self, backup_id: int) -> None:
        began = self.clock.now()
        target = self.folder / f"gaia-backup-{began.strftime('%Y%m%dT%H%M%SZ')}-{backup_id}.tar"

        def progress(step: str) -> None:
            with self.db.write_session() as session:
                backups.set_progress(session, backup_id=backup_id, step=step)

        try:
            with self.db.read_session() as session:
                etcd = backups.etcd_targets(session, self.secrets)
            taken = take_backup(
                database_url=self.settings.resolved_database_url(),
                keys=self._keys(),
                etcd=etcd,
                target=target,
                include_key=self.settings.backup_include_secret_key,
                tools=EtcdTools(etcdctl=self.settings.etcdctl, etcdutl=self.settings.etcdutl),
                pg_bin_dir=self.settings.pg_bin_dir,
                progress=progress,
            )
        except Exception as exc:
            # whatever went wrong, the row says Failed and why, never stays Running
            if isinstance(exc, BackupError | OSError):
                log.warning("backup %d failed: %s", backup_id, exc)
            else:
                log.exception("backup %d failed", backup_id)
            with self.db.write_session() as session:
                backups.finish(session, backup_id=backup_id, now=self.clock.now(), error=str(exc))
            return
        with self.db.write_session() as session:
            backups.finish(
                session,
                backup_id=backup_id,
                now=self.clock.now(),
                file_name=taken.path.name,
                size=taken.size,
                parts=[p.path for p in taken.manifest.parts],
            )
        log.info("backup %d: %s, %d bytes", backup_id, taken.path, taken.size)

    def _prune(self) -> None:
        with self.db.read_session() as session:
            if not backups.expired(session, keep=self.settings.backup_keep):
                return  # nothing to drop: no write transaction
        with self.db.write_session() as session:
            for old in backups.expired(session, keep=self.settings.backup_keep):
                if old.file_name:
                    (self.folder / old.file_name).unlink(missing_ok=True)
                session.delete(old)
