"""Bodies of the statistics overview (``gaia.api.routes.overview``): per-cluster and per-business
counts and usage against quota. See docs/architecture.md, "api".
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class UsageLine(BaseModel):
    dimension: str
    unit: str
    used: float | int
    total: float | int


class ClusterOverview(BaseModel):
    name: str
    kind: str
    region: str
    zone: str
    health: str
    node_count: int | None
    ready_node_count: int | None
    businesses: int = Field(description="businesses holding a quota here (visible to you)")
    usage: list[UsageLine] = Field(description="quota used vs allocated, summed over businesses")


class BusinessOverview(BaseModel):
    name: str
    display_name: str
    members: int
    clusters: int
    usage: list[UsageLine] = Field(description="used vs quota, summed over clusters")


class OverviewOut(BaseModel):
    totals: dict[str, int]
    clusters: list[ClusterOverview]
    businesses: list[BusinessOverview]


class SearchHit(BaseModel):
    kind: str = Field(description="business, app, instance or node")
    name: str
    business: str = ""
    app: str = ""
    cluster: str = ""
    detail: str = Field(default="", description="what matched when not the name (an address)")


class SearchOut(BaseModel):
    query: str
    items: list[SearchHit]
