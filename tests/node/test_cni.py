"""``gaia-cni``'s answers that need no network: versions, and configuration or environment the
plugin refuses, each with the CNI spec's error code (the plumbing is tests/node/test_cni_netns.py).
Run in-process through ``main``, with the environment and stdin a runtime would give."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from gaia.node import cni


def run(command: str, conf: dict[str, Any] | bytes, **env: str) -> tuple[int, Any]:
    out = io.StringIO()
    raw = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    environment = {"CNI_COMMAND": command, "CNI_PATH": "/usr/lib/cni", **env}
    code = cni.main(env=environment, stdin=raw, stdout=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


def conf(tmp_path: Path, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "name": "gaia",
        "type": "gaia-cni",
        "dataDir": str(tmp_path / "state"),
        "gaia": {"url": "http://127.0.0.1:9", "cluster": "c1", "tokenFile": str(tmp_path / "t")},
        "underlay": {"bridge": "br0", "subnet": "10.0.3.0/24"},
    }
    base.update(over)
    return base


SANDBOX = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0"}


def test_version_negotiates_the_highest_shared_version(tmp_path: Path) -> None:
    assert run("VERSION", {"cniVersion": "1.0.0"}) == (
        0,
        {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]},
    )
    negotiated = cni.parse_config(
        json.dumps(conf(tmp_path, cniVersions=["1.0.0", "1.1.0", "9.0.0"])).encode()
    )
    assert negotiated.cni_version == "1.1.0"


@pytest.mark.parametrize(
    ("command", "body", "env", "code", "words"),
    [
        ("ADD", b"{not json", SANDBOX, 6, "not JSON"),
        ("ADD", {"cniVersion": "0.3.1", "name": "gaia"}, SANDBOX, 1, "not supported"),
        ("ADD", {"cniVersion": "1.1.0", "name": "gaia", "gaia": {}}, SANDBOX, 7, "gaia.url"),
        ("ADD", "mode=overlay", SANDBOX, 7, "mode 'overlay'"),
        ("ADD", "ok", {**SANDBOX, "CNI_CONTAINERID": ""}, 4, "CNI_CONTAINERID"),
        ("ADD", "ok", {**SANDBOX, "CNI_ARGS": "K8S_POD_NAME"}, 4, "malformed pair"),
        ("ADD", "ok", {**SANDBOX, "CNI_ARGS": "GAIA_PORTS=http"}, 4, "bad port"),
        ("BOGUS", "ok", SANDBOX, 4, "CNI_COMMAND"),
        ("GC", "v1.0.0", {}, 1, "GC needs cniVersion 1.1.0"),
        ("STATUS", "ok", {}, 50, "token file"),
        ("CHECK", "ok", SANDBOX, 7, "prevResult"),
    ],
)
def test_bad_requests_get_the_spec_error_code(
    tmp_path: Path, command: str, body: Any, env: dict[str, str], code: int, words: str
) -> None:
    if body == "ok":
        body = conf(tmp_path)
    elif body == "mode=overlay":
        body = conf(tmp_path, mode="overlay")
    elif body == "v1.0.0":
        body = conf(tmp_path, cniVersion="1.0.0")
    status, answer = run(command, body, **env)
    assert status == 1
    assert answer["code"] == code, answer
    assert words in answer["msg"], answer


def test_a_node_token_file_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    env = {**SANDBOX, "CNI_ARGS": "K8S_POD_NAMESPACE=alpha;K8S_POD_NAME=web-0"}
    status, answer = run("ADD", conf(tmp_path, mode="floating-ip"), **env)
    assert (status, answer["code"]) == (1, 7)
    assert "cannot read the IPAM node token" in answer["msg"]
