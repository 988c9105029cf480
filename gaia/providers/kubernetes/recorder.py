"""The platform's ``Scheduled`` events on a cluster: one Event per app and batch, not per pod.

kube-scheduler records one ``Scheduled`` Event per pod it binds: one more write per pod, which
on a create of 5,000 instances is 5,000 of the run's requests. Gaia places whole batches at once,
so ``ScheduledRecorder`` does what client-go's event broadcaster does for repeated events (it
aggregates and writes later) one step further: placements are noted as they are made and, once
``window_s`` has passed since the first unwritten one, written as **one events.k8s.io/v1 Event
per (namespace, app)** that lists them (``scheduled_event``).

What goes where:

- each pod's own notice (``Successfully assigned <ns>/<pod> to <node>``, regarding the instance)
  is the caller's, recorded at once in the provider's own event log, which is what the platform
  reads (``ClusterProvider.events``): the platform sees every placement as before, with no
  request at all;
- the cluster's users (``kubectl get events``) see the batch Event, ``regarding`` the app
  (``apiVersion: gaia.io/v1``, ``kind: App``: the platform's object, which has no resource in
  the cluster; an ObjectReference needs none), ``reason: Scheduled``, ``action: Binding``, and a
  note that names the pods and nodes up to the API server's 1 KiB limit, then how many more.

Writing is the caller's ``post`` (an awaitable that does the request and logs a failure): an
Event is a record, never a reason to fail a placement. The recorder owns its one timer task;
``close`` cancels it and writes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gaia.kube.labels import EVENT_REPORTER

NOTE_LIMIT = 1024  # events.k8s.io/v1 ``note``: the API server refuses longer (NoteLengthLimit)
APP_API_VERSION = "gaia.io/v1"
APP_KIND = "App"
BATCH_ACTION = "Binding"


def scheduled_event(
    *,
    namespace: str,
    app: str,
    placements: list[tuple[str, str]],
    reporting_instance: str,
    at: dt.datetime,
    seq: int,
) -> dict[str, Any]:
    """The events.k8s.io/v1 Event that says ``placements`` ((pod, node) pairs, in the order they
    were made) of ``app`` were bound. Named as client-go names events (the object's name and a
    hex number, here the batch's sequence and time, unique per process and batch)."""
    nodes = len({node for _, node in placements})
    head = f"Successfully assigned {len(placements)} pod(s) of app {app} to {nodes} node(s): "
    note = head
    reserve = len(f" and {len(placements)} more")
    for done, (pod, node) in enumerate(placements):
        item = ("" if done == 0 else ", ") + f"{pod} to {node}"
        last = done == len(placements) - 1
        if len(note) + len(item) + (0 if last else reserve) > NOTE_LIMIT:
            note += f" and {len(placements) - done} more"
            break
        note += item
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{app}.{seq:x}{time.time_ns():x}", "namespace": namespace},
        "eventTime": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": EVENT_REPORTER,
        "reportingInstance": reporting_instance,
        "action": BATCH_ACTION,
        "reason": "Scheduled",
        "note": note,
        "type": "Normal",
        "regarding": {
            "apiVersion": APP_API_VERSION,
            "kind": APP_KIND,
            "namespace": namespace,
            "name": app,
        },
    }


def is_batch_event(event: dict[str, Any]) -> bool:
    """Whether ``event`` is one of the recorder's own batch Events (the provider already logged
    each placement in it on its own), read through either API: core/v1 (what the provider
    watches) names ``regarding`` ``involvedObject`` and ``reportingController``
    ``reportingComponent``."""
    regarding = event.get("regarding") or event.get("involvedObject") or {}
    reporter = event.get("reportingController") or event.get("reportingComponent")
    return (
        reporter == EVENT_REPORTER
        and regarding.get("apiVersion") == APP_API_VERSION
        and regarding.get("kind") == APP_KIND
    )


class ScheduledRecorder:
    """Collects placements and writes them as batch Events (see the module docstring). Lives on
    the cluster's loop, like the provider's other state."""

    def __init__(
        self,
        *,
        post: Callable[[dict[str, Any]], Awaitable[None]],
        reporting_instance: str,
        window_s: float = 2.0,
    ) -> None:
        self._post = post
        self._reporting_instance = reporting_instance
        self._window_s = window_s
        self._pending: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._timer: asyncio.Task[None] | None = None
        self._seq = 0

    def note(self, *, namespace: str, app: str, pod: str, node: str) -> None:
        """One placement made; written with the others of its app within ``window_s``."""
        self._pending.setdefault((namespace, app), []).append((pod, node))
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._window_s)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        """Write every pending batch now, one Event per (namespace, app)."""
        pending, self._pending = self._pending, {}
        now = dt.datetime.now(dt.UTC)
        for (namespace, app), placements in pending.items():
            self._seq += 1
            await self._post(
                scheduled_event(
                    namespace=namespace,
                    app=app,
                    placements=placements,
                    reporting_instance=self._reporting_instance,
                    at=now,
                    seq=self._seq,
                )
            )

    async def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.flush()


__all__ = ["ScheduledRecorder", "is_batch_event", "scheduled_event"]
