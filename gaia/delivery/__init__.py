"""Delivery (issue 18): Gaia's image registry (``registry``: the token signer, the registry's
configuration and process) and the CI/CD build executor (clone, buildah build, push).

A pipeline hands ``run_build`` a ``BuildSpec`` and a sink for the log lines, and records the
``BuildResult``: the steps with their times and results, the pushed image's digest, or where the
build failed (for a Dockerfile step, the instruction and its line). See ``builds`` for the steps
and what buildah needs, ``dockerfile`` for the failure localisation, ``spec`` for the rules a
spec is held to.
"""

from gaia.delivery.builds import (
    BuildOutcome,
    BuildResult,
    BuildTools,
    resolve_build_user,
    run_build,
)
from gaia.delivery.dockerfile import BuildFailure
from gaia.delivery.spec import (
    BuildSpec,
    BuildSpecError,
    GitCredentials,
    RegistryCredentials,
    StepTimeouts,
)
from gaia.delivery.steps import BuildLogSink, StepRecord, StepResult

__all__ = [
    "BuildFailure",
    "BuildLogSink",
    "BuildOutcome",
    "BuildResult",
    "BuildSpec",
    "BuildSpecError",
    "BuildTools",
    "GitCredentials",
    "RegistryCredentials",
    "StepRecord",
    "StepResult",
    "StepTimeouts",
    "resolve_build_user",
    "run_build",
]
