"""Request and response bodies of CI/CD pipelines and their runs (issue 18).

Git credentials and the webhook secret are write-only: a request may set them, no response
carries them back (``has_git_credentials`` says whether some are stored). The webhook secret is
shown once, in the answer to the create (``PipelineCreated``), like an API token, because the git
host needs it; a lost one is replaced with ``PATCH`` (``rotate_webhook_secret``).

Validation messages name the field, never a credential's value.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from gaia.api.schemas.base import Name, Strict, check_plain_text

GIT_URL_PATTERN = r"^(https|file)://[^\s]+$"
REF_PATTERN = r"^[A-Za-z0-9._/-]{1,255}$"
ARG_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_BUILD_ARGS = 64


def _relative_path(value: str) -> str:
    check_plain_text(value, multiline=False)
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError("a path inside the repository: relative, without '..'")
    return value


RepoPath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_relative_path)]
GitUrl = Annotated[str, Field(pattern=GIT_URL_PATTERN, max_length=2048)]
Branch = Annotated[str, Field(pattern=REF_PATTERN)]
Credentials = Annotated[str, Field(min_length=1, max_length=4096)]
WebhookSecret = Annotated[str, Field(min_length=16, max_length=256)]


def _build_args(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_BUILD_ARGS:
        raise ValueError(f"at most {MAX_BUILD_ARGS} build arguments")
    for key, arg in value.items():
        if not re.fullmatch(ARG_NAME_PATTERN, key):
            raise ValueError(f"build argument '{key[:64]}' is not a name ([A-Za-z_][A-Za-z0-9_]*)")
        if len(arg) > 4096:
            raise ValueError(f"build argument '{key}' is longer than 4096 characters")
        check_plain_text(arg, multiline=False)
    return value


BuildArgs = Annotated[dict[str, str], AfterValidator(_build_args)]


class DeployTarget(Strict):
    app: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")]
    instance_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=1000, description="instances to upgrade; null: all of them"
    )


class PipelineCreate(Strict):
    name: Name
    git_url: GitUrl
    branch: Branch = "main"
    dockerfile: RepoPath = "Dockerfile"
    context: RepoPath = "."
    build_args: BuildArgs = Field(default_factory=dict)
    repository: str | None = Field(
        default=None,
        max_length=255,
        description="in the business's registry namespace; default <business>/<name>",
    )
    git_credentials: Credentials | None = Field(
        default=None, description="user:password or a token for the clone; write-only"
    )
    deploy: DeployTarget | None = None
    schedule_minutes: Annotated[int, Field(ge=5, le=60 * 24 * 31)] | None = None
    webhook_secret: WebhookSecret | None = Field(
        default=None, description="HMAC key of the webhook; random when left out; write-only"
    )


class PipelineUpdate(Strict):
    git_url: GitUrl | None = None
    branch: Branch | None = None
    dockerfile: RepoPath | None = None
    context: RepoPath | None = None
    build_args: BuildArgs | None = None
    git_credentials: Credentials | None = None
    clear_git_credentials: bool = False
    deploy: DeployTarget | None = None
    clear_deploy: bool = False
    schedule_minutes: Annotated[int, Field(ge=5, le=60 * 24 * 31)] | None = None
    clear_schedule: bool = False
    rotate_webhook_secret: bool = False


class LastRunOut(BaseModel):
    number: int
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    failed_step: str | None = None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class PipelineOut(BaseModel):
    id: int
    name: str
    business: str
    git_url: str
    branch: str
    dockerfile: str
    context: str
    build_args: dict[str, str]
    repository: str
    image: str = Field(description="where runs push: <registry address>/<repository>")
    has_git_credentials: bool
    deploy: DeployTarget | None
    schedule_minutes: int | None
    webhook_url: str
    last_run: LastRunOut | None = Field(default=None, description="the newest run, if any")
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class PipelineCreated(PipelineOut):
    webhook_secret: str | None = Field(
        default=None, description="shown once, on create and on rotation"
    )


class RunStepOut(BaseModel):
    name: str
    state: str
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration: float | None = None
    exit_code: int | None = None


class RunFailureOut(BaseModel):
    step: str
    instruction: str | None = None
    line: int | None = None
    reason: str


class RunOut(BaseModel):
    failure: RunFailureOut | None = Field(description="first: where and why the run failed")
    pipeline: str
    number: int
    trigger: Literal["manual", "webhook", "schedule"]
    started_by: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    cancel_requested: bool
    steps: list[RunStepOut]
    commit: str
    image: str
    digest: str
    upgrade_id: int | None
    log_lines: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class LogLineOut(BaseModel):
    seq: int
    step: str
    line: str


class LogPage(BaseModel):
    items: list[LogLineOut]
    next_after: int = Field(description="pass as ?after= for the next page")
    finished: bool


class WebhookAccepted(BaseModel):
    pipeline: str
    run: int | None
    message: str
