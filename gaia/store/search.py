"""What the console's search box finds in the store (``GET /api/v1/search``): businesses and
apps by name, instances by name (``<app>-<id>``, from each app's instance map) and by floating
or NAT address (the network attachments), all within the businesses the caller may see.
Nodes are not in the store: the API asks the clusters' providers for them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gaia.store.models import App, Business, Cluster, NetworkAttachment

_INSTANCE = re.compile(r"^(?P<app>[a-z][-a-z0-9]*)-(?P<id>\d{1,9})$")


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str  # business | app | instance | node
    name: str
    business: str = ""
    app: str = ""
    cluster: str = ""
    detail: str = ""  # what matched when not the name (an address)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(session: Session, *, q: str, business_ids: set[int] | None, limit: int) -> list[Hit]:
    hits: list[Hit] = []
    pattern = _like(q.lower())
    businesses = select(Business).where(
        or_(
            Business.name.like(pattern, escape="\\"),
            Business.display_name.ilike(pattern, escape="\\"),
        )
    )
    if business_ids is not None:
        businesses = businesses.where(Business.id.in_(business_ids))
    for b in session.scalars(businesses.order_by(Business.name).limit(limit)):
        hits.append(Hit("business", b.name, business=b.name, detail=b.display_name))
    apps = (
        select(App, Business.name, Cluster.name)
        .join(Business, Business.id == App.business_id)
        .join(Cluster, Cluster.id == App.cluster_id)
        .where(App.name.like(pattern, escape="\\"), App.state != "deleting")
    )
    if business_ids is not None:
        apps = apps.where(App.business_id.in_(business_ids))
    for app, biz, cluster in session.execute(apps.order_by(App.name).limit(limit)):
        hits.append(Hit("app", app.name, business=biz, app=app.name, cluster=cluster))
    named = _INSTANCE.match(q.lower())
    if named is not None:
        owners = (
            select(App, Business.name, Cluster.name)
            .join(Business, Business.id == App.business_id)
            .join(Cluster, Cluster.id == App.cluster_id)
            .where(App.name == named.group("app"), App.state != "deleting")
        )
        if business_ids is not None:
            owners = owners.where(App.business_id.in_(business_ids))
        for app, biz, cluster in session.execute(owners.limit(limit)):
            if named.group("id") in {str(k) for k in app.instances}:
                hits.append(Hit("instance", q.lower(), business=biz, app=app.name, cluster=cluster))
    if re.fullmatch(r"[0-9.]{3,15}", q):
        attached = (
            select(NetworkAttachment, Business.name, Cluster.name)
            .join(Business, Business.id == NetworkAttachment.business_id)
            .join(Cluster, Cluster.id == NetworkAttachment.cluster_id)
            .where(NetworkAttachment.ip.startswith(q))
        )
        if business_ids is not None:
            attached = attached.where(NetworkAttachment.business_id.in_(business_ids))
        for row, biz, cluster in session.execute(
            attached.order_by(NetworkAttachment.ip).limit(limit)
        ):
            owner = _INSTANCE.match(row.pod)
            hits.append(
                Hit(
                    "instance",
                    row.pod,
                    business=biz,
                    app=owner.group("app") if owner else "",
                    cluster=cluster,
                    detail=row.ip,
                )
            )
    return hits[: limit * 3]
