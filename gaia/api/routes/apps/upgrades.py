"""Gray upgrades: ``/businesses/{biz}/apps/{app}/upgrades[/{upgrade}[/pause|resume|rollback]]``.

An upgrade moves the chosen instances (or all, in id order) to a target template in batches of
``max_unavailable``; the plan and its states are ``gaia.domain.upgrades``, the stored upgrade
and its transitions ``gaia.store.apps``, and the app controller steps it. These routes start
one, show them with progress (the stored plan stepped against what the cluster reports), and
pause, resume or roll one back.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, readable_app, writable_app
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.apps.fit import check_fit
from gaia.api.routes.apps.observe import observe_app
from gaia.api.routes.apps.shapes import AppPath, BizPath, UpgradePath, upgrade_out
from gaia.api.schemas.apps import UpgradeIn, UpgradeOut
from gaia.api.schemas.base import Page
from gaia.domain.upgrades import UpgradeState
from gaia.store import apps as store_apps

router = APIRouter(route_class=CommittingRoute)


@router.post("/businesses/{biz}/apps/{app}/upgrades", response_model=UpgradeOut, status_code=201)
async def create_upgrade(
    body: UpgradeIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> UpgradeOut:
    """Gray upgrade: move the chosen instances (or all, in id order) to ``template`` in batches of
    ``max_unavailable``. In place when only the image differs; a recreating upgrade to a
    template whose one instance fits no node of the cluster is refused unless
    ``allow_pending`` (it would take instances down for good)."""
    target = writable_app(request, session, principal, biz=biz, app=app, action="upgrade.create")
    upgrade, in_place = store_apps.create_upgrade(
        session,
        business=target.business,
        app=target.app,
        target=body.template,
        instance_ids=None if body.all else list(body.instance_ids or []),
        max_unavailable=body.max_unavailable,
        created_by=principal.username,
    )
    if not in_place:
        await check_fit(
            request,
            session,
            business=target.business,
            cluster=store_apps.cluster_of(session, target.app),
            app=target.app,
            templates=[store_apps.load_templates(session, target.app.id)[upgrade.target]],
            allow_pending=body.allow_pending,
            user=principal.username,
        )
    target.audit.summary = (
        f"upgrade {upgrade.id}: {len(upgrade.instance_ids)} instance(s) of '{app}' to "
        f"{upgrade.target}, {upgrade.max_unavailable} at a time, "
        f"{'in place' if in_place else 'recreating'}"
    )
    return upgrade_out(upgrade, None, target.app)


@router.get("/businesses/{biz}/apps/{app}/upgrades", response_model=Page[UpgradeOut])
async def list_upgrades(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[UpgradeOut]:
    """The app's upgrades, newest first."""
    business, row = readable_app(session, principal, biz=biz, app=app)
    rows, nxt = store_apps.list_upgrades(session, app=row, limit=limit, cursor=cursor)
    # their progress reads their own instances only, not every instance of the app
    ids = {iid for r in rows for iid in r.instance_ids}
    observed = await observe_app(request, session, business, row, ids=ids) if ids else []
    return Page[UpgradeOut](items=[upgrade_out(r, observed, row) for r in rows], next_cursor=nxt)


@router.get("/businesses/{biz}/apps/{app}/upgrades/{upgrade}", response_model=UpgradeOut)
async def get_upgrade(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    upgrade: int = UpgradePath,
) -> UpgradeOut:
    business, row = readable_app(session, principal, biz=biz, app=app)
    found = store_apps.find_upgrade(session, app=row, upgrade_id=upgrade)
    observed = await observe_app(request, session, business, row, ids=found.instance_ids)
    return upgrade_out(found, observed, row)


def _transition_route(
    verb: str, allowed_from: frozenset[UpgradeState], to: UpgradeState, doc: str
) -> None:
    """Register ``POST .../upgrades/{upgrade}/<verb>``: one state change of an upgrade."""
    spoken = verb.replace("rollback", "roll back")

    def route(
        request: Request,
        principal: PrincipalDep,
        session: SessionDep,
        biz: str = BizPath,
        app: str = AppPath,
        upgrade: int = UpgradePath,
    ) -> UpgradeOut:
        target = writable_app(
            request,
            session,
            principal,
            biz=biz,
            app=app,
            action=f"upgrade.{verb}",
            target=f"{app}/upgrade/{upgrade}",
        )
        changed = store_apps.transition_upgrade(
            session,
            app=target.app,
            upgrade_id=upgrade,
            verb=spoken,
            allowed_from=allowed_from,
            to=to,
            actor=principal.username,
        )
        target.audit.summary = f"{spoken} upgrade {upgrade} of app '{app}' (to {changed.target})"
        return upgrade_out(changed, None, target.app)

    route.__doc__ = doc
    route.__name__ = f"{verb}_upgrade"
    router.post(
        f"/businesses/{{biz}}/apps/{{app}}/upgrades/{{upgrade}}/{verb}", response_model=UpgradeOut
    )(route)


_transition_route(
    "pause", frozenset({UpgradeState.RUNNING}), UpgradeState.PAUSED, "Stop starting new batches."
)
_transition_route(
    "resume", frozenset({UpgradeState.PAUSED}), UpgradeState.RUNNING, "Go on with the next batches."
)
_transition_route(
    "rollback",
    frozenset({UpgradeState.RUNNING, UpgradeState.PAUSED, UpgradeState.SUCCEEDED}),
    UpgradeState.ROLLING_BACK,
    "Move every instance the upgrade touched back to its previous template, in batches.",
)
