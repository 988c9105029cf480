"""The P2P coordinator (gaia.controllers.swarm): long-polls, tickets per parent and keys per
node, open tasks before schedules, the sweep,
retiring and reviving swarms, per-image figures and prewarm progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import random

import pytest

from gaia.clock import ManualClock
from gaia.controllers.swarm import (
    ClusterKey,
    ImageRef,
    PieceOutcome,
    SwarmCoordinator,
    SwarmSweep,
)
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.security import SecretBox
from tests.conftest import TEST_SECRET_KEY

MiB = 1 << 20
KEY = ClusterKey(id=1, name="sim-1")
LAYER = "sha256:" + "1" * 64
CONFIG = "sha256:" + "2" * 64
MANIFEST = "sha256:" + "3" * 64


def coordinator(**kw: object) -> tuple[SwarmCoordinator, ManualClock]:
    clock = ManualClock(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    coord = SwarmCoordinator(
        secrets=SecretBox(TEST_SECRET_KEY),
        clock=clock,
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )
    return coord, clock


def join(coord: SwarmCoordinator, *nodes: str, zone: str = "z1") -> None:
    for n in nodes:
        coord.register(KEY, node=n, zone=zone, address=f"{n}:7000", upload_slots=4)


def ok(
    piece: int, parent: str | None = None, size: int = MiB, lease: int | None = None
) -> PieceOutcome:
    return PieceOutcome(piece, True, f"{piece:064x}", parent, size, None, lease)


def test_keys_are_per_cluster_and_the_same_on_every_replica() -> None:
    a, _ = coordinator()
    b, _ = coordinator()
    assert a.agent_token(KEY) == b.agent_token(KEY)
    assert a.agent_token(KEY) != a.agent_token(ClusterKey(id=2, name="sim-1"))
    assert a.ticket_key(KEY, "n1") == b.ticket_key(KEY, "n1")
    assert a.ticket_key(KEY, "n1") != a.ticket_key(ClusterKey(id=1, name="other"), "n1")
    assert a.is_agent_token(KEY, a.agent_token(KEY))
    assert not a.is_agent_token(KEY, a.agent_token(KEY) + "x")


def test_every_node_gets_its_own_ticket_key_and_no_other() -> None:
    coord, _ = coordinator()
    keys = {
        n: coord.register(KEY, node=n, zone="z1", address=f"{n}:7000", upload_slots=4).ticket_key
        for n in ("a", "b", "c")
    }
    assert len(set(keys.values())) == 3
    assert all(keys[n] == coord.ticket_key(KEY, n) for n in keys)


def test_a_ticket_is_requester_digest_expiry_and_their_hmac_under_the_parents_key() -> None:
    coord, _ = coordinator()
    ticket = coord.ticket(KEY, parent="p1", node="n1.example", digest=LAYER, expires=1900000000)
    body, _, mac = ticket.rpartition(".")
    assert body == f"n1.example.{LAYER}.1900000000"
    assert mac == hmac.new(coord.ticket_key(KEY, "p1"), body.encode(), hashlib.sha256).hexdigest()
    assert mac != hmac.new(coord.ticket_key(KEY, "p2"), body.encode(), hashlib.sha256).hexdigest()


def test_each_peer_assignment_carries_a_ticket_for_its_own_parent() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b", "c")
        coord.open_task(KEY, node="a", digest=LAYER, size=2 * MiB)
        await coord.schedule(KEY, node="a", digest=LAYER, want=2, wait_s=0)
        coord.report(KEY, node="a", digest=LAYER, reports=[ok(0)])
        coord.open_task(KEY, node="b", digest=LAYER, size=2 * MiB)
        await coord.schedule(KEY, node="b", digest=LAYER, want=1, wait_s=0)
        coord.report(KEY, node="b", digest=LAYER, reports=[ok(0, parent="a")])
        coord.report(KEY, node="a", digest=LAYER, reports=[ok(1)])
        coord.open_task(KEY, node="c", digest=LAYER, size=2 * MiB)
        # c's two pieces: one from each parent, since a's or b's slots alone would do as well;
        # whoever is chosen, each ticket verifies under its parent's key and no other's
        answer = await coord.schedule(KEY, node="c", digest=LAYER, want=2, wait_s=0)
        assert answer.grants and all(g.source == "peer" for g in answer.grants)
        for g in answer.grants:
            assert g.parent is not None
            body, _, mac = g.ticket.rpartition(".")
            assert body == f"c.{LAYER}.{answer.ticket_expires}"
            for parent in ("a", "b"):
                key = coord.ticket_key(KEY, parent)
                good = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
                assert (good == mac) is (parent == g.parent)

    asyncio.run(scenario())


def test_a_node_without_an_open_task_is_neither_scheduled_nor_counted() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b")
        coord.open_task(KEY, node="a", digest=LAYER, size=MiB)
        # b never opened a task (its access check never ran): no schedule, no ticket
        with pytest.raises(NotFound, match="no open task"):
            await coord.schedule(KEY, node="b", digest=LAYER, want=1, wait_s=0)
        with pytest.raises(NotFound, match="no open task"):
            coord.report(KEY, node="b", digest=LAYER, reports=[ok(0)])
        with pytest.raises(NotFound, match="no open task"):
            coord.done(KEY, node="b", digest=LAYER, ok=True)
        coord.done(KEY, node="b", digest=LAYER, ok=False, evicted=True)  # drops only
        # done ends the task: a later schedule needs a new one
        await coord.schedule(KEY, node="a", digest=LAYER, want=1, wait_s=0)
        coord.report(KEY, node="a", digest=LAYER, reports=[ok(0)])
        coord.done(KEY, node="a", digest=LAYER, ok=True)
        with pytest.raises(NotFound, match="no open task"):
            await coord.schedule(KEY, node="a", digest=LAYER, want=1, wait_s=0)

    asyncio.run(scenario())


def test_schedule_waits_for_a_piece_and_wakes_when_it_appears() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b")
        coord.open_task(KEY, node="a", digest=LAYER, size=MiB)
        coord.open_task(KEY, node="b", digest=LAYER, size=MiB)
        first = await coord.schedule(KEY, node="a", digest=LAYER, want=4, wait_s=0)
        assert [(g.piece, g.source) for g in first.grants] == [(0, "registry")]
        waiting = asyncio.create_task(coord.schedule(KEY, node="b", digest=LAYER, want=4, wait_s=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nobody holds the piece, the registry fetch is in flight
        coord.report(KEY, node="a", digest=LAYER, reports=[ok(0)])
        answer = await asyncio.wait_for(waiting, 1)
        assert [(g.piece, g.source, g.parent) for g in answer.grants] == [(0, "peer", "a")]
        assert answer.hashes == {0: f"{0:064x}"}
        coord.report(KEY, node="b", digest=LAYER, reports=[ok(0, parent="a")])
        done = await coord.schedule(KEY, node="b", digest=LAYER, want=4, wait_s=5)
        assert done.complete and not done.grants

    asyncio.run(scenario())


def test_a_long_poll_with_nothing_to_give_answers_empty_after_wait_s() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b")
        coord.open_task(KEY, node="a", digest=LAYER, size=MiB)
        coord.open_task(KEY, node="b", digest=LAYER, size=MiB)
        await coord.schedule(KEY, node="a", digest=LAYER, want=1, wait_s=0)
        answer = await coord.schedule(KEY, node="b", digest=LAYER, want=1, wait_s=0.05)
        assert answer.grants == [] and not answer.complete

    asyncio.run(scenario())


def test_the_sweep_expires_leases_and_forgets_silent_nodes() -> None:
    async def scenario() -> None:
        coord, clock = coordinator(heartbeat_s=10, lease_s=30)
        join(coord, "a", "b")
        coord.open_task(KEY, node="a", digest=LAYER, size=MiB)
        coord.open_task(KEY, node="b", digest=LAYER, size=MiB)
        await coord.schedule(KEY, node="a", digest=LAYER, want=1, wait_s=0)
        clock.step(31)
        join(coord, "b")  # b's heartbeat is fresh, a's is not yet lapsed
        await SwarmSweep(coordinator=coord).start(loops=1)
        again = await coord.schedule(KEY, node="b", digest=LAYER, want=1, wait_s=0)
        assert [g.source for g in again.grants] == ["registry"]  # a's lease expired
        clock.step(10)
        coord.sweep()
        assert [n.name for n in coord.nodes(KEY)] == ["b"]  # a missed 3 heartbeats
        (figures,) = coord.figures()
        assert figures.figures.registry_assignments == 2 and figures.registry_fetches_per_piece == 2

    asyncio.run(scenario())


def test_an_idle_swarm_is_retired_and_revived_with_its_complete_holders() -> None:
    async def scenario() -> None:
        coord, clock = coordinator(idle_s=60)
        join(coord, "a", "b")
        coord.open_task(KEY, node="a", digest=LAYER, size=2 * MiB)
        await coord.schedule(KEY, node="a", digest=LAYER, want=2, wait_s=0)
        coord.report(KEY, node="a", digest=LAYER, reports=[ok(0), ok(1)])
        coord.done(KEY, node="a", digest=LAYER, ok=True)
        clock.step(61)
        join(coord, "a", "b")
        coord.sweep()
        assert next(iter(coord.figures())).swarms == 0
        coord.open_task(KEY, node="b", digest=LAYER, size=2 * MiB)
        answer = await coord.schedule(KEY, node="b", digest=LAYER, want=2, wait_s=0)
        assert {g.parent for g in answer.grants} == {"a"}  # not the registry again
        assert answer.hashes == {0: f"{0:064x}", 1: f"{1:064x}"}

    asyncio.run(scenario())


def test_swarms_per_cluster_are_capped() -> None:
    coord, clock = coordinator(max_swarms=2)
    join(coord, "a")
    for i in range(5):
        clock.step(1)
        coord.open_task(KEY, node="a", digest=f"sha256:{i:064x}", size=MiB)
    assert next(iter(coord.figures())).swarms == 2


def test_images_count_nodes_holding_every_blob_and_bytes_by_source() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b")
        image = ImageRef("registry.local", "team/web", "v1")
        for node in ("a", "b"):
            coord.manifest(
                KEY,
                node=node,
                image=image,
                digest=MANIFEST,
                media_type="application/vnd.oci.image.manifest.v1+json",
                blobs=[(CONFIG, 100), (LAYER, MiB)],
            )
        for digest, size in ((CONFIG, 100), (LAYER, MiB)):
            coord.open_task(KEY, node="a", digest=digest, size=size)
            await coord.schedule(KEY, node="a", digest=digest, want=1, wait_s=0)
            coord.report(KEY, node="a", digest=digest, reports=[ok(0, size=size)])
            coord.done(KEY, node="a", digest=digest, ok=True)
        coord.open_task(KEY, node="b", digest=LAYER, size=MiB)
        await coord.schedule(KEY, node="b", digest=LAYER, want=1, wait_s=0)
        coord.report(KEY, node="b", digest=LAYER, reports=[ok(0, parent="a")])
        coord.done(KEY, node="b", digest=LAYER, ok=True)
        (img,) = coord.images(KEY)
        assert (img.nodes_complete, img.bytes_from_registry, img.bytes_from_peers) == (
            1,
            MiB + 100,
            MiB,
        )
        nodes = {n.name: n for n in coord.nodes(KEY)}
        assert (nodes["a"].bytes_up, nodes["b"].bytes_down) == (MiB, MiB)
        assert nodes["a"].pieces_held == 2

    asyncio.run(scenario())


def test_a_prewarm_is_handed_to_its_nodes_until_they_hold_the_image() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b")
        image = ImageRef.parse("registry.local/team/web:v1")
        pid = coord.create_prewarm(KEY, image=image, nodes=["a"])
        jobs = coord.register(KEY, node="a", zone="z1", address="a:7000", upload_slots=4)
        assert jobs.prewarm == [(pid, "registry.local/team/web:v1")]
        assert coord.register(KEY, node="b", zone="z1", address="b:1", upload_slots=4).prewarm == []
        _, (progress,) = coord.prewarm(KEY, pid)
        assert progress.state == "pending"
        coord.manifest(
            KEY,
            node="a",
            image=image,
            digest=MANIFEST,
            media_type="application/vnd.oci.image.manifest.v1+json",
            blobs=[(LAYER, MiB)],
        )
        _, (progress,) = coord.prewarm(KEY, pid)
        assert (progress.state, progress.blobs_done, progress.blobs_total) == ("pulling", 0, 1)
        coord.open_task(KEY, node="a", digest=LAYER, size=MiB)
        coord.done(KEY, node="a", digest=LAYER, ok=True)
        _, (progress,) = coord.prewarm(KEY, pid)
        assert progress.state == "done"
        again = coord.register(KEY, node="a", zone="z1", address="a:7000", upload_slots=4)
        assert again.prewarm == []
        with pytest.raises(NotFound):
            coord.prewarm(KEY, "pw-0000000000000000")

    asyncio.run(scenario())


def test_image_names_parse_as_containerd_names_them() -> None:
    assert str(ImageRef.parse("nginx")) == "docker.io/library/nginx:latest"
    assert str(ImageRef.parse("localhost:5000/a/b:v2")) == "localhost:5000/a/b:v2"
    with pytest.raises(InvalidRequest):
        ImageRef.parse("registry.local/UPPER:v1")


def test_unregistered_nodes_are_told_to_register() -> None:
    coord, _ = coordinator()
    with pytest.raises(NotFound, match="POST agents"):
        coord.open_task(KEY, node="ghost", digest=LAYER, size=MiB)


def test_pieces_declared_before_the_swarm_opens_are_held_when_it_does() -> None:
    async def scenario() -> None:
        coord, _ = coordinator()  # a coordinator that just restarted: no swarms
        coord.register(
            KEY, node="a", zone="z1", address="a:7000", upload_slots=4, held={LAYER: [0, 1]}
        )
        join(coord, "b")
        coord.open_task(KEY, node="b", digest=LAYER, size=2 * MiB)
        answer = await coord.schedule(KEY, node="b", digest=LAYER, want=2, wait_s=0)
        assert [(g.source, g.parent) for g in answer.grants] == [("peer", "a")] * 2

    asyncio.run(scenario())


def test_a_report_list_with_one_bad_entry_changes_nothing() -> None:
    coord, _ = coordinator()
    join(coord, "a")
    coord.open_task(KEY, node="a", digest=LAYER, size=MiB)
    with pytest.raises(InvalidRequest):
        coord.report(KEY, node="a", digest=LAYER, reports=[ok(0), ok(5)])
    with pytest.raises(InvalidRequest, match="sha256"):
        coord.report(
            KEY, node="a", digest=LAYER, reports=[PieceOutcome(0, True, None, None, MiB, None)]
        )
    assert coord.nodes(KEY)[0].pieces_held == 0


def test_a_schedule_sent_again_with_the_same_reports_counts_them_once() -> None:
    """The agent sends a ``schedule`` call again when the answer did not come in time, with
    the same reports (each naming its lease): bytes up and down, the registry's figures and
    the hashes are those of one call (seen at N = 32: 222 registry pieces counted, 196
    fetched)."""

    async def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b")
        coord.open_task(KEY, node="a", digest=LAYER, size=2 * MiB)
        first = await coord.schedule(KEY, node="a", digest=LAYER, want=2, wait_s=0)
        done = [ok(g.piece, lease=g.lease) for g in first.grants]
        await coord.schedule(KEY, node="a", digest=LAYER, want=2, wait_s=0, reports=done)
        coord.open_task(KEY, node="b", digest=LAYER, size=2 * MiB)
        given = await coord.schedule(KEY, node="b", digest=LAYER, want=2, wait_s=0)
        done_b = [ok(g.piece, parent=g.parent, lease=g.lease) for g in given.grants]
        coord.report(KEY, node="b", digest=LAYER, reports=done_b)

        def seen() -> object:
            (cluster,) = coord.figures()
            nodes = [(n.name, n.bytes_up, n.bytes_down, n.pieces_held) for n in coord.nodes(KEY)]
            return cluster.figures, nodes, dict(coord._cluster(KEY).state.swarm(LAYER).hashes)

        once = seen()
        await coord.schedule(KEY, node="a", digest=LAYER, want=2, wait_s=0, reports=done)
        coord.report(KEY, node="b", digest=LAYER, reports=done_b)
        assert seen() == once
        (cluster,) = coord.figures()
        assert (cluster.figures.pieces_from_registry, cluster.figures.bytes_from_peers) == (
            2,
            2 * MiB,
        )

    asyncio.run(scenario())


def test_a_parent_that_checks_pieces_gets_tickets_for_one_piece() -> None:
    """A parent whose agent announced ``tickets: 2`` gets piece-bound tickets
    (``{node}.{digest}.{piece}.{expires}``); one that did not (an older agent, which refuses a
    fifth field) keeps whole-blob tickets. The registration answer says which."""

    async def scenario() -> None:
        coord, _ = coordinator()
        answers = {
            n: coord.register(
                KEY, node=n, zone="z1", address=f"{n}:7000", upload_slots=4, tickets=t
            )
            for n, t in (("new", 2), ("old", 1), ("c", 2))
        }
        assert [answers[n].tickets for n in ("new", "old", "c")] == [2, 1, 2]
        for parent in ("new", "old"):
            coord.register(
                KEY, node=parent, zone="z1", address=f"{parent}:7000", upload_slots=4,
                held={LAYER: [0, 1]}, tickets=2 if parent == "new" else 1,
            )  # fmt: skip
        coord.open_task(KEY, node="c", digest=LAYER, size=2 * MiB)
        answer = await coord.schedule(KEY, node="c", digest=LAYER, want=2, wait_s=0)
        assert {g.parent for g in answer.grants} == {"new", "old"}  # least loaded first
        for g in answer.grants:
            assert g.parent is not None
            body, _, mac = g.ticket.rpartition(".")
            key = coord.ticket_key(KEY, g.parent)
            assert mac == hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
            if g.parent == "new":
                assert body == f"c.{LAYER}.{g.piece}.{answer.ticket_expires}"
            else:
                assert body == f"c.{LAYER}.{answer.ticket_expires}"
        # an agent rolled back: its next heartbeat says nothing of tickets, whole-blob again
        again = coord.register(KEY, node="new", zone="z1", address="new:7000", upload_slots=4)
        assert again.tickets == 1

    asyncio.run(scenario())
