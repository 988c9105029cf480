"""Agents as nodes of their own: one network namespace each, links shaped with tc, the registry
in a namespace of its own, the coordinator on the bridge (tests/support/netns.py).

The registry's egress is what it put on its shaped link (the bridge side's counter), so "each
piece leaves the registry once" is measured on the wire, TCP and HTTP overhead included; the
pulls are ``bench/p2p_pull.py`` inside each node's namespace through that node's agent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gaia.platform import Platform
from tests.support.netns import Host, NetBed
from tests.support.p2p import Registry, random_image, served_coordinator
from tests.support.paths import REPO

GATEWAY = "10.78.0.1"  # not the bench's 10.77/16: both may run on one machine
NODE_MBIT = 16
MIRROR = "127.0.0.1:65001"


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def bed() -> Iterator[NetBed]:
    bed = NetBed(prefix="gp2t", gateway=GATEWAY).start()
    yield bed
    bed.stop()


def _pull_all(bed: NetBed, nodes: list[Host], base: str, ns: str, work: Path) -> list[float]:
    pulls = []
    for i, node in enumerate(nodes):
        argv = [sys.executable, str(REPO / "bench" / "p2p_pull.py"), base, "p2p/app", "v1"]
        argv += ["--out", str(work / f"pull-{i}.json")] + (["--ns", ns] if ns else [])
        pulls.append(bed.run(node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for pull in pulls:
        _, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err.decode()
    return [json.loads((work / f"pull-{i}.json").read_text())["seconds"] for i in range(len(nodes))]


def test_three_shaped_nodes_take_each_byte_from_the_registry_once(
    bed: NetBed, platform: Platform, tmp_path: Path
) -> None:
    reg_host = bed.add("reg", up_bps=80_000_000, down_bps=1_000_000_000)
    nodes = [
        bed.add(f"n{i}", up_bps=NODE_MBIT * 10**6, down_bps=NODE_MBIT * 10**6) for i in range(3)
    ]
    registry = Registry(tmp_path / "registry", bed=bed, host_in_bed=reg_host).start()
    try:
        image = random_image(2, 3 * 10**6, seed=21)
        registry.push(image, "p2p/app", "v1")
        size = sum(len(layer.blob.data) for layer in image.layers) + len(image.config().data)
        # direct: each node from the registry
        before = bed.sent(reg_host)
        _pull_all(bed, nodes, registry.url, "", tmp_path)
        direct = bed.sent(reg_host) - before
        assert direct >= 3 * size
        # through the agents: one per namespace, the coordinator on the bridge
        with served_coordinator(platform, host=GATEWAY) as served:
            (tmp_path / "token").write_text(served.token)
            registries = {registry.host: {"url": registry.url, "default": True}}
            (tmp_path / "registries.json").write_text(json.dumps(registries))
            agents = []
            for i, node in enumerate(nodes):
                argv = [
                    sys.executable, "-m", "gaia", "p2p-agent", "--node-name", node.name,
                    "--listen", MIRROR, "--peer-listen", f"{node.ip}:65002",
                    "--coordinator", served.origin, "--cluster", "sim-1",
                    "--token-file", str(tmp_path / "token"),
                    "--registries-file", str(tmp_path / "registries.json"),
                    "--cache-dir", str(tmp_path / f"cache-{i}"),
                ]  # fmt: skip
                log = (tmp_path / f"agent-{i}.log").open("wb")
                agents.append(bed.run(node, argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            try:
                deadline = time.monotonic() + 30
                with httpx.Client(base_url=served.origin, headers=served.admin, timeout=30) as c:
                    while len(c.get("/api/v1/clusters/sim-1/p2p/nodes").json()["items"]) < 3:
                        assert time.monotonic() < deadline, (tmp_path / "agent-0.log").read_text()
                        time.sleep(0.2)
                before = bed.sent(reg_host)
                seconds = _pull_all(bed, nodes, f"http://{MIRROR}", registry.host, tmp_path)
                egress = bed.sent(reg_host) - before
            finally:
                for agent in agents:
                    agent.terminate()
                    agent.wait(timeout=10)
    finally:
        registry.stop()
    # the image left the registry once (plus the manifests by tag, HEADs and TCP/IP headers)
    assert size <= egress <= 1.1 * size, (egress, size)
    # the links are really shaped: no node got the image faster than its downlink allows
    floor = size * 8 / (NODE_MBIT * 10**6)
    assert min(seconds) >= 0.9 * floor, (seconds, floor)
