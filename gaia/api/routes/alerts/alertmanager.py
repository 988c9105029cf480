"""Alertmanager's webhook receiver: ``POST /alerts/alertmanager`` (``webhook_configs``, payload
version 4). A real Prometheus evaluating the exported rule files and its Alertmanager land their
alerts here; ``gaia.monitor.alerting.alertmanager`` routes them into records and the outbox.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request

from gaia.api.deps import (
    CommittingRoute,
    SessionDep,
    audit,
    authenticate,
    platform,
    require_platform_admin,
)
from gaia.api.schemas.alerts import AlertmanagerPayload, AlertmanagerResult
from gaia.domain.errors import Unauthenticated
from gaia.monitor.alerting.alertmanager import IncomingAlert, ingest

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)


@router.post("/alerts/alertmanager", response_model=AlertmanagerResult)
def alertmanager_webhook(
    request: Request, body: AlertmanagerPayload, session: SessionDep
) -> AlertmanagerResult:
    """Alertmanager's webhook receiver (``webhook_configs``, payload version 4). Authenticate with
    ``http_config.authorization.credentials``: a platform admin's API token, or
    ``GAIA_ALERTMANAGER_TOKEN``."""
    ctx = audit(request, action="alerts.alertmanager", target="alertmanager")
    plat = platform(request)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    expected = plat.settings.alertmanager_token
    if not token:
        raise Unauthenticated("send 'Authorization: Bearer <token>' (see http_config)")
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        ctx.actor = "alertmanager"
    else:
        principal = authenticate(session, token, cache=plat.principals)
        require_platform_admin(principal, "post Alertmanager alerts")
        ctx.actor = principal.username
    result = ingest(
        session,
        [
            IncomingAlert(
                status=a.status,
                labels=dict(a.labels),
                annotations=dict(a.annotations),
                starts_at=a.startsAt,
                ends_at=a.endsAt if a.endsAt and a.endsAt.year > 1 else None,
            )
            for a in body.alerts
        ],
        now=plat.clock.now(),
    )
    ctx.summary = (
        f"Alertmanager ({body.receiver}): {result.fired} fired, {result.resolved} resolved, "
        f"{result.duplicates} duplicates, {result.unrouted} unrouted"
    )
    return AlertmanagerResult(
        fired=result.fired,
        resolved=result.resolved,
        duplicates=result.duplicates,
        unrouted=result.unrouted,
    )
