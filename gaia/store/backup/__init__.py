"""Backup and restore of the platform (issue 21, docs/backup.md).

A backup is one archive (``archive``): a manifest, Gaia's database (``databases``: SQLite by its
online backup API, PostgreSQL by ``pg_dump``), one etcd snapshot per cluster Gaia can reach the
etcd of (``etcd``), and a reference to the secret key, not the key, unless asked. ``runs`` takes
a backup and restores one: an archive is checked whole before anything is restored, and the
database is restored into a fresh place, checked and only then swapped in, so a restore that
fails leaves the platform as it was. ``gaia backup`` / ``gaia restore`` (``gaia.cli``) and the
scheduled backups of the ``controllers`` leader (``gaia.controllers.backups``) call ``runs``.
"""

from gaia.store.backup.archive import ArchiveRefused, BackupError, Manifest, read_manifest
from gaia.store.backup.etcd import EtcdAccess, EtcdTools
from gaia.store.backup.runs import (
    ClusterEtcd,
    Restored,
    SecretKeys,
    Taken,
    restore_backup,
    secret_keys,
    take_backup,
)

__all__ = [
    "ArchiveRefused",
    "BackupError",
    "ClusterEtcd",
    "EtcdAccess",
    "EtcdTools",
    "Manifest",
    "Restored",
    "SecretKeys",
    "Taken",
    "read_manifest",
    "restore_backup",
    "secret_keys",
    "take_backup",
]
