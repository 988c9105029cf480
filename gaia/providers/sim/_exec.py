"""A tiny simulated shell: what ``exec`` into a simulated instance answers.

The cluster builds a ``Container`` (a read-only view of one running instance: hostname,
environment, a small file tree with the mounted configs and secrets, the GPUs it holds) and
``run(container, argv)`` interprets a handful of commands over it, as a shell in a minimal image
would:

``hostname``, ``env`` / ``printenv [NAME]``, ``cat FILE...``, ``ls [PATH...]``, ``echo [-n] ...``,
``pwd``, ``whoami``, ``id``, ``true``, ``false``, ``sleep N`` (returns at once), ``ps``,
``nvidia-smi -L``, and ``sh -c "<those, joined by ;, && or ||>"`` (also ``bash -c``), where the
shell expands ``$NAME`` and ``${NAME}`` outside single quotes and ``exit N`` ends with status N.
Pipes, redirections and background jobs are not simulated.

Anything else answers exit status 127 and ``<name>: command not found`` on stderr. Nothing here
has side effects: the file tree is what the instance was started with.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gaia.providers.port import ExecResult

_SHELLS = frozenset({"sh", "/bin/sh", "bash", "/bin/bash"})
# the top of a minimal image's file tree (a listing, not a place anything is written)
_STANDARD_DIRS = tuple(
    "/" + d for d in ("bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr", "var")
)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class GpuCard:
    index: int
    model: str
    uuid: str


@dataclass(frozen=True, slots=True)
class Container:
    hostname: str
    env: tuple[tuple[str, str], ...]  # in the order ``env`` prints them
    files: dict[str, str]  # absolute path -> content
    gpus: tuple[GpuCard, ...]
    process: str  # PID 1's command line


def run(container: Container, argv: Sequence[str]) -> ExecResult:
    if not argv:
        return ExecResult(126, "", "exec: no command given\n")
    if argv[0] in _SHELLS:
        if len(argv) >= 3 and argv[1] == "-c":
            return _shell(container, argv[2])
        return ExecResult(2, "", f"{argv[0]}: only '-c <command>' is simulated\n")
    return _command(container, list(argv), prefix="")


def _shell(container: Container, script: str) -> ExecResult:
    """Commands joined by ``;``, ``&&`` and ``||``, run left to right as a shell would."""
    env = dict(container.env)
    lexer = shlex.shlex(_expand(script, env), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:
        return ExecResult(2, "", f"sh: syntax error: {exc}\n")
    out: list[str] = []
    err: list[str] = []
    status = 0
    pending: str | None = None  # the operator before the command being collected
    command: list[str] = []
    for token in [*tokens, ";"]:
        if token not in (";", "&&", "||"):
            if token in ("&", "|", "&|", "|&") or set(token) <= set(";&|"):
                return ExecResult(2, "", f"sh: '{token}' is not simulated (use ;, && or ||)\n")
            command.append(token)
            continue
        if command:
            skip = (pending == "&&" and status != 0) or (pending == "||" and status == 0)
            if not skip:
                if command[0] == "exit":
                    return _exit(command, "".join(out), "".join(err))
                result = _command(container, command, prefix="sh: ")
                out.append(result.stdout)
                err.append(result.stderr)
                status = result.exit_code
        command = []
        pending = token
    return ExecResult(status, "".join(out), "".join(err))


def _exit(command: list[str], out: str, err: str) -> ExecResult:
    if len(command) == 1:
        return ExecResult(0, out, err)
    try:
        return ExecResult(int(command[1]) % 256, out, err)
    except ValueError:
        return ExecResult(2, out, err + f"sh: exit: {command[1]}: numeric argument required\n")


def _expand(script: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from the environment, except inside single quotes."""
    parts = script.split("'")
    for i in range(0, len(parts), 2):  # even parts are outside single quotes
        parts[i] = _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), parts[i])
    return "'".join(parts)


def _command(container: Container, argv: list[str], *, prefix: str) -> ExecResult:
    name, args = argv[0], argv[1:]
    handler = _COMMANDS.get(name.rsplit("/", 1)[-1])
    if handler is None:
        return ExecResult(127, "", f"{prefix}{name}: command not found\n")
    return handler(container, args)


def _directories(container: Container) -> set[str]:
    dirs = {"/", *_STANDARD_DIRS}
    for path in container.files:
        parent = path.rsplit("/", 1)[0]
        while parent:
            dirs.add(parent)
            parent = parent.rsplit("/", 1)[0]
    return dirs


def _normalize(path: str) -> str:
    if not path.startswith("/"):
        path = "/" + path
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts)


def _hostname(c: Container, args: list[str]) -> ExecResult:
    return ExecResult(0, c.hostname + "\n")


def _env(c: Container, args: list[str]) -> ExecResult:
    return ExecResult(0, "".join(f"{k}={v}\n" for k, v in c.env))


def _printenv(c: Container, args: list[str]) -> ExecResult:
    if not args:
        return _env(c, args)
    env = dict(c.env)
    values = [env[a] for a in args if a in env]
    return ExecResult(0 if len(values) == len(args) else 1, "".join(v + "\n" for v in values))


def _cat(c: Container, args: list[str]) -> ExecResult:
    out: list[str] = []
    errors: list[str] = []
    dirs = _directories(c)
    for arg in args:
        path = _normalize(arg)
        if path in c.files:
            out.append(c.files[path])
        elif path in dirs:
            errors.append(f"cat: {arg}: Is a directory\n")
        else:
            errors.append(f"cat: {arg}: No such file or directory\n")
    return ExecResult(1 if errors else 0, "".join(out), "".join(errors))


def _ls(c: Container, args: list[str]) -> ExecResult:
    paths = [a for a in args if not a.startswith("-")] or ["/"]
    dirs = _directories(c)
    out: list[str] = []
    errors: list[str] = []
    for arg in paths:
        path = _normalize(arg)
        if path in c.files:
            out.append(arg + "\n")
            continue
        if path not in dirs:
            errors.append(f"ls: cannot access '{arg}': No such file or directory\n")
            continue
        base = "" if path == "/" else path
        children = {
            p[len(base) + 1 :].split("/", 1)[0]
            for p in (*c.files, *dirs)
            if p.startswith(base + "/") and p != path
        }
        if path == "/bin":
            children |= set(_COMMANDS)
        if len(paths) > 1:
            out.append(f"{arg}:\n")
        out.extend(child + "\n" for child in sorted(children))
    return ExecResult(2 if errors else 0, "".join(out), "".join(errors))


def _echo(c: Container, args: list[str]) -> ExecResult:
    if args[:1] == ["-n"]:
        return ExecResult(0, " ".join(args[1:]))
    return ExecResult(0, " ".join(args) + "\n")


def _ps(c: Container, args: list[str]) -> ExecResult:
    return ExecResult(
        0,
        "PID   USER     TIME  COMMAND\n"
        f"    1 root      0:00 {c.process}\n"
        "   27 root      0:00 ps\n",
    )


def _nvidia_smi(c: Container, args: list[str]) -> ExecResult:
    if args != ["-L"]:
        return ExecResult(2, "", "nvidia-smi: only 'nvidia-smi -L' is simulated\n")
    if not c.gpus:
        return ExecResult(6, "No devices were found\n")
    return ExecResult(0, "".join(f"GPU {g.index}: {g.model} (UUID: {g.uuid})\n" for g in c.gpus))


def _sleep(c: Container, args: list[str]) -> ExecResult:
    return ExecResult(0, "")


_COMMANDS: dict[str, Callable[[Container, list[str]], ExecResult]] = {
    "hostname": _hostname,
    "env": _env,
    "printenv": _printenv,
    "cat": _cat,
    "ls": _ls,
    "echo": _echo,
    "ps": _ps,
    "nvidia-smi": _nvidia_smi,
    "sleep": _sleep,
    "pwd": lambda c, a: ExecResult(0, "/\n"),
    "whoami": lambda c, a: ExecResult(0, "root\n"),
    "id": lambda c, a: ExecResult(0, "uid=0(root) gid=0(root) groups=0(root)\n"),
    "true": lambda c, a: ExecResult(0, ""),
    "false": lambda c, a: ExecResult(1, ""),
}
