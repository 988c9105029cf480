"""Metric queries: ``GET /monitoring/series``, a metric's series over a time range, read from
the platform's metric store (``gaia.monitor.metrics``), and ``GET /monitoring/metrics``, the
catalogue of the metrics the platform collects (what a policy may watch, with the labels its
scope needs). They live with alerting because the console picks and draws a policy's metric with
them; their tag is ``monitoring``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from gaia.api.deps import CommittingRoute, PrincipalDep, business_for, platform
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.alerts import MetricOut, SeriesOut
from gaia.api.schemas.base import Page
from gaia.domain.errors import Forbidden, InvalidRequest
from gaia.domain.rbac import Permission
from gaia.monitor.metrics import catalogue

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)


@router.get("/monitoring/metrics", response_model=Page[MetricOut], tags=["monitoring"])
def list_metrics(
    principal: PrincipalDep, limit: Limit = 500, cursor: Cursor = None
) -> Page[MetricOut]:
    """The metric catalogue: every metric the platform collects, by name, a
    page at a time. The same for every caller (it names
    metrics, not their values)."""
    items = [
        MetricOut(
            name=m.name,
            type=m.type,
            unit=m.unit,
            labels=list(m.labels),
            area=m.area,
            help=m.help,
        )
        for m in catalogue.collected()
    ]
    page, nxt = page_in_memory(
        items, key=lambda m: m.name, kind="metric-catalogue", limit=limit, cursor=cursor
    )
    return Page[MetricOut](items=page, next_cursor=nxt)


@router.get("/monitoring/series", response_model=list[SeriesOut], tags=["monitoring"])
async def query_series(
    request: Request,
    principal: PrincipalDep,
    metric: Annotated[str, Query(min_length=1, max_length=200)],
    start: float | None = None,
    end: float | None = None,
    step: Annotated[float, Query(gt=0, le=86400)] = 60.0,
    business: Annotated[str | None, Query(max_length=63)] = None,
    app: Annotated[str | None, Query(max_length=63)] = None,
    instance: Annotated[str | None, Query(max_length=253)] = None,
    cluster: Annotated[str | None, Query(max_length=63)] = None,
    node: Annotated[str | None, Query(max_length=253)] = None,
) -> list[SeriesOut]:
    """A metric's series over a time range (default: the last hour). Members of a business see
    its series (``business`` required); cluster and node series are the platform admins'."""
    definition = catalogue.lookup(metric)
    if definition is None:
        raise InvalidRequest(f"metric '{metric}' is not in the catalogue (docs/metrics.md)")
    plat = platform(request)
    if not principal.is_platform_admin:
        if not business:
            raise InvalidRequest("business is required (you see your businesses' series)")
        if "business" not in definition.labels:
            raise Forbidden(f"'{metric}' is a platform metric: platform admins only")
        with plat.db.read_session() as session:
            business_for(session, principal, business, Permission.BUSINESS_READ)
    now = plat.clock.now().timestamp()
    end = end if end is not None else now
    start = start if start is not None else end - 3600
    if start > end:
        raise InvalidRequest("start must not be after end")
    if (end - start) / step > 11_000:
        raise InvalidRequest("too many points: widen step (at most 11,000 points per series)")
    matchers = {
        k: v
        for k, v in (
            ("business", business),
            ("app", app),
            ("instance", instance),
            ("cluster", cluster),
            ("node", node),
        )
        if v
    }
    series = await plat.metric_store.query_range(metric, matchers, start=start, end=end, step=step)
    return [
        SeriesOut(metric=s.metric, labels=dict(s.labels), points=list(s.points))
        for s in series[:500]
    ]
