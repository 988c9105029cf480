"""Secret redaction (gaia.domain.redaction): what log lines and operation records keep of text
that may hold a secret, and what a record says of a command run in an instance."""

from __future__ import annotations

from gaia.domain.redaction import COMMAND_SUMMARY_CHARS, command_summary, redact

TOKEN = "gaia_" + "x7" * 20


def test_a_terminal_line_is_recorded_as_typed_with_secrets_redacted() -> None:
    summary = command_summary(["sh", "-c", "  hostname && echo password=hunter2 "])
    assert summary.startswith("hostname && echo password=")
    assert "hunter2" not in summary


def test_another_command_is_recorded_as_a_shell_would_read_it() -> None:
    assert command_summary(["cat", "/etc/my file"]) == "cat '/etc/my file'"


def test_a_long_command_is_cut_with_an_ellipsis() -> None:
    summary = command_summary(["sh", "-c", "echo " + "x" * 2000])
    assert len(summary) == COMMAND_SUMMARY_CHARS + 1 and summary.endswith("…")


def test_redaction_hides_tokens_headers_passwords_and_keys() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    raw = (
        f"login admin token {TOKEN} Authorization: Bearer abc.def.ghi "
        'password=hunter2 {"client_secret": "s3cr3t"} GET /x?token=t0k&page=2 '
        f"kubeconfig key {pem} done"
    )
    clean = redact(raw)
    for secret in (TOKEN, "abc.def.ghi", "hunter2", "s3cr3t", "t0k", "MIIEowIBAAKCAQEA"):
        assert secret not in clean
    assert "page=2" in clean and clean.endswith("done")
    assert "gaia_session" in redact("cookie gaia_session set")  # a name, not a token
