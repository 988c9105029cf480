"""Instance configurations in the store: one table, two scopes (the platform's and a business's).

An app names a shape; ``find_config`` resolves the name the way the platform promises: the
business's own shape first, then the platform's of the same name.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import NotFound
from gaia.store.models import Business, InstanceConfig

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
