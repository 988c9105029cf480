"""Receivers (a person's email and phone) and receiver groups: ``/alerts/receivers`` and
``/alerts/receiver-groups``.

Developers and above of a business write its receivers and groups; a group names only receivers
of its own owner, and neither can be deleted while a policy (or, for a receiver, a group) still
names it (``gaia.store.alerting.targets``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    inline_write,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.alerts._owned import BusinessQuery, Id, OwnedKind, owner_id, owner_name
from gaia.api.schemas.alerts import (
    GroupCreate,
    GroupOut,
    GroupUpdate,
    ReceiverCreate,
    ReceiverOut,
    ReceiverUpdate,
)
from gaia.api.schemas.base import Page
from gaia.domain.rbac import Permission
from gaia.store.alerting import targets
from gaia.store.models import AlertReceiver, AlertReceiverGroup

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)
RECEIVERS = OwnedKind(AlertReceiver, "receiver")
GROUPS = OwnedKind(AlertReceiverGroup, "group")


def _receiver_out(r: AlertReceiver, names: Mapping[int, str]) -> ReceiverOut:
    return ReceiverOut(
        id=r.id,
        business=owner_name(r.business_id, names),
        name=r.name,
        email=r.email,
        phone=r.phone,
    )


def _group_out(g: AlertReceiverGroup, names: Mapping[int, str]) -> GroupOut:
    return GroupOut(
        id=g.id,
        business=owner_name(g.business_id, names),
        name=g.name,
        receiver_ids=list(g.receiver_ids or []),
    )


# ---------------------------------------------------------------- receivers


@router.get("/alerts/receivers", response_model=Page[ReceiverOut])
def list_receivers(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ReceiverOut]:
    listing = RECEIVERS.page(session, principal, business, limit=limit, cursor=cursor)
    return Page[ReceiverOut](items=listing.items(_receiver_out), next_cursor=listing.next_cursor)


@router.post("/alerts/receivers", response_model=ReceiverOut, status_code=201)
@inline_write
def create_receiver(
    request: Request, body: ReceiverCreate, principal: PrincipalDep, session: SessionDep
) -> ReceiverOut:
    ctx = audit(request, action="alert_receiver.create", target=f"alert-receiver/{body.name}")
    owner = owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    row = targets.create_receiver(
        session, business_id=owner, name=body.name, email=body.email, phone=body.phone
    )
    ctx.summary = f"created receiver '{body.name}'"
    return _receiver_out(row, RECEIVERS.names(session, row))


@router.patch("/alerts/receivers/{receiver_id}", response_model=ReceiverOut)
@inline_write
def update_receiver(
    request: Request,
    receiver_id: Id,
    body: ReceiverUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> ReceiverOut:
    ctx = audit(request, action="alert_receiver.update", target=f"alert-receiver/{receiver_id}")
    row = RECEIVERS.get(session, principal, receiver_id, Permission.ALERT_WRITE)
    targets.update_receiver(session, row, name=body.name, email=body.email, phone=body.phone)
    ctx.summary = f"updated receiver '{row.name}'"
    return _receiver_out(row, RECEIVERS.names(session, row))


@router.delete("/alerts/receivers/{receiver_id}", status_code=204)
def delete_receiver(
    request: Request, receiver_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = audit(request, action="alert_receiver.delete", target=f"alert-receiver/{receiver_id}")
    row = RECEIVERS.get(session, principal, receiver_id, Permission.ALERT_WRITE)
    targets.delete_receiver(session, row)
    ctx.summary = f"deleted receiver '{row.name}'"
    return Response(status_code=204)


# ---------------------------------------------------------------- receiver groups


@router.get("/alerts/receiver-groups", response_model=Page[GroupOut])
def list_groups(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[GroupOut]:
    listing = GROUPS.page(session, principal, business, limit=limit, cursor=cursor)
    return Page[GroupOut](items=listing.items(_group_out), next_cursor=listing.next_cursor)


@router.post("/alerts/receiver-groups", response_model=GroupOut, status_code=201)
@inline_write
def create_group(
    request: Request, body: GroupCreate, principal: PrincipalDep, session: SessionDep
) -> GroupOut:
    ctx = audit(request, action="alert_group.create", target=f"alert-group/{body.name}")
    owner = owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    row = targets.create_receiver_group(
        session, business_id=owner, name=body.name, receiver_ids=body.receiver_ids
    )
    ctx.summary = f"created receiver group '{body.name}' with {len(row.receiver_ids)} receivers"
    return _group_out(row, GROUPS.names(session, row))


@router.patch("/alerts/receiver-groups/{group_id}", response_model=GroupOut)
@inline_write
def update_group(
    request: Request, group_id: Id, body: GroupUpdate, principal: PrincipalDep, session: SessionDep
) -> GroupOut:
    ctx = audit(request, action="alert_group.update", target=f"alert-group/{group_id}")
    row = GROUPS.get(session, principal, group_id, Permission.ALERT_WRITE)
    targets.update_receiver_group(session, row, name=body.name, receiver_ids=body.receiver_ids)
    ctx.summary = f"updated receiver group '{row.name}'"
    return _group_out(row, GROUPS.names(session, row))


@router.delete("/alerts/receiver-groups/{group_id}", status_code=204)
def delete_group(
    request: Request, group_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = audit(request, action="alert_group.delete", target=f"alert-group/{group_id}")
    row = GROUPS.get(session, principal, group_id, Permission.ALERT_WRITE)
    targets.delete_receiver_group(session, row)
    ctx.summary = f"deleted receiver group '{row.name}'"
    return Response(status_code=204)
