"""Which lines of the registry's log are failed pulls (gaia.delivery.registry.failed_pull).
The lines are as Debian's docker-registry 2.8 writes them (logrus text, fields sorted)."""

from __future__ import annotations

import pytest

from gaia.delivery.registry import failed_pull

HEAD = 'time="2026-12-05T09:28:57Z" level=error msg="response completed with error" '
TAIL = " http.request.useragent=skopeo http.response.duration=1ms"


def line(method: str, uri: str, status: int, message: str = "") -> str:
    prefix = HEAD.replace("response completed with error", message) if message else HEAD
    return (
        f'{prefix}err.code="manifest unknown" go.version=go1.19.8 http.request.host="r:5000" '
        f'http.request.method={method} http.request.uri="{uri}"{TAIL} '
        f"http.response.status={status}"
    )


@pytest.mark.parametrize(
    ("text", "namespace"),
    [
        (line("GET", "/v2/alpha/web/manifests/missing", 404), "alpha"),
        (line("HEAD", "/v2/alpha/web/manifests/v1", 404), "alpha"),  # containerd's resolve
        (line("GET", "/v2/u/ann/tools/blobs/sha256:" + "a" * 64, 500), "u/ann"),
        (line("GET", "/v2/public/base/manifests/1?ns=docker.io", 403), "public"),
        # a push asks whether each layer is there: not a pull
        (line("HEAD", "/v2/alpha/web/blobs/sha256:" + "b" * 64, 404), None),
        # the challenge every client gets before it asks for a token
        (line("GET", "/v2/alpha/web/manifests/v1", 401), None),
        (line("PUT", "/v2/alpha/web/manifests/v1", 400), None),
        (line("GET", "/v2/", 404), None),
        (line("GET", "/v2/Bad..Name/manifests/v1", 404), None),
        (line("GET", "/v2/alpha/web/manifests/v1", 404, "response completed"), None),
        ('level=warning msg="No HTTP secret provided"', None),
    ],
)
def test_failed_pulls_are_read_from_the_registry_log(text: str, namespace: str | None) -> None:
    assert failed_pull(text) == namespace
