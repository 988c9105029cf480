"""An app's instance list, filtered and counted over the stored map and the cluster's states
(``gaia.domain.instance_lists``), without any instance's whole view."""

from __future__ import annotations

from dataclasses import dataclass

from gaia.domain.instance_lists import InstanceFilter, tally_instances


@dataclass(frozen=True)
class State:
    phase: str
    node: str
    version: str


WANTED = {0: "v1", 1: "v1", 2: "v2", 3: "v2"}
OBSERVED = {
    0: State("Running", "node-a", "v1"),
    2: State("Pulling", "node-b", "v1"),  # bound for v2, still running v1
    7: State("Terminating", "node-a", "v1"),  # no longer wanted, being removed
}


def tally(**chosen: str) -> list[int]:
    return tally_instances(
        app="web", wanted=WANTED, stopped={3}, observed=OBSERVED, chosen=InstanceFilter(**chosen)
    ).ids


def test_every_instance_is_counted_by_the_status_the_api_shows() -> None:
    whole = tally_instances(
        app="web", wanted=WANTED, stopped={3}, observed=OBSERVED, chosen=InstanceFilter()
    )
    assert whole.ids == [0, 1, 2, 3, 7]
    assert whole.total == 5
    assert whole.by_status == {
        "Pending": 1,
        "Pulling": 1,
        "Running": 1,
        "Stopped": 1,
        "Terminating": 1,
    }
    assert whole.by_version == {"v1": 3}


def test_filters_match_status_version_part_of_node_and_part_of_name() -> None:
    assert tally(status="Pending") == [1]
    assert tally(version="v1") == [0, 1, 2, 7]  # running v1, or bound for it and not running
    assert tally(version="v2") == [3]
    assert tally(node="NODE-A") == [0, 7]  # an instance on no node matches no node
    assert tally(name="b-1") == [1]
    assert tally(status="Running", node="b") == []
