"""What a Prometheus scrapes: ``GET /metrics`` and ``GET /metrics/clusters`` (root paths).

- ``/metrics``: the platform's own metrics (``gaia.monitor.metrics.platform``): requests, loops,
  alerting, the metric store's size, the process.
- ``/metrics/clusters``: the series the collector read from the clusters, when the metric store
  is a Prometheus (``GAIA_METRICS_STORE=prometheus``): the latest sample of each series with its
  timestamp (``PrometheusStore.exposition``). A separate path because it is a different job: far
  more series, scraped at the collector's interval with ``honor_labels``/``honor_timestamps``
  (``gaia.monitor.metrics.prometheus.scrape_config``), while the platform's metrics are ordinary
  target metrics. With the embedded store it answers 404: nothing is to be scraped.

Both need ``Authorization: Bearer <token>``: the API token of a platform administrator, or the
value of ``GAIA_METRICS_TOKEN`` (compared in constant time; a scraper needs no user account).
Anything else is 401: a scrape either has the credentials or it has none.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request, Response

from gaia.api.deps import CommittingRoute, audit, authenticate, platform
from gaia.domain.errors import NotFound, Unauthenticated
from gaia.monitor.metrics.platform import CONTENT_TYPE
from gaia.monitor.metrics.prometheus import EXPOSITION_CONTENT_TYPE, PrometheusStore

router = APIRouter(include_in_schema=False, route_class=CommittingRoute)

_NEEDED = "send 'Authorization: Bearer <token>' with a platform administrator's API token or "
_NEEDED += "the metrics token (GAIA_METRICS_TOKEN)"


def metrics_reader(request: Request) -> str:
    """Who is scraping: ``metrics-token`` or the administrator's user name; 401 otherwise.

    A sync dependency (run in a worker thread): only an administrator's token needs the
    database, and a scrape with the metrics token never touches it.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(_NEEDED)
    plat = platform(request)
    configured = plat.settings.metrics_token
    if configured and hmac.compare_digest(token.encode(), configured.encode()):
        who = "metrics-token"
    else:
        with plat.db.read_session() as session:
            principal = authenticate(session, token, cache=plat.principals)
        if not principal.is_platform_admin:
            raise Unauthenticated(f"'{principal.username}' may not read metrics: {_NEEDED}")
        who = principal.username
    audit(request).actor = who
    return who


@router.get("/metrics")
async def platform_metrics(request: Request, _reader: str = Depends(metrics_reader)) -> Response:
    """The platform's own metrics, Prometheus text format."""
    return Response(platform(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/metrics/clusters")
async def cluster_metrics(request: Request, _reader: str = Depends(metrics_reader)) -> Response:
    """The collected cluster series, for the Prometheus that is Gaia's metric store.

    ``async``: the exposition is read on the event loop, where the collector writes it.
    """
    store = platform(request).metric_store
    if not isinstance(store, PrometheusStore):
        raise NotFound(
            "cluster series are kept by the embedded metric store and not exposed; set "
            "GAIA_METRICS_STORE=prometheus and GAIA_PROMETHEUS_URL to have Prometheus keep them"
        )
    return Response(store.exposition(), media_type=EXPOSITION_CONTENT_TYPE)
