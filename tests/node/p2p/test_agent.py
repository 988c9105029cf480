"""``gaia p2p-agent`` with real parts: Debian's docker-registry, the coordinator in a real Gaia
API (uvicorn), agents as processes, skopeo and containerd's ``ctr`` pulling through them.

What each test shows is in its name; the figures come from the agents' own ``/metrics`` and the
coordinator's API, the bytes are checked against the registry's."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gaia.controllers.swarm import ClusterKey
from gaia.platform import Platform
from gaia.store.clusters import cluster_named
from tests.support.images import OCI_MANIFEST
from tests.support.p2p import (
    AgentProcess,
    Containerd,
    Registry,
    Served,
    need,
    random_image,
    served_coordinator,
)
from tests.support.registry_token import TokenService


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: what is tested here is the agent, not the platform's database."""
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


REPO = "p2p/app"
LAYER_BYTES = int(2.5 * (1 << 20))  # three pieces of 1 MiB each (the last one short)
BY_SOURCE = 'gaia_p2p_agent_bytes_total{source="%s"}'


@dataclass
class Image:
    manifest: bytes
    digest: str
    blobs: dict[str, int]  # digest -> size (config and layers)

    @property
    def size(self) -> int:
        return sum(self.blobs.values())


def _push(registry: Registry, tag: str, seed: int) -> Image:
    image = random_image(3, LAYER_BYTES, seed=seed)
    registry.push(image, REPO, tag)
    manifest = image.manifest()
    blobs = {layer.blob.digest: len(layer.blob.data) for layer in image.layers}
    blobs[image.config().digest] = len(image.config().data)
    return Image(manifest.data, manifest.digest, blobs)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def image(registry: Registry) -> Image:
    return _push(registry, "v1", seed=1)


Gaia = Served


@pytest.fixture
def gaia(platform: Platform) -> Iterator[Served]:
    with served_coordinator(platform) as served:
        yield served


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def _agent(
    agents: list[AgentProcess],
    tmp_path: Path,
    registry: Registry,
    node: str,
    gaia: Gaia | None = None,
    *,
    coordinator: str | None = None,
    credentials: tuple[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> AgentProcess:
    spec: dict[str, object] = {"url": registry.url, "default": True}
    if credentials:
        spec["username"], spec["password"] = credentials
    agent = AgentProcess(
        node=node,
        work=tmp_path / node,
        registries={registry.host: spec},
        coordinator=coordinator if coordinator is not None else (gaia.origin if gaia else ""),
        cluster="sim-1",
        token=gaia.token if gaia else "",
        extra=extra,
    )
    agents.append(agent)
    return agent.start()


def _pull(mirror: str, registry: Registry, image: Image, tag: str = "v1") -> None:
    """What a client does: the manifest by tag, then every blob, each checked by digest."""
    with httpx.Client(base_url=f"http://{mirror}", timeout=60) as c:
        ns = {"ns": registry.host}
        r = c.get(f"/v2/{REPO}/manifests/{tag}", params=ns, headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        assert r.headers["Docker-Content-Digest"] == image.digest
        assert r.content == image.manifest
        for digest in image.blobs:
            r = c.get(f"/v2/{REPO}/blobs/{digest}", params=ns)
            assert r.status_code == 200, r.text
            assert f"sha256:{hashlib.sha256(r.content).hexdigest()}" == digest


def _wait_registered(agents: list[AgentProcess], gaia: Gaia) -> None:
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=gaia.origin, headers=gaia.admin, timeout=30) as c:
        while time.monotonic() < deadline:
            items = c.get("/api/v1/clusters/sim-1/p2p/nodes").json()["items"]
            if {i["name"] for i in items} >= {a.node for a in agents}:
                return
            time.sleep(0.1)
    raise AssertionError("the agents did not register with the coordinator")


def test_three_agents_pulling_at_once_read_each_piece_from_the_registry_once(
    registry: Registry, image: Image, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    nodes = [_agent(agents, tmp_path, registry, f"n{i}", gaia) for i in range(3)]
    _wait_registered(nodes, gaia)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(_pull, n.mirror, registry, image) for n in nodes]:
            done.result()
    figures = [n.metrics() for n in nodes]
    from_registry = sum(f[BY_SOURCE % "registry"] for f in figures)
    from_peers = sum(f[BY_SOURCE % "peer"] for f in figures)
    # every byte of the image left the registry exactly once; the other two copies came from
    # peers (the manifest went to the registry by tag, as tags move, and is not counted here)
    assert from_registry == image.size
    assert from_peers == 2 * image.size
    assert sum(f["gaia_p2p_agent_uploaded_bytes_total"] for f in figures) == from_peers
    # the coordinator's view, as the console shows it
    with httpx.Client(base_url=gaia.origin, headers=gaia.admin, timeout=30) as c:
        items = c.get("/api/v1/clusters/sim-1/p2p/images").json()["items"]
    (row,) = [i for i in items if i["repository"] == REPO and i["digest"] == image.digest]
    assert row["bytes_from_registry"] == image.size
    assert row["bytes_from_peers"] == 2 * image.size
    assert row["nodes_complete"] == 3


def test_the_mirror_answers_as_the_registry_does(
    registry: Registry, image: Image, agents: list[AgentProcess], tmp_path: Path
) -> None:
    # no coordinator at all: a caching mirror straight from the registry
    agent = _agent(agents, tmp_path, registry, "solo")
    layer = next(d for d, size in image.blobs.items() if size > 1 << 20)
    size = image.blobs[layer]
    with (
        httpx.Client(base_url=f"http://{agent.mirror}", timeout=30) as mirror,
        httpx.Client(base_url=registry.url, timeout=30) as direct,
    ):
        path = f"/v2/{REPO}/blobs/{layer}"
        for attempt in range(2):  # the first from the registry, the second from the cache
            head = mirror.head(path)
            assert head.status_code == 200, (attempt, head.text)
            assert head.headers["Docker-Content-Digest"] == layer
            assert int(head.headers["Content-Length"]) == size
            for spec, start, end in (
                ("bytes=10-99", 10, 100),
                ("bytes=-5", size - 5, size),
                (f"bytes={size - 3}-", size - 3, size),
                (f"bytes=0-{size + 100}", 0, size),
            ):
                got = mirror.get(path, headers={"Range": spec})
                want = direct.get(path, headers={"Range": spec})
                assert got.status_code == want.status_code == 206, spec
                assert got.content == want.content, spec
                assert got.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
            bad = mirror.get(path, headers={"Range": f"bytes={size}-"})
            assert bad.status_code == 416
            assert bad.headers["Content-Range"] == f"bytes */{size}"
            assert mirror.get(path).content == direct.get(path).content
        for reference in ("v1", image.digest):
            ours = mirror.head(
                f"/v2/{REPO}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
            )
            theirs = direct.head(
                f"/v2/{REPO}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
            )
            assert ours.status_code == theirs.status_code == 200
            for header in ("Docker-Content-Digest", "Content-Type", "Content-Length"):
                assert ours.headers[header] == theirs.headers[header], (reference, header)
        missing = mirror.get(f"/v2/{REPO}/blobs/sha256:{'0' * 64}")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert mirror.get("/v2/UPPER/blobs/sha256:x").status_code == 404


def test_with_the_coordinator_unreachable_the_agent_pulls_from_the_registry(
    registry: Registry, image: Image, agents: list[AgentProcess], tmp_path: Path
) -> None:
    from tests.support.kube import free_port

    agent = _agent(
        agents, tmp_path, registry, "alone", coordinator=f"http://127.0.0.1:{free_port()}"
    )
    _pull(agent.mirror, registry, image)
    figures = agent.metrics()
    assert figures[BY_SOURCE % "registry"] == image.size
    assert figures["gaia_p2p_agent_coordinator_fallbacks_total"] >= len(image.blobs)


def test_with_the_registry_unreachable_the_mirror_answers_502(
    agents: list[AgentProcess], tmp_path: Path
) -> None:
    """A registry that refuses the connection is a 502 the runtime falls back on (containerd
    tries its next host), not an unhandled error (it was a 500 and a stack trace, seen at N = 32
    in bench/p2p.py when the test bed's neighbour table overflowed)."""
    from tests.support.kube import free_port

    closed = f"127.0.0.1:{free_port()}"
    agent = AgentProcess(
        node="cut-off",
        work=tmp_path / "cut-off",
        registries={closed: {"url": f"http://{closed}", "default": True}},
        coordinator=f"http://127.0.0.1:{free_port()}",
        cluster="sim-1",
        token="",
    )
    agents.append(agent)
    agent.start()
    with httpx.Client(base_url=f"http://{agent.mirror}", timeout=30) as c:
        for path in (f"/v2/{REPO}/blobs/sha256:{'1' * 64}", f"/v2/{REPO}/manifests/v1"):
            r = c.get(path, params={"ns": closed})
            assert r.status_code == 502, (path, r.status_code, r.text)
            assert r.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_a_peer_without_the_coordinators_ticket_is_refused(
    registry: Registry, image: Image, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = _agent(agents, tmp_path, registry, "holder", gaia)
    _wait_registered([agent], gaia)
    _pull(agent.mirror, registry, image)
    layer = next(iter(image.blobs))
    url = f"http://{agent.peer}/p2p/v1/blobs/{layer}/pieces/0"
    assert httpx.get(url).status_code == 403
    forged = f"thief.{layer}.{int(time.time()) + 60}.{'0' * 64}"
    assert httpx.get(url, headers={"X-Gaia-Ticket": forged}).status_code == 403
    assert agent.metrics()["gaia_p2p_agent_tickets_refused_total"] == 2


def test_a_node_can_mint_tickets_for_its_own_peer_server_only(
    registry: Registry,
    image: Image,
    gaia: Gaia,
    agents: list[AgentProcess],
    tmp_path: Path,
    platform: Platform,
) -> None:
    """A node's root has its own ticket key (its registration answer): a ticket it MACs with it
    is refused by every other node's peer server. A ticket the coordinator gave it opens the
    one parent it was made for, for the one piece of the one blob it names (the agents say
    their peer servers check pieces, ``tickets: 2``, so a whole-blob ticket is refused too)."""
    holders = [_agent(agents, tmp_path, registry, name, gaia) for name in ("holder", "other")]
    _wait_registered(holders, gaia)
    for agent in holders:
        _pull(agent.mirror, registry, image)
    layer, second = list(image.blobs)[:2]
    expires = int(time.time()) + 60

    def mint(key: bytes, digest: str) -> str:
        body = f"thief.{digest}.{expires}"
        return f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"

    def piece(agent: AgentProcess, digest: str, ticket: str, index: int = 0) -> int:
        url = f"http://{agent.peer}/p2p/v1/blobs/{digest}/pieces/{index}"
        return httpx.get(url, headers={"X-Gaia-Ticket": ticket}, timeout=30).status_code

    p2p = f"{gaia.origin}/api/v1/clusters/sim-1/p2p"
    with httpx.Client(timeout=30) as c:
        r = c.get(f"{p2p}/agent-token", params={"node": "thief"}, headers=gaia.admin)
        thief = {"Authorization": f"Bearer {r.json()['token']}"}
        body = {"node": "thief", "zone": "z", "address": "127.0.0.1:9", "upload_slots": 1}
        own_key = bytes.fromhex(
            c.post(f"{p2p}/agents", json=body, headers=thief).json()["ticket_key"]
        )
        for agent in holders:
            assert piece(agent, layer, mint(own_key, layer)) == 403, agent.node
        # the coordinator's ticket: for its parent and its blob only
        task = {"node": "thief", "registry": registry.host, "repository": REPO, "digest": layer,
                "size": image.blobs[layer]}  # fmt: skip
        assert c.post(f"{p2p}/tasks", json=task, headers=thief).status_code == 200
        r = c.post(f"{p2p}/tasks/{layer}/schedule", headers=thief,
                   json={"node": "thief", "wire": 2, "want": 1})  # fmt: skip
        (given,) = r.json()["assignments"]
    parent = next(a for a in holders if a.node == given["parent"])
    elsewhere = next(a for a in holders if a is not parent)
    mine, other = given["piece"], (given["piece"] + 1) % 3  # the layer has three pieces
    assert piece(parent, layer, given["ticket"], mine) == 200
    assert piece(parent, layer, given["ticket"], other) == 403  # its piece only
    assert piece(elsewhere, layer, given["ticket"], mine) == 403
    assert piece(parent, second, given["ticket"], mine) == 403
    # a whole-blob ticket under the parent's own key (what Gaia minted before piece tickets):
    # refused, since the parent's coordinator mints piece tickets for it
    with platform.db.read_session() as session:
        row = cluster_named(session, "sim-1")
        key = ClusterKey(id=row.id, name=row.name, salt=row.key_salt)
    whole = platform.p2p.ticket(key, parent=parent.node, node="thief", digest=layer,
                                expires=expires)  # fmt: skip
    assert piece(parent, layer, whole, mine) == 403
    assert parent.metrics()["gaia_p2p_agent_tickets_refused_total"] == 4
    assert elsewhere.metrics()["gaia_p2p_agent_tickets_refused_total"] == 2


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_a_private_repository_is_served_only_with_the_agents_own_credentials(
    auth: str, tmp_path: Path, gaia: Gaia, agents: list[AgentProcess]
) -> None:
    users = {"puller": "s3cret"}
    tokens = TokenService(tmp_path / "tokens", users=users).start() if auth == "token" else None
    private = Registry(tmp_path / "private", users=users, token=tokens).start()
    try:
        secret = _push(private, "v1", seed=7)
        allowed = _agent(
            agents, tmp_path, private, "allowed", gaia, credentials=("puller", "s3cret")
        )
        stranger = _agent(agents, tmp_path, private, "stranger", gaia)
        wrong = _agent(agents, tmp_path, private, "wrong", gaia, credentials=("puller", "nope"))
        _wait_registered([allowed, stranger, wrong], gaia)
        _pull(allowed.mirror, private, secret)
        # the blobs are in the swarm now; the others may still not have them
        for agent in (stranger, wrong):
            for digest in secret.blobs:
                r = httpx.get(
                    f"http://{agent.mirror}/v2/{REPO}/blobs/{digest}",
                    params={"ns": private.host},
                )
                assert r.status_code == 401, r.text
                scheme = "Bearer" if tokens else "Basic"
                assert r.headers["WWW-Authenticate"].startswith(f"{scheme} realm="), r.headers
            r = httpx.get(
                f"http://{agent.mirror}/v2/{REPO}/manifests/{secret.digest}",
                params={"ns": private.host},
            )
            assert r.status_code == 401, r.text
            assert agent.metrics()[BY_SOURCE % "peer"] == 0
    finally:
        private.stop()
        if tokens is not None:
            tokens.stop()


def test_a_corrupt_parent_is_caught_and_the_piece_comes_from_elsewhere(
    registry: Registry, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    image = _push(registry, "corrupt", seed=3)
    first = _agent(agents, tmp_path, registry, "first", gaia)
    _wait_registered([first], gaia)
    _pull(first.mirror, registry, image, tag="corrupt")
    # flip one byte of one cached layer on the first node: it now serves a corrupt piece
    layer = next(d for d, size in image.blobs.items() if size > 1 << 20)
    cached = first.work / "cache" / "blobs" / layer.removeprefix("sha256:")
    data = bytearray(cached.read_bytes())
    data[5] ^= 0xFF
    cached.write_bytes(bytes(data))
    second = _agent(agents, tmp_path, registry, "second", gaia)
    _wait_registered([second], gaia)
    _pull(second.mirror, registry, image, tag="corrupt")  # still byte-exact
    figures = second.metrics()
    assert figures["gaia_p2p_agent_pieces_corrupt_total"] == 1
    # the bad piece came again from the registry (the only other copy), the rest from the peer
    assert figures[BY_SOURCE % "registry"] == 1 << 20
    assert figures[BY_SOURCE % "peer"] == image.size - (1 << 20)


def test_a_parent_killed_mid_transfer_is_replaced(
    registry: Registry, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    image = _push(registry, "killed", seed=5)
    # the parent uploads slowly, so the child is mid-piece when the parent dies
    slow = _agent(agents, tmp_path, registry, "slow", gaia, extra=("--upload-rate", "262144"))
    _wait_registered([slow], gaia)
    _pull(slow.mirror, registry, image, tag="killed")
    child = _agent(agents, tmp_path, registry, "child", gaia)
    _wait_registered([child], gaia)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pulling = pool.submit(_pull, child.mirror, registry, image, "killed")
        time.sleep(1.5)
        slow.kill()
        pulling.result(timeout=90)  # byte-exact, through the registry for what was missing
    figures = child.metrics()
    assert figures["gaia_p2p_agent_pieces_failed_total"] >= 1
    assert figures[BY_SOURCE % "peer"] + figures[BY_SOURCE % "registry"] == image.size


def test_skopeo_copies_an_image_through_the_agent(
    registry: Registry, image: Image, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = _agent(agents, tmp_path, registry, "skopeo")
    out = tmp_path / "copied"
    result = subprocess.run(
        [
            need("skopeo"),
            "copy",
            "--src-tls-verify=false",
            f"docker://{agent.mirror}/{REPO}:v1",
            f"dir:{out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_bytes()) == json.loads(image.manifest)
    for digest in image.blobs:
        copied = (out / digest.removeprefix("sha256:")).read_bytes()
        assert f"sha256:{hashlib.sha256(copied).hexdigest()}" == digest
    assert agent.metrics()["gaia_p2p_agent_blobs_completed_total"] == len(image.blobs)


def test_containerd_pulls_through_the_agent_and_past_it_when_it_is_dead(
    registry: Registry, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    first = _push(registry, "ctr-1", seed=11)
    second = _push(registry, "ctr-2", seed=12)
    agent = _agent(agents, tmp_path, registry, "ctr", gaia)
    containerd = Containerd(tmp_path / "containerd").start()
    try:
        hosts = containerd.hosts(agent.work / "registries.json", agent.mirror)
        assert tomllib.loads((hosts / registry.host / "hosts.toml").read_text()) == {
            "server": registry.url,
            "host": {f"http://{agent.mirror}": {"capabilities": ["pull", "resolve"]}},
        }
        pulled = containerd.pull(f"{registry.host}/{REPO}:ctr-1", hosts)
        assert pulled.returncode == 0, pulled.stderr
        figures = agent.metrics()
        assert figures["gaia_p2p_agent_blobs_completed_total"] == len(first.blobs)
        # the agent dies: containerd tries it, fails, and takes the next host, the registry
        agent.kill()
        pulled = containerd.pull(f"{registry.host}/{REPO}:ctr-2", hosts)
        assert pulled.returncode == 0, pulled.stderr
        listed = subprocess.run(
            [
                need("ctr"),
                "--address",
                str(containerd.socket),
                "--namespace",
                "p2p-test",
                "images",
                "list",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert f"{registry.host}/{REPO}:ctr-2" in listed
        assert second.digest  # pulled past the dead mirror
    finally:
        containerd.stop()


def test_a_prewarm_fills_the_nodes_cache_before_any_pull(
    registry: Registry, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    image = _push(registry, "warm", seed=9)
    with httpx.Client(base_url=gaia.origin, headers=gaia.admin, timeout=30) as c:
        r = c.post(
            "/api/v1/clusters/sim-1/p2p/prewarms",
            json={"image": f"{registry.host}/{REPO}:warm", "nodes": ["warm"]},
        )
        assert r.status_code in (200, 201), r.text
        pid = r.json()["id"]
        agent = _agent(agents, tmp_path, registry, "warm", gaia)  # told at its registration
        deadline = time.monotonic() + 60
        while True:
            (progress,) = c.get(f"/api/v1/clusters/sim-1/p2p/prewarms/{pid}").json()["nodes"]
            if progress["state"] == "done":
                break
            assert time.monotonic() < deadline, (progress, agent.log()[-2000:])
            time.sleep(0.2)
    assert progress["blobs_done"] == progress["blobs_total"] == len(image.blobs)
    for digest in image.blobs:
        assert (agent.work / "cache" / "blobs" / digest.removeprefix("sha256:")).exists()
    # nothing pulled it: the agent fetched it by itself, from the registry (no other holder)
    assert agent.metrics()[BY_SOURCE % "registry"] == image.size


def _platform_figures(gaia: Gaia) -> dict[str, float]:
    text = httpx.get(f"{gaia.origin}/metrics", headers=gaia.admin, timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gaia_p2p_") and 'cluster="sim-1"' in line:
            name, value = line.rsplit(" ", 1)
            out[name.replace('cluster="sim-1",', "").replace('{cluster="sim-1"}', "")] = float(
                value
            )
    return out


def _journal_pieces(journal: Path) -> list[int]:
    """The pieces a partial blob's journal lists (its lines after the header)."""
    lines = journal.read_text().splitlines()[1:]
    return sorted(json.loads(line)[0] for line in lines if line.endswith("]"))


def test_a_restarted_agent_resumes_its_pieces_and_declares_them_before_it_asks_for_more(
    registry: Registry, gaia: Gaia, agents: list[AgentProcess], tmp_path: Path
) -> None:
    image = random_image(1, 6 << 20, seed=41)
    registry.push(image, REPO, "resume")
    layer = image.layers[0].blob
    pieces = -(-len(layer.data) // (1 << 20))  # 1 MiB each (seven: tar and gzip add a little)
    # the first run has no coordinator (it is down, or the agent started before it): the
    # pieces it writes are known to no one but its own disk; it fetches slowly, and dies
    agent = _agent(agents, tmp_path, registry, "resumer", extra=("--download-rate", "1048576"))
    listed = agent.work / "cache" / "partial" / f"{layer.digest.removeprefix('sha256:')}.jsonl"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pulling = pool.submit(
            lambda: httpx.get(
                f"http://{agent.mirror}/v2/{REPO}/blobs/{layer.digest}",
                params={"ns": registry.host},
                timeout=60,
            )
        )
        deadline = time.monotonic() + 30
        while not listed.exists() or len(_journal_pieces(listed)) < 2:
            assert time.monotonic() < deadline, agent.log()[-2000:]
            time.sleep(0.05)
        agent.kill()
        with pytest.raises(httpx.HTTPError):
            pulling.result(timeout=30)
    resumed = _journal_pieces(listed)
    assert 2 <= len(resumed) < pieces
    # started again on the same cache, now with the coordinator
    agent.coordinator, agent.cluster, agent.token, agent.extra = (
        gaia.origin,
        "sim-1",
        gaia.token,
        (),
    )
    agent.start()
    _wait_registered([agent], gaia)
    r = httpx.get(
        f"http://{agent.mirror}/v2/{REPO}/blobs/{layer.digest}",
        params={"ns": registry.host},
        timeout=60,
    )
    assert r.status_code == 200 and r.content == layer.data
    figures = agent.metrics()
    assert figures[BY_SOURCE % "registry"] == len(layer.data) - len(resumed) * (1 << 20)
    # the coordinator heard of the resumed pieces before it assigned any: it sent only the
    # others to the registry, each once (a lease for a piece the node holds would be a refetch)
    platform = _platform_figures(gaia)
    assert platform['gaia_p2p_pieces_total{source="registry"}'] == pieces - len(resumed)
    assert platform["gaia_p2p_registry_assignments_total"] == pieces - len(resumed)
    assert platform["gaia_p2p_registry_refetches_total"] == 0


def test_the_cache_stays_under_its_cap_least_recently_used_out_first(
    registry: Registry, image: Image, agents: list[AgentProcess], tmp_path: Path
) -> None:
    cap = 6 << 20  # the image's three layers of 2.5 MiB do not fit
    agent = _agent(agents, tmp_path, registry, "capped", extra=("--cache-max-bytes", str(cap)))
    _pull(agent.mirror, registry, image)  # every blob whole, though they do not all fit
    figures = agent.metrics()
    assert figures["gaia_p2p_agent_cache_bytes"] <= cap
    assert figures["gaia_p2p_agent_cache_evicted_total"] >= 1
    kept = list((agent.work / "cache" / "blobs").iterdir())
    assert sum(p.stat().st_size for p in kept) <= cap
    # the last blob read (the config) is the newest: it stays; a second pull fetches again
    # what went
    last = list(image.blobs)[-1]
    assert (agent.work / "cache" / "blobs" / last.removeprefix("sha256:")).exists()
    _pull(agent.mirror, registry, image)
    again = agent.metrics()
    assert again[BY_SOURCE % "registry"] > figures[BY_SOURCE % "registry"]
    assert again["gaia_p2p_agent_cache_bytes"] <= cap
