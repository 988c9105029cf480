"""The Dockerfile reader and the failure localisation, on text: the instructions a Dockerfile
holds with their lines, and buildah's output (as buildah 1.28 prints it) mapped to one of them."""

from __future__ import annotations

from gaia.delivery.dockerfile import locate_failure, parse_dockerfile


def _lines(source: str) -> list[tuple[int, str, int, int]]:
    return [(i.line, i.text, i.stage, i.step) for i in parse_dockerfile(source)]


def test_instructions_carry_their_first_line_and_buildahs_step_numbers() -> None:
    source = (
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=busybox\n"
        "\n"
        "FROM $BASE AS build\n"
        "# a comment\n"
        "RUN echo a \\\n"
        "\n"
        "    # dropped inside the continuation\n"
        "    && echo b\n"
        "from $BASE\n"
        "COPY --from=build /a /a\n"
    )
    assert _lines(source) == [
        (2, "ARG BASE=busybox", 0, 0),
        (4, "FROM $BASE AS build", 1, 1),
        (6, "RUN echo a     && echo b", 1, 2),
        (10, "from $BASE", 2, 1),
        (11, "COPY --from=build /a /a", 2, 2),
    ]


def test_the_escape_directive_changes_the_continuation_character() -> None:
    source = "# escape=`\nFROM base\nRUN dir `\n  c:\\\\\nRUN echo \\\n"
    assert _lines(source) == [
        (2, "FROM base", 1, 1),
        (3, "RUN dir   c:\\\\", 1, 2),
        (5, "RUN echo \\", 1, 3),
    ]


def test_a_directive_after_an_instruction_is_a_comment() -> None:
    source = "FROM base\n# escape=`\nRUN a `\nRUN b\n"
    assert [line for line, *_ in _lines(source)] == [1, 3, 4]


def test_a_heredoc_belongs_to_the_instruction_that_opens_it() -> None:
    source = (
        "FROM base\n"
        "RUN <<EOF\n"
        "echo one\n"
        "RUN not an instruction\n"
        "EOF\n"
        "COPY <<-'END' /etc/conf\n"
        "\tkey=value\n"
        "\tEND\n"
        "RUN last\n"
    )
    found = parse_dockerfile(source)
    assert [(i.line, i.end_line, i.keyword) for i in found] == [
        (1, 1, "FROM"),
        (2, 5, "RUN"),
        (6, 8, "COPY"),
        (9, 9, "RUN"),
    ]


MULTI_STAGE = """\
ARG BASE=reg.example.com/base:1
FROM $BASE AS unused
RUN echo unused

FROM $BASE AS used
RUN echo used > /u

FROM $BASE
COPY --from=used /u /u
COPY missing.txt /m
"""


def test_a_failure_is_mapped_by_stage_and_step_even_when_a_stage_was_skipped() -> None:
    output = [
        "[2/3] STEP 1/2: FROM reg.example.com/base:1 AS used",
        "[2/3] STEP 2/2: RUN echo used > /u",
        "--> 07c3612291e",
        "[3/3] STEP 1/3: FROM reg.example.com/base:1",
        "[3/3] STEP 2/3: COPY --from=used /u /u",
        "--> c2872773a00",
        "[3/3] STEP 3/3: COPY missing.txt /m",
        'Error: building at STEP "COPY missing.txt /m": checking on sources under "/ctx": '
        'copier: stat: "/missing.txt": no such file or directory',
    ]
    failure = locate_failure(parse_dockerfile(MULTI_STAGE), output)
    assert (failure.step, failure.line, failure.instruction) == (
        "build",
        10,
        "COPY missing.txt /m",
    )
    assert failure.reason.startswith('checking on sources under "/ctx"')
    assert failure.log_tail == tuple(output[-2:])


def test_a_failed_from_is_located_at_the_from_with_its_args_unexpanded() -> None:
    output = [
        "[1/3] STEP 1/2: FROM reg.example.com/base:1 AS unused",
        "Trying to pull reg.example.com/base:1...",
        "Error: creating build container: reading manifest 1: manifest unknown",
    ]
    failure = locate_failure(parse_dockerfile(MULTI_STAGE), output)
    assert (failure.line, failure.instruction) == (2, "FROM $BASE AS unused")
    assert failure.reason == "creating build container: reading manifest 1: manifest unknown"


def test_a_failure_before_any_step_has_a_reason_and_no_line() -> None:
    output = ["Error: no FROM statement found"]
    failure = locate_failure(parse_dockerfile("RUN x\n"), output)
    assert (failure.line, failure.instruction, failure.reason) == (
        None,
        None,
        "no FROM statement found",
    )


def test_steps_that_do_not_match_the_file_fall_back_to_the_instruction_text() -> None:
    # a Dockerfile changed between the build and the reading: numbers off, the text still found
    output = ["STEP 7/9: RUN make   test", "Error: exit status 2"]
    failure = locate_failure(parse_dockerfile("FROM a\nRUN make \\\n  test\n"), output)
    assert (failure.line, failure.instruction) == (2, "RUN make   test")
    unknown = locate_failure(parse_dockerfile("FROM a\n"), ["STEP 2/2: RUN gone", "Error: x"])
    assert (unknown.line, unknown.instruction) == (None, "RUN gone")
