"""Secret redaction: text in, the same text with anything that looks like a secret replaced.

One rule for every place that writes down text an operator or a program produced: the
platform's own log lines (``gaia.monitor.logs``) and the command lines of the web terminal and
``exec`` in the operation records. It is pure text work (regular expressions, no I/O), so it
lives in the domain where both the monitor and the API can reach it (docs/architecture.md,
the layers). What it hides: PEM blocks, ``Authorization`` headers and bearer/basic
credentials, ``password=``/``"secret": ...``/``?token=`` style pairs, and Gaia's own tokens.
It errs on the side of hiding: a name such as ``gaia_session`` stays, its value would not.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

_REDACTED = "[REDACTED]"
_SENSITIVE_KEYS = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client-key-data|credentials?|kubeconfig"
)
_REDACTIONS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # PEM blocks (keys, certificates), and a BEGIN whose END was cut off
    (
        re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL),
        "[REDACTED PEM]",
    ),
    # Authorization headers in any spelling, with or without a scheme
    (
        re.compile(
            r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"
        ),
        rf"\g<1>{_REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1> {_REDACTED}"),
    # password=..., "secret": "...", token: ..., ?token=... in URLs
    (
        re.compile(
            rf"(?i)([\w.-]*(?:{_SENSITIVE_KEYS})[\w.-]*[\"']?\s*[:=]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s,;&}\"']+)"
        ),
        rf"\g<1>{_REDACTED}",
    ),
    # Gaia API and session tokens wherever they appear
    (re.compile(r"\bgaia_[A-Za-z0-9_-]{16,}"), f"gaia_{_REDACTED}"),
)


def redact(text: str) -> str:
    """The text with anything that looks like a secret replaced by ``[REDACTED]``."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


_URL = re.compile(r"(?i)\b(https?://[^/\s?#'\"<>]+)([/?#][^\s'\"<>]*)?")


def redact_url_paths(text: str) -> str:
    """Every http(s) URL in ``text`` cut to its origin: chat webhooks carry their token in the
    path or the query (WeCom's ``?key=``), and no rule about key names can know them all. For
    lines that quote URLs by design, such as an HTTP client's request log."""

    def cut(match: re.Match[str]) -> str:
        rest = match.group(2) or ""
        return match.group(1) + ("" if rest in ("", "/") else f"/{_REDACTED}")

    return _URL.sub(cut, text)


COMMAND_SUMMARY_CHARS = 500


def command_summary(command: Sequence[str]) -> str:
    """What an operation record says of a command run in an instance: the line the operator
    typed (a web-terminal line arrives as ``sh -c <line>``; any other command is shown as a
    shell would read it), redacted as logs are, and bounded so a pasted script cannot bloat
    the record."""
    if len(command) == 3 and command[0] == "sh" and command[1] == "-c":
        line = command[2]
    else:
        line = shlex.join(command)
    clean = redact(line.strip())
    if len(clean) <= COMMAND_SUMMARY_CHARS:
        return clean
    return clean[:COMMAND_SUMMARY_CHARS] + "…"
