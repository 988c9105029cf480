"""What every alerting route shares: who owns an object, who may see and write it, and the one
typed way to list and fetch an owned object.

Ownership: every object belongs to a business (``business``) or to the platform (``business``
omitted: cluster and node policies, built-in rules, the platform's own channels). Members of a
business read its objects (non-members get *not found*, as everywhere, so names do not leak);
the permission each write needs is the route's to name. Platform objects are the platform admins'.

``OwnedKind`` is that rule once for the six kinds (channels, receivers, receiver groups, policies,
silences, records): ``page`` lists what the caller sees (``?business=`` narrows it, ``-`` asks for
the platform's), ``get`` fetches one the caller may use for a permission. The queries are the
store's (``gaia.store.alerting.owned``); the decisions are made here. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from sqlalchemy.orm import Session

from gaia.api.deps import AuditContext, Principal, business_for, require_platform_admin
from gaia.api.pagination import page_of
from gaia.domain.errors import Forbidden, NotFound
from gaia.domain.rbac import Permission, allows
from gaia.store.alerting.owned import (
    EVERYONE,
    NOBODY,
    PLATFORM,
    Condition,
    Owned,
    Owners,
    business_names,
    find_owned,
    owned_select,
)
from gaia.store.models import Business

# The published bound is 2**31 (one past the largest row id): the store answers such an id as
# not found (gaia.store.models.ROW_ID_MAX) rather than changing the API document.
Id = Annotated[int, Path(ge=1, le=2**31)]
BusinessQuery = Annotated[
    str | None,
    Query(max_length=63, description="only this business's (\"-\": only the platform's)"),
]
Out = TypeVar("Out")


def owner_business(
    session: Session,
    principal: Principal,
    business: str | None,
    permission: Permission,
    ctx: AuditContext | None,
) -> Business | None:
    """The owning business of a new object (None: the platform's), checked: the caller has
    ``permission`` in it, or is a platform admin for a platform object."""
    if business is None:
        require_platform_admin(principal, "manage the platform's alerting")
        return None
    return business_for(session, principal, business, permission, ctx=ctx)


def owner_id(
    session: Session,
    principal: Principal,
    business: str | None,
    permission: Permission,
    ctx: AuditContext | None,
) -> int | None:
    """``owner_business``'s id."""
    owner = owner_business(session, principal, business, permission, ctx)
    return owner.id if owner is not None else None


def authorise(
    principal: Principal, business_id: int | None, permission: Permission, what: str
) -> None:
    """Visible (else NotFound) and allowed (else Forbidden)."""
    if principal.is_platform_admin:
        return
    if business_id is None:
        raise NotFound(f"{what} not found")
    role = principal.roles.get(business_id)
    if role is None:
        raise NotFound(f"{what} not found")
    if not allows(role, permission):
        raise Forbidden(f"your role '{role}' does not allow '{permission.value}'")


def owners_for(session: Session, principal: Principal, business: str | None) -> Owners:
    """Whose objects a listing shows this caller (``business``: the query parameter)."""
    if business == "-":
        return PLATFORM if principal.is_platform_admin else NOBODY
    if business:
        return Owners.businesses(
            [business_for(session, principal, business, Permission.BUSINESS_READ).id]
        )
    if principal.is_platform_admin:
        return EVERYONE
    return Owners.businesses(principal.business_ids())


def owner_name(business_id: int | None, names: Mapping[int, str]) -> str | None:
    """The owner as the API shows it: the business's name, or None for the platform."""
    return names.get(business_id) if business_id is not None else None


@dataclass(frozen=True, slots=True)
class Listing(Generic[Owned]):
    """One page of owned objects and the names of their businesses."""

    rows: list[Owned]
    next_cursor: str | None
    names: dict[int, str]

    def items(self, shape: Callable[[Owned, Mapping[int, str]], Out]) -> list[Out]:
        return [shape(row, self.names) for row in self.rows]


@dataclass(frozen=True, slots=True)
class OwnedKind(Generic[Owned]):
    """One kind of owned alert object, and what the API calls it in messages."""

    model: type[Owned]
    what: str

    def page(
        self,
        session: Session,
        principal: Principal,
        business: str | None,
        *,
        limit: int,
        cursor: str | None,
        where: Sequence[Condition] = (),
        descending: bool = False,
    ) -> Listing[Owned]:
        """One page of the objects the principal sees, newest first when ``descending``."""
        stmt = owned_select(self.model, owners_for(session, principal, business), where=where)
        rows, nxt = page_of(
            session,
            stmt,
            key=self.model.id,
            limit=limit,
            cursor=cursor,
            descending=descending,
            numeric=True,
        )
        return Listing(rows, nxt, business_names(session, (r.business_id for r in rows)))

    def get(
        self, session: Session, principal: Principal, obj_id: int, permission: Permission
    ) -> Owned:
        """The object, if the principal may see it and has ``permission`` on its owner."""
        obj = find_owned(session, self.model, obj_id, what=self.what)
        authorise(principal, obj.business_id, permission, f"{self.what} {obj_id}")
        return obj

    def names(self, session: Session, obj: Owned) -> dict[int, str]:
        """The name of one object's business, for shaping it."""
        return business_names(session, [obj.business_id])
