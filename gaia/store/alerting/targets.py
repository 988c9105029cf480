"""Where notifications go: channels, receivers and receiver groups, created, changed and deleted.

Each write keeps the two rules of owned objects (``gaia.store.alerting.owned``): a name is unique
per owner, and a group names only receivers of its own owner. A delete refuses, naming them, while
a policy or a group still names the object: a policy that silently lost its channel would stop
notifying without anyone noticing.

A channel's config arrives here already validated and encrypted (the channel kinds, their fields
and the masking of credentials are ``gaia.monitor.alerting.channels``'s and the API's); the store
keeps the ciphertext. See docs/architecture.md (the store).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict
from gaia.store.alerting.owned import (
    Named,
    ensure_same_owner,
    ensure_unique_name,
    names_referring,
    owned_by,
)
from gaia.store.models import AlertChannel, AlertPolicy, AlertReceiver, AlertReceiverGroup


def add_named(session: Session, row: Named, *, what: str) -> Named:
    """Insert a new named object (its id assigned), or ``Conflict`` if its owner has the name."""
    ensure_unique_name(session, type(row), business_id=row.business_id, name=row.name, what=what)
    session.add(row)
    session.flush()
    return row


def rename(session: Session, row: Named, name: str | None, *, what: str) -> bool:
    """Give ``row`` a new name if one is asked for and free; True if it changed."""
    if name is None or name == row.name:
        return False
    ensure_unique_name(
        session, type(row), business_id=row.business_id, name=name, what=what, skip=row.id
    )
    row.name = name
    return True


# ---------------------------------------------------------------- channels


def create_channel(
    session: Session,
    *,
    business_id: int | None,
    name: str,
    kind: str,
    config_encrypted: bytes,
    rate_limit_per_minute: int,
    enabled: bool,
    now: dt.datetime,
) -> AlertChannel:
    return add_named(
        session,
        AlertChannel(
            business_id=business_id,
            name=name,
            kind=kind,
            config_encrypted=config_encrypted,
            rate_limit_per_minute=rate_limit_per_minute,
            enabled=enabled,
            created_at=now,
            updated_at=now,
        ),
        what="channel",
    )


def update_channel(
    session: Session,
    channel: AlertChannel,
    *,
    config_encrypted: bytes | None,
    name: str | None,
    rate_limit_per_minute: int | None,
    enabled: bool | None,
    now: dt.datetime,
) -> list[str]:
    """Change what is given (None: keep); returns what changed besides the config, in words."""
    changed: list[str] = []
    if config_encrypted is not None:
        channel.config_encrypted = config_encrypted
    if rename(session, channel, name, what="channel"):
        changed.append("name")
    if rate_limit_per_minute is not None:
        channel.rate_limit_per_minute = rate_limit_per_minute
        changed.append("rate limit")
    if enabled is not None:
        channel.enabled = enabled
        changed.append("enabled" if enabled else "disabled")
    channel.updated_at = now
    return changed


def delete_channel(session: Session, channel: AlertChannel) -> None:
    users = names_referring(session, AlertPolicy, "channel_ids", channel)
    if users:
        raise Conflict(
            f"channel '{channel.name}' is used by the policies {', '.join(users[:10])}; "
            "remove it from them first"
        )
    session.delete(channel)


def receivers_of_owner(session: Session, business_id: int | None) -> Sequence[AlertReceiver]:
    """Every receiver of one owner (a channel test sends to them)."""
    return session.scalars(select(AlertReceiver).where(owned_by(AlertReceiver, business_id))).all()


# ---------------------------------------------------------------- receivers and groups


def create_receiver(
    session: Session, *, business_id: int | None, name: str, email: str, phone: str
) -> AlertReceiver:
    return add_named(
        session,
        AlertReceiver(business_id=business_id, name=name, email=email, phone=phone),
        what="receiver",
    )


def update_receiver(
    session: Session,
    receiver: AlertReceiver,
    *,
    name: str | None,
    email: str | None,
    phone: str | None,
) -> None:
    rename(session, receiver, name, what="receiver")
    if email is not None:
        receiver.email = email
    if phone is not None:
        receiver.phone = phone


def delete_receiver(session: Session, receiver: AlertReceiver) -> None:
    users = names_referring(session, AlertPolicy, "receiver_ids", receiver)
    groups = names_referring(session, AlertReceiverGroup, "receiver_ids", receiver)
    if users or groups:
        raise Conflict(
            f"receiver '{receiver.name}' is named by policies {users[:10]} and groups "
            f"{groups[:10]}; remove it there first"
        )
    session.delete(receiver)


def create_receiver_group(
    session: Session, *, business_id: int | None, name: str, receiver_ids: Sequence[int]
) -> AlertReceiverGroup:
    ensure_unique_name(
        session, AlertReceiverGroup, business_id=business_id, name=name, what="receiver group"
    )
    ensure_same_owner(
        session, AlertReceiver, receiver_ids, business_id=business_id, what="receiver"
    )
    group = AlertReceiverGroup(
        business_id=business_id, name=name, receiver_ids=sorted(set(receiver_ids))
    )
    session.add(group)
    session.flush()
    return group


def update_receiver_group(
    session: Session,
    group: AlertReceiverGroup,
    *,
    name: str | None,
    receiver_ids: Sequence[int] | None,
) -> None:
    rename(session, group, name, what="receiver group")
    if receiver_ids is not None:
        ensure_same_owner(
            session, AlertReceiver, receiver_ids, business_id=group.business_id, what="receiver"
        )
        group.receiver_ids = sorted(set(receiver_ids))


def delete_receiver_group(session: Session, group: AlertReceiverGroup) -> None:
    users = names_referring(session, AlertPolicy, "group_ids", group)
    if users:
        raise Conflict(f"group '{group.name}' is used by the policies {users[:10]}")
    session.delete(group)
