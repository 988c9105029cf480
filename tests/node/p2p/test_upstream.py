"""The agent's registry access (gaia.node.p2p.upstream) against Debian's docker-registry behind
the distribution token flow (``tests/support/registry_token``) and behind htpasswd, with every
request the agent sends counted on its way out.

- One token per repository scope, and one refused request per repository: the Authorization
  that worked is sent first on the next requests (else each piece costs two round trips).
- Without credentials, or with wrong ones, the registry's own 401 and challenge come back (the
  mirror passes them on, and containerd then tries the next host itself).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from gaia.node.p2p.upstream import Registry as UpstreamRegistry
from gaia.node.p2p.upstream import Upstream, UpstreamError
from tests.support.p2p import Registry, random_image
from tests.support.registry_token import TokenService

MiB = 1 << 20
REPO = "p2p/private"


class CountingTransport(httpx.AsyncBaseTransport):
    """A real transport that counts what goes out: (method, host, status)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: Counter[tuple[str, str, int]] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen[(request.method, request.url.netloc.decode(), response.status_code)] += 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def refused(self) -> int:
        return sum(n for (_, _, status), n in self.seen.items() if status == 401)


@dataclass
class Private:
    registry: Registry
    tokens: TokenService | None
    layer: str
    data: bytes


def _pushed(registry: Registry, tokens: TokenService | None) -> Private:
    image = random_image(1, int(2.5 * MiB), seed=31)
    registry.push(image, REPO, "v1")
    blob = image.layers[0].blob
    return Private(registry, tokens, blob.digest, blob.data)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    work = tmp_path_factory.mktemp("token-registry")
    tokens = TokenService(work / "tokens", users={"puller": "s3cret"}).start()
    registry = Registry(work / "registry", token=tokens).start()
    yield _pushed(registry, tokens)
    registry.stop()
    tokens.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    registry = Registry(tmp_path_factory.mktemp("basic"), users={"puller": "s3cret"}).start()
    yield _pushed(registry, None)
    registry.stop()


def _upstream(
    private: Private, credentials: tuple[str, str] | None
) -> tuple[Upstream, UpstreamRegistry]:
    user, password = credentials or ("", "")
    reg = private.registry
    target = UpstreamRegistry(reg.host, reg.url, username=user, password=password)
    return Upstream({reg.host: target}, transport=CountingTransport()), target


async def _read_whole(upstream: Upstream, target: UpstreamRegistry, private: Private) -> bytes:
    size = await upstream.check_access(target, REPO, private.layer)
    pieces = [(start, min(start + MiB, size)) for start in range(0, size, MiB)]
    parts = await asyncio.gather(
        *(upstream.blob_range(target, REPO, private.layer, s, e) for s, e in pieces)
    )
    return b"".join(parts)


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_one_refusal_and_one_token_per_repository_then_the_credentials_go_first(
    kind: str, token_registry: Private, basic_registry: Private
) -> None:
    private = token_registry if kind == "token" else basic_registry

    async def scenario() -> None:
        upstream, target = _upstream(private, ("puller", "s3cret"))
        counted = upstream._client._transport
        assert isinstance(counted, CountingTransport)
        try:
            issued = private.tokens.issued if private.tokens else 0
            # the first request alone meets the 401; the pieces after it carry the credentials
            await upstream.blob_size(target, REPO, private.layer)
            assert await _read_whole(upstream, target, private) == private.data
            await upstream.check_manifest_access(target, REPO, "v1")
            assert counted.refused() == 1, counted.seen
            if private.tokens is not None:
                assert private.tokens.issued - issued == 1
        finally:
            await upstream.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["token", "basic"])
@pytest.mark.parametrize("credentials", [None, ("puller", "wrong")])
def test_the_registrys_own_refusal_and_challenge_come_back(
    kind: str,
    credentials: tuple[str, str] | None,
    token_registry: Private,
    basic_registry: Private,
) -> None:
    private = token_registry if kind == "token" else basic_registry

    async def scenario() -> None:
        upstream, target = _upstream(private, credentials)
        try:
            with pytest.raises(UpstreamError) as refused:
                await upstream.check_access(target, REPO, private.layer)
            assert refused.value.status == 401
            challenge = refused.value.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer realm=" if kind == "token" else "Basic realm=")
            with pytest.raises(UpstreamError):
                await upstream.blob_range(target, REPO, private.layer, 0, 10)
        finally:
            await upstream.close()

    asyncio.run(scenario())


def test_the_platform_registry_account_is_merged_into_the_registries() -> None:
    """What the coordinator hands over at registration (``use_platform_registry``): a registry
    the file does not name is added; one it names keeps the file's URL and default flag and takes
    the node's account; a change of account drops what was cached for that registry only."""
    file = {
        "gaia.example:5000": UpstreamRegistry(
            "gaia.example:5000", "https://proxy.example", default=True
        ),
        "other.example": UpstreamRegistry("other.example", "https://other.example", "u", "p"),
    }
    upstream = Upstream(file)
    upstream._tokens[("gaia.example:5000", "repository:shop/web:pull")] = ("t", 1e12)
    upstream._tokens[("other.example", "repository:x/y:pull")] = ("t2", 1e12)
    upstream.use_platform_registry("gaia.example:5000", "http://10.0.0.1:5000", "node+c+n1", "pw")
    kept = upstream.registries["gaia.example:5000"]
    assert (kept.url, kept.username, kept.password, kept.default) == (
        "https://proxy.example", "node+c+n1", "pw", True,
    )  # fmt: skip
    assert list(upstream._tokens) == [("other.example", "repository:x/y:pull")]
    upstream.use_platform_registry("new.example:5000", "http://new.example:5000", "node+c+n1", "pw")
    added = upstream.registries["new.example:5000"]
    assert (added.url, added.default) == ("http://new.example:5000", False)
    assert "pw" not in repr(added)
    asyncio.run(upstream.close())
