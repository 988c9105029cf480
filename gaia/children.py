"""Programs Gaia runs as its children (the registry, HAProxy, dnsmasq): how one is stopped."""

from __future__ import annotations

import subprocess


def stop_child(process: subprocess.Popen[bytes] | None, *, timeout_s: float = 10) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; nothing when it is not running."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def child_running(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None
