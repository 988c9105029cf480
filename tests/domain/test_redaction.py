"""The rule for what an operation record says of a command run in an instance."""

from __future__ import annotations

from gaia.domain.redaction import COMMAND_SUMMARY_CHARS, command_summary


def test_a_terminal_line_is_recorded_as_typed_with_secrets_redacted() -> None:
    summary = command_summary(["sh", "-c", "  hostname && echo password=hunter2 "])
    assert summary.startswith("hostname && echo password=")
    assert "hunter2" not in summary


def test_another_command_is_recorded_as_a_shell_would_read_it() -> None:
    assert command_summary(["cat", "/etc/my file"]) == "cat '/etc/my file'"


def test_a_long_command_is_cut_with_an_ellipsis() -> None:
    summary = command_summary(["sh", "-c", "echo " + "x" * 2000])
    assert len(summary) == COMMAND_SUMMARY_CHARS + 1 and summary.endswith("…")
