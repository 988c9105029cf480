"""The test bed under ``bench/p2p.py`` (``tests/support/netns.py``) does what the bench's figures
rest on: a host's uplink is shaped on its own end of the veth pair and its downlink on the
bridge's end (a transfer at the shaped rate takes the time that rate allows, ±20 %), ``sent``
counts what a host put on its link, and ``stop`` and the sweep of a crashed run leave no
namespace and no link with the bed's prefix.

Own prefix and subnet (``gp2s``, 10.79/16): the bench (``gp2p``, 10.77/16) and the agents' test
(``gp2t``, 10.78/16) may run on the machine at the same time, and a bed only ever sweeps its own
prefix. Needs root, like the bench and tests/node/p2p; elsewhere the tests skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.netns import Host, NetBed, NetBedUnavailable

PREFIX = "gp2s"
GATEWAY = "10.79.0.1"
SHAPED = 8_000_000  # bit/s: 2 MB take 2 s, long against a connect and short for CI
FAST = 200_000_000
PAYLOAD = 2_000_000
PORT = 9000

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); c.sendall(b"\\x5a" * int(sys.argv[3])); c.close()
"""

CLIENT = """
import json, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
t0, n = time.monotonic(), 0
while chunk := c.recv(1 << 16):
    n += len(chunk)
print(json.dumps({"bytes": n, "seconds": time.monotonic() - t0}))
"""


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [p.split(":")[1].strip().split("@")[0] for p in out.splitlines() if ":" in p]


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _ours(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(f"{PREFIX}-")]


@pytest.fixture
def bed() -> Iterator[NetBed]:
    try:
        bed = NetBed(prefix=PREFIX, gateway=GATEWAY).start()
    except NetBedUnavailable as e:
        pytest.skip(str(e))
    yield bed
    bed.stop()


def _transfer(bed: NetBed, sender: Host, receiver: Host) -> tuple[int, float]:
    """``PAYLOAD`` bytes over TCP from ``sender`` to ``receiver``; (bytes, seconds)."""
    server = bed.run(
        sender,
        [sys.executable, "-c", SERVER, sender.ip, str(PORT), str(PAYLOAD)],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        client = bed.run(
            receiver, [sys.executable, "-c", CLIENT, sender.ip, str(PORT)], stdout=subprocess.PIPE
        )
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0
        result = json.loads(out)
        return int(result["bytes"]), float(result["seconds"])
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("shaped", ["sender's uplink", "receiver's downlink"])
def test_a_transfer_takes_the_time_its_shaped_link_allows(bed: NetBed, shaped: str) -> None:
    if shaped == "sender's uplink":
        sender = bed.add("a", up_bps=SHAPED, down_bps=FAST)
        receiver = bed.add("b", up_bps=FAST, down_bps=FAST)
    else:
        sender = bed.add("a", up_bps=FAST, down_bps=FAST)
        receiver = bed.add("b", up_bps=FAST, down_bps=SHAPED)
    before = bed.sent(sender)
    got, seconds = _transfer(bed, sender, receiver)
    sent = bed.sent(sender) - before
    assert got == PAYLOAD
    expected = PAYLOAD * 8 / SHAPED
    assert 0.8 * expected <= seconds <= 1.2 * expected, (seconds, expected)
    # what the sender put on its link: the payload and the TCP/IP headers, nothing counted twice
    assert PAYLOAD <= sent <= 1.1 * PAYLOAD, sent


@pytest.mark.slow
def test_an_unshaped_direction_is_not_slowed(bed: NetBed) -> None:
    """The shaping is per direction: a host's slow uplink leaves its downlink alone."""
    receiver = bed.add("a", up_bps=SHAPED, down_bps=FAST)
    sender = bed.add("b", up_bps=FAST, down_bps=FAST)
    got, seconds = _transfer(bed, sender, receiver)
    assert got == PAYLOAD
    assert seconds < 0.5 * PAYLOAD * 8 / SHAPED, seconds


def test_stop_leaves_no_namespace_and_no_link(bed: NetBed) -> None:
    bed.add("a", up_bps=SHAPED, down_bps=SHAPED)
    bed.add("b", up_bps=SHAPED, down_bps=SHAPED)
    assert len(_ours(_namespaces())) == 2
    assert len(_ours(_links())) == 3  # the bridge and the bridge's end of each veth pair
    bed.stop()
    assert _ours(_namespaces()) == []
    assert _ours(_links()) == []


def test_a_new_bed_sweeps_what_a_crashed_one_left(bed: NetBed) -> None:
    bed.add("a", up_bps=SHAPED, down_bps=SHAPED)
    # the crash: ``bed`` is never stopped; the next run with the same prefix starts over
    again = NetBed(prefix=PREFIX, gateway=GATEWAY).start()
    try:
        assert _ours(_namespaces()) == []
        assert _ours(_links()) == [f"{PREFIX}-br"]
        host = again.add("a", up_bps=SHAPED, down_bps=SHAPED)
        assert host.ip == "10.79.0.2"
    finally:
        again.stop()
    assert _ours(_namespaces()) == []
    assert _ours(_links()) == []


def test_the_bed_lifts_the_neighbour_table_limit_for_many_hosts(bed: NetBed) -> None:
    """33 hosts that all talk to each other need more neighbour entries than the kernel's
    default hard limit of 1,024 (shared by every namespace): the bed raises it."""
    from tests.support.netns import NEIGH_LIMITS, NEIGH_SYSCTL

    for name, wanted in NEIGH_LIMITS.items():
        assert int((NEIGH_SYSCTL / name).read_text()) >= wanted, name
    # from the kernel's defaults (what a fresh machine has), a bed's start raises them again
    defaults = {"gc_thresh1": "128", "gc_thresh2": "512", "gc_thresh3": "1024"}
    for name, value in defaults.items():
        (NEIGH_SYSCTL / name).write_text(value)
    again = NetBed(prefix=f"{PREFIX}n", gateway="10.86.0.1").start()  # a /16 no other bed uses
    try:
        for name, wanted in NEIGH_LIMITS.items():
            assert int((NEIGH_SYSCTL / name).read_text()) >= wanted, name
    finally:
        again.stop()
