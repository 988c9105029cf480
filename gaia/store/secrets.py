"""Secrets at rest, all together: re-encrypting every encrypted column with the current key.

These columns hold Fernet ciphertext: a cluster's kubeconfig and etcd access, a config item's
secret data, an alert channel's credentials, a pipeline's git credentials and webhook secret
(``ENCRYPTED_COLUMNS``; a new encrypted column must be added there, and a test checks that
every ``*_encrypted`` column of the models is). Key rotation is: put the new key first in
``GAIA_SECRET_KEY`` (old ones after it, so everything stays readable), run ``reencrypt_all``
(``gaia secrets rotate``), then drop the old keys. The re-encryption runs in the caller's one
transaction: if any value cannot be decrypted nothing is changed, and the error names the row.
See docs/architecture.md, "store".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.security import SecretBox
from gaia.store.models import AlertChannel, Base, Cluster, ConfigItem, Pipeline

# (what it is, for the report; the model; its encrypted column)
ENCRYPTED_COLUMNS: list[tuple[str, type[Base], str]] = [
    ("cluster kubeconfigs", Cluster, "kubeconfig_encrypted"),
    ("cluster etcd access", Cluster, "etcd_encrypted"),
    ("config secrets", ConfigItem, "data_encrypted"),
    ("alert channel credentials", AlertChannel, "config_encrypted"),
    ("pipeline git credentials", Pipeline, "git_credentials_encrypted"),
    ("pipeline webhook secrets", Pipeline, "webhook_secret_encrypted"),
]


def reencrypt_all(session: Session, secrets: SecretBox) -> dict[str, int]:
    """Re-encrypt every stored secret with ``secrets``' first key; how many values of each
    kind were re-encrypted. ``ValueError`` naming the row if one cannot be decrypted."""
    counts: dict[str, int] = {}
    for label, entity, column in ENCRYPTED_COLUMNS:
        counts[label] = 0
        rows: list[Any] = list(
            session.scalars(select(entity).where(getattr(entity, column).is_not(None)))
        )
        for row in rows:
            try:
                rotated = secrets.rotate(getattr(row, column))
            except ValueError as exc:
                raise ValueError(f"{entity.__tablename__} id {row.id}: {exc}") from None
            setattr(row, column, rotated)
            counts[label] += 1
    session.flush()
    return counts


def undecryptable(session: Session, secrets: SecretBox) -> tuple[int, list[str]]:
    """How many stored secrets ``secrets`` decrypts, and the rows (``table id N``) it cannot:
    a restore checks with it that the key it was given reads the restored database."""
    readable, failed = 0, []
    for _label, entity, column in ENCRYPTED_COLUMNS:
        rows: list[Any] = list(
            session.scalars(select(entity).where(getattr(entity, column).is_not(None)))
        )
        for row in rows:
            try:
                secrets.decrypt(getattr(row, column))
                readable += 1
            except ValueError:
                failed.append(f"{entity.__tablename__} id {row.id} ({column})")
    return readable, failed
