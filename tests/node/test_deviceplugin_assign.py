"""The device plugin's decisions without a kubelet: units per card, which container the kubelet
is allocating for, which units to prefer, what to refuse, the limits, and the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gaia.kube.resources import GAIA_GPU_CORE, GAIA_GPU_MEMORY
from gaia.node.deviceplugin.assign import (
    AllocationRefused,
    PendingContainer,
    allocation_id,
    check_units,
    choose_units,
    next_container,
    pending_containers,
    read_gpu_ids,
    shares_for,
)
from gaia.node.deviceplugin.ledger import Granted, Ledger
from gaia.node.deviceplugin.units import CARD, CORE, Inventory, UnknownUnit, unit_id
from gaia.node.gpus import CardHealth, GpuCard
from gaia.node.vgpu import CardShare
from gaia.scheduler.links import GpuTopology

MIB = 16384


def cards(count: int = 4) -> tuple[GpuCard, ...]:
    return tuple(
        GpuCard(
            index=i,
            uuid=f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd",
            model="FAKE",
            memory_mib=MIB,
            minor=i,
            bus_id=f"0000:{i + 1:02x}:00.0",
            numa_node=i // 2,
            cpus=(),
        )
        for i in range(count)
    )


def inventory(sick: dict[int, tuple[str, ...]] | None = None) -> Inventory:
    health = [
        CardHealth(
            index=c.index,
            healthy=c.index not in (sick or {}),
            reasons=(sick or {}).get(c.index, ()),
        )
        for c in cards()
    ]
    return Inventory.of(cards(), health)


def units(inv: Inventory, card: int, count: int, start: int = 0) -> list[str]:
    found = inv.card(card)
    assert found is not None
    return [unit_id(found, k) for k in range(start, start + count)]


def pod(
    name: str,
    *,
    created: str = "2026-12-04T10:00:00Z",
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    gpu_ids: str | None = None,
    phase: str = "Pending",
    statuses: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    annotations = {"gaia.io/gpu-ids": gpu_ids} if gpu_ids is not None else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "annotations": annotations,
        },
        "spec": {"containers": containers or [], "initContainers": init or []},
        "status": {"phase": phase, "containerStatuses": statuses or []},
    }


def gpu(name: str, cores: int, memory: int = 0) -> dict[str, Any]:
    limits = {GAIA_GPU_CORE: str(cores)}
    if memory:
        limits[GAIA_GPU_MEMORY] = str(memory)
    return {"name": name, "resources": {"limits": limits}}


def prefer(
    inv: Inventory,
    available: list[str],
    *,
    size: int,
    container: PendingContainer | None,
    memory_used: dict[int, int] | None = None,
) -> list[str]:
    """``choose_units`` for gaia.io/gpu-core on the four-card test topology."""
    return choose_units(
        inventory=inv,
        topology=TOPOLOGY,
        available=available,
        must_include=[],
        size=size,
        container=container,
        memory_used=memory_used or {},
    )


TOPOLOGY = GpuTopology(
    links=(
        ("X", "PIX", "SYS", "SYS"),
        ("PIX", "X", "SYS", "SYS"),
        ("SYS", "SYS", "X", "PIX"),
        ("SYS", "SYS", "PIX", "X"),
    ),
    cpu_affinity=((),) * 4,
    numa_node=(None,) * 4,
)


def test_each_card_is_100_units_named_by_its_uuid_and_a_sick_card_is_unhealthy() -> None:
    inv = inventory({2: ("XID 79",)})
    listed = inv.units()
    assert len(listed) == 400
    assert {u.card for u in listed if not u.healthy} == {2}
    assert listed[0].id == "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd::00"
    assert listed[0].numa_node == 0
    assert inv.card_of(listed[250].id).index == 2
    with pytest.raises(UnknownUnit):
        inv.card_of("GPU-elsewhere::01")
    with pytest.raises(UnknownUnit):
        inv.card_of(f"{cards()[0].uuid}::100")


def test_pending_containers_come_in_the_kubelets_order_and_skip_those_that_ran() -> None:
    pods = [
        pod("late", created="2026-12-04T11:00:00Z", containers=[gpu("a", 30)]),
        pod(
            "early",
            created="2026-12-04T09:00:00Z",
            containers=[gpu("main", 50)],
            init=[gpu("prep", 10)],
        ),
        pod(
            "ran",
            containers=[gpu("a", 20)],
            statuses=[{"name": "a", "state": {"running": {}}}],
            phase="Running",
        ),
        pod("done", containers=[gpu("a", 20)], phase="Succeeded"),
        pod("cpu-only", containers=[{"name": "a", "resources": {"limits": {"cpu": "1"}}}]),
    ]
    found = pending_containers(pods)
    assert [(c.pod, c.container, c.cores) for c in found] == [
        ("early", "prep", 10),
        ("early", "main", 50),
        ("late", "a", 30),
    ]
    assert next_container(found, size=30, allocated=()) is found[2]
    assert next_container(found, size=50, allocated=[("uid-early", "main")]) is None


def test_gpu_ids_are_read_strictly() -> None:
    assert read_gpu_ids("0,3") == (0, 3)
    for bad in ("", "a", "1,1", "-1", "1;2"):
        with pytest.raises(ValueError):
            read_gpu_ids(bad)
    broken = pending_containers([pod("p", containers=[gpu("a", 30)], gpu_ids="one")])[0]
    assert broken.gpu_ids is None and "not a list of card indexes" in broken.error


def test_the_preference_is_the_annotated_card_first_free_units() -> None:
    inv = inventory()
    available = [u.id for u in inv.units() if u.id not in units(inv, 1, 30)]  # 30 of card 1 taken
    want = pending_containers([pod("p", containers=[gpu("a", 40)], gpu_ids="1")])[0]
    chosen = prefer(inv, available, size=40, container=want)
    assert chosen == units(inv, 1, 40, start=30)


def test_without_annotation_the_tree_picks_best_fit_on_a_shared_card() -> None:
    inv = inventory()
    taken = set(units(inv, 2, 60))
    available = [u.id for u in inv.units() if u.id not in taken]
    want = pending_containers([pod("p", containers=[gpu("a", 30)])])[0]
    chosen = prefer(inv, available, size=30, container=want, memory_used={2: 8192})
    assert {inv.card_of(u).index for u in chosen} == {2} and len(chosen) == 30


def test_two_whole_cards_without_annotation_are_the_linked_pair() -> None:
    inv = inventory()
    taken = set(units(inv, 0, 10))  # card 0 shared: cards 2 and 3 (PIX) are the free pair
    available = [u.id for u in inv.units() if u.id not in taken]
    chosen = prefer(inv, available, size=200, container=None)
    assert sorted(inv.per_card(chosen)) == [2, 3]


def test_no_preference_when_the_annotated_card_is_full_and_allocate_refuses_the_kubelets_pick() -> (
    None
):
    inv = inventory()
    taken = set(units(inv, 1, 90))
    available = [u.id for u in inv.units() if u.id not in taken]
    want = pending_containers([pod("p", containers=[gpu("a", 20)], gpu_ids="1")])[0]
    assert prefer(inv, available, size=20, container=want) == []
    with pytest.raises(
        AllocationRefused, match=r"gave this pod card\(s\) 1 .*cannot hold 20 x gaia.io/gpu-core"
    ):
        check_units(inventory=inv, device_ids=units(inv, 0, 20), container=want)


@pytest.mark.parametrize(
    ("picked", "message"),
    [
        (lambda inv: units(inv, 0, 10) + units(inv, 1, 10), "must lie on one card"),
        (lambda inv: units(inv, 0, 100) + units(inv, 1, 50), "must be whole cards"),
        (lambda inv: units(inv, 3, 10), "unhealthy card"),
        (lambda inv: ["GPU-gone::01"], "not a unit of any GPU"),
    ],
)
def test_allocate_refuses_picks_gaia_cannot_honour(picked: Any, message: str) -> None:
    inv = inventory({3: ("XID 48: double bit ECC",)})
    with pytest.raises(AllocationRefused, match=message):
        check_units(inventory=inv, device_ids=picked(inv), container=None)


def test_limits_are_the_asked_memory_or_the_cores_fraction_and_must_fit() -> None:
    inv = inventory()
    asked = pending_containers([pod("p", containers=[gpu("a", 30, memory=4096)])])[0]
    plain = pending_containers([pod("q", containers=[gpu("a", 25)])])[0]
    got = shares_for(inventory=inv, per_card={1: 30}, container=asked, memory_used={})
    assert got == [CardShare(index=1, uuid=cards()[1].uuid, minor=1, cores=30, memory_mib=4096)]
    got = shares_for(inventory=inv, per_card={1: 25}, container=plain, memory_used={})
    assert got[0].memory_mib == MIB // 4
    whole = shares_for(
        inventory=inv,
        per_card={0: 100, 1: 100},
        container=None,
        memory_used={},
    )
    assert [(s.index, s.cores, s.memory_mib) for s in whole] == [(0, 100, 0), (1, 100, 0)]
    with pytest.raises(AllocationRefused, match="asks 4096 MiB of GPU1, which has 2048 MiB left"):
        shares_for(
            inventory=inv,
            per_card={1: 30},
            container=asked,
            memory_used={1: MIB - 2048},
        )


def test_allocation_ids_are_path_safe() -> None:
    asked = pending_containers([pod("p", containers=[gpu("a", 30)])])[0]
    assert allocation_id(asked, []) == "uid-p-a"
    long = pending_containers([pod("p" * 20, containers=[gpu("c" * 63, 30)])])[0]
    assert len(allocation_id(long, [])) <= 53
    anonymous = allocation_id(None, ["b", "a"])
    assert anonymous == allocation_id(None, ["a", "b"]) and anonymous.startswith("units-")
    assert all(ch.isalnum() or ch == "-" for ch in anonymous)


def grant(name: str, card: int, cores: int, memory: int, ids: list[str]) -> Granted:
    return Granted(
        allocation_id=f"uid-{name}-a",
        uid=f"uid-{name}",
        namespace="team",
        pod=name,
        container="a",
        device_ids=tuple(ids),
        shares=(CardShare(index=card, uuid="GPU-x", minor=card, cores=cores, memory_mib=memory),),
    )


def test_the_ledger_survives_a_restart_and_forgets_pods_that_left(tmp_path: Path) -> None:
    path = tmp_path / "grants.json"
    ledger = Ledger(path)
    ledger.add(grant("a", 1, 30, 4096, ["u1", "u2"]))
    ledger.add(grant("b", 1, 20, 1024, ["u3"]))
    again = Ledger(path)
    assert again.memory_used() == {1: 5120}
    assert again.by_units(["u2", "u1"]) is not None and again.by_units(["u1"]) is None
    assert again.keys() == {("uid-a", "a"), ("uid-b", "a")}
    gone = again.forget_gone(["uid-b"])
    assert [g.pod for g in gone] == ["a"]
    assert Ledger(path).memory_used() == {1: 1024}


def test_a_corrupt_ledger_is_set_aside_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "grants.json"
    path.write_text("{not json")
    ledger = Ledger(path)
    assert ledger.grants() == []
    assert (tmp_path / "grants.corrupt").read_text() == "{not json"


def test_whole_cards_are_one_nvidia_device_each_and_never_shared_with_units() -> None:
    inv = inventory()
    listed = inv.units(CARD)
    assert [u.id for u in listed] == [c.uuid for c in cards()]
    assert inv.card_of(cards()[2].uuid).index == 2
    found = pending_containers(
        [pod("p", containers=[{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2"}}}])]
    )
    want = next_container(found, resource=CARD, size=2, allocated=())
    assert want is not None and want.cards == 2 and want.cores == 0
    # card 2 has units granted (busy for whole cards): the linked pair left is 0 and 1
    chosen = choose_units(
        inventory=inv,
        topology=TOPOLOGY,
        resource=CARD,
        available=[u.id for u in listed],
        must_include=[],
        size=2,
        container=want,
        memory_used={2: 1024},
        busy={2},
    )
    assert sorted(inv.per_card(chosen)) == [0, 1]
    assert check_units(inventory=inv, resource=CARD, device_ids=chosen, container=want) == {
        0: 100,
        1: 100,
    }
    with pytest.raises(AllocationRefused, match=r"held through gaia.io/gpu-core"):
        check_units(
            inventory=inv, resource=CARD, device_ids=[cards()[2].uuid], container=None, busy={2}
        )
    with pytest.raises(AllocationRefused, match=r"held through nvidia.com/gpu"):
        check_units(inventory=inv, device_ids=units(inv, 0, 10), container=None, busy={0})


def test_a_container_asking_both_resources_is_refused() -> None:
    both = {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1", GAIA_GPU_CORE: "30"}}}
    want = pending_containers([pod("p", containers=[both])])[0]
    inv = inventory()
    with pytest.raises(AllocationRefused, match="asks for both"):
        check_units(inventory=inv, device_ids=units(inv, 0, 30), container=want)


def test_the_ledger_knows_which_cards_each_resource_holds(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "grants.json")
    ledger.add(grant("a", 1, 30, 4096, ["u1"]))
    whole = Granted(
        allocation_id="uid-w-a",
        uid="uid-w",
        namespace="team",
        pod="w",
        container="a",
        device_ids=("GPU-2",),
        shares=(CardShare(index=2, uuid="GPU-2", minor=2, cores=100, memory_mib=0),),
        resource=CARD,
    )
    ledger.add(whole)
    assert ledger.busy_for(CORE) == {2}
    assert ledger.busy_for(CARD) == {1}
    assert Ledger(tmp_path / "grants.json").busy_for(CORE) == {2}
