"""Issue 15, NUMA from the topology source: where each simulated GPU sits, per real board.

Simulated nodes used to derive every GPU's NUMA node from the link matrix (GPUs joined by
anything but ``SOC`` share a socket), which reads an NVLink board across two sockets (DGX A100,
DGX H100: every pair NV12/NV18) as one NUMA node, and so bound instances to cores of the wrong
socket. Now the ``nvidia-smi topo -m`` table's "CPU Affinity" and "NUMA Affinity" columns decide
(``sim_spec.nvidia_smi_topo``), then an explicit ``sim_spec.gpu_affinity``, and only then the
matrix, with a ``GpuAffinityDerived`` warning. The fixtures are real boards' tables.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gaia.controllers.apps import node_view
from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.providers.port import Node
from gaia.providers.sim import SimCluster
from gaia.scheduler import ClusterView, PlacementRequest
from gaia.scheduler.links import parse_cpu_list
from gaia.scheduler.placement import GaiaScheduler
from tests.support.paths import FIXTURES

NV12 = [["X" if a == b else "NV12" for b in range(8)] for a in range(8)]


def board(name: str) -> str:
    return (FIXTURES / "topology" / f"{name}.txt").read_text()


def sim(**spec: Any) -> SimCluster:
    return SimCluster(name="sim", spec={"nodes": 1, "gpus": 8, **spec})


def one_node(cluster: SimCluster) -> Node:
    return asyncio.run(cluster.list_nodes())[0]


def cpus(text: str) -> tuple[int, ...]:
    return parse_cpu_list(text)


def test_dgx_a100_gpus_sit_on_the_numa_nodes_the_table_names() -> None:
    """DGX A100 (NPS4: eight NUMA nodes); the matrix alone reads all eight GPUs as one."""
    node = one_node(sim(cpu=256, nvidia_smi_topo=board("dgx_a100")))
    assert [g.numa_node for g in node.gpus] == [3, 3, 1, 1, 7, 7, 5, 5]
    assert node.gpus[0].cpu_ids == cpus("48-63,176-191")
    assert node.gpus[2].cpu_ids == cpus("16-31,144-159")
    assert node.gpus[4].cpu_ids == cpus("112-127,240-255")
    assert node.gpus[6].cpu_ids == cpus("80-95,208-223")
    assert node.gpu_links[0][1] == "NV12"


def test_dgx_h100_gpus_split_over_its_two_sockets() -> None:
    node = one_node(sim(cpu=224, nvidia_smi_topo=board("dgx_h100")))
    assert [g.numa_node for g in node.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(g.cpu_ids == cpus("0-55,112-167") for g in node.gpus[:4])
    assert all(g.cpu_ids == cpus("56-111,168-223") for g in node.gpus[4:])


def test_a_table_without_numa_column_groups_gpus_by_cpu_affinity() -> None:
    """DGX-1 V100 as an old driver prints it: CPU Affinity only, no NUMA Affinity."""
    node = one_node(sim(cpu=80, nvidia_smi_topo=board("dgx1_v100")))
    assert [g.numa_node for g in node.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert node.gpus[5].cpu_ids == cpus("20-39,60-79")


def test_an_explicit_gpu_affinity_fills_in_for_a_bare_matrix() -> None:
    affinity = [{"numa_node": g // 4, "cpus": "0-15" if g < 4 else "16-31"} for g in range(8)]
    cluster = sim(cpu=32, gpu_topology=NV12, gpu_affinity=affinity)
    node = one_node(cluster)
    assert [g.numa_node for g in node.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert node.gpus[7].cpu_ids == tuple(range(16, 32))
    assert not [e for e in asyncio.run(cluster.events()) if e.reason == "GpuAffinityDerived"]


def test_a_bare_matrix_is_the_last_resort_and_says_so() -> None:
    cluster = sim(cpu=32, gpu_topology=NV12)
    node = one_node(cluster)
    assert {g.numa_node for g in node.gpus} == {0}  # what the matrix can tell: one socket
    derived = [e for e in asyncio.run(cluster.events()) if e.reason == "GpuAffinityDerived"]
    assert [e.object_name for e in derived] == [node.name]
    assert derived[0].type == "Warning"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cpu": 32, "nvidia_smi_topo": board("dgx_h100")}, "names core 32, but the node has 32"),
        ({"cpu": 224, "gpus": 4, "nvidia_smi_topo": board("dgx_h100")}, "has 8 GPUs"),
        ({"cpu": 32, "gpu_affinity": [{"cpus": "0-15"}]}, "1 entries for 8 GPUs"),
        (
            {"cpu": 32, "gpu_topology": NV12, "nvidia_smi_topo": board("dgx_h100")},
            "different link matrices",
        ),
        ({"cpu": 32, "gpu_affinity": [{"cpus": "a-b"}] * 8}, "gpu_affinity[0].cpus"),
    ],
)
def test_a_topology_that_does_not_match_the_node_is_refused(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        sim(**spec)


def test_instances_on_a_dgx_h100_node_get_cores_of_their_gpus_socket() -> None:
    """The scheduler, on the sim node built from the DGX H100 table, binds each 1-GPU instance
    to cores of its GPU's socket (the matrix alone would have said: any core of the node)."""
    node = one_node(sim(cpu=224, nvidia_smi_topo=board("dgx_h100")))
    view = ClusterView([node_view(node)])
    scheduler = GaiaScheduler()
    request = PlacementRequest(name="job", resources=ResourceVector(cpu=8000, gpu=100))
    held: set[int] = set()
    for _ in range(8):
        placement = scheduler.place(request, view)
        view.bind(placement, request.resources)
        (gpu,) = placement.gpu_ids
        assert len(placement.cpu_ids) == 8
        assert set(placement.cpu_ids) <= set(node.gpus[gpu].cpu_ids), placement
        assert not held & set(placement.cpu_ids)
        held |= set(placement.cpu_ids)


def test_a_sim_cluster_registered_from_a_board_table_shows_its_numa_nodes(
    client: TestClient, admin: dict[str, str]
) -> None:
    sim_spec = {"nodes": 1, "gpus": 8, "cpu": 224, "nvidia_smi_topo": board("dgx_h100")}
    r = client.post(
        "/api/v1/clusters", json={"name": "h100", "kind": "sim", "sim": sim_spec}, headers=admin
    )
    assert r.status_code == 201, r.text
    r = client.get("/api/v1/clusters/h100/nodes", headers=admin)
    assert r.status_code == 200, r.text
    nodes = r.json()["items"]
    assert [g["numa_node"] for g in nodes[0]["gpus"]] == [0, 0, 0, 0, 1, 1, 1, 1]
    bad = {**sim_spec, "cpu": 32}
    r = client.post(
        "/api/v1/clusters", json={"name": "h100b", "kind": "sim", "sim": bad}, headers=admin
    )
    assert r.status_code == 422, r.text
    assert "names core 32, but the node has 32 cores" in r.json()["message"]
