"""Issue 15, YAML from users (``gaia.domain.yaml_safe``): small in, small out.

The attack is the "billion laughs" of YAML: anchors and aliases let a few hundred bytes stand
for a document of tens of megabytes, which ``yaml.safe_load`` builds happily (as a graph) and
everything after it (the JSON body the console sends the API, validation) expands in full.
Each test below reproduces one way in, or one mistake that let it in.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from gaia.domain.errors import InvalidRequest
from gaia.domain.yaml_safe import MAX_YAML_BYTES, UnsafeYaml, load_untrusted_yaml
from gaia.kube import parse_kubeconfig
from tests.conftest import World
from tests.console.forms import log_in


def laughs(levels: int = 6, width: int = 9) -> str:
    """``a: &a [lol, lol, ...]``, then each level an anchored list of 9 aliases of the previous."""
    lines = ["a: &a [" + ", ".join(['"lol"'] * width) + "]"]
    names = "abcdefghijklmnop"
    for prev, name in itertools.pairwise(names[: levels + 1]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


BOMB = laughs()


def test_the_bomb_is_small_and_would_be_huge() -> None:
    """The document of the issue: under 400 bytes, tens of megabytes of JSON once expanded
    (measured with ``yaml.safe_load`` itself on one level less, a ninth of it, to stay quick;
    so the tests below refuse a real bomb)."""
    assert len(BOMB) < 400
    assert len(json.dumps(yaml.safe_load(laughs(levels=5)))) > 3_000_000


def test_anchors_and_aliases_are_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(UnsafeYaml, match="YAML anchors and aliases are not accepted") as info:
        load_untrusted_yaml(BOMB)
    assert time.monotonic() - started < 1.0
    assert "line 1" in info.value.message
    # a merge key needs an alias too; a lone anchor is refused as well (nothing needs it)
    with pytest.raises(UnsafeYaml):
        load_untrusted_yaml("base: &b {x: 1}\nother:\n  <<: *b\n")
    with pytest.raises(UnsafeYaml):
        load_untrusted_yaml("a: &lonely 1\n")


def test_size_and_depth_are_bounded_and_plain_yaml_still_loads() -> None:
    with pytest.raises(UnsafeYaml, match=f"at most {MAX_YAML_BYTES}"):
        load_untrusted_yaml("a: " + "x" * MAX_YAML_BYTES)
    with pytest.raises(UnsafeYaml, match="nests deeper"):
        load_untrusted_yaml("[" * 500 + "]" * 500)
    assert load_untrusted_yaml("a: [1, {b: two}]\nc: 'd'\n") == {"a": [1, {"b": "two"}], "c": "d"}
    with pytest.raises(yaml.YAMLError):  # a syntax error stays one: callers word it
        load_untrusted_yaml("a: [1,")


def test_the_console_refuses_the_bomb_quickly_with_a_clear_message(world: World) -> None:
    """The app-from-YAML form was the way in: it parsed with ``yaml.safe_load`` and sent the
    expanded body (tens of megabytes of JSON) to the API."""
    log_in(world.client, "dev")
    started = time.monotonic()
    r = world.client.post(
        "/console/apps/new", data={"biz": "alpha", "mode": "yaml", "yaml": BOMB + "name: x\n"}
    )
    # the page makes a few in-process API calls besides (who is logged in, the role, the lists
    # of the form): a loose bound on a shared machine; the refusal itself is timed above
    assert time.monotonic() - started < 5.0
    assert r.status_code == 422
    assert "YAML anchors and aliases are not accepted" in r.text and 'id="err-yaml"' in r.text
    too_big = "name: web\ndescription: " + "x" * MAX_YAML_BYTES + "\n"
    r = world.client.post(
        "/console/apps/new", data={"biz": "alpha", "mode": "yaml", "yaml": too_big}
    )
    assert r.status_code == 422 and f"at most {MAX_YAML_BYTES} are accepted" in r.text


def test_a_user_who_may_not_create_apps_is_refused_before_parsing(world: World) -> None:
    """A viewer (or anyone outside the business) used to get their YAML parsed, and its
    errors described, before the API said no: parsing is work done for someone who has no
    right to ask for it. Now the role is checked first: a syntax error is never reported."""
    log_in(world.client, "viewer")
    for text in ("name: x\ntemplates: [\n  - : :\n", BOMB):
        r = world.client.post(
            "/console/apps/new", data={"biz": "alpha", "mode": "yaml", "yaml": text}
        )
        assert r.status_code == 403, r.text[:500]
        assert "does not allow &#39;app.write&#39;" in r.text
        assert "syntax error" not in r.text and "anchors" not in r.text
    log_in(world.client, "outsider")  # not a member of alpha: as if it did not exist
    r = world.client.post("/console/apps/new", data={"biz": "alpha", "mode": "yaml", "yaml": BOMB})
    assert r.status_code == 404 and "anchors" not in r.text


def test_a_kubeconfig_with_aliases_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    """Kubeconfigs are user YAML too (cluster registration); they never need aliases."""
    config = BOMB + (
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://k'}}]\nusers: [{name: u, user: {}}]\n"
    )
    with pytest.raises(InvalidRequest, match="kubeconfig: YAML anchors and aliases"):
        parse_kubeconfig(config)
    r = client.post(
        "/api/v1/clusters",
        json={"name": "bomb", "kind": "kubernetes", "kubeconfig": config},
        headers=admin,
    )
    assert r.status_code == 422 and "anchors and aliases" in r.json()["message"]
