"""A cluster's key material: the bytes every credential of the cluster is derived from.

The agents, nodes and CNI plugins in the field hold tokens derived from these bytes, so they
are pinned here literally: a change breaks every credential already handed out."""

from __future__ import annotations

from gaia.controllers.swarm import ClusterKey
from gaia.domain.clusters import cluster_key_material


def test_a_cluster_registered_before_the_salt_keeps_its_material() -> None:
    assert cluster_key_material(id=7, name="bj-1", salt="") == "7\x00bj-1"


def test_a_salted_cluster_adds_its_salt_after_id_and_name() -> None:
    assert cluster_key_material(id=7, name="bj-1", salt="ab12") == "7\x00bj-1\x00ab12"


def test_the_coordinators_cluster_key_carries_the_same_material() -> None:
    assert ClusterKey(id=7, name="bj-1").material == "7\x00bj-1"
    assert ClusterKey(id=7, name="bj-1", salt="ab12").material == "7\x00bj-1\x00ab12"
