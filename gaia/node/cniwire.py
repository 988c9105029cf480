"""What every CNI plugin of Gaia's shares (``gaia-cni``, ``gaia-ipam``): the specification's
error codes, the error a plugin raises, ``CNI_ARGS`` parsing, and the process contract
(the network configuration on stdin, the result or the error object on stdout, exit 1 on an
error; CNI spec 1.1, "Error" and "Version" sections)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

# CNI spec 1.1 well-known error codes; 100 and above are each plugin's own.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50


class CniError(Exception):
    """A failure reported to the runtime as a CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def cni_args(raw: str) -> dict[str, str]:
    """``CNI_ARGS`` (``K=V;K=V``) as a dict; a malformed pair is an error."""
    args: dict[str, str] = {}
    for pair in filter(None, raw.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS has a malformed pair {pair!r}")
        args[key] = value
    return args


def version_of(stdin: bytes, supported: Sequence[str]) -> str:
    """The ``cniVersion`` to answer in: the configuration's when supported, else the newest."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        version = None
    return version if version in supported else supported[-1]


def run_plugin(
    handle: Callable[[Mapping[str, str], bytes], dict[str, Any] | None],
    supported: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    stdout: TextIO | None = None,
) -> int:
    """One plugin invocation: ``handle`` the request, print its answer or the error object."""
    env = os.environ if env is None else env
    raw = sys.stdin.buffer.read() if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    try:
        answer = handle(env, raw)
    except CniError as exc:
        error: dict[str, Any] = {
            "cniVersion": version_of(raw, supported),
            "code": exc.code,
            "msg": exc.msg,
        }
        if exc.details:
            error["details"] = exc.details
        json.dump(error, out)
        return 1
    if answer is not None:
        json.dump(answer, out)
    return 0
