"""One step of a build as a process: its output streamed line by line, redacted, bounded in time.

``run_step`` starts a command in a new session (its own process group), merges stderr into
stdout so that lines keep the order the tool wrote them in, and hands each line, redacted, to
the sink as soon as it is read. It ends in one of three ways, and the ``StepRecord`` says which:

- the process exits: ``ok`` on 0, else ``failed`` with the exit code;
- the step's timeout passes: the whole group gets SIGTERM, then SIGKILL after a grace period
  (buildah's chroot children are in the group too), and the step is ``failed``, "timed out";
- the ``stop`` event is set, or the task running it is cancelled: the group is killed the same
  way and the step is ``cancelled`` (a cancelled task still re-raises once the group is gone,
  so no process outlives its owner).

The argv is never logged: the credentials reach the tools through files and the environment,
and the command lines Gaia prints are written by the caller with no secret in them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import enum
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from gaia.clock import Clock
from gaia.domain.redaction import redact

LINE_CHARS = 8192
KEEP_LINES = 400
KILL_GRACE_S = 5.0
_REDACTED = "[REDACTED]"


class BuildLogSink(Protocol):
    """Receives every log line of a build as it is produced, already redacted."""

    def __call__(self, step: str, line: str) -> None: ...


class StepResult(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class StepRecord:
    """What a build record shows for one step; ``reason`` is set when it did not succeed."""

    name: str
    result: StepResult
    started_at: dt.datetime
    finished_at: dt.datetime
    duration_s: float
    exit_code: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class StepRun:
    record: StepRecord
    lines: tuple[str, ...]  # the last KEEP_LINES lines, redacted: failure localisation reads them


class Redactor:
    """Hides the build's own secrets (exactly, and in the encodings they travel in: base64 of
    ``user:secret`` for Basic auth, URL-quoted) and then anything the platform-wide rules
    (``gaia.domain.redaction``) take for a secret."""

    def __init__(self, secrets: Iterable[str], *, usernames: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        names = tuple(usernames)
        for secret in secrets:
            if len(secret) < 3:  # too short to hide without hiding every such letter pair
                continue
            forms.update({secret, quote(secret, safe=""), _b64(secret)})
            for name in names:
                forms.add(_b64(f"{name}:{secret}"))
        # longest first, so that a secret inside a longer encoded form is not cut in two
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for form in self._forms:
            line = line.replace(form, _REDACTED)
        return redact(line)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def run_step(
    *,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float,
    sink: BuildLogSink,
    redactor: Redactor,
    stop: asyncio.Event,
    clock: Clock,
) -> StepRun:
    started_at, started = clock.now(), time.monotonic()
    kept: deque[str] = deque(maxlen=KEEP_LINES)

    def emit(line: str) -> None:
        clean = redactor(line)
        kept.append(clean)
        sink(name, clean)

    def record(result: StepResult, exit_code: int | None, reason: str = "") -> StepRun:
        return StepRun(
            StepRecord(
                name=name,
                result=result,
                started_at=started_at,
                finished_at=clock.now(),
                duration_s=round(time.monotonic() - started, 3),
                exit_code=exit_code,
                reason=redactor(reason),
            ),
            tuple(kept),
        )

    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            limit=1024 * 1024,
        )
    except OSError as error:
        return record(StepResult.FAILED, None, f"could not start {argv[0]}: {error}")

    async def pump() -> int:
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the limit: take what there is
                raw = await process.stdout.read(1024 * 1024)
            if not raw:
                break
            emit(raw.decode(errors="replace").rstrip("\r\n")[:LINE_CHARS])
        return await process.wait()

    pumping = asyncio.create_task(pump())
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {pumping, stopping}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:
        await _kill_group(process)
        pumping.cancel()
        stopping.cancel()
        raise
    stopping.cancel()
    if pumping in done and pumping.exception() is not None:
        # the sink failed: no process may outlive the step that owns it
        await _kill_group(process)
        pumping.result()
    if pumping in done:
        code = pumping.result()
        if code == 0:
            return record(StepResult.OK, 0)
        return record(StepResult.FAILED, code, f"{name} exited with status {code}")
    await _kill_group(process)
    pumping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pumping
    if stop.is_set():
        emit(f"{name}: cancelled")
        return record(StepResult.CANCELLED, process.returncode, "cancelled")
    emit(f"{name}: timed out after {timeout_s:g} s")
    return record(StepResult.FAILED, process.returncode, f"timed out after {timeout_s:g} s")


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the process group (buildah cleans up its containers on it), SIGKILL to
    whatever is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), wait_s)
        except TimeoutError:
            continue
        # the leader is gone; children of the group may linger a moment: make sure
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return
