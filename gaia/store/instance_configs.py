"""Instance configurations in the store: one table, two scopes (the platform's and a business's).

An app names a shape; ``find_config`` resolves the name the way the platform promises: the
business's own shape first, then the platform's of the same name. The other functions work on
one scope at a time: ``business=None`` is the platform's scope. See docs/architecture.md, "store".
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, NotFound
from gaia.domain.resources import ResourceVector
from gaia.store.models import Business, InstanceConfig, utcnow

PLATFORM = "platform"


def scope_of(business: Business | None) -> str:
    return PLATFORM if business is None else f"business:{business.id}"


def find_config(session: Session, business: Business, name: str) -> InstanceConfig:
    """The shape an app of ``business`` means by ``name``: its own first, then the platform's."""
    for scope in (scope_of(business), PLATFORM):
        row = session.scalars(
            select(InstanceConfig).where(InstanceConfig.scope == scope, InstanceConfig.name == name)
        ).one_or_none()
        if row is not None:
            return row
    raise NotFound(f"instance configuration '{name}' not found for business '{business.name}'")


def configs_in(session: Session, *, business: Business | None) -> list[InstanceConfig]:
    """The shapes of one scope, by name."""
    return list(
        session.scalars(
            select(InstanceConfig)
            .where(InstanceConfig.scope == scope_of(business))
            .order_by(InstanceConfig.name)
        )
    )


def config_in(session: Session, *, business: Business | None, name: str) -> InstanceConfig:
    """The shape ``name`` of one scope (no fallback to the platform's); ``NotFound`` naming
    the scope."""
    row = session.scalars(
        select(InstanceConfig).where(
            InstanceConfig.scope == scope_of(business), InstanceConfig.name == name
        )
    ).one_or_none()
    if row is None:
        where = f"business '{business.name}'" if business else "the platform"
        raise NotFound(f"instance configuration '{name}' not found in {where}")
    return row


def create_config(
    session: Session,
    *,
    business: Business | None,
    name: str,
    description: str,
    amounts: ResourceVector,
) -> InstanceConfig:
    """A new shape in one scope; ``Conflict`` if the scope already has one of that name."""
    scope = scope_of(business)
    clash = session.scalars(
        select(InstanceConfig.id).where(InstanceConfig.scope == scope, InstanceConfig.name == name)
    ).first()
    if clash is not None:
        raise Conflict(f"instance configuration '{name}' already exists")
    row = InstanceConfig(
        scope=scope,
        business_id=business.id if business else None,
        name=name,
        description=description,
        created_at=utcnow(),
    )
    row.set_amounts(amounts)
    session.add(row)
    session.flush()
    return row


def update_config(
    session: Session,
    *,
    business: Business | None,
    name: str,
    description: str | None = None,
    amounts: ResourceVector | None = None,
) -> InstanceConfig:
    """Change the fields given (``None``: unchanged) of a shape in one scope."""
    row = config_in(session, business=business, name=name)
    if description is not None:
        row.description = description
    if amounts is not None:
        row.set_amounts(amounts)
    return row


def delete_config(session: Session, *, business: Business | None, name: str) -> None:
    session.delete(config_in(session, business=business, name=name))
