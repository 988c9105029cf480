"""Bodies of Gaia's image registry (docs/registry.md): repositories, tags, namespaces."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from gaia.api.schemas.base import Strict


class RegistryInfoOut(BaseModel):
    enabled: bool = Field(description="false: this platform runs no registry")
    address: str = Field(description="host[:port] to push to and pull from")
    realm: str = Field(description="the token endpoint the registry sends clients to")
    service: str
    login: str = Field(description="how to log in, e.g. with podman")


class RepositoryOut(BaseModel):
    name: str
    namespace: str
    kind: str = Field(description="personal | public | business")
    tags: int
    size: int = Field(description="bytes: distinct blobs of its tags and their manifests")
    last_pushed_at: dt.datetime | None
    created_at: dt.datetime


class TagOut(BaseModel):
    repository: str
    tag: str
    digest: str
    media_type: str
    size: int = Field(description="bytes: the manifest and every blob it references")
    pushed_by: str
    pushed_at: dt.datetime
    reference: str = Field(description="what to pull: <address>/<repository>@<digest>")


class NamespaceOut(BaseModel):
    namespace: str
    kind: str
    repositories: int
    used_bytes: int
    quota_bytes: int | None = Field(description="null: no quota (public)")
    can_push: bool


class RegistryQuotaIn(Strict):
    quota_bytes: int | None = Field(
        ge=0, le=1 << 50, description="bytes; null: the platform's default"
    )


class TagDeletedOut(BaseModel):
    repository: str
    tag: str
    digest: str


class RegistryGcOut(BaseModel):
    freed_bytes: int
    bytes_after: int
    seconds: float
    blobs_deleted: int
