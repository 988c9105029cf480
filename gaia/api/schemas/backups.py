"""Backups (docs/backup.md) and a cluster's etcd access, as the API shows and takes them."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from gaia.store.models import Backup


class BackupOut(BaseModel):
    id: int
    trigger: str = Field(description="schedule, or api (POST /backups)")
    state: str = Field(description="Pending, Running, Succeeded or Failed")
    progress: str = Field(description="the step a running backup is at (database, etcd <cluster>)")
    message: str = Field(description="why it failed")
    file_name: str = Field(description="the archive, in the backup folder (GAIA_BACKUP_DIR)")
    size_bytes: int
    parts: list[str]
    requested_by: str
    requested_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, b: Backup) -> BackupOut:
        return cls(
            id=b.id,
            trigger=b.trigger,
            state=b.state,
            progress=b.progress,
            message=b.message,
            file_name=b.file_name,
            size_bytes=b.size_bytes,
            parts=list(b.parts or []),
            requested_by=b.requested_by,
            requested_at=b.requested_at,
            started_at=b.started_at,
            finished_at=b.finished_at,
        )


class EtcdAccessIn(BaseModel):
    endpoints: list[str] = Field(
        min_length=1,
        max_length=16,
        description="client URLs of the cluster's etcd members (http:// or https://)",
    )
    ca: str = Field(default="", max_length=65536, description="PEM: the CA of etcd's certificate")
    cert: str = Field(default="", max_length=65536, description="PEM: Gaia's client certificate")
    key: str = Field(default="", max_length=65536, description="PEM: its private key")


class EtcdAccessOut(BaseModel):
    cluster: str
    configured: bool = Field(description="backups snapshot this cluster's etcd")
    endpoints: list[str]
    tls: bool = Field(description="a client certificate is set (never returned)")
