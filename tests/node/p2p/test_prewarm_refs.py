"""How the agent reads a prewarm's image reference and picks its platform from an index."""

from __future__ import annotations

import json
import platform

import pytest

from gaia.node.p2p.agent import parse_image, platform_manifest

INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.mark.parametrize(
    ("image", "parsed"),
    [
        ("reg.example.com/team/web:v2", ("reg.example.com", "team/web", "v2")),
        ("10.0.0.5:5000/web", ("10.0.0.5:5000", "web", "latest")),
        ("reg:5000/a/b@sha256:" + "a" * 64, ("reg:5000", "a/b", "sha256:" + "a" * 64)),
    ],
)
def test_image_references(image: str, parsed: tuple[str, str, str]) -> None:
    assert parse_image(image) == parsed


def test_a_reference_without_a_registry_is_refused() -> None:
    with pytest.raises(ValueError, match="expected <registry>"):
        parse_image("web")


def test_the_index_entry_of_this_machine_is_chosen() -> None:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    body = json.dumps(
        {
            "manifests": [
                {
                    "digest": "sha256:" + "1" * 64,
                    "platform": {"os": "linux", "architecture": "s390x"},
                },
                {"digest": "sha256:" + "2" * 64, "platform": {"os": "linux", "architecture": arch}},
            ]
        }
    ).encode()
    assert platform_manifest(body, INDEX) == "sha256:" + "2" * 64
    assert platform_manifest(b"{}", "application/vnd.oci.image.manifest.v1+json") is None
    with pytest.raises(ValueError, match="no manifest for linux"):
        platform_manifest(json.dumps({"manifests": []}).encode(), INDEX)
