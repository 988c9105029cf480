"""An existing app's version as YAML (issue 20): view, edit, the diff against the version it
came from, save as a new version; errors keep the YAML; a viewer reads it only."""

from __future__ import annotations

import html as htmllib

import yaml

from tests.conftest import World
from tests.console.forms import log_in, post
from tests.console.test_apps import APP, make_app

URL = f"{APP}/web/yaml"


def _yaml_of(page: str) -> str:
    start = page.index('name="text"')
    body = page[page.index(">", start) + 1 : page.index("</textarea>", start)]
    return htmllib.unescape(body)


def test_a_developer_edits_a_version_sees_the_diff_and_saves_a_new_one(world: World) -> None:
    make_app(world, "web")
    log_in(world.client, "dev")
    page = world.client.get(URL).text
    assert 'aria-current="page">YAML' in page
    doc = yaml.safe_load(_yaml_of(page))
    assert doc["name"] == "v2" and doc["image"] == "registry.example.com/web:2"  # the newest
    assert doc["resources"] == {"cpu": 0.1, "memory": 64}  # API units, zeros left out
    older = yaml.safe_load(_yaml_of(world.client.get(URL, params={"version": "v1"}).text))
    assert older["image"] == "registry.example.com/web:1"

    doc.update(name="v3", image="registry.example.com/web:3")
    edited = yaml.safe_dump(doc, sort_keys=False)
    r = world.client.post(URL, data={"text": edited, "base": "v2", "action": "preview"})
    assert r.status_code == 200, r.text
    assert '<span class="diff-del">-image: registry.example.com/web:2</span>' in r.text
    assert '<span class="diff-add">+image: registry.example.com/web:3</span>' in r.text
    assert 'id="yaml-save"' in r.text
    # previewing saved nothing
    names = [t["name"] for t in world.client.get(
        "/api/v1/businesses/alpha/apps/web/templates", headers=world.admin
    ).json()["items"]]  # fmt: skip
    assert names == ["v1", "v2"]

    target = post(world.client, URL, {"text": edited, "base": "v2", "action": "save"})
    assert target.endswith("/upgrade?ok=Version v3 added"), target
    saved = world.client.get(
        "/api/v1/businesses/alpha/apps/web/templates", headers=world.admin
    ).json()["items"][-1]
    assert saved["name"] == "v3" and saved["image"] == "registry.example.com/web:3"


def test_bad_yaml_an_existing_name_and_api_refusals_keep_the_text(world: World) -> None:
    make_app(world, "web")
    log_in(world.client, "dev")
    cases = [
        ("name: v3\nimage: [unclosed\n", "does not parse: line"),
        ("name: v1\nimage: x:1\nresources: {cpu: 1, memory: 64}\n", "Version v1 exists"),
        ("- just\n- a list\n", "one version, with a new name"),
        ("a: &x [1]\nb: *x\n", "anchor"),
        ("name: v3\nimage: x:1\nresources: {cpu: -1, memory: 64}\n", "cpu"),
    ]
    for text, expected in cases:
        r = world.client.post(URL, data={"text": text, "base": "v2", "action": "save"})
        assert r.status_code == 422, (text, r.status_code)
        error = r.text.split('id="yaml-error">', 1)[1].split("</p>", 1)[0]
        assert expected in htmllib.unescape(error), (text, error)
        assert htmllib.unescape(_yaml_of(r.text)) == text  # the YAML is kept for fixing


def test_a_viewer_reads_the_yaml_and_cannot_save(world: World) -> None:
    make_app(world, "web")
    log_in(world.client, "viewer")
    page = world.client.get(URL).text
    assert "registry.example.com/web:2" in page and 'id="yaml-form"' not in page
    r = world.client.post(URL, data={"text": "name: v9\nimage: x:1\n", "action": "save"})
    assert r.status_code == 403
    log_in(world.client, "outsider")
    assert world.client.get(URL).status_code in (403, 404)
