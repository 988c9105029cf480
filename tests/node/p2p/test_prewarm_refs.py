"""How the agent reads a prewarm's image reference and picks its platform from an index, and
which prewarm jobs it keeps in mind."""

from __future__ import annotations

import asyncio
import json
import platform
from pathlib import Path

import pytest

from gaia.node.p2p.agent import AgentConfig, P2PAgent, parse_image, platform_manifest
from gaia.node.p2p.wire import Registration

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


def test_the_agent_forgets_a_finished_job_once_it_is_no_longer_named(tmp_path: Path) -> None:
    answers = [[("pw-1", "reg:5000/web:2")], [("pw-1", "reg:5000/web:2")], [], []]
    pulled: list[str] = []

    class Coordinator:
        async def register(self, info: object, held: object) -> Registration:
            return Registration(ticket_key=b"k" * 32, heartbeat_s=10.0, prewarm=answers.pop(0))

    async def scenario() -> None:
        config = AgentConfig(
            node="n1",
            zone="z1",
            listen=("127.0.0.1", 0),
            peer_listen=("127.0.0.1", 0),
            advertise="127.0.0.1:1",
            cache_dir=tmp_path / "cache",
            cache_max_bytes=1 << 20,
        )
        agent = P2PAgent(config, {}, Coordinator())  # type: ignore[arg-type]

        async def prewarm(image: str) -> None:
            pulled.append(image)

        agent.prewarm = prewarm  # type: ignore[method-assign]
        assert await agent.register_once()
        assert await agent.register_once()  # named again while known: not pulled twice
        await asyncio.sleep(0)
        assert pulled == ["reg:5000/web:2"]
        assert await agent.register_once()  # no longer named, and done: forgotten
        assert agent._prewarms == {}
        assert await agent.register_once()

    asyncio.run(scenario())
