"""Running Alembic migrations from code (``gaia up`` and ``gaia db upgrade`` both call this).

Several replicas may start at once (issue 21): the migration runs under a lock, a PostgreSQL
transaction-level advisory lock (SQLite: the database's write lock, ``BEGIN IMMEDIATE``), in
the same transaction as the migration, so one replica migrates and the others then find the
schema current. A replica that finds the database at a revision it does not know (a newer Gaia
migrated it) refuses to start: running old code on a newer schema could write what the newer
code no longer reads.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key: "gaia" in ASCII, the same in every replica
MIGRATION_LOCK = 0x67616961


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer Gaia than this one."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is an ini file: '%' must be escaped in URLs with encoded passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def known_revisions() -> set[str]:
    """Every schema revision this Gaia's migrations know."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {s.revision for s in script.walk_revisions()}


def current_revision(connection: Connection) -> str:
    """The database's schema revision ("" when it was never migrated)."""
    return ",".join(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    known = known_revisions()
    locked = engine.execution_options(sqlite_begin="IMMEDIATE")
    with locked.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        current = MigrationContext.configure(connection).get_current_heads()
        newer = [r for r in current if r not in known]
        if newer:
            raise SchemaTooNew(
                f"the database is at schema {', '.join(newer)}, which this Gaia does not know "
                f"(it knows up to {max(known)}): a newer Gaia migrated it; run that version, or "
                "restore a backup taken before the upgrade"
            )
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
