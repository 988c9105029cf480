"""The Alembic migrations produce exactly the schema the ORM models describe."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from gaia.store import migrate
from gaia.store.database import Database
from gaia.store.models import Base


def test_migrations_match_models(database_url: str) -> None:
    db = Database(database_url)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database no migration has touched yet (not the shared template: this test moves the
    schema down and up again)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.create_database("gaia_migrations"))


def _names(db: Database) -> tuple[set[str], set[str]]:
    found = inspect(db.engine)
    tables = set(found.get_table_names())
    indexes = {
        i["name"] or ""
        for table in ("app_rollouts", "app_upgrades")
        if table in tables
        for i in found.get_indexes(table)
    }
    return tables, indexes


def test_upgrades_migration_renames_the_table_and_goes_back(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    migrate.upgrade(db.engine, "0005")
    tables, indexes = _names(db)
    assert "app_rollouts" in tables and "ix_app_rollouts_app_id" in indexes
    migrate.upgrade(db.engine)
    tables, indexes = _names(db)
    assert "app_upgrades" in tables and "app_rollouts" not in tables
    assert indexes == {"ix_app_upgrades_app_id"}
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            sequence = conn.scalar(text("SELECT pg_get_serial_sequence('app_upgrades', 'id')"))
        assert sequence == "public.app_upgrades_id_seq"
    cfg = migrate.alembic_config(db.engine.url.render_as_string(hide_password=False))
    with db.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0005")
    tables, indexes = _names(db)
    assert "app_rollouts" in tables and "app_upgrades" not in tables
    assert indexes == {"ix_app_rollouts_app_id"}
    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.dispose()


def test_replicas_migrate_at_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """Issue 21: migrations run under a lock (four replicas at once, one schema); a database a
    newer Gaia migrated stops an older one from starting, with what to do."""
    import threading

    url = f"sqlite:///{tmp_path / 'gaia.db'}"
    errors: list[BaseException] = []

    def start() -> None:
        db = Database(url)
        try:
            migrate.upgrade(db.engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the traceback, should one of them fail (a rare "database is locked" in one CI run)
    assert errors == [], "".join(traceback.format_exception(errors[0]))
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(migrate.SchemaTooNew, match="9999, which this Gaia does not know"):
        migrate.upgrade(db.engine)
    db.dispose()
