"""Bodies of instance configurations, the named instance shapes
(``gaia.api.routes.instance_configs``).

One set of bodies serves both scopes (the platform's and a business's); ``scope`` and
``business`` in the answer say which. See docs/architecture.md, "api".
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from gaia.api.schemas.base import Description, Name, ResourceAmounts, Strict


class InstanceConfigIn(Strict):
    name: Name
    description: Description = ""
    resources: ResourceAmounts


class InstanceConfigUpdate(Strict):
    description: Description | None = None
    resources: ResourceAmounts | None = None


class InstanceConfigOut(BaseModel):
    name: str
    scope: Literal["platform", "business"]
    business: str | None
    description: str
    resources: ResourceAmounts
    summary: str = Field(description='e.g. "4 cores, 10240 MiB memory, 2 GPU"')
    created_at: dt.datetime
