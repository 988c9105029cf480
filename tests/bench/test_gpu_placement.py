"""bench/gpu_placement.py keeps running, and its own yardsticks agree with the scheduler's.

No performance is asserted here (figures live in docs/benchmarks.md); what is checked is that
the benchmark's independent metrics measure what they claim on hand-made cases, and that a
smoke run of the whole script completes and prints every table.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from tests.support.paths import REPO

ROOT = REPO
sys.path.insert(0, str(ROOT / "bench"))

import gpu_placement as bench  # noqa: E402


@pytest.fixture(scope="module")
def types() -> dict[str, bench.NodeType]:
    return {t.name: t for t in bench.load_types()}


def test_best_levels_are_read_from_the_real_topologies(types: dict[str, bench.NodeType]) -> None:
    # DGX-1 V100: an NV2 pair, an NVLink quad (NV1 at worst), 8 only across the sockets
    assert [types["dgx1-v100"].best[k] for k in (2, 4, 8)] == [18, 19, 320]
    # DGX A100: NV12 through NVSwitch for every size
    assert [types["dgx-a100"].best[k] for k in (2, 4, 8)] == [8, 8, 8]
    # cascaded PCIe: PIX pair, PXB quad, SYS for 8
    assert [types["pcie-cascade"].best[k] for k in (2, 4, 8)] == [20, 40, 320]
    # L40S: PIX pair, NODE quad
    assert [types["pcie-l40s"].best[k] for k in (2, 4, 8)] == [20, 160, 320]


def test_fragmentation_counts_what_no_block_can_use(types: dict[str, bench.NodeType]) -> None:
    frag = bench.Fragmentation()
    cascade = types["pcie-cascade"]
    everything = (1 << 8) - 1
    assert frag.node(cascade, everything) == 0  # an empty node strands nothing
    # GPUs 0 and 2 free: no PIX pair (unusable for 2), fewer than 4 and 8
    assert frag.unusable(cascade, 0b101, 2) == 2
    assert frag.unusable(cascade, 0b101, 4) == 2
    assert frag.unusable(cascade, 0b101, 8) == 2
    # a free PIX pair is usable for 2
    assert frag.unusable(cascade, 0b11, 2) == 0


def test_the_exhaustive_optimum_agrees_with_brute_force(types: dict[str, bench.NodeType]) -> None:
    view, kind = bench.make_view(list(types.values()), 4)
    link = bench.Optimum(kind, bench.Fragmentation(), "link")
    request = bench.Job(0, 0, 1, 200, 0).request()
    found = link.best(request, view)
    assert found is not None
    placement = found[1]
    t = kind[placement.node]
    best = min(
        bench.dearest(t2.costs, ids)
        for t2 in types.values()
        for ids in itertools.combinations(range(8), 2)
    )
    assert bench.dearest(t.costs, placement.gpu_ids) == best == 8  # an NV12 pair


def test_every_policy_places_on_the_same_view(types: dict[str, bench.NodeType]) -> None:
    for name, factory in bench.factories(1).items():
        view, kind = bench.make_view(list(types.values()), 4)
        policy = factory(kind, bench.Fragmentation())
        for cards in (8, 4, 2, 1):
            request = bench.Job(0, 0, 1, cards * 100, 0).request()
            placement = policy.place(request, view)  # type: ignore[attr-defined]
            assert len(placement.gpu_ids) == cards, name
            view.bind(placement, request.resources)
        share = bench.Job(0, 0, 1, 25, 6144).request()
        placement = policy.place(share, view)  # type: ignore[attr-defined]
        assert len(placement.gpu_ids) == 1, name


def test_a_smoke_run_prints_every_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_placement.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    # 0 when every claim holds, 1 when one does not (a tiny run is too noisy to promise that)
    assert done.returncode in (0, 1), done.stderr
    for heading in ("## main:", "## small:", "## scale:", "placements/s", "optimum"):
        assert heading in done.stdout, done.stdout
