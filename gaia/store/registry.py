"""Gaia's view of its image registry (issue 18): repositories, tags, usage per namespace.

The registry keeps the images; Gaia keeps what its push notifications said (``record_push``,
``record_manifest_delete``), so lists, sizes and "who pushed when" come from the database and
never from walking the registry's storage. A namespace's usage counts every distinct blob its
tags reference once (layers shared by two tags are stored once), plus the manifests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gaia.domain.errors import NotFound
from gaia.domain.registry import NamespaceKind, RepositoryName
from gaia.store.models import (
    Business,
    Cluster,
    Membership,
    RegistryRepository,
    RegistryTag,
    User,
)


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    name: str
    namespace: str
    kind: str
    tags: int
    size: int  # distinct blobs of its tags, and their manifests
    last_pushed_at: dt.datetime | None
    created_at: dt.datetime


def _repository(session: Session, repo: RepositoryName, *, create: bool) -> RegistryRepository:
    row = session.scalars(
        select(RegistryRepository).where(RegistryRepository.name == repo.name)
    ).one_or_none()
    if row is None:
        if not create:
            raise NotFound(f"repository '{repo.name}' not found")
        row = RegistryRepository(name=repo.name, namespace=repo.namespace, kind=repo.kind.value)
        session.add(row)
        session.flush()
    return row


def record_push(
    session: Session,
    *,
    repo: RepositoryName,
    tag: str,
    digest: str,
    media_type: str,
    manifest_size: int,
    blobs: Iterable[tuple[str, int]],
    pushed_by: str,
    pushed_at: dt.datetime,
) -> RegistryTag:
    """A manifest pushed under ``tag``: the tag now names ``digest`` (an older notification
    than the one recorded does not move it back)."""
    row = _repository(session, repo, create=True)
    sizes = {d: int(s) for d, s in blobs}
    blob_list: list[list[Any]] = [[d, s] for d, s in sizes.items()]
    size = manifest_size + sum(sizes.values())
    found = session.scalars(
        select(RegistryTag).where(RegistryTag.repository_id == row.id, RegistryTag.tag == tag)
    ).one_or_none()
    if found is None:
        found = RegistryTag(repository_id=row.id, tag=tag)
        session.add(found)
    elif found.pushed_at > pushed_at:
        return found  # a late, older event (the registry retries)
    found.digest, found.media_type, found.size = digest, media_type, size
    found.blobs, found.pushed_by, found.pushed_at = blob_list, pushed_by, pushed_at
    session.flush()
    return found


def record_manifest_delete(session: Session, *, repo: RepositoryName, digest: str) -> list[str]:
    """The manifest ``digest`` was deleted: every tag that named it is gone. The tags."""
    row = session.scalars(
        select(RegistryRepository).where(RegistryRepository.name == repo.name)
    ).one_or_none()
    if row is None:
        return []
    tags = list(
        session.scalars(
            select(RegistryTag.tag).where(
                RegistryTag.repository_id == row.id, RegistryTag.digest == digest
            )
        )
    )
    session.execute(
        delete(RegistryTag).where(RegistryTag.repository_id == row.id, RegistryTag.digest == digest)
    )
    return tags


def tags_of(session: Session, name: str) -> list[RegistryTag]:
    row = session.scalars(
        select(RegistryRepository).where(RegistryRepository.name == name)
    ).one_or_none()
    if row is None:
        raise NotFound(f"repository '{name}' not found")
    return list(
        session.scalars(
            select(RegistryTag)
            .where(RegistryTag.repository_id == row.id)
            .order_by(RegistryTag.pushed_at.desc(), RegistryTag.tag)
        )
    )


def tag_named(session: Session, name: str, tag: str) -> RegistryTag:
    for row in tags_of(session, name):
        if row.tag == tag:
            return row
    raise NotFound(f"tag '{tag}' of repository '{name}' not found")


def _size(tags: Iterable[RegistryTag]) -> int:
    blobs: dict[str, int] = {}
    manifests: dict[str, int] = {}
    for t in tags:
        blob_total = 0
        for digest, size in t.blobs:
            blobs[str(digest)] = int(size)
            blob_total += int(size)
        manifests[t.digest] = max(0, t.size - blob_total)
    return sum(blobs.values()) + sum(manifests.values())


def repositories(session: Session, *, namespaces: set[str] | None) -> list[RepositorySummary]:
    """Repositories in ``namespaces`` (None: all), by name."""
    query = select(RegistryRepository).order_by(RegistryRepository.name)
    if namespaces is not None:
        if not namespaces:
            return []
        query = query.where(RegistryRepository.namespace.in_(sorted(namespaces)))
    rows = list(session.scalars(query))
    tags: dict[int, list[RegistryTag]] = {r.id: [] for r in rows}
    if rows:
        for t in session.scalars(
            select(RegistryTag).where(RegistryTag.repository_id.in_(list(tags)))
        ):
            tags[t.repository_id].append(t)
    return [
        RepositorySummary(
            name=r.name,
            namespace=r.namespace,
            kind=r.kind,
            tags=len(tags[r.id]),
            size=_size(tags[r.id]),
            last_pushed_at=max((t.pushed_at for t in tags[r.id]), default=None),
            created_at=r.created_at,
        )
        for r in rows
    ]


def namespace_usage(session: Session, namespace: str) -> int:
    """Bytes the namespace holds: its distinct blobs and its manifests."""
    return _size(
        session.scalars(
            select(RegistryTag)
            .join(RegistryRepository, RegistryRepository.id == RegistryTag.repository_id)
            .where(RegistryRepository.namespace == namespace)
        )
    )


def namespace_repository_count(session: Session, namespace: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(RegistryRepository)
            .where(RegistryRepository.namespace == namespace)
        )
        or 0
    )


def business_quota(session: Session, business: str, default: int) -> int:
    """The registry quota of business ``business`` (its own, else ``default``)."""
    quota = session.scalar(select(Business.registry_quota_bytes).where(Business.name == business))
    return default if quota is None else int(quota)


@dataclass(frozen=True, slots=True)
class NamespaceFigures:
    namespace: str
    repositories: int
    tags: int
    bytes: int


def namespace_figures(session: Session) -> list[NamespaceFigures]:
    """Every namespace Gaia has records of: repositories, tags, bytes (for the metrics)."""
    repos = {r.id: r.namespace for r in session.scalars(select(RegistryRepository))}
    by_namespace: dict[str, list[RegistryTag]] = {ns: [] for ns in repos.values()}
    counts: dict[str, int] = {}
    for ns in repos.values():
        counts[ns] = counts.get(ns, 0) + 1
    for t in session.scalars(select(RegistryTag)):
        by_namespace[repos[t.repository_id]].append(t)
    return [
        NamespaceFigures(ns, counts[ns], len(tags), _size(tags))
        for ns, tags in sorted(by_namespace.items())
    ]


def business_names(session: Session, ids: Iterable[int] | None) -> dict[int, str]:
    """Business id -> name, for ``ids`` (None: every business)."""
    query = select(Business.id, Business.name)
    if ids is not None:
        query = query.where(Business.id.in_(list(ids)))
    return {business_id: name for business_id, name in session.execute(query)}


def roles_of(session: Session, user_id: int) -> dict[int, str]:
    """Business id -> the user's role there."""
    return {
        business_id: role
        for business_id, role in session.execute(
            select(Membership.business_id, Membership.role).where(Membership.user_id == user_id)
        )
    }


def set_business_quota(session: Session, business: str, quota: int | None) -> None:
    row = session.scalars(select(Business).where(Business.name == business)).one_or_none()
    if row is None:
        raise NotFound(f"business '{business}' not found")
    row.registry_quota_bytes = quota
    session.flush()


def cluster_by_name(session: Session, name: str) -> Cluster | None:
    return session.scalars(select(Cluster).where(Cluster.name == name)).one_or_none()


def namespace_exists(session: Session, repo: RepositoryName) -> bool:
    """Whether the namespace of ``repo`` belongs to someone: ``public``, an existing user's
    ``u/<user>``, an existing business."""
    if repo.kind is NamespaceKind.PUBLIC:
        return True
    if repo.kind is NamespaceKind.PERSONAL:
        return session.scalar(select(User.id).where(User.username == repo.owner)) is not None
    return session.scalar(select(Business.id).where(Business.name == repo.owner)) is not None
