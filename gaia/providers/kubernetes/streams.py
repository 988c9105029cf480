"""``pods/exec`` over a WebSocket: the Kubernetes channel protocol, client side.

The API server upgrades ``GET /api/v1/namespaces/{ns}/pods/{pod}/exec?command=...`` to a
WebSocket when asked for one of the ``*.channel.k8s.io`` subprotocols (v5 first, v4 as a
fallback). Each binary message starts with a channel byte: 1 stdout, 2 stderr, 3 the error
channel (from v4 on, one JSON ``Status`` when the command ends: ``Success``, or ``Failure``
with reason ``NonZeroExitCode`` and the code as a cause), 255 (v5) a close signal. Nothing is
written to stdin here: the platform runs commands, the console's terminal is a later issue.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from gaia.domain.errors import InvalidRequest, NotFound
from gaia.providers.port import ExecResult

SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, ERROR, CLOSE = 1, 2, 3, 255
OUTPUT_LIMIT = 4 * 1024 * 1024  # bytes kept of each stream; the rest is cut
COULD_NOT_RUN = 126  # the shell's code for a command that could not be started
NOT_FOUND = 127


def exec_url(server: str, namespace: str, pod: str, container: str, command: Sequence[str]) -> str:
    if not command or not all(isinstance(part, str) for part in command):
        raise InvalidRequest("exec needs a command: a non-empty list of strings")
    if any("\x00" in part for part in command):
        raise InvalidRequest("exec command parts cannot contain NUL characters")
    query = [("command", part) for part in command]
    query += [("container", container), ("stdout", "true"), ("stderr", "true")]
    base = server.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return f"{base}/api/v1/namespaces/{namespace}/pods/{pod}/exec?{urlencode(query)}"


def exit_code_of(status: Mapping[str, Any]) -> tuple[int, str]:
    """The exit code and message an error-channel ``Status`` reports."""
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or "")
    causes = (status.get("details") or {}).get("causes") or []
    for cause in causes:
        if isinstance(cause, Mapping) and cause.get("reason") == "ExitCode":
            raw = str(cause.get("message", ""))
            if raw.lstrip("-").isdigit():
                return int(raw), message
    lowered = message.lower()
    if "not found" in lowered or "no such file" in lowered:
        return NOT_FOUND, message
    return COULD_NOT_RUN, message


async def run_exec(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    headers: Mapping[str, str],
    timeout: float,
) -> ExecResult:
    """Run the command ``url`` names and collect its output; ``TimeoutError`` after
    ``timeout`` seconds (the command may go on running in the container)."""
    return await asyncio.wait_for(_collect(url, ssl_context, headers), timeout)


async def _collect(
    url: str, ssl_context: ssl.SSLContext | None, headers: Mapping[str, str]
) -> ExecResult:
    out, err = bytearray(), bytearray()
    status: dict[str, Any] | None = None
    try:
        async with connect(
            url,
            ssl=ssl_context,
            additional_headers=dict(headers),
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            compression=None,
            max_size=None,
            open_timeout=10,
            proxy=None,
        ) as ws:
            try:
                async for message in ws:
                    data = message.encode() if isinstance(message, str) else message
                    if not data:
                        continue
                    channel, payload = data[0], data[1:]
                    if channel == STDOUT:
                        out += payload[: max(0, OUTPUT_LIMIT - len(out))]
                    elif channel == STDERR:
                        err += payload[: max(0, OUTPUT_LIMIT - len(err))]
                    elif channel == ERROR and payload:
                        status = _status(payload)
                    elif channel == CLOSE:
                        break
            except ConnectionClosed:
                pass
    except InvalidStatus as exc:
        code = exc.response.status_code
        body = exc.response.body.decode(errors="replace") if exc.response.body else ""
        if code == 404:
            raise NotFound("the instance is not found (or has no running container)") from None
        if code in (400, 422):
            raise InvalidRequest(f"exec refused: {_status_message(body)}") from None
        raise ConnectionError(f"exec refused (HTTP {code}): {_status_message(body)}") from None
    except WebSocketException as exc:
        raise ConnectionError(f"exec stream failed: {exc}") from None
    if status is None:
        raise ConnectionError("the exec stream ended without the command's exit status")
    code, message = exit_code_of(status)
    stderr = err.decode(errors="replace")
    if code and message and not stderr:
        stderr = message
    return ExecResult(exit_code=code, stdout=out.decode(errors="replace"), stderr=stderr)


def _status(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except ValueError:
        # v1-v3 send plain text on the error channel: any text is a failure
        return {"status": "Failure", "message": payload.decode(errors="replace")}
    return doc if isinstance(doc, dict) else {"status": "Failure", "message": str(doc)}


def _status_message(body: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300]
    return str(doc.get("message", body))[:300] if isinstance(doc, dict) else body[:300]
