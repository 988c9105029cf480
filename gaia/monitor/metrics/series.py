"""What flows between the collector, the stores, the alert evaluator and the console.

A series is identified by its metric name and its label set (Prometheus' data model, so the
embedded store and a real Prometheus answer the same questions). Times are Unix seconds (float):
the store does arithmetic on them, and a datetime per point would cost 10x the memory.

``MetricStore`` is the seam: ``EmbeddedStore`` (``gaia.monitor.metrics.tsdb``) by default,
``PrometheusStore`` (``gaia.monitor.metrics.prometheus``) when a Prometheus URL is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gaia.domain.errors import GaiaError

# A label matcher set: every label named must equal the value given (``{"app": "web"}``).
Matchers = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str
    labels: Mapping[str, str]
    value: float
    at: float  # Unix seconds


@dataclass(slots=True)
class Series:
    metric: str
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(
        default_factory=list
    )  # (unix seconds, value), by time

    @property
    def last(self) -> tuple[float, float] | None:
        return self.points[-1] if self.points else None


@runtime_checkable
class MetricStore(Protocol):
    async def write(self, samples: Sequence[Sample]) -> None:
        """Append samples (any series, any order within one call is fine)."""
        ...

    async def latest(
        self, metric: str, matchers: Matchers | None = None, *, at: float, lookback: float = 300.0
    ) -> list[Series]:
        """For each series of ``metric`` matching ``matchers``: its last point at or before ``at``
        and no older than ``at - lookback`` (series without one are left out), as one-point
        ``Series``. This is what alert rules evaluate (Prometheus' instant query)."""
        ...

    async def query_range(
        self,
        metric: str,
        matchers: Matchers | None = None,
        *,
        start: float,
        end: float,
        step: float,
    ) -> list[Series]:
        """Each matching series sampled every ``step`` seconds from ``start`` to ``end``
        (Prometheus' range query: at each step the last point within 300 s before it)."""
        ...

    async def close(self) -> None: ...


class MetricStoreUnavailable(GaiaError):
    """The metric store did not answer (a configured Prometheus is down, unreachable or refuses
    Gaia's credentials); the request may succeed once it is back. Queries the store refuses as
    malformed raise ``InvalidRequest`` instead."""

    code = "metric_store_unavailable"
