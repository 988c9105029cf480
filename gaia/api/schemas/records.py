"""Bodies of the read-only views of operation records and events (``gaia.api.routes.records``).

See docs/architecture.md, "api".
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel


class RecordOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    business: str
    cluster: str
    action: str
    method: str
    path: str
    target: str
    summary: str
    result: Literal["success", "failure"]
    status_code: int
    error: str


class EventOut(BaseModel):
    id: int
    business: str
    cluster: str
    object_kind: str
    object_name: str
    reason: str
    message: str
    type: Literal["Normal", "Warning"]
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    user: str
