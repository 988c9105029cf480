"""A FAKE ``nvidia-cuda-mps-control`` for the tests of ``gaia.node.vgpu`` (no GPU, no driver).

It behaves as NVIDIA documents the real one (``man nvidia-cuda-mps-control``, the MPS guide's
"Tools and Interface Reference"), as far as Gaia relies on it:

- ``-d`` starts the daemon in the background for ``$CUDA_MPS_PIPE_DIRECTORY`` and returns; the
  daemon writes ``nvidia-cuda-mps-control.pid`` there. Starting a second one on the same pipe
  directory fails.
- without arguments it reads commands from stdin, one a line, and prints the replies; with no
  daemon behind the pipe directory it says so and exits 1.
- ``set_default_active_thread_percentage <p>`` / ``get_default_active_thread_percentage``
  (printed as ``30.0``), ``set_default_device_pinned_mem_limit <dev> <value>`` /
  ``get_default_device_pinned_mem_limit <dev>``, ``get_server_list`` (empty: no client has
  spawned a server), ``quit`` (the daemon exits).

Its state is a JSON file in the pipe directory (a real daemon keeps it in memory), replaced whole
under a lock so that calls at once are answered one at a time, as the daemon does. Every call is
appended to ``$FAKE_MPS_RECORD`` (argv, stdin commands, the MPS variables of its environment).
``$FAKE_MPS_REFUSE`` (a substring): a command containing it is refused as the real program
refuses a bad one. ``$FAKE_MPS_NO_START=1``: ``-d`` fails. ``$FAKE_MPS_IGNORE_QUIT=1``: the
daemon process survives ``quit``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PIPE = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
STATE = PIPE / "fake-state.json"
PID_FILE = PIPE / "nvidia-cuda-mps-control.pid"
LOCK = PIPE / "fake-state.lock"


def save(state: dict[str, object]) -> None:
    """Replace the state file whole: a reader (a test, another call) never sees it half written."""
    part = STATE.with_name(f"{STATE.name}.{os.getpid()}")
    part.write_text(json.dumps(state))
    os.replace(part, STATE)


def record(entry: dict[str, object]) -> None:
    path = os.environ.get("FAKE_MPS_RECORD")
    if not path:
        return
    entry["env"] = {
        k: v for k, v in os.environ.items() if k.startswith("CUDA_") or k == "CUDA_VISIBLE_DEVICES"
    }
    with open(path, "a") as out:
        out.write(json.dumps(entry) + "\n")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running() -> bool:
    try:
        pid = int(PID_FILE.read_text())
    except (OSError, ValueError):
        return False
    return STATE.exists() and alive(pid)


def serve() -> None:
    """The daemon process: it only has to exist (and be named like an MPS control program)."""
    while True:
        time.sleep(0.2)
        if not STATE.exists() and os.environ.get("FAKE_MPS_IGNORE_QUIT") != "1":
            return


def start() -> int:
    record({"argv": sys.argv[1:]})
    if os.environ.get("FAKE_MPS_NO_START") == "1" or running():
        print("An instance of this daemon is already running")
        return 1
    PIPE.mkdir(parents=True, exist_ok=True)
    save({"thread": 100.0, "memory": {}})
    daemon = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    PID_FILE.write_text(str(daemon.pid))
    return 0


def answer(command: str, state: dict[str, object]) -> str | None:
    words = command.split()
    refuse = os.environ.get("FAKE_MPS_REFUSE")
    if refuse and refuse in command:
        return f"Error: {command} failed"
    if not words:
        return ""
    verb, args = words[0], words[1:]
    memory = state["memory"]
    assert isinstance(memory, dict)
    if verb == "set_default_active_thread_percentage" and len(args) == 1:
        value = float(args[0])
        if not 0 < value <= 100:
            return "Invalid percentage"
        state["thread"] = value
        return ""
    if verb == "get_default_active_thread_percentage":
        return f"{float(str(state['thread'])):.1f}"
    if verb == "set_default_device_pinned_mem_limit" and len(args) == 2:
        memory[args[0]] = args[1]
        return ""
    if verb == "get_default_device_pinned_mem_limit" and len(args) == 1:
        return str(memory.get(args[0], "0"))
    if verb == "get_server_list":
        return ""
    if verb == "quit":
        STATE.unlink(missing_ok=True)
        return None
    return f"Unknown command: {command}"


def interactive() -> int:
    commands = [line.strip() for line in sys.stdin if line.strip()]
    record({"argv": sys.argv[1:], "commands": commands})
    if not running():
        print("Cannot find MPS control daemon process")
        return 1
    # the real daemon answers one client at a time; two calls at once (the agent's audit and a
    # container's) must not lose each other's settings
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not STATE.exists():
            print("Cannot find MPS control daemon process")
            return 1
        state = json.loads(STATE.read_text())
        for command in commands:
            reply = answer(command, state)
            if reply is None:
                return 0
            if reply:
                print(reply)
        save(state)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    elif sys.argv[1:] == ["-d"]:
        sys.exit(start())
    else:
        sys.exit(interactive())
