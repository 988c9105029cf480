"""Gray upgrades: ``/businesses/{biz}/apps/{app}/upgrades[/{upgrade}[/pause|resume|rollback]]``.

An upgrade moves the chosen instances (or all, in id order) to a target template in batches of
``max_unavailable``; the plan and its states are ``gaia.domain.upgrades``, the stored upgrade
and its transitions ``gaia.store.apps``, and the app controller steps it. These routes start
one, show them with progress (the stored plan stepped against what the cluster reports), and
pause, resume or roll one back. Progress is an upgrade's plan stepped against the cluster's
small state of each instance (``instance_states``), never their full views; the list reads it
for the upgrade in progress only, and counts the rest in the database (issue 22).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, readable_app, writable_app
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.apps.fit import check_fit
from gaia.api.routes.apps.observe import progress_states
from gaia.api.routes.apps.shapes import (
    AppPath,
    BizPath,
    UpgradePath,
    upgrade_out,
    upgrade_summary_out,
)
from gaia.api.schemas.apps import UpgradeIn, UpgradeOut, UpgradePage
from gaia.domain.upgrades import ACTIVE, UpgradeState
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


@router.get("/businesses/{biz}/apps/{app}/upgrades", response_model=UpgradePage)
async def list_upgrades(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: UpgradeState | None = Query(default=None, description="only upgrades in this state"),
) -> UpgradePage:
    """The app's upgrades, newest first, as a list shows them: each one's instances counted,
    not listed (``GET .../upgrades/{id}`` lists them), and the progress of the one in progress
    only. ``total``, ``by_state`` and ``active`` are counted by the database over every
    upgrade, so a page of upgrades of 10,000 instances each reads neither their lists nor the
    instances' views: only while one is in progress, its list and the cluster's small states
    of its instances (``progress_states``)."""
    business, row = readable_app(session, principal, biz=biz, app=app)
    rows, nxt = store_apps.list_upgrades(
        session, app=row, limit=limit, cursor=cursor, state=state.value if state else ""
    )
    counts = store_apps.upgrade_counts(session, app=row)
    sizes = store_apps.instance_counts(session, [r.id for r in rows])
    moving = {r.id for r in rows if UpgradeState(r.state) in ACTIVE}
    # the instance lists load here, for the one in progress only
    ids = {iid for r in rows if r.id in moving for iid in r.instance_ids}
    states = await progress_states(request, session, business, row, ids=ids) if moving else None
    return UpgradePage(
        items=[
            upgrade_summary_out(
                r,
                instance_count=sizes.get(r.id, 0),
                states=states if r.id in moving else None,
                app=row,
            )
            for r in rows
        ],
        next_cursor=nxt,
        total=sum(counts.by_state.values()),
        by_state=counts.by_state,
        active=counts.active,
    )


@router.get("/businesses/{biz}/apps/{app}/upgrades/{upgrade}", response_model=UpgradeOut)
async def get_upgrade(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    upgrade: int = UpgradePath,
) -> UpgradeOut:
    """One upgrade with its instance lists and its progress against the cluster now."""
    business, row = readable_app(session, principal, biz=biz, app=app)
    found = store_apps.find_upgrade(session, app=row, upgrade_id=upgrade)
    states = await progress_states(request, session, business, row, ids=found.instance_ids)
    return upgrade_out(found, states, row)


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
