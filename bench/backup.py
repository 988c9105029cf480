"""Backup and restore (``gaia.store.backup``) against the bare tools, on SQLite and PostgreSQL.

Run ``.venv/bin/python bench/backup.py`` from the repository root (``--records N`` for the
size, default 200,000 operation records, about 70 MB in SQLite). A private PostgreSQL server is
started (``tests/support/postgres.py``, Debian's server); both databases are migrated and filled
with the same rows.

**Baseline**, measured in the same run on the same data: what an operator would run by hand,
``pg_dump --format=custom`` / ``pg_restore --single-transaction`` into a new database, and for
SQLite the online backup API into a file / a file copy. **Gaia** adds what makes a backup safe to
restore: row counts read in the dump's own snapshot, a SHA-256 of every part, the tar with its
manifest; and at restore the whole archive checked, the database restored into a fresh place,
every table's rows counted, every secret decrypted, then swapped in. The figures are the median
of ``--repeat`` runs, and the overhead is Gaia's time over the baseline's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet
from sqlalchemy import text

from gaia.store import migrate
from gaia.store.backup import SecretKeys, restore_backup, take_backup
from gaia.store.backup.databases import find_pg_tool
from gaia.store.database import Database
from tests.support.postgres import PostgresServer, find_bin_dir

KEY = Fernet.generate_key()


def fill(url: str, records: int) -> None:
    db = Database(url)
    migrate.upgrade(db.engine)
    rows = [
        {
            "actor": f"user-{i % 50}",
            "business": f"biz-{i % 20}",
            "action": "app.update",
            "method": "PATCH",
            "path": f"/api/v1/businesses/biz-{i % 20}/apps/app-{i % 500}",
            "target": f"app/app-{i % 500}",
            "summary": f"changed replicas to {i % 9} and the image to shop/web:{i}",
            "result": "success",
            "status": 200,
        }
        for i in range(records)
    ]
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO operation_records (at, actor, business, cluster, action, method, path,"
                " target, summary, result, status_code, error, client) VALUES (CURRENT_TIMESTAMP,"
                " :actor, :business, '', :action, :method, :path, :target, :summary, :result,"
                " :status, '', '10.0.0.1')"
            ),
            rows,
        )
    db.dispose()


def timed(action: Callable[[], object], *, repeat: int, between: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        between()
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(dialect: str, url: str, work: Path, repeat: int) -> list[tuple[str, float, float, str]]:
    archive = work / f"{dialect}.tar"
    keys = SecretKeys([KEY], "GAIA_SECRET_KEY")
    data_dir = work / f"{dialect}-data"
    data_dir.mkdir(exist_ok=True)

    def gaia_backup() -> None:
        take_backup(database_url=url, keys=keys, etcd=[], target=archive)

    def clear() -> None:
        archive.unlink(missing_ok=True)
        for old in data_dir.glob("*before-restore*"):
            old.unlink()

    rows = []
    if dialect == "postgresql":
        pg_dump, pg_restore = find_pg_tool("pg_dump", None), find_pg_tool("pg_restore", None)
        dump = work / "bare.pgdump"
        plain = url.replace("+psycopg", "")

        def bare_backup() -> None:
            subprocess.run(
                [pg_dump, "--format=custom", "--no-owner", f"--file={dump}", f"--dbname={plain}"],
                check=True,
            )

        counter = iter(range(10**6))
        server_url = plain.rsplit("/", 1)[0]

        def bare_restore() -> None:
            name = f"bare_{next(counter)}"
            subprocess.run(
                [
                    find_pg_tool("psql", None),
                    f"{server_url}/postgres",
                    "-qc",
                    f"CREATE DATABASE {name}",
                ],
                check=True,
            )
            subprocess.run(
                [pg_restore, "--no-owner", "--single-transaction", "--exit-on-error",
                 f"--dbname={server_url}/{name}", str(dump)],
                check=True,
            )  # fmt: skip

        bare_size = dump
    else:
        source = url.split("///", 1)[1]
        copy = work / "bare.db"

        def bare_backup() -> None:
            copy.unlink(missing_ok=True)
            src, dst = sqlite3.connect(source), sqlite3.connect(copy)
            src.backup(dst)
            src.close()
            dst.close()

        def bare_restore() -> None:
            shutil.copyfile(copy, work / "bare-restored.db")

        bare_size = copy

    base = timed(bare_backup, repeat=repeat, between=lambda: None)
    ours = timed(gaia_backup, repeat=repeat, between=clear)
    rows.append(("backup", ours, base, f"{archive.stat().st_size / 2**20:.1f} MiB archive, "
                 f"bare {bare_size.stat().st_size / 2**20:.1f} MiB"))  # fmt: skip

    target_url = url if dialect == "postgresql" else f"sqlite:///{data_dir / 'gaia.db'}"

    def gaia_restore() -> None:
        restore_backup(
            archive=archive,
            database_url=target_url,
            data_dir=data_dir,
            keys=[KEY],
            write_key_file=False,
        )

    base = timed(bare_restore, repeat=repeat, between=lambda: None)
    ours = timed(gaia_restore, repeat=repeat, between=lambda: None)
    rows.append(("restore (check, fresh copy, verify, swap)", ours, base, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (scripts/test-setup.sh)")
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    server = PostgresServer(bin_dir)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="gaia-bench-backup-"))
    try:
        sqlite_url = f"sqlite:///{work / 'source.db'}"
        pg_url = server.create_database("bench_source")
        for url in (sqlite_url, pg_url):
            fill(url, args.records)
        print(f"data: {args.records:,} operation records; median of {args.repeat} runs")
        print(f"{'':52}{'Gaia':>10}{'bare tools':>12}{'overhead':>10}")
        for dialect, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
            for what, ours, base, note in run(dialect, url, work, args.repeat):
                print(
                    f"{dialect + ' ' + what:52}{ours:>9.2f}s{base:>11.2f}s"
                    f"{ours / base:>9.1f}x  {note}"
                )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
