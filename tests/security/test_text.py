"""Issue 15, text that is not what it seems: control, bidi and invisible characters in user strings.

The attacks and mistakes reproduced:

- A bidi override (U+202E RIGHT-TO-LEFT OVERRIDE) or isolate in a display name reverses how the
  overview reads the text after it: "invoice\\u202Efdp.exe" shows as "invoiceexe.pdf".
- The same in an env value, a command argument or config data: the console shows one value and
  the container gets another (Trojan Source, CVE-2021-42574, for configuration).
- NUL and other control characters were refused in display names but accepted in env values,
  which reach the cluster and the database (a NUL is a 500 on PostgreSQL).
- A newline in a one-line field (a display name, a label) forges a second line in lists and logs.

Refused at the API edge with a 422 that names the field and the character
(``gaia.api.schemas.base.check_plain_text``); every script, accents, CJK and emoji (ZWJ
sequences included) pass, and multi-line fields (descriptions, env values, config data) keep
their line breaks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.conftest import World
from tests.support.apps_harness import BIZ, template

RLO = "\u202e"


def create_app(world: World, name: str, **extra: Any) -> Any:
    body = {
        "name": name,
        "cluster": "sim-1",
        "templates": [template("v1", "registry.local/web:v1", **extra)],
    }
    return world.client.post(f"{BIZ}/apps", json=body, headers=world.admin)


def refused(response: Any, field: str, character: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request", body
    assert body["message"].startswith(f"{field}: "), body["message"]
    assert character in body["message"] and "not allowed" in body["message"], body["message"]


def test_an_env_value_with_a_bidi_override_is_refused_naming_field_and_character(
    world: World,
) -> None:
    r = create_app(world, "web", env={"GREETING": f"hello {RLO}dlrow"})
    refused(r, "templates.0.env.GREETING", "U+202E RIGHT-TO-LEFT OVERRIDE")


@pytest.mark.parametrize(
    ("character", "named"),
    [
        ("\x00", "U+0000"),
        ("\x1b", "U+001B"),
        ("\x7f", "U+007F"),
        ("\x85", "U+0085"),
        ("\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("\u200b", "U+200B ZERO WIDTH SPACE"),
    ],
)
def test_an_env_value_with_a_control_or_format_character_is_refused(
    world: World, character: str, named: str
) -> None:
    r = create_app(world, "web", env={"TOKEN": f"abc{character}def"})
    refused(r, "templates.0.env.TOKEN", named)


def test_a_command_argument_with_a_bidi_isolate_is_refused(world: World) -> None:
    r = create_app(world, "web", args=["--mode", "safe\u2067;rm -rf /\u2069"])
    refused(r, "templates.0.args.1", "U+2067 RIGHT-TO-LEFT ISOLATE")


def test_env_values_in_any_script_with_emoji_and_line_breaks_are_accepted(world: World) -> None:
    env = {
        "CITY": "Zürich é",
        "GREETING": "你好 中文",
        "MOOD": "👩\u200d💻 🇨🇳 ❤️",  # a ZWJ sequence, a flag, a variation selector
        "HEBREW": "שלום\u200f (1)",  # a right-to-left mark is allowed: it reverses nothing
        "PEM": "-----BEGIN CERTIFICATE-----\nMIIB\tAA==\r\n-----END CERTIFICATE-----",
    }
    r = create_app(world, "web", env=env)
    assert r.status_code == 201, r.text
    got = world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()
    assert got["templates"]


def test_a_display_name_with_nul_is_refused_naming_the_character(world: World) -> None:
    r = world.client.post(
        "/api/v1/businesses",
        json={"name": "gamma", "display_name": "Shop\x00"},
        headers=world.admin,
    )
    refused(r, "display_name", "U+0000")


def test_a_display_name_that_would_read_reversed_in_the_overview_is_refused(
    world: World,
) -> None:
    r = world.client.patch(
        "/api/v1/businesses/alpha",
        json={"display_name": f"invoice{RLO}fdp.exe"},
        headers=world.admin,
    )
    refused(r, "display_name", "U+202E RIGHT-TO-LEFT OVERRIDE")
    overview = world.client.get("/api/v1/businesses/alpha", headers=world.admin).json()
    assert RLO not in overview["display_name"]


def test_a_newline_in_a_one_line_field_is_refused_but_kept_in_a_description(
    world: World,
) -> None:
    r = world.client.patch(
        "/api/v1/businesses/alpha", json={"display_name": "Shop\nAdmin"}, headers=world.admin
    )
    refused(r, "display_name", "U+000A")
    r = world.client.patch(
        "/api/v1/businesses/alpha",
        json={"display_name": "商店 Ünïcode 🛒", "description": "line one\nline two\ttabbed"},
        headers=world.admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "line one\nline two\ttabbed"


def test_config_data_keeps_its_newlines_and_refuses_bidi_characters(world: World) -> None:
    url = f"{BIZ}/configmaps"
    data = {"app.ini": "[server]\nport = 8080\n\n# 中文注释\n", "motd": "Grüße 👋\r\n"}
    r = world.client.post(url, json={"name": "settings", "data": data}, headers=world.admin)
    assert r.status_code == 201, r.text
    assert r.json()["data"] == data
    r = world.client.post(
        url,
        json={"name": "sneaky", "data": {"app.ini": "admin = false \u2066# true\u2069\n"}},
        headers=world.admin,
    )
    refused(r, "data.app.ini", "U+2066 LEFT-TO-RIGHT ISOLATE")
    r = world.client.post(
        f"{BIZ}/secrets",
        json={"name": "creds", "data": {"password": "s3cr\u202et"}},
        headers=world.admin,
    )
    refused(r, "data.password", "U+202E")
    assert "s3cr" not in r.json()["message"]  # a secret value is never quoted back


def test_alerting_text_refuses_bidi_characters(world: World) -> None:
    ends = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = world.client.post(
        "/api/v1/alerts/silences",
        json={"matchers": {"alertname": "disk"}, "ends_at": ends, "comment": f"ok {RLO}kcab"},
        headers=world.admin,
    )
    refused(r, "comment", "U+202E")
    r = world.client.post(
        "/api/v1/alerts/channels",
        json={
            "name": "hook",
            "kind": "webhook",
            "config": {"url": "https://hooks.example.com/x", "headers": {"X-Team": f"ops{RLO}"}},
        },
        headers=world.admin,
    )
    assert r.status_code == 422, r.text
    assert "headers.X-Team: contains U+202E" in r.json()["message"], r.json()["message"]
    r = world.client.post(
        "/api/v1/alerts/channels",
        json={"name": f"pager{RLO}", "kind": "webhook", "config": {"url": "https://e.com/x"}},
        headers=world.admin,
    )
    refused(r, "name", "U+202E")
