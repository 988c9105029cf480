"""The swarm state (gaia.domain.swarm): piece geometry, parent choice, rarest first, and the
invariants the coordinator promises under any interleaving of calls."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaia.domain.errors import GaiaError
from gaia.domain.swarm import (
    MIN_PIECE,
    REGISTRY_SLOTS,
    Grant,
    ReportOutcome,
    SwarmCluster,
    piece_count,
    piece_size,
)

DIGEST = "sha256:" + "a" * 64
MiB = 1 << 20


def cluster_with(*nodes: tuple[str, str, int], now: float = 0.0) -> SwarmCluster:
    state = SwarmCluster()
    for name, zone, slots in nodes:
        state.heartbeat(name=name, zone=zone, address=f"{name}:7000", upload_slots=slots, now=now)
    return state


def test_piece_size_targets_128_pieces_within_bounds() -> None:
    assert piece_size(40 * 1000 * 1000) == MIN_PIECE
    assert piece_count(40 * 1000 * 1000, MIN_PIECE) == 39
    assert piece_size(2 << 30) == 16 * MiB
    assert piece_count(10 << 30, piece_size(10 << 30)) == 640
    assert piece_count(0, MIN_PIECE) == 1


def test_the_first_node_fetches_from_the_registry_the_second_waits() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=2 * MiB, now=0)
    rng = random.Random(1)
    first = state.schedule(node="a", digest=DIGEST, want=16, now=0, rng=rng)
    assert sorted(g.piece for g in first) == [0, 1]
    assert all(g.source == "registry" for g in first)
    # both pieces are being fetched from the registry and nobody holds them: b waits
    assert state.schedule(node="b", digest=DIGEST, want=16, now=0, rng=rng) == []


def test_a_held_piece_is_served_by_its_holder_never_the_registry() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=MiB, now=0)
    rng = random.Random(1)
    (grant,) = state.schedule(node="a", digest=DIGEST, want=1, now=0, rng=rng)
    state.report(
        node="a", digest=DIGEST, piece=0, ok=True, sha256="f" * 64, parent=None,
        size=MiB, reason=None, now=1,
    )  # fmt: skip
    (grant,) = state.schedule(node="b", digest=DIGEST, want=1, now=1, rng=rng)
    assert (grant.source, grant.parent, grant.address) == ("peer", "a", "a:7000")
    assert state.swarm(DIGEST).hashes == {0: "f" * 64}


def test_parent_choice_prefers_undemoted_then_same_zone_then_least_loaded() -> None:
    state = cluster_with(("me", "z1", 1), ("far", "z2", 4), ("near", "z1", 4), ("busy", "z1", 1))
    swarm = state.open(digest=DIGEST, size=4 * MiB, now=0)
    for holders in swarm.holders:
        holders.update({"far", "near", "busy"})
    rng = random.Random(0)
    grants = state.schedule(node="me", digest=DIGEST, want=1, now=0, rng=rng)
    assert grants[0].parent in {"near", "busy"}  # same zone first
    # near is failed once: demoted for me, so busy (same zone, free slot) comes next
    state.report(
        node="me", digest=DIGEST, piece=grants[0].piece, ok=False, sha256=None,
        parent=grants[0].parent, size=0, reason="corrupt", now=1,
    )  # fmt: skip
    swarm.demoted[("me", "near")] = 100
    swarm.demoted[("me", "busy")] = 100
    (g,) = state.schedule(node="me", digest=DIGEST, want=1, now=2, rng=rng)
    assert g.parent == "far"  # both same-zone parents are demoted: the other zone goes first
    assert swarm.figures.corrupt_reports == 1


def test_a_parent_without_a_free_slot_is_not_chosen() -> None:
    state = cluster_with(("a", "z1", 1), ("b", "z1", 1), ("c", "z1", 1))
    swarm = state.open(digest=DIGEST, size=2 * MiB, now=0)
    for holders in swarm.holders:
        holders.add("a")
    rng = random.Random(0)
    assert len(state.schedule(node="b", digest=DIGEST, want=2, now=0, rng=rng)) == 1
    assert state.schedule(node="c", digest=DIGEST, want=2, now=0, rng=rng) == []


def test_rarest_pieces_go_first() -> None:
    state = cluster_with(("a", "z1", 9), ("b", "z1", 9), ("c", "z1", 9))
    swarm = state.open(digest=DIGEST, size=3 * MiB, now=0)
    swarm.holders[0].update({"a", "b"})
    swarm.holders[1].add("a")
    swarm.holders[2].update({"a", "b"})
    (g,) = state.schedule(node="c", digest=DIGEST, want=1, now=0, rng=random.Random(0))
    assert g.piece == 1


def test_a_lease_expires_and_the_registry_may_be_assigned_again() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=MiB, now=0)
    rng = random.Random(0)
    assert state.schedule(node="a", digest=DIGEST, want=1, now=0, rng=rng)
    assert state.schedule(node="b", digest=DIGEST, want=1, now=1, rng=rng) == []
    assert state.expire(now=31) == 1
    (g,) = state.schedule(node="b", digest=DIGEST, want=1, now=31, rng=rng)
    assert g.source == "registry"
    assert state.swarm(DIGEST).figures.registry_assignments == 2


def test_the_first_registry_hash_stands() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=MiB, now=0)
    first = state.report(
        node="a", digest=DIGEST, piece=0, ok=True, sha256="1" * 64, parent=None,
        size=MiB, reason=None, now=0,
    )  # fmt: skip
    second = state.report(
        node="b", digest=DIGEST, piece=0, ok=True, sha256="2" * 64, parent=None,
        size=MiB, reason=None, now=0,
    )  # fmt: skip
    assert first.accepted and not second.accepted
    assert state.swarm(DIGEST).hashes == {0: "1" * 64}
    assert state.swarm(DIGEST).holders[0] == {"a"}
    assert state.swarm(DIGEST).figures.hash_conflicts == 1


def test_forgetting_a_node_removes_its_pieces_and_leases() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    swarm = state.open(digest=DIGEST, size=2 * MiB, now=0)
    swarm.holders[0].add("a")
    state.schedule(node="b", digest=DIGEST, want=2, now=0, rng=random.Random(0))
    assert state.uploads == {"a": 1}
    state.forget("a")
    assert swarm.holders[0] == set() and state.uploads == {}
    assert all(lease.parent is None for lease in swarm.leases.values())
    assert state.lapsed(now=100, heartbeat_s=10) == ["b"]


def test_a_node_that_asks_for_pieces_does_not_lapse_without_heartbeats() -> None:
    # an overloaded coordinator answers heartbeats late; the node's schedule calls show it alive
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=2 * MiB, now=0)
    state.schedule(node="b", digest=DIGEST, want=1, now=90, rng=random.Random(0))
    assert state.lapsed(now=100, heartbeat_s=10) == ["a"]


def test_unknown_nodes_and_blobs_are_refused() -> None:
    state = cluster_with(("a", "z1", 4))
    with pytest.raises(GaiaError):
        state.schedule(node="a", digest=DIGEST, want=1, now=0, rng=random.Random(0))
    state.open(digest=DIGEST, size=MiB, now=0)
    with pytest.raises(GaiaError):
        state.schedule(node="x", digest=DIGEST, want=1, now=0, rng=random.Random(0))
    with pytest.raises(GaiaError):
        state.open(digest=DIGEST, size=2 * MiB, now=0)


# ---------------------------------------------------------------- invariants, any interleaving

NODES = ["n0", "n1", "n2", "n3", "n4"]
BLOBS = [DIGEST, "sha256:" + "b" * 64]
op = st.one_of(
    st.tuples(st.just("schedule"), st.sampled_from(NODES), st.integers(1, 16), st.integers(0, 1)),
    st.tuples(st.just("ok"), st.sampled_from(NODES), st.integers(0, 9), st.integers(0, 1)),
    st.tuples(st.just("fail"), st.sampled_from(NODES), st.integers(0, 9), st.integers(0, 1)),
    st.tuples(st.just("tick"), st.just(""), st.integers(1, 40), st.just(0)),
    st.tuples(st.just("forget"), st.sampled_from(NODES), st.just(0), st.just(0)),
    st.tuples(st.just("join"), st.sampled_from(NODES), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("done"), st.sampled_from(NODES), st.integers(0, 1), st.integers(0, 1)),
)


def check_invariants(state: SwarmCluster) -> None:
    uploads: dict[str, int] = {}
    for swarm in state.swarms.values():
        registry = [lease for lease in swarm.leases.values() if lease.parent is None]
        assert len({lease.piece for lease in registry}) == len(registry), "two registry leases"
        for (node, _piece), lease in swarm.leases.items():
            assert lease.parent != node, "a node is its own parent"
            if lease.parent is not None:
                uploads[lease.parent] = uploads.get(lease.parent, 0) + 1
    # upload slots are node-wide: counted across both blobs' swarms
    assert uploads == state.uploads


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(op, max_size=80), seed=st.integers(0, 2**16))
def test_invariants_hold_under_any_interleaving(
    ops: list[tuple[str, str, int, int]], seed: int
) -> None:
    rng = random.Random(seed)
    state = SwarmCluster()
    now = 0.0
    for i, name in enumerate(NODES):
        state.heartbeat(
            name=name, zone=f"z{i % 2}", address=f"{name}:1", upload_slots=1 + i % 3, now=now
        )
    swarms = [state.open(digest=BLOBS[0], size=10 * MiB, now=now),
              state.open(digest=BLOBS[1], size=3 * MiB, now=now)]  # fmt: skip
    for kind, node, n, which in ops:
        swarm, digest = swarms[which], BLOBS[which]
        if kind == "schedule" and node in state.nodes:
            before = {p for p in range(swarm.pieces) if node in swarm.holders[p]}
            registry_busy = set(swarm.registry_inflight)
            held = [bool(h) for h in swarm.holders]
            for g in state.schedule(node=node, digest=digest, want=n, now=now, rng=rng):
                assert g.piece not in before, "assigned a piece it holds"
                assert g.parent != node
                if g.parent is not None:
                    slots = state.nodes[g.parent].upload_slots
                    assert state.uploads[g.parent] <= slots, "a parent over its slots"
                if g.parent is None:
                    assert not held[g.piece] and g.piece not in registry_busy
                    registry_busy.add(g.piece)
        elif kind in ("ok", "fail") and n < swarm.pieces:
            lease = swarm.leases.get((node, n))
            if lease is not None:
                state.report(
                    node=node, digest=digest, piece=n, ok=kind == "ok", sha256="0" * 64,
                    parent=lease.parent, size=MiB, reason="corrupt", now=now, lease=lease.id,
                )  # fmt: skip
        elif kind == "tick":
            now += n
            state.expire(now)
        elif kind == "forget":
            state.forget(node)
        elif kind == "join":
            state.heartbeat(name=node, zone="z0", address="x:1", upload_slots=1 + n, now=now)
        elif kind == "done" and node in state.nodes:
            state.done(node=node, digest=digest, ok=n == 1, evicted=False, now=now)
        check_invariants(state)


def test_a_node_fetches_at_most_two_pieces_of_a_blob_from_the_registry_at_once() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4), ("c", "z1", 4))
    state.open(digest=DIGEST, size=5 * MiB, now=0)
    rng = random.Random(1)
    grants = {n: state.schedule(node=n, digest=DIGEST, want=16, now=0, rng=rng) for n in "abc"}
    # the registry's uplink is shared among downlinks from the start: 2 + 2 + 1 pieces
    assert [len(grants[n]) for n in "abc"] == [2, 2, 1]
    pieces = [g.piece for n in "abc" for g in grants[n]]
    assert sorted(pieces) == [0, 1, 2, 3, 4]
    assert all(g.source == "registry" for n in "abc" for g in grants[n])


def test_the_cluster_fetches_at_most_registry_slots_pieces_from_the_registry_at_once() -> None:
    """Across nodes and blobs: the registry's uplink is shared by every fetch in flight, so more
    of them only make each piece slower (past its lease on a slow registry, then fetched
    twice). The next piece is granted when one of them is reported."""
    nodes = [(f"n{i}", "z1", 4) for i in range(20)]
    state = cluster_with(*nodes)
    digests = [f"sha256:{c * 64}" for c in "bcde"]
    for digest in digests:
        state.open(digest=digest, size=40 * MiB, now=0)
    rng = random.Random(1)
    granted = [
        (name, digest, g)
        for name, _, _ in nodes
        for digest in digests
        for g in state.schedule(node=name, digest=digest, want=16, now=0, rng=rng)
    ]
    assert len(granted) == REGISTRY_SLOTS
    assert all(g.source == "registry" for _, _, g in granted)
    name, digest, grant = granted[0]
    state.report(
        node=name, digest=digest, piece=grant.piece, ok=True, sha256="f" * 64, parent=None,
        size=MiB, reason=None, now=1, lease=grant.lease,
    )  # fmt: skip
    late = [
        g
        for other, _, _ in nodes[1:]
        for g in state.schedule(node=other, digest=digests[-1], want=16, now=1, rng=rng)
        if g.source == "registry"
    ]
    assert len(late) == 1  # the slot the report freed, and no more


@pytest.mark.parametrize(
    ("reason", "keeps"),
    [("corrupt", "the others"), ("missing", "the others"), ("unreachable", "none"),
     ("timeout", "all")],
)  # fmt: skip
def test_a_failed_parent_keeps_only_the_pieces_it_can_still_serve(reason: str, keeps: str) -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=2 * MiB, now=0)
    rng = random.Random(1)
    for grant in state.schedule(node="a", digest=DIGEST, want=16, now=0, rng=rng):
        state.report(
            node="a", digest=DIGEST, piece=grant.piece, ok=True, sha256=f"{grant.piece:064x}",
            parent=None, size=MiB, reason=None, now=1,
        )  # fmt: skip
    failed = state.schedule(node="b", digest=DIGEST, want=1, now=1, rng=rng)[0].piece
    state.report(
        node="b", digest=DIGEST, piece=failed, ok=False, sha256=None, parent="a",
        size=0, reason=reason, now=2,
    )  # fmt: skip
    held = {p for p in range(2) if "a" in state.swarm(DIGEST).holders[p]}
    expected = {"the others": {1 - failed}, "none": set(), "all": {0, 1}}[keeps]
    assert held == expected


# ---------------------------------------------------------------- reports sent twice


def _figures(state: SwarmCluster) -> tuple[int, ...]:
    f = state.swarm(DIGEST).figures
    return (f.pieces_from_registry, f.bytes_from_registry, f.pieces_from_peers,
            f.bytes_from_peers, f.registry_assignments, f.registry_pieces, f.corrupt_reports,
            f.hash_conflicts)  # fmt: skip


def test_a_report_sent_again_for_its_lease_changes_nothing() -> None:
    """An agent sends a ``schedule`` call again when its answer was lost, with the same
    reports: the coordinator took them the first time, and must not count them twice."""
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=2 * MiB, now=0)
    rng = random.Random(1)
    grants = state.schedule(node="a", digest=DIGEST, want=2, now=0, rng=rng)
    assert len({g.lease for g in grants}) == 2  # each assignment its own lease

    def report(node: str, grant: Grant, *, sha: str, ok: bool = True, reason: str | None = None
               ) -> ReportOutcome:  # fmt: skip
        return state.report(
            node=node, digest=DIGEST, piece=grant.piece, ok=ok, sha256=sha, parent=grant.parent,
            size=MiB, reason=reason, now=1, lease=grant.lease,
        )  # fmt: skip

    first = [report("a", g, sha=f"{g.piece:064x}") for g in grants]
    assert not any(o.repeated for o in first)
    once = (_figures(state), dict(state.swarm(DIGEST).hashes))
    again = [report("a", g, sha=f"{g.piece:064x}") for g in grants]
    assert all(o.repeated and o.accepted for o in again)
    # even with another hash: the report of that lease was taken, the first hash stands
    assert report("a", grants[0], sha="e" * 64).repeated
    assert (_figures(state), dict(state.swarm(DIGEST).hashes)) == once
    assert _figures(state)[:2] == (2, 2 * MiB)
    # a failed peer report sent twice: the parent is counted corrupt once
    (peer,) = state.schedule(node="b", digest=DIGEST, want=1, now=1, rng=rng)
    for _ in range(2):
        report("b", peer, sha="", ok=False, reason="corrupt")
    assert state.swarm(DIGEST).figures.corrupt_reports == 1


def test_a_report_counts_though_a_heartbeat_declared_the_piece_first() -> None:
    """Why a report's lease, not "the node already holds it", tells a repeated report: agents
    declare the pieces of their downloads in every heartbeat, which may come between a
    piece's arrival and its report."""
    state = cluster_with(("a", "z1", 4))
    state.open(digest=DIGEST, size=MiB, now=0)
    (grant,) = state.schedule(node="a", digest=DIGEST, want=1, now=0, rng=random.Random(0))
    state.declare_held(node="a", digest=DIGEST, pieces=[0])
    outcome = state.report(
        node="a", digest=DIGEST, piece=0, ok=True, sha256="1" * 64, parent=None, size=MiB,
        reason=None, now=1, lease=grant.lease,
    )  # fmt: skip
    assert not outcome.repeated
    assert state.swarm(DIGEST).hashes == {0: "1" * 64}
    assert _figures(state)[:2] == (1, MiB)


def test_a_late_failure_of_an_old_lease_leaves_the_newer_one() -> None:
    state = cluster_with(("a", "z1", 4), ("b", "z1", 4))
    state.open(digest=DIGEST, size=MiB, now=0)
    rng = random.Random(0)
    (old,) = state.schedule(node="a", digest=DIGEST, want=1, now=0, rng=rng)
    state.expire(now=31)
    (new,) = state.schedule(node="a", digest=DIGEST, want=1, now=31, rng=rng)
    assert new.lease != old.lease
    state.report(
        node="a", digest=DIGEST, piece=0, ok=False, sha256=None, parent=None, size=0,
        reason="registry", now=32, lease=old.lease,
    )  # fmt: skip
    # the newer attempt is still in flight: the registry is not handed the piece again
    assert state.swarm(DIGEST).leases[("a", 0)].id == new.lease
    assert state.schedule(node="b", digest=DIGEST, want=1, now=32, rng=rng) == []


def test_reports_without_a_lease_count_every_time() -> None:
    """Agents before lease ids name none: their reports count as before (twice if sent twice)."""
    state = cluster_with(("a", "z1", 4))
    state.open(digest=DIGEST, size=MiB, now=0)
    state.schedule(node="a", digest=DIGEST, want=1, now=0, rng=random.Random(0))
    for _ in range(2):
        state.report(
            node="a", digest=DIGEST, piece=0, ok=True, sha256="1" * 64, parent=None, size=MiB,
            reason=None, now=1,
        )  # fmt: skip
    assert _figures(state)[:2] == (2, 2 * MiB)
