"""A Dockerfile read into instructions with their line numbers, and a failed build located in it.

Failure localisation needs two facts buildah does not give together: which step failed (its
output names steps, never lines) and where that step is written (the Dockerfile has lines, no
step numbers). ``parse_dockerfile`` numbers the instructions the way buildah counts its steps;
``locate_failure`` reads buildah's output and maps the last step it started to an instruction.

The parser follows the Dockerfile reference closely enough to count lines right:

- parser directives (``# syntax=...``, ``# escape=`...``) only at the very top; ``escape``
  changes the continuation character;
- comment lines (``#`` first on the line) and blank lines are not instructions, also inside a
  continuation, where they are dropped;
- a line ending in the escape character continues on the next; the instruction's ``line`` is
  its first line, and its ``text`` is the lines joined with the escape and the newline removed,
  which is how buildah prints it (``RUN echo a \\`` + ``  && b`` -> ``RUN echo a   && b``);
- simple heredocs (``RUN <<EOF`` ... ``EOF``, ``<<-EOF``, quoted delimiters) belong to the
  instruction that opens them.

What buildah 1.28 prints (found by experiment, Debian 12): one header per step, before the step
runs, ``STEP i/m: TEXT`` for a single-stage Dockerfile and ``[k/n] STEP i/m: TEXT`` with
several stages. ``k`` is the stage's index in the file even when unused stages are skipped, ``i``
counts within the stage and the ``FROM`` is step 1; ARGs before the first ``FROM`` are no step.
``FROM`` is printed with its build args expanded, every other instruction as written. A failure
ends with a line ``Error: building at STEP "...": <reason>`` (or ``Error: <reason>`` when the
Dockerfile could not be read or the base image not pulled).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_HEADER = re.compile(r"^(?:\[(\d+)/(\d+)\] )?STEP (\d+)/(\d+): (.*)$")
_ERROR = re.compile(r"^Error: (.*)$")
_BUILDING_AT = re.compile(r'^building at STEP "(?:[^"\\]|\\.)*": ')
REASON_CHARS = 500
TAIL_LINES = 20


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``stage`` 0 holds the ARGs before the first FROM, stages count from 1;
    ``step`` counts within the stage from 1 (the FROM), as buildah numbers its steps."""

    keyword: str
    text: str
    line: int
    end_line: int
    stage: int
    step: int


@dataclass(frozen=True)
class BuildFailure:
    """Where a build failed, shown first on a build record. ``instruction`` and ``line`` are
    set when the failure is located in the Dockerfile; ``log_tail`` holds the last lines of the
    failing step's log up to the error."""

    step: str
    reason: str
    instruction: str | None = None
    line: int | None = None
    log_tail: tuple[str, ...] = ()


def parse_dockerfile(source: str) -> list[Instruction]:
    lines = source.splitlines()
    escape = "\\"
    index = 0
    # parser directives: only before anything else, and a blank line or comment ends them
    while index < len(lines):
        found = _DIRECTIVE.match(lines[index].strip())
        if not found:
            break
        if found.group(1).lower() == "escape" and found.group(2) in ("\\", "`"):
            escape = found.group(2)
        index += 1

    instructions: list[Instruction] = []
    stage, step = 0, 0
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        first = index
        parts: list[str] = []
        current = lines[index].lstrip()
        while True:
            body = current.rstrip()
            if body.endswith(escape):
                parts.append(body[: -len(escape)])
                index += 1
                # blank and comment lines inside a continuation are dropped, not ends
                while index < len(lines) and (
                    not lines[index].strip() or lines[index].lstrip().startswith("#")
                ):
                    index += 1
                if index >= len(lines):
                    break
                current = lines[index]
                continue
            parts.append(current)
            index += 1
            break
        text = "".join(parts).strip()
        # heredoc bodies follow the instruction line and end at their delimiter
        for strip_tabs, _quote, delimiter in _HEREDOC.findall(text):
            while index < len(lines):
                body_line = lines[index].lstrip("\t") if strip_tabs else lines[index]
                index += 1
                if body_line == delimiter:
                    break
        keyword = text.split(None, 1)[0].upper()
        if keyword == "FROM":
            stage, step = stage + 1, 0
        if stage > 0:
            step += 1
        instructions.append(
            Instruction(
                keyword=keyword, text=text, line=first + 1, end_line=index, stage=stage, step=step
            )
        )
    return instructions


def locate_failure(
    instructions: Sequence[Instruction], output: Sequence[str], *, step: str = "build"
) -> BuildFailure:
    """The instruction buildah was running when it failed: the last ``STEP`` header in
    ``output``, matched by stage and step number, or by its text if the numbers do not fit."""
    header: re.Match[str] | None = None
    header_at = -1
    reason = ""
    for at, line in enumerate(output):
        found = _HEADER.match(line)
        if found:
            header, header_at = found, at
            continue
        error = _ERROR.match(line)
        if error:
            reason = _BUILDING_AT.sub("", error.group(1))
    if not reason:
        reason = next((line for line in reversed(output) if line.strip()), "the build failed")
    reason = _shorten(reason)
    if header is None:
        return BuildFailure(step=step, reason=reason, log_tail=_tail(output))
    stage = int(header.group(1) or 1)
    number, text = int(header.group(3)), header.group(5)
    found_instruction = _by_position(instructions, stage, number, text) or _by_text(
        instructions, text
    )
    return BuildFailure(
        step=step,
        reason=reason,
        instruction=found_instruction.text if found_instruction else text,
        line=found_instruction.line if found_instruction else None,
        log_tail=_tail(output[header_at:]),
    )


def _by_position(
    instructions: Sequence[Instruction], stage: int, number: int, text: str
) -> Instruction | None:
    for instruction in instructions:
        if instruction.stage == stage and instruction.step == number:
            # FROM is printed with its build args expanded: the keyword has to do
            keyword = text.split(None, 1)[0].upper() if text.strip() else ""
            return instruction if instruction.keyword == keyword else None
    return None


def _by_text(instructions: Sequence[Instruction], text: str) -> Instruction | None:
    wanted = _squeeze(text)
    matches = [i for i in instructions if _squeeze(i.text) == wanted]
    return matches[0] if len(matches) == 1 else None


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _shorten(text: str) -> str:
    text = text.strip()
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"


def _tail(lines: Sequence[str]) -> tuple[str, ...]:
    return tuple(lines[-TAIL_LINES:])
