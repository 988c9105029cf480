"""Apps: ``/businesses/{biz}/apps``, their templates, instances, gray upgrades and blacklist.

One ``router`` made of four, one per resource:

- ``apps``: the app itself (create, read, update, delete, stop, start), its service, blacklist;
- ``templates``: its versions;
- ``instances``: scaling, stopping and starting chosen instances, and one instance's restart,
  kill, logs and exec;
- ``upgrades``: gray upgrades and their pause, resume and roll back.

The routes change only the store, through one operation of ``gaia.store.apps`` each (quota is
admitted there before an app can grow, so the controller never has to refuse); the app
controller (``gaia.controllers.apps``) makes the cluster follow. ``shapes`` turns rows and what
the cluster reports into answers; ``observe`` reads the cluster; ``fit`` refuses a version whose
one instance could fit no node of the cluster (unless ``allow_pending``). See docs/architecture.md.

Exec for other front ends: the console's web terminal sends each line to
``POST /api/v1/businesses/{biz}/apps/{app}/instances/{instance}/exec`` with
``{"command": ["sh", "-c", line]}``; that route checks the role, finds the instance and writes
the operation record with the command line, secrets redacted.
"""

from __future__ import annotations

from fastapi import APIRouter

from gaia.api.deps import CommittingRoute
from gaia.api.routes.apps import apps, instances, templates, upgrades

router = APIRouter(tags=["apps"], route_class=CommittingRoute)
for _part in (apps, templates, instances, upgrades):
    router.include_router(_part.router)

__all__ = ["router"]
