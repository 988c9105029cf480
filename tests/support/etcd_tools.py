"""etcdutl for the restore tests, built from ``tools/etcdutl`` at the control plane's etcd version.

etcdctl (which takes snapshots) comes with the control plane (scripts/build-control-plane.sh);
etcdutl (which restores them: etcdctl 3.6 no longer does) is built here on first use into
``~/.cache/gaia/etcdutl-<version>``, keyed by the module's go.sum, so a change of version builds
again. Like the control plane it needs Go; without it the caller skips locally and fails in CI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.kube import ROOT, ControlPlaneUnavailable

MODULE = ROOT / "tools" / "etcdutl"


def build_etcdutl(timeout_s: float = 1800) -> Path:
    """The etcdutl binary (built now if it is not yet)."""
    stamp = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "gaia" / f"etcdutl-{stamp}" / "etcdutl"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable("no Go toolchain to build etcdutl (install Go 1.26+)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["go", "build", "-ldflags=-s -w", "-o", str(binary), "go.etcd.io/etcd/etcdutl/v3"],
        cwd=MODULE,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise ControlPlaneUnavailable(f"building etcdutl failed:\n{done.stderr[-3000:]}")
    return binary
