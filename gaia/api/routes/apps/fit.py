"""Could an instance of each version ever run in the app's cluster? Asked at the API edge.

An app whose instances fit no node of its cluster (9 GPUs per instance on 8-GPU nodes) would be
admitted against the quota and wait forever. When an app is created or a version added, the
routes hand the stored versions to ``check_fit``: it reads the cluster's nodes through the
provider (sim or kubernetes alike), builds the scheduler's view of each as if empty
(``gaia.controllers.apps.node_view``) and asks the scheduler
(``gaia.scheduler.capacity.fits_nowhere``: the placement filter itself) whether one instance
could fit at least one node. It is a capacity check, not a placement: full nodes are fine.

Nothing fits: 422 with the scheduler's sentence, unless the caller set ``allow_pending``; then
the version is accepted and the app gets a Warning event saying its instances wait for a node.
A cluster that cannot be reached cannot be asked: the request goes through, and the app gets a
Warning event saying the check was not made (the controller's FailedScheduling events say the
rest once it is back).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request
from sqlalchemy.orm import Session

from gaia.api.routes.apps.observe import provider_for
from gaia.controllers.apps import node_view, placement_request
from gaia.domain.apps import TemplateSpec
from gaia.domain.errors import InvalidRequest
from gaia.scheduler.capacity import fits_nowhere
from gaia.store import events as store_events
from gaia.store.models import App, Business, Cluster

NO_NODE_FITS = "NoNodeFits"
FIT_UNCHECKED = "FitUnchecked"


async def check_fit(
    request: Request,
    session: Session,
    *,
    business: Business,
    cluster: Cluster,
    app: App,
    templates: Iterable[TemplateSpec],
    allow_pending: bool,
    user: str,
) -> None:
    """Refuse (422) a version whose one instance fits no node of ``cluster`` even when empty,
    or, with ``allow_pending``, accept it and say so in an event of the app."""
    try:
        nodes = await provider_for(request, cluster).list_nodes()
    except ConnectionError as exc:
        _event(
            session,
            business=business,
            cluster=cluster,
            app=app,
            user=user,
            reason=FIT_UNCHECKED,
            message=f"cluster {cluster.name} did not answer ({exc}); whether the instances fit "
            "a node was not checked",
        )
        return
    views = [node_view(n, empty=True) for n in nodes]
    for template in templates:
        why = fits_nowhere(
            placement_request(template, name=f"{business.name}/{app.name}"),
            views,
            cluster=cluster.name,
        )
        if why is None:
            continue
        if not allow_pending:
            raise InvalidRequest(
                f"template {template.name}: {why}; set allow_pending to accept it anyway and "
                "let its instances wait for such a node",
                details={"template": template.name, "reason": why, "cluster": cluster.name},
            )
        _event(
            session,
            business=business,
            cluster=cluster,
            app=app,
            user=user,
            reason=NO_NODE_FITS,
            message=f"template {template.name}: {why}; its instances cannot be placed on any "
            "current node and will wait for one (accepted with allow_pending)",
        )


def _event(
    session: Session,
    *,
    business: Business,
    cluster: Cluster,
    app: App,
    user: str,
    reason: str,
    message: str,
) -> None:
    store_events.emit(
        session,
        object_kind="App",
        object_name=app.name,
        reason=reason,
        message=message[:2000],
        type="Warning",
        business_id=business.id,
        business=business.name,
        cluster=cluster.name,
        user=user,
    )
