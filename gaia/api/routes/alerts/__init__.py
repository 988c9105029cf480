"""The alerting API: channels, receivers and groups, policies (with the built-in rules and the
Prometheus rule-file export), silences, records, the Alertmanager webhook receiver, and metric
queries. One ``router`` includes a router per resource:

- ``channels``: ``/alerts/channels`` and the test send;
- ``receivers``: ``/alerts/receivers`` and ``/alerts/receiver-groups``;
- ``policies``: ``/alerts/policies``, ``/alerts/builtin-rules``,
  ``/clusters/{cluster}/alert-rules``, ``/alerts/rules.yaml``;
- ``silences``: ``/alerts/silences``;
- ``records``: ``/alerts/records``;
- ``alertmanager``: ``/alerts/alertmanager``;
- ``monitoring``: ``/monitoring/series``.

Every object belongs to a business or to the platform; ``_owned`` holds that rule once (who sees,
who writes, how a listing is narrowed). A route parses, authorises, calls one operation of the
store (``gaia.store.alerting``) or of alerting (``gaia.monitor.alerting``), and shapes the answer.
See docs/architecture.md (the API; alerting).
"""

from __future__ import annotations

from fastapi import APIRouter

from gaia.api.deps import CommittingRoute
from gaia.api.routes.alerts import (
    alertmanager,
    channels,
    monitoring,
    policies,
    receivers,
    records,
    silences,
)

router = APIRouter(route_class=CommittingRoute)
for _module in (channels, receivers, policies, silences, records, alertmanager, monitoring):
    router.include_router(_module.router)

__all__ = ["router"]
