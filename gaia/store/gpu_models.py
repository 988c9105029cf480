"""Per-model GPU limits at rest: how many cards of one GPU model a business may hold in a cluster.

The quota's ``gpu`` dimension counts cards of every model; a ``GpuModelLimit`` row caps one model
on top of it (the app controller hands the scheduler the remaining budget per model). Amounts are
stored in hundredths of a card, as the quota's are: a fraction of one card is allowed, above one
card only whole cards. See docs/architecture.md, "store".
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import InvalidRequest, NotFound
from gaia.store.models import GpuModelLimit, utcnow


def gpu_model_limits(session: Session, *, business_id: int, cluster_id: int) -> list[GpuModelLimit]:
    """The limits of a business in a cluster, by model."""
    return list(
        session.scalars(
            select(GpuModelLimit)
            .where(GpuModelLimit.business_id == business_id, GpuModelLimit.cluster_id == cluster_id)
            .order_by(GpuModelLimit.model)
        )
    )


def _find(
    session: Session, *, business_id: int, cluster_id: int, model: str
) -> GpuModelLimit | None:
    return session.scalars(
        select(GpuModelLimit).where(
            GpuModelLimit.business_id == business_id,
            GpuModelLimit.cluster_id == cluster_id,
            GpuModelLimit.model == model,
        )
    ).one_or_none()


def put_gpu_model_limit(
    session: Session, *, business_id: int, cluster_id: int, model: str, cards: int
) -> GpuModelLimit:
    """Set the limit of ``model`` to ``cards`` hundredths of a card (creating it)."""
    if cards % 100 and cards > 100:
        raise InvalidRequest("cards above one must be whole cards")
    limit = _find(session, business_id=business_id, cluster_id=cluster_id, model=model)
    if limit is None:
        limit = GpuModelLimit(business_id=business_id, cluster_id=cluster_id, model=model)
        session.add(limit)
    limit.gpu = cards
    limit.updated_at = utcnow()
    session.flush()
    return limit


def delete_gpu_model_limit(
    session: Session, *, business_id: int, cluster_id: int, model: str
) -> None:
    """Remove the limit of ``model``; ``NotFound`` if there is none."""
    limit = _find(session, business_id=business_id, cluster_id=cluster_id, model=model)
    if limit is None:
        raise NotFound(f"no limit for GPU model '{model}'")
    session.delete(limit)
