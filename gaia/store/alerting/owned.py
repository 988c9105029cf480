"""Alert objects owned by a business or by the platform: one mechanism for all of them.

Channels, receivers, receiver groups, policies, silences and records each belong to a business
(``business_id``) or to the platform (``business_id`` NULL). What is the same for every kind
lives here once, typed over the model:

- ``Owners`` says whose objects a listing covers and ``owned_select`` turns it into a statement;
- ``find_owned`` loads one object or raises ``NotFound`` naming it;
- ``ensure_unique_name`` and ``ensure_same_owner`` are the two integrity checks every write makes
  (names are unique per owner; an object only names objects of its own owner);
- ``names_referring`` finds who still names an object, so a delete can refuse with their names.

Who may see or write an object is the API's to decide (``gaia.api.routes.alerts``); this module
only reads and writes. See docs/architecture.md (the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, false, select
from sqlalchemy.orm import QueryableAttribute, Session

from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.store.models import (
    ROW_ID_MAX,
    AlertChannel,
    AlertPolicy,
    AlertReceiver,
    AlertReceiverGroup,
    AlertRecord,
    AlertSilence,
    Business,
)

Owned = TypeVar(
    "Owned",
    AlertChannel,
    AlertReceiver,
    AlertReceiverGroup,
    AlertPolicy,
    AlertSilence,
    AlertRecord,
)
# a WHERE condition: an expression, or a boolean column itself (``AlertPolicy.enabled``)
Condition = ColumnElement[bool] | QueryableAttribute[bool]
# the kinds that carry a name, unique per owner
Named = TypeVar("Named", AlertChannel, AlertReceiver, AlertReceiverGroup, AlertPolicy)
# the kinds that name others by id lists (a policy names channels, a group receivers)
Referring = TypeVar("Referring", AlertPolicy, AlertReceiverGroup)


@dataclass(frozen=True, slots=True)
class Owners:
    """Whose objects a query covers: everyone's, only the platform's, some businesses', or
    nobody's (a caller asking for the platform's objects who may not see them)."""

    kind: Literal["everyone", "platform", "businesses", "nobody"]
    business_ids: frozenset[int] = frozenset()

    @classmethod
    def businesses(cls, ids: Iterable[int]) -> Owners:
        return cls("businesses", frozenset(ids))

    def clause(self, model: Any) -> ColumnElement[bool] | None:
        """The WHERE clause (None: no restriction)."""
        if self.kind == "everyone":
            return None
        if self.kind == "platform":
            return owned_by(model, None)
        if self.kind == "nobody":
            return false()
        return model.business_id.in_(sorted(self.business_ids))  # type: ignore[no-any-return]


EVERYONE = Owners("everyone")
PLATFORM = Owners("platform")
NOBODY = Owners("nobody")


def owned_select(
    model: type[Owned], owners: Owners, *, where: Sequence[Condition] = ()
) -> Select[Owned]:
    """The ``model`` objects of ``owners`` that pass ``where``."""
    stmt = select(model).where(*where)
    clause = owners.clause(model)
    return stmt if clause is None else stmt.where(clause)


def owned_by(model: Any, business_id: int | None) -> ColumnElement[bool]:
    """The WHERE clause of the objects of one owner (None: the platform's)."""
    if business_id is None:
        return model.business_id.is_(None)  # type: ignore[no-any-return]
    return model.business_id == business_id  # type: ignore[no-any-return]


def business_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    """The names of the owning businesses of some objects (the platform has none)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(Business.id, Business.name).where(Business.id.in_(wanted)))
    return {row[0]: row[1] for row in rows}


def find_owned(session: Session, model: type[Owned], obj_id: int, *, what: str) -> Owned:
    """One object by id, or ``NotFound`` naming it (``what`` 12 not found)."""
    obj = session.get(model, obj_id) if 1 <= obj_id <= ROW_ID_MAX else None
    if obj is None:
        raise NotFound(f"{what} {obj_id} not found")
    return obj


def ensure_unique_name(
    session: Session,
    model: type[Named],
    *,
    business_id: int | None,
    name: str,
    what: str,
    skip: int = 0,
) -> None:
    """``Conflict`` if another object of this owner (not ``skip``) has this name."""
    clash = session.scalars(
        select(model.id).where(owned_by(model, business_id), model.name == name, model.id != skip)
    ).first()
    if clash is not None:
        raise Conflict(f"a {what} named '{name}' already exists here")


def ensure_same_owner(
    session: Session,
    model: type[Owned],
    ids: Sequence[int],
    *,
    business_id: int | None,
    what: str,
) -> None:
    """``InvalidRequest`` unless every id is an object of this owner."""
    if not ids:
        return
    found = {
        row.id: row.business_id
        for row in session.scalars(
            select(model).where(model.id.in_([i for i in ids if 1 <= i <= ROW_ID_MAX]))
        )
    }
    for obj_id in ids:
        if obj_id not in found or found[obj_id] != business_id:
            owner = "the platform" if business_id is None else "the policy's business"
            raise InvalidRequest(f"{what} {obj_id} does not exist or does not belong to {owner}")


def ensure_targets_owned(
    session: Session,
    business_id: int | None,
    *,
    receiver_ids: Sequence[int],
    group_ids: Sequence[int],
    channel_ids: Sequence[int],
) -> None:
    """A policy's receivers, groups and channels all belong to the policy's owner."""
    ensure_same_owner(
        session, AlertReceiver, receiver_ids, business_id=business_id, what="receiver"
    )
    ensure_same_owner(
        session, AlertReceiverGroup, group_ids, business_id=business_id, what="receiver group"
    )
    ensure_same_owner(session, AlertChannel, channel_ids, business_id=business_id, what="channel")


def names_referring(
    session: Session,
    model: type[Referring],
    field: str,
    obj: AlertChannel | AlertReceiver | AlertReceiverGroup,
) -> list[str]:
    """Names of the ``model`` objects of ``obj``'s owner whose id list ``field`` names ``obj``."""
    return sorted(
        row.name
        for row in session.scalars(select(model).where(owned_by(model, obj.business_id)))
        if obj.id in (getattr(row, field) or [])
    )
