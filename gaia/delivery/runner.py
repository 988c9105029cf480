"""The pipeline runner (issue 18): the loop that turns queued runs into builds and upgrades.

One pass: queue the runs of pipelines whose schedule is due; then, while this replica has a
free build slot, claim a queued run (``gaia.store.pipelines.claim_run``: a conditional UPDATE
with a lease, so replicas never build one run twice, within the per-business and global limits)
and start it as a task this loop owns. A build task:

    BuildSpec (registry = platform's, credentials = the repository's build account)
      -> run_build, its log lines appended to the run in batches as they come
      -> lease renewed every few seconds; a cancel requested through the API sets ``stop``
      -> the result (steps, failure located, commit, digest) written to the run
      -> deploy: a new app version with image <address>/<repo>@<digest>, a gray upgrade of the
         pipeline's instances (the same store functions the upgrades API calls)

Secrets (git credentials, the build account's password) go only into the BuildSpec; the build
executor redacts them from every log line before this module sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from gaia.delivery.builds import BuildOutcome, BuildResult, BuildTools, run_build
from gaia.delivery.registry import RegistryService
from gaia.delivery.spec import BuildSpec, GitCredentials, RegistryCredentials
from gaia.domain.errors import GaiaError, NotFound
from gaia.egress import EgressRefused, resolve_checked
from gaia.loop import LoopService
from gaia.security import SecretBox
from gaia.store import apps as store_apps
from gaia.store import pipelines as store
from gaia.store.database import Database
from gaia.store.models import AppTemplate, Business, Pipeline, PipelineRun, utcnow

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=60)
RENEW_S = 10.0
FLUSH_S = 0.5


class PipelineRunner(LoopService):
    name = "pipeline-runner"

    def __init__(
        self,
        *,
        db: Database,
        registry: RegistryService,
        secrets: SecretBox,
        build_dir: Path,
        per_business: int = 2,
        total: int = 2,
        interval: float = 2.0,
        tools: BuildTools | None = None,
        local_git: bool = False,
        refusal: str | None = None,
    ) -> None:
        super().__init__(interval=interval)
        self.local_git = local_git
        self.db = db
        self.registry = registry
        self.secrets = secrets
        self.build_dir = build_dir
        self.refusal = refusal
        self.per_business = per_business
        self.total = total
        self.tools = tools
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def run_once(self) -> None:
        for done in [i for i, t in self.tasks.items() if t.done()]:
            self.tasks.pop(done)
        if not await asyncio.to_thread(self._anything_to_do):
            return  # nothing due, queued or stale: no write transaction this pass
        await asyncio.to_thread(self._schedule)
        while len(self.tasks) < self.total:
            run_id: int | None = await asyncio.to_thread(self._claim)
            if run_id is None:
                return
            self.tasks[run_id] = asyncio.create_task(self.build(run_id), name=f"run-{run_id}")

    async def drain(self) -> None:
        """Wait for every build this runner started (tests; a stopping replica)."""
        while self.tasks:
            run_id, task = next(iter(self.tasks.items()))
            with contextlib.suppress(Exception):
                await task
            self.tasks.pop(run_id, None)

    def _anything_to_do(self) -> bool:
        with self.db.read_session() as session:
            return store.anything_to_do(session)

    def _schedule(self) -> None:
        with self.db.write_session() as session:
            store.enqueue_scheduled(session)

    def _claim(self) -> int | None:
        with self.db.write_session() as session:
            run = store.claim_run(
                session, lease=LEASE, per_business=self.per_business, total=self.total
            )
            return run.id if run is not None else None

    def _spec(self, run_id: int) -> tuple[BuildSpec, str]:
        with self.db.read_session() as session:
            run = session.get(PipelineRun, run_id)
            assert run is not None
            row = session.get(Pipeline, run.pipeline_id)
            assert row is not None
            business = session.get(Business, row.business_id)
            assert business is not None
            user, password = self.registry.build_credentials(row.repository)
            clone = store.git_credentials(row, secrets=self.secrets)
            git = None
            if clone:
                name, sep, token = clone.partition(":")
                git = GitCredentials(username=name if sep else "gaia", token=token if sep else name)
            image = f"{self.registry.address}/{row.repository}:run-{run.number}"
            spec = BuildSpec(
                git_url=row.git_url,
                branch=row.branch,
                image=image,
                cache_dir=self.build_dir / "cache" / business.name,
                work_dir=self.build_dir / "work",
                dockerfile=row.dockerfile,
                context=row.context,
                build_args=dict(row.build_args),
                git_credentials=git,
                registry_credentials=RegistryCredentials(username=user, password=password),
                registry_insecure=self.registry.url.startswith("http://"),
                registry_ca_pem=self.registry.ca_pem,
                commit=run.commit or None,  # a webhook's pushed commit
            )
            return spec, image

    async def build(self, run_id: int) -> None:
        if self.refusal is not None:
            reason = f"the build could not start: {self.refusal}"
            await asyncio.to_thread(self._fail, run_id, reason)
            return
        try:
            spec, image = await asyncio.to_thread(self._spec, run_id)
            pinned = await check_git_url(spec.git_url, local_allowed=self.local_git)
            spec = dataclasses.replace(spec, pinned_addresses=pinned)
        except (GaiaError, ValueError, EgressRefused, OSError) as exc:
            await asyncio.to_thread(self._fail, run_id, f"the build could not start: {exc}")
            return
        pending: list[tuple[str, str]] = []
        stop = asyncio.Event()

        def sink(step: str, line: str) -> None:
            pending.append((step, line))

        async def flush() -> None:
            if pending:
                batch = pending[:]
                del pending[: len(batch)]
                await asyncio.to_thread(self._append, run_id, batch)

        async def watch() -> None:
            last_renew = 0.0
            loop = asyncio.get_running_loop()
            while True:
                await asyncio.sleep(FLUSH_S)
                try:
                    await flush()
                except NotFound:  # the pipeline (and its runs) was deleted: stop the build
                    pending.clear()
                    stop.set()
                    return
                if loop.time() - last_renew >= RENEW_S:
                    last_renew = loop.time()
                    if await asyncio.to_thread(self._renew, run_id):
                        stop.set()
                elif await asyncio.to_thread(self._cancel_requested, run_id):
                    stop.set()

        async def wrap_up() -> None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            try:
                await flush()
            except NotFound:
                pending.clear()

        watcher = asyncio.create_task(watch())
        try:
            result = await run_build(spec, sink, stop=stop, tools=self.tools)
        except Exception as exc:
            log.exception("pipeline run %d: the build failed to run", run_id)
            await wrap_up()
            await asyncio.to_thread(self._fail, run_id, f"the build failed to run: {exc}")
            return
        await wrap_up()
        await asyncio.to_thread(self._finish, run_id, result, image)

    def _append(self, run_id: int, lines: list[tuple[str, str]]) -> None:
        with self.db.write_session() as session:
            store.append_logs(session, run_id=run_id, lines=lines)

    def _renew(self, run_id: int) -> bool:
        with self.db.write_session() as session:
            return store.renew_lease(session, run_id=run_id, lease=LEASE)

    def _cancel_requested(self, run_id: int) -> bool:
        with self.db.read_session() as session:
            run = session.get(PipelineRun, run_id)
            return run is None or run.cancel_requested

    def _fail(self, run_id: int, reason: str) -> None:
        with contextlib.suppress(NotFound), self.db.write_session() as session:
            store.finish_run(
                session,
                run_id=run_id,
                state="failed",
                steps=[],
                failure={"step": "prepare", "reason": reason},
                commit="",
                image="",
                digest="",
            )

    def _finish(self, run_id: int, result: BuildResult, image: str) -> None:
        state = {
            BuildOutcome.OK: "succeeded",
            BuildOutcome.FAILED: "failed",
            BuildOutcome.CANCELLED: "cancelled",
        }[result.result]
        steps: list[dict[str, Any]] = [
            {
                "name": s.name,
                "state": s.result.value,
                "started_at": s.started_at.isoformat(),
                "finished_at": s.finished_at.isoformat(),
                "duration": s.duration_s,
                "exit_code": s.exit_code,
            }
            for s in result.steps
        ]
        failure = (
            {
                "step": result.failure.step,
                "instruction": result.failure.instruction,
                "line": result.failure.line,
                "reason": result.failure.reason,
            }
            if result.failure is not None
            else None
        )
        with self.db.write_session() as session:
            if session.get(PipelineRun, run_id) is None:
                log.info("pipeline run %d ended after its pipeline was deleted", run_id)
                return
            run = store.finish_run(
                session,
                run_id=run_id,
                state=state,
                steps=steps,
                failure=failure,
                commit=result.commit or "",
                image=image,
                digest=result.digest or "",
            )
            if state == "succeeded" and result.digest:
                row = session.get(Pipeline, run.pipeline_id)
                if row is not None and row.deploy_app:
                    try:
                        with session.begin_nested():
                            run.upgrade_id = self._deploy(session, row, run, result.digest)
                    except GaiaError as exc:
                        run.state = "failed"
                        run.failure = {"step": "deploy", "reason": str(exc)}

    def _deploy(self, session: Any, row: Pipeline, run: PipelineRun, digest: str) -> int:
        """A new version of the app with the built image, and a gray upgrade to it."""
        business = session.get(Business, row.business_id)
        assert business is not None and row.deploy_app is not None
        app = store_apps.find_app(session, business=business, name=row.deploy_app, lock=True)
        base = session.scalars(
            select(AppTemplate).where(
                AppTemplate.app_id == app.id, AppTemplate.name == app.default_template
            )
        ).one()
        version = f"{row.name}-{run.number}"[:63]
        image = f"{self.registry.address}/{row.repository}@{digest}"
        session.add(
            AppTemplate(
                app_id=app.id,
                name=version,
                spec={**base.spec, "image": image},
                created_by=f"pipeline/{row.name}",
                created_at=utcnow(),
            )
        )
        session.flush()
        upgrade, _in_place = store_apps.create_upgrade(
            session,
            business=business,
            app=app,
            target=version,
            instance_ids=row.deploy_instances,
            max_unavailable=1,
            created_by=f"pipeline/{row.name}",
        )
        return upgrade.id


async def check_git_url(url: str, *, local_allowed: bool) -> tuple[str, ...]:
    """A pipeline's git URL is a tenant's: a ``file://`` one reads this machine's disk (only
    where ``GAIA_PIPELINE_LOCAL_GIT`` allows it), an https one must resolve to addresses the
    egress policy allows (gaia.egress), checked right before the clone. Returns those
    addresses: the clone is pinned to them (``BuildSpec.pinned_addresses``, git's
    ``http.curloptResolve``), so a name whose answer changes after the check (DNS rebinding)
    does not reach a refused address."""
    if url.startswith("file://") or url.startswith("/"):
        if not local_allowed:
            raise EgressRefused(
                "file:// git URLs are off on this platform (GAIA_PIPELINE_LOCAL_GIT)"
            )
        return ()
    host = urlsplit(url).hostname or ""
    if not host:
        raise ValueError(f"git_url {url[:200]!r} names no host")
    allowed = await resolve_checked(host, urlsplit(url).port or 443)
    return tuple(str(address) for _family, address in allowed)
