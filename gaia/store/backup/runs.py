"""Taking a whole backup and restoring one: the database, the key reference, etcd snapshots.

``take_backup`` stages each part in a private temporary folder (the database copy, one etcd
snapshot per cluster with etcd access, the key only when asked), hashes them into the manifest
and writes the archive (``archive.write_archive``). ``restore_backup`` checks the archive
whole before anything else (``archive.open_archive``), checks the key it was given against the
manifest's fingerprints, restores the database into a fresh place, checks it and swaps it in
(``databases``), then makes fresh etcd data dirs from the snapshots when asked (``etcd``).

The secret key is referenced, not copied: the manifest says where it came from
(``GAIA_SECRET_KEY`` or the data dir's key file) and a fingerprint of each key, so a restore
given the wrong key stops at once with a message instead of restoring secrets nobody can read.
An operator who keeps the key nowhere else may ask for it in the archive
(``include_key``); the archive is then as secret as the key, and is written mode 0600.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gaia import __version__
from gaia.security import SecretBox, SecretKeyError, parse_secret_keys
from gaia.store.backup import databases
from gaia.store.backup.archive import (
    ArchiveRefused,
    BackupError,
    KeyReference,
    Manifest,
    describe,
    key_fingerprint,
    open_archive,
    write_archive,
)
from gaia.store.backup.etcd import EtcdAccess, EtcdTools, restore_snapshot, save_snapshot
from gaia.store.migrate import known_revisions

Progress = Callable[[str], None]


def _quiet(_step: str) -> None:
    return None


@dataclass(frozen=True)
class SecretKeys:
    """The platform's keys and where they came from (``KeyReference.source``)."""

    keys: list[bytes]
    source: str

    def box(self) -> SecretBox:
        return SecretBox(self.keys)


def secret_keys(*, secret_key: str, data_dir: Path) -> SecretKeys:
    """The keys a platform with these settings uses (``SecretBox.from_settings``' order)."""
    if secret_key:
        return SecretKeys(parse_secret_keys(secret_key), "GAIA_SECRET_KEY")
    key_file = data_dir / "secret.key"
    if not key_file.exists():
        raise SecretKeyError(
            f"no GAIA_SECRET_KEY and no key file at {key_file}: which key encrypts this "
            "platform's secrets?"
        )
    return SecretKeys(parse_secret_keys(key_file.read_bytes()), str(key_file))


@dataclass(frozen=True)
class ClusterEtcd:
    cluster: str
    access: EtcdAccess


@dataclass(frozen=True)
class Taken:
    path: Path
    size: int
    manifest: Manifest


def take_backup(
    *,
    database_url: str,
    keys: SecretKeys,
    etcd: list[ClusterEtcd],
    target: Path,
    include_key: bool = False,
    tools: EtcdTools | None = None,
    pg_bin_dir: Path | None = None,
    progress: Progress = _quiet,
) -> Taken:
    """Write a backup archive to ``target`` (a file that does not exist yet)."""
    if target.exists():
        raise BackupError(f"{target} exists: a backup never overwrites a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    tools = tools or EtcdTools()
    with tempfile.TemporaryDirectory(prefix="gaia-backup-", dir=target.parent) as folder:
        stage = Path(folder)
        staged: dict[str, Path] = {}
        (stage / "database").mkdir()
        progress("database")
        if database_url.startswith("sqlite"):
            copy = databases.dump_sqlite(database_url, into=stage / "database" / "gaia.db")
            dialect = "sqlite"
        else:
            copy = databases.dump_postgresql(
                database_url, into=stage / "database" / "gaia.pgdump", bin_dir=pg_bin_dir
            )
            dialect = "postgresql"
        inside = f"database/{copy.path.name}"
        staged[inside] = copy.path
        parts = [describe(copy.path, inside=inside, kind="database")]
        versions = {"database": copy.tool_version}
        (stage / "etcd").mkdir()
        for item in etcd:
            progress(f"etcd {item.cluster}")
            snapshot = stage / "etcd" / f"{item.cluster}.db"
            versions["etcd"] = save_snapshot(item.access, into=snapshot, tools=tools)
            inside = f"etcd/{item.cluster}.db"
            staged[inside] = snapshot
            parts.append(describe(snapshot, inside=inside, kind="etcd", cluster=item.cluster))
        if include_key:
            key_path = stage / "secret.key"
            key_path.write_bytes(b",".join(keys.keys))
            key_path.chmod(0o600)
            staged["secret-key/secret.key"] = key_path
            parts.append(describe(key_path, inside="secret-key/secret.key", kind="secret-key"))
        manifest = Manifest(
            gaia_version=__version__,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            dialect=dialect,
            schema_revision=copy.schema_revision,
            key=KeyReference(
                source=keys.source,
                fingerprints=[key_fingerprint(k) for k in keys.keys],
                included=include_key,
            ),
            row_counts=copy.row_counts,
            parts=parts,
            tool_versions=versions,
        )
        progress("archive")
        size = write_archive(target=target, manifest=manifest, staged=staged)
    return Taken(target, size, manifest)


@dataclass
class Restored:
    manifest: Manifest
    secrets_read: int
    rows: int
    previous: str  # where the database that was there before now is ("" if none)
    key_written: str = ""  # the key file written into the new data dir, if any
    etcd_data_dirs: dict[str, Path] = field(default_factory=dict)


def _keys_for_restore(manifest: Manifest, given: list[bytes], unpacked: Path) -> list[bytes]:
    included = manifest.part("secret-key")
    keys = list(given)
    if not keys and included is not None:
        keys = parse_secret_keys((unpacked / included.path).read_bytes())
    if not keys:
        raise BackupError(
            "no secret key: this backup's secrets were encrypted with the key from "
            f"{manifest.key.source} (fingerprint {manifest.key.fingerprints[0]}), which the "
            "archive does not hold; give it as GAIA_SECRET_KEY or with --secret-key-file"
        )
    if not {key_fingerprint(k) for k in keys} & set(manifest.key.fingerprints):
        raise BackupError(
            "the secret key given is not the one this backup's secrets were encrypted with "
            f"(the backup names key {manifest.key.fingerprints[0]} from {manifest.key.source}; "
            f"given: {', '.join(key_fingerprint(k) for k in keys)})"
        )
    return keys


def restore_backup(
    *,
    archive: Path,
    database_url: str,
    data_dir: Path,
    keys: list[bytes],
    write_key_file: bool,
    etcd_out: Path | None = None,
    tools: EtcdTools | None = None,
    pg_bin_dir: Path | None = None,
    etcd_member: str = "default",
    etcd_peer_url: str = "http://127.0.0.1:2380",
    progress: Progress = _quiet,
) -> Restored:
    """Restore ``archive`` into ``database_url``; the archive is unpacked in ``data_dir`` (on the
    same disk as the data). ``keys``: the key(s) the operator gave (empty: the archive's, if it
    holds one). ``write_key_file``: put the key beside the SQLite file (a platform run without
    GAIA_SECRET_KEY reads it there). ``etcd_out``: a fresh etcd data dir per snapshot there."""
    tools = tools or EtcdTools()
    archive = archive.resolve()
    scratch_parent = data_dir.resolve()
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gaia-restore-", dir=scratch_parent) as folder:
        unpacked = Path(folder)
        progress("checking the archive")
        manifest = open_archive(archive, into=unpacked, known_revisions=known_revisions())
        dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        if manifest.dialect != dialect:
            raise ArchiveRefused(
                f"{archive} holds a {manifest.dialect} database; the platform here uses "
                f"{dialect} (GAIA_DATABASE_URL): restore it to a {manifest.dialect} platform"
            )
        chosen = _keys_for_restore(manifest, keys, unpacked)
        box = SecretBox(chosen)
        database = manifest.part("database")
        if database is None:
            raise ArchiveRefused(f"{archive} holds no database")
        if etcd_out is not None:
            for part in manifest.parts:
                if part.kind == "etcd" and (etcd_out / part.cluster).exists():
                    raise BackupError(
                        f"{etcd_out / part.cluster} exists: etcd restores only into a fresh "
                        "data dir; choose another --etcd-out"
                    )
        progress("database")
        key_written = ""
        if dialect == "sqlite":
            swapped = databases.restore_sqlite(
                part=unpacked / database.path,
                db_file=databases.sqlite_path(database_url).resolve(),
                schema_revision=manifest.schema_revision,
                row_counts=manifest.row_counts,
                box=box,
                key_file=b",".join(chosen) if write_key_file else None,
            )
            if write_key_file:
                key_written = str(
                    databases.sqlite_path(database_url).resolve().parent / "secret.key"
                )
        else:
            swapped = databases.restore_postgresql(
                part=unpacked / database.path,
                url=database_url,
                schema_revision=manifest.schema_revision,
                row_counts=manifest.row_counts,
                box=box,
                bin_dir=pg_bin_dir,
            )
        restored = Restored(
            manifest=manifest,
            secrets_read=swapped.check.secrets_read,
            rows=swapped.check.rows,
            previous=swapped.previous,
            key_written=key_written,
        )
        if etcd_out is not None:
            etcd_out.mkdir(parents=True, exist_ok=True)
            for part in manifest.parts:
                if part.kind != "etcd":
                    continue
                progress(f"etcd {part.cluster}")
                kept = etcd_out / f"{part.cluster}.snapshot.db"
                shutil.copyfile(unpacked / part.path, kept)
                restore_snapshot(
                    kept,
                    data_dir=etcd_out / part.cluster,
                    name=etcd_member,
                    peer_url=etcd_peer_url,
                    tools=tools,
                )
                restored.etcd_data_dirs[part.cluster] = etcd_out / part.cluster
    return restored
