"""The committed device plugin stubs are what ``scripts/gen-deviceplugin-stubs.sh`` makes from the
kubelet's ``api.proto`` (k8s.io/kubelet, the version our kubelet is built with): regenerated
into a scratch folder and compared file by file, so the stubs cannot drift from the proto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import missing_component
from tests.support.paths import REPO as ROOT

STUBS = Path("gaia/node/deviceplugin/v1beta1")


def test_committed_stubs_match_the_kubelets_proto(tmp_path: Path) -> None:
    if shutil.which("go") is None:
        missing_component("Go (the module cache holds the kubelet's api.proto)", "install Go")
    done = subprocess.run(
        [str(ROOT / "scripts/gen-deviceplugin-stubs.sh"), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in (tmp_path / STUBS).iterdir())
    committed = sorted(p.name for p in (ROOT / STUBS).iterdir() if p.suffix in (".py", ".pyi"))
    assert made == committed
    for name in made:
        assert (tmp_path / STUBS / name).read_text() == (ROOT / STUBS / name).read_text(), name
