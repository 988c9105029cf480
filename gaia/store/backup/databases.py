"""Gaia's database into a backup part and back: SQLite and PostgreSQL.

Taking a copy (``dump``):

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies the live database page by
  page into a new file; writers may go on meanwhile, and the copy is one consistent state. The
  row counts and schema revision are read from the copy itself.
- PostgreSQL: Debian's ``pg_dump --format=custom``, run with ``--snapshot`` of a REPEATABLE READ
  transaction Gaia holds open: the row counts and schema revision recorded in the manifest are
  read in that transaction, so they describe exactly the state the dump holds.

Restoring (``restore_sqlite``, ``restore_postgresql``) never writes over what is there until the
copy has been checked: the part goes into a fresh place (a new file beside the database file, a
new database beside the target), is checked (the schema revision, every table's row count
against the manifest, every stored secret decrypted with the key given), and only then swapped in
by renames. What was there before is kept under a ``before-restore`` name and reported. A check
that fails removes the staging copy and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

from gaia.security import SecretBox
from gaia.store.backup.archive import BackupError
from gaia.store.database import Database
from gaia.store.migrate import current_revision
from gaia.store.secrets import undecryptable


@dataclass(frozen=True)
class DatabaseCopy:
    path: Path
    schema_revision: str
    row_counts: dict[str, int]
    tool_version: str


def _counts(connection: Connection) -> dict[str, int]:
    """Rows per table, of the tables this database has (an older schema has fewer)."""
    counts = {}
    # the names come from the database's own catalogue, not from input
    for table in sorted(inspect(connection).get_table_names()):
        query = text(f'SELECT count(*) FROM "{table}"')  # noqa: S608
        counts[table] = int(connection.execute(query).scalar_one())
    return counts


def _revision(connection: Connection) -> str:
    revision = current_revision(connection)
    if not revision:
        raise BackupError("the database has no schema revision: it was never migrated by Gaia")
    return revision


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"{url} is not a SQLite file: nothing to back up")
    return Path(database)


def dump_sqlite(url: str, *, into: Path) -> DatabaseCopy:
    source = sqlite3.connect(sqlite_path(url), timeout=30)
    target = sqlite3.connect(into)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    engine = create_engine(f"sqlite:///{into}")
    try:
        with engine.connect() as connection:
            revision, counts = _revision(connection), _counts(connection)
    finally:
        engine.dispose()
    return DatabaseCopy(into, revision, counts, f"sqlite {sqlite3.sqlite_version}")


# -- PostgreSQL ----------------------------------------------------------------------------


def find_pg_tool(name: str, bin_dir: Path | None) -> str:
    """``pg_dump``/``pg_restore`` of ``bin_dir``, else the newest Debian PostgreSQL's, else PATH.
    The newest matters: pg_dump refuses a server newer than itself."""
    if bin_dir is not None:
        return str(bin_dir / name)
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if (p / "bin" / name).exists() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        if versions:
            return str(versions[-1] / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found: install PostgreSQL's client programs (Debian: postgresql-client) "
            "or point GAIA_PG_BIN_DIR at them"
        )
    return found


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries it (a password on
    the command line is visible to every user through ps)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], *, env: dict[str, str], what: str) -> str:
    done = subprocess.run(  # noqa: S603 - PostgreSQL's own tools, arguments built here
        command, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BackupError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def dump_postgresql(url: str, *, into: Path, bin_dir: Path | None) -> DatabaseCopy:
    pg_dump = find_pg_tool("pg_dump", bin_dir)
    uri, env = _libpq(make_url(url))
    db = Database(url)
    try:
        repeatable = db.engine.execution_options(isolation_level="REPEATABLE READ")
        with repeatable.connect() as connection, connection.begin():
            snapshot = str(connection.execute(text("SELECT pg_export_snapshot()")).scalar_one())
            revision, counts = _revision(connection), _counts(connection)
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={into}",
                    f"--dbname={uri}",
                ],
                env=env,
                what="pg_dump",
            )
    finally:
        db.dispose()
    version = _run([pg_dump, "--version"], env=env, what="pg_dump --version").strip()
    return DatabaseCopy(into, revision, counts, version)


# -- checks shared by both restores --------------------------------------------------------


@dataclass(frozen=True)
class RestoreCheck:
    secrets_read: int
    rows: int


def check_restored(
    url: str, *, schema_revision: str, row_counts: dict[str, int], box: SecretBox
) -> RestoreCheck:
    """The staged database holds what the manifest says, and ``box`` reads every secret in it;
    ``BackupError`` naming the first difference otherwise."""
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            revision = _revision(connection)
            counts = _counts(connection)
        if revision != schema_revision:
            raise BackupError(
                f"the restored database is at schema {revision}, the manifest says "
                f"{schema_revision}: the archive is inconsistent"
            )
        differ = {t: (counts.get(t), n) for t, n in row_counts.items() if counts.get(t) != n}
        if differ:
            shown = ", ".join(
                f"{t}: {got} rows, expected {want}" for t, (got, want) in differ.items()
            )
            raise BackupError(f"the restored database differs from the backup: {shown}")
        with db.read_session() as session:
            readable, failed = undecryptable(session, box)
        if failed:
            raise BackupError(
                f"the secret key given does not decrypt {len(failed)} stored secret(s) "
                f"(first: {failed[0]}): give the key the backup was taken with "
                "(GAIA_SECRET_KEY, or --secret-key-file)"
            )
    finally:
        db.dispose()
    return RestoreCheck(secrets_read=readable, rows=sum(row_counts.values()))


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# -- SQLite --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Swapped:
    check: RestoreCheck
    previous: str  # where what was there before now is ("" if nothing was)


def restore_sqlite(
    *,
    part: Path,
    db_file: Path,
    schema_revision: str,
    row_counts: dict[str, int],
    box: SecretBox,
    key_file: bytes | None,
) -> Swapped:
    """Restore into a new file beside ``db_file``, check it, then swap the files by renames
    (the old one, with its WAL, is kept aside). ``key_file``: the key to put beside it as
    ``secret.key`` (a platform that runs without GAIA_SECRET_KEY reads its key there); a
    different key file already there is kept aside too. The data dir's other contents (logs,
    metric snapshots, the registry's storage) are not part of a backup and stay as they are."""
    folder = db_file.parent
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _stamp()
    staged = folder / f".{db_file.name}.restore-{stamp}"
    try:
        shutil.copyfile(part, staged)
        integrity = sqlite3.connect(staged)
        try:
            verdict = integrity.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            integrity.close()
        if verdict != "ok":
            raise BackupError(f"the restored SQLite database fails its integrity check: {verdict}")
        check = check_restored(
            f"sqlite:///{staged}",
            schema_revision=schema_revision,
            row_counts=row_counts,
            box=box,
        )
    except BaseException:
        for leftover in (staged, *(staged.with_name(staged.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        raise
    previous = ""
    if db_file.exists():
        kept = db_file.with_name(f"{db_file.name}.before-restore-{stamp}")
        # the WAL holds committed transactions: it moves with its database, under the name
        # SQLite looks for beside the kept file
        for suffix in ("-wal", "-shm"):
            companion = db_file.with_name(db_file.name + suffix)
            if companion.exists():
                companion.rename(kept.with_name(kept.name + suffix))
        db_file.rename(kept)
        previous = str(kept)
    staged.rename(db_file)
    if key_file is not None:
        key_path = folder / "secret.key"
        if key_path.exists() and key_path.read_bytes().strip() != key_file:
            key_path.rename(key_path.with_name(f"secret.key.before-restore-{stamp}"))
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key_file)
    return Swapped(check, previous)


# -- PostgreSQL ----------------------------------------------------------------------------


@contextlib.contextmanager
def _maintenance(url: URL) -> Iterator[Connection]:
    """An autocommit connection to the server's ``postgres`` database (CREATE/ALTER DATABASE
    cannot run inside a transaction, nor in the database they change)."""
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _exists(connection: Connection, name: str) -> bool:
    found = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
    return found.first() is not None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def restore_postgresql(
    *,
    part: Path,
    url: str,
    schema_revision: str,
    row_counts: dict[str, int],
    box: SecretBox,
    bin_dir: Path | None,
) -> Swapped:
    """Restore into a new database beside the target, check it, then swap by renaming: the
    target (if any) becomes ``<name>_before_restore_<stamp>``, the new one takes its name. The
    role needs CREATEDB; Gaia's replicas must be stopped (their sessions on the target are
    ended for the rename)."""
    pg_restore = find_pg_tool("pg_restore", bin_dir)
    target = make_url(url)
    name = target.database
    if not name:
        raise BackupError(f"{url} names no database to restore into")
    stamp = _stamp().lower()
    staging_name = f"{name}_restore_{stamp}"[:63]
    staging = target.set(database=staging_name)
    with _maintenance(target) as admin:
        admin.execute(text(f"CREATE DATABASE {_quote(staging_name)}"))
    try:
        uri, env = _libpq(staging)
        _run(
            [
                pg_restore,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                f"--dbname={uri}",
                str(part),
            ],
            env=env,
            what="pg_restore",
        )
        check = check_restored(
            staging.render_as_string(hide_password=False),
            schema_revision=schema_revision,
            row_counts=row_counts,
            box=box,
        )
    except BaseException:
        with _maintenance(target) as admin:
            admin.execute(text(f"DROP DATABASE IF EXISTS {_quote(staging_name)} WITH (FORCE)"))
        raise
    previous = ""
    with _maintenance(target) as admin:
        if _exists(admin, name):
            previous = f"{name}_before_restore_{stamp}"[:63]
            admin.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            admin.execute(text(f"ALTER DATABASE {_quote(name)} RENAME TO {_quote(previous)}"))
        admin.execute(text(f"ALTER DATABASE {_quote(staging_name)} RENAME TO {_quote(name)}"))
    return Swapped(check, previous)
