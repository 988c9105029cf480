"""Restart decisions and the node blacklist: pure rules, no I/O.

When an instance fails, the platform (not the cluster) decides what happens next, from the
*cause* of the failure:

=================  ==========================================  ===============================
cause              what it says                                 decision
=================  ==========================================  ===============================
AppExit, OOM,      the program failed; the node is fine        restart in place after an
LivenessFailed,                                                 exponential back-off
ConfigError
ImagePullError     the registry or the image is wrong;         retry the pull in place after
                   another node would fail the same way        a back-off; never reschedule
NodeLost           the machine is gone                         reschedule elsewhere, now
=================  ==========================================  ===============================

and a failure on a node the app is blacklisted from is rescheduled elsewhere. An app whose
instances fail ``threshold`` times on one node within ``window`` gets that node blacklisted for
``ttl``: new placements avoid it (app-level disaster recovery). Image pulls and
lost nodes do not count towards the blacklist: they say nothing about the app on that machine.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from gaia.domain import retry


class Cause(StrEnum):
    # the same strings as ``gaia.providers.port.FailureCause``; the domain imports no adapter
    APP_EXIT = "AppExit"
    OOM = "OOMKilled"
    LIVENESS = "LivenessFailed"
    IMAGE_PULL = "ImagePullError"
    NODE_LOST = "NodeLost"
    CONFIG = "ConfigError"


BLACKLIST_CAUSES = frozenset({Cause.APP_EXIT, Cause.OOM, Cause.LIVENESS})


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_base: dt.timedelta = dt.timedelta(seconds=10)
    backoff_max: dt.timedelta = dt.timedelta(minutes=5)
    # failures older than this no longer lengthen the back-off
    memory: dt.timedelta = dt.timedelta(minutes=10)
    blacklist_threshold: int = 3
    blacklist_window: dt.timedelta = dt.timedelta(minutes=10)
    blacklist_ttl: dt.timedelta = dt.timedelta(minutes=30)


DEFAULT_POLICY = RestartPolicy()


class RestartAction(StrEnum):
    LOCAL = "restart-local"
    RESCHEDULE = "reschedule"


@dataclass(frozen=True, slots=True)
class RestartDecision:
    action: RestartAction
    delay: dt.timedelta
    reason: str


def backoff_delay(recent_failures: int, policy: RestartPolicy = DEFAULT_POLICY) -> dt.timedelta:
    """10 s, 20 s, 40 s, ... capped at 5 minutes; ``recent_failures`` counts the current one.

    The platform's retry rule (``gaia.domain.retry``) without jitter: a restart's due time is
    stored and shown to users, so it must be the same every time it is computed."""
    seconds = retry.backoff_delay(
        max(recent_failures, 1),
        base=policy.backoff_base.total_seconds(),
        cap=policy.backoff_max.total_seconds(),
        jitter=0.0,
    )
    return dt.timedelta(seconds=seconds)


def decide_restart(
    *,
    cause: str,
    recent_failures: int,
    node_blacklisted: bool,
    policy: RestartPolicy = DEFAULT_POLICY,
) -> RestartDecision:
    try:
        kind = Cause(cause)
    except ValueError:
        kind = Cause.APP_EXIT  # an unknown cause is treated as the program's own failure
    if kind is Cause.NODE_LOST:
        return RestartDecision(RestartAction.RESCHEDULE, dt.timedelta(0), "node lost")
    if node_blacklisted and kind is not Cause.IMAGE_PULL:
        return RestartDecision(
            RestartAction.RESCHEDULE, dt.timedelta(0), "node is blacklisted for this app"
        )
    delay = backoff_delay(recent_failures, policy)
    if kind is Cause.IMAGE_PULL:
        return RestartDecision(RestartAction.LOCAL, delay, "back-off pulling image")
    return RestartDecision(RestartAction.LOCAL, delay, "back-off restarting failed container")


def counts_for_blacklist(cause: str) -> bool:
    return cause in BLACKLIST_CAUSES


def should_blacklist(failures_on_node: int, policy: RestartPolicy = DEFAULT_POLICY) -> bool:
    """``failures_on_node``: blacklist-relevant failures of the app on one node in the window."""
    return failures_on_node >= policy.blacklist_threshold
