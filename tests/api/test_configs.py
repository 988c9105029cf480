"""ConfigMaps and Secrets per business: CRUD, Kubernetes' naming and size rules, tenancy, and
Secrets that stay secret (encrypted at rest, values only on an explicit, permitted, recorded
reveal, never in records, events or logs)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from gaia.api.schemas.configs import MAX_DATA_BYTES
from gaia.platform import Platform
from gaia.security import SecretBox
from gaia.store.configs import load_config_data
from gaia.store.models import Business, ConfigItem
from tests.conftest import World

BIZ = "/api/v1/businesses/alpha"
PASSWORD = "hunter2-s3cr3t-VALUE"  # distinctive, so a leak anywhere is found by substring
KINDS = ("configmaps", "secrets")


def _create(world: World, kind: str, body: dict[str, Any], who: str = "developer") -> Any:
    r = world.client.post(f"{BIZ}/{kind}", json=body, headers=world.as_(who))
    assert r.status_code == 201, r.text
    return r.json()


def _error(r: Any, status: int = 422) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message", "details"}
    return str(body["message"])


# --- ConfigMaps ----------------------------------------------------------------------------


def test_configmap_lifecycle_create_get_list_replace_delete(world: World) -> None:
    c, dev = world.client, world.as_("developer")
    created = _create(
        world,
        "configmaps",
        {
            "name": "app-settings",
            "data": {"LOG_LEVEL": "debug", "app.yaml": "port: 8080\nworkers: 4\n"},
            "description": "web settings",
        },
    )
    assert created["name"] == "app-settings" and created["business"] == "alpha"
    assert created["data"] == {"LOG_LEVEL": "debug", "app.yaml": "port: 8080\nworkers: 4\n"}
    assert created["created_by"] == "dev" and created["description"] == "web settings"

    viewer = world.as_("viewer")
    got = c.get(f"{BIZ}/configmaps/app-settings", headers=viewer)
    assert got.status_code == 200 and got.json() == created
    listed = c.get(f"{BIZ}/configmaps", headers=viewer).json()
    assert [i["name"] for i in listed["items"]] == ["app-settings"]
    assert listed["next_cursor"] is None

    replaced = c.put(
        f"{BIZ}/configmaps/app-settings", json={"data": {"LOG_LEVEL": "info"}}, headers=dev
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    # PUT replaces the whole object: the dropped key and the omitted description are gone.
    assert body["data"] == {"LOG_LEVEL": "info"} and body["description"] == ""
    assert body["updated_at"] >= created["updated_at"]
    assert body["created_at"] == created["created_at"]

    assert c.delete(f"{BIZ}/configmaps/app-settings", headers=dev).status_code == 204
    gone = c.get(f"{BIZ}/configmaps/app-settings", headers=dev)
    assert "ConfigMap 'app-settings' not found" in _error(gone, 404)
    assert c.delete(f"{BIZ}/configmaps/app-settings", headers=dev).status_code == 404


def test_configmap_list_pages_by_name(world: World) -> None:
    for name in ("c", "a", "e", "b", "d"):
        _create(world, "configmaps", {"name": name})
    c, viewer = world.client, world.as_("viewer")
    first = c.get(f"{BIZ}/configmaps", params={"limit": 2}, headers=viewer).json()
    second = c.get(
        f"{BIZ}/configmaps", params={"limit": 2, "cursor": first["next_cursor"]}, headers=viewer
    ).json()
    third = c.get(
        f"{BIZ}/configmaps", params={"limit": 2, "cursor": second["next_cursor"]}, headers=viewer
    ).json()
    names = [i["name"] for p in (first, second, third) for i in p["items"]]
    assert names == ["a", "b", "c", "d", "e"] and third["next_cursor"] is None


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_name_conflicts_but_kinds_have_separate_names(world: World, kind: str) -> None:
    _create(world, kind, {"name": "shared", "data": {"k": "v"}})
    again = world.client.post(
        f"{BIZ}/{kind}", json={"name": "shared"}, headers=world.as_("business-admin")
    )
    assert "already exists" in _error(again, 409)
    assert again.json()["code"] == "conflict"
    other = "secrets" if kind == "configmaps" else "configmaps"
    _create(world, other, {"name": "shared"})


@pytest.mark.parametrize("kind", KINDS)
def test_replace_or_delete_of_a_missing_config_is_not_found(world: World, kind: str) -> None:
    c, dev = world.client, world.as_("developer")
    assert c.put(f"{BIZ}/{kind}/nope", json={"data": {}}, headers=dev).status_code == 404
    assert c.delete(f"{BIZ}/{kind}/nope", headers=dev).status_code == 404
    assert c.get(f"{BIZ}/{kind}/nope", headers=dev).json()["code"] == "not_found"


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("App", "pattern"),
        ("my_app", "pattern"),
        ("-app", "pattern"),
        ("app.", "pattern"),
        ("a..b", "pattern"),
        ("", "at least 1"),
        ("a" * 254, "at most 253"),
    ],
)
def test_names_must_be_dns_subdomains(world: World, kind: str, name: str, why: str) -> None:
    r = world.client.post(f"{BIZ}/{kind}", json={"name": name}, headers=world.as_("developer"))
    message = _error(r)
    assert message.startswith("name: ") and why in message


@pytest.mark.parametrize("kind", KINDS)
def test_dotted_and_long_names_are_accepted(world: World, kind: str) -> None:
    for name in ("db.prod.example", "a" * 253, "0-x"):
        _create(world, kind, {"name": name})
        got = world.client.get(f"{BIZ}/{kind}/{name}", headers=world.as_("viewer"))
        assert got.status_code == 200 and got.json()["name"] == name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("a/b", "pattern"),
        ("has space", "pattern"),
        ("ключ", "pattern"),
        ("", "at least 1"),
        ("k" * 254, "at most 253"),
        (".", "must not be '.' or '..'"),
        ("..", "must not be '.' or '..'"),
        ("..data", "must not be '.' or '..'"),
    ],
)
def test_bad_keys_are_refused_naming_the_key(world: World, kind: str, key: str, why: str) -> None:
    r = world.client.post(
        f"{BIZ}/{kind}",
        json={"name": "cfg", "data": {"good": "x", key: PASSWORD}},
        headers=world.as_("developer"),
    )
    message = _error(r)
    assert message.startswith(f"data.{key}.") and why in message
    assert PASSWORD not in r.text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [1, None, True, ["x"], {"nested": "x"}])
def test_values_must_be_strings(world: World, kind: str, value: Any) -> None:
    r = world.client.post(
        f"{BIZ}/{kind}",
        json={"name": "cfg", "data": {"port": value}},
        headers=world.as_("developer"),
    )
    assert _error(r).startswith("data.port: ")


@pytest.mark.parametrize("kind", KINDS)
def test_values_must_be_valid_utf8(world: World, kind: str) -> None:
    # A lone surrogate is valid JSON but no UTF-8 text; httpx would refuse to encode it.
    r = world.client.post(
        f"{BIZ}/{kind}",
        content=b'{"name": "cfg", "data": {"port": "\\ud800"}}',
        headers={**world.as_("developer"), "content-type": "application/json"},
    )
    assert _error(r) == "data.port: Value error, a value must be valid UTF-8 text"


@pytest.mark.parametrize("kind", KINDS)
def test_total_size_is_limited_to_one_mib(world: World, kind: str) -> None:
    c, dev = world.client, world.as_("developer")
    # Keys count too: "a" + "b" are 2 bytes, the values fill the rest exactly.
    half = (MAX_DATA_BYTES - 2) // 2
    exact = {"a": "x" * half, "b": "é" * ((MAX_DATA_BYTES - 2 - half) // 2)}
    exact["b"] += "y" * (MAX_DATA_BYTES - 2 - half - len(exact["b"].encode()))
    assert (
        c.post(f"{BIZ}/{kind}", json={"name": "full", "data": exact}, headers=dev).status_code
        == 201
    )

    over = dict(exact, c="")  # one more byte: the key "c"
    r = c.post(f"{BIZ}/{kind}", json={"name": "over", "data": over}, headers=dev)
    message = _error(r)
    assert message.startswith("data: ") and f"{MAX_DATA_BYTES + 1} bytes" in message
    assert "1 MiB" in message
    r = c.put(f"{BIZ}/{kind}/full", json={"data": over}, headers=dev)
    assert _error(r).startswith("data: ")


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_fields_and_bad_descriptions_are_refused(world: World, kind: str) -> None:
    c, dev = world.client, world.as_("developer")
    r = c.post(f"{BIZ}/{kind}", json={"name": "cfg", "binaryData": {}}, headers=dev)
    assert _error(r).startswith("binaryData: ")
    r = c.post(f"{BIZ}/{kind}", json={"name": "cfg", "description": "a\x00b"}, headers=dev)
    assert _error(r).startswith("description: ")
    r = c.put(f"{BIZ}/{kind}/cfg", json={"description": "no data"}, headers=dev)
    assert _error(r).startswith("data: ")


def test_values_may_hold_any_text_on_both_stores(world: World, platform: Platform) -> None:
    # control characters but TAB and line breaks are refused (tests/security/test_text.py): a NUL
    # cannot even reach a container's environment, as execve's strings end at it
    value = 'line 1\n\ttab\r\n nbsp\u00a0, 中文, emoji 🚀, quote " and \\ backslash'
    for kind in KINDS:
        _create(world, kind, {"name": "odd", "data": {"v": value}})
    got = world.client.get(f"{BIZ}/configmaps/odd", headers=world.as_("viewer")).json()
    assert got["data"] == {"v": value}
    revealed = world.client.get(
        f"{BIZ}/secrets/odd", params={"reveal": "true"}, headers=world.as_("developer")
    ).json()
    assert revealed["data"] == {"v": value}


# --- Secrets -------------------------------------------------------------------------------


def test_secret_lifecycle_never_shows_values_unless_revealed(world: World) -> None:
    c, dev, viewer = world.client, world.as_("developer"), world.as_("viewer")
    created = _create(
        world,
        "secrets",
        {"name": "db", "data": {"password": PASSWORD, "user": "app"}, "description": "pg"},
    )
    assert created["data"] is None and created["revealed"] is False
    assert created["keys"] == [
        {"key": "password", "size": len(PASSWORD)},
        {"key": "user", "size": 3},
    ]
    assert PASSWORD not in str(created)

    got = c.get(f"{BIZ}/secrets/db", headers=viewer)
    assert got.status_code == 200 and got.json() == created
    listed = c.get(f"{BIZ}/secrets", headers=viewer)
    assert [i["name"] for i in listed.json()["items"]] == ["db"]
    assert PASSWORD not in listed.text
    assert c.get(f"{BIZ}/secrets/db", params={"reveal": "false"}, headers=dev).json() == created

    revealed = c.get(f"{BIZ}/secrets/db", params={"reveal": "true"}, headers=dev)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["data"] == {"password": PASSWORD, "user": "app"}
    assert revealed.json()["revealed"] is True
    assert revealed.headers["cache-control"] == "no-store"

    replaced = c.put(
        f"{BIZ}/secrets/db", json={"data": {"password": "n3w"}, "description": "pg"}, headers=dev
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["keys"] == [{"key": "password", "size": 3}]
    assert replaced.json()["data"] is None and "n3w" not in replaced.text
    again = c.get(f"{BIZ}/secrets/db", params={"reveal": "true"}, headers=dev).json()
    assert again["data"] == {"password": "n3w"}

    assert c.delete(f"{BIZ}/secrets/db", headers=dev).status_code == 204
    assert "Secret 'db' not found" in _error(c.get(f"{BIZ}/secrets/db", headers=dev), 404)


def test_secret_values_are_stored_only_encrypted(world: World, platform: Platform) -> None:
    _create(world, "secrets", {"name": "db", "data": {"password": PASSWORD}})
    _create(world, "configmaps", {"name": "plain", "data": {"greeting": "hello-in-clear"}})
    with platform.db.read_session() as s:
        rows = {
            row.name: row
            for row in s.execute(
                text("SELECT name, secret, data, data_encrypted FROM config_items")
            )
        }
    secret, plain = rows["db"], rows["plain"]
    raw = bytes(secret.data_encrypted)
    assert PASSWORD.encode() not in raw and b"password" not in raw
    assert platform.secrets.decrypt(raw) == f'{{"password": "{PASSWORD}"}}'
    # Only the key names stay in the clear, so references can be checked without the key.
    assert PASSWORD not in str(secret.data) and "password" in str(secret.data)
    assert "hello-in-clear" in str(plain.data) and plain.data_encrypted is None


def test_reveal_needs_app_write_and_outsiders_see_nothing(world: World) -> None:
    _create(world, "secrets", {"name": "db", "data": {"password": PASSWORD}})
    c = world.client
    url = f"{BIZ}/secrets/db"
    refused = c.get(url, params={"reveal": "true"}, headers=world.as_("viewer"))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert "app.write" in refused.json()["message"] and PASSWORD not in refused.text
    for who in ("developer", "business-admin", "platform-admin"):
        r = c.get(url, params={"reveal": "true"}, headers=world.as_(who))
        assert r.status_code == 200 and r.json()["data"] == {"password": PASSWORD}, who
    for params in ({}, {"reveal": "true"}):
        hidden = c.get(url, params=params, headers=world.as_("outsider"))
        assert hidden.status_code == 404 and hidden.json()["message"] == (
            "business 'alpha' not found"
        )
    missing = c.get(f"{BIZ}/secrets/nope", params={"reveal": "true"}, headers=world.admin)
    assert missing.status_code == 404


def test_reveals_are_recorded_without_values(world: World) -> None:
    _create(world, "secrets", {"name": "db", "data": {"password": PASSWORD}})
    c = world.client
    c.get(f"{BIZ}/secrets/db", params={"reveal": "true"}, headers=world.as_("developer"))
    c.get(f"{BIZ}/secrets/db", params={"reveal": "true"}, headers=world.as_("viewer"))
    c.get(f"{BIZ}/secrets/db", headers=world.as_("viewer"))  # a plain read is not recorded
    records = c.get(
        "/api/v1/records", params={"action": "secret.reveal"}, headers=world.as_("viewer")
    ).json()["items"]
    assert [(r["actor"], r["result"], r["status_code"]) for r in records] == [
        ("viewer", "failure", 403),
        ("dev", "success", 200),
    ]
    ok = records[1]
    assert ok["business"] == "alpha" and ok["method"] == "GET"
    assert ok["target"] == "business/alpha/secret/db"
    assert ok["summary"] == "revealed the values of Secret 'db' (keys: password)"
    assert PASSWORD not in str(records)


def test_secret_values_never_reach_records_events_or_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c, dev = world.client, world.as_("developer")
    _create(world, "secrets", {"name": "db", "data": {"password": PASSWORD, "user": "app"}})
    c.put(f"{BIZ}/secrets/db", json={"data": {"password": PASSWORD + "-2"}}, headers=dev)
    c.post(f"{BIZ}/secrets", json={"name": "db", "data": {"password": PASSWORD}}, headers=dev)
    c.post(f"{BIZ}/secrets", json={"name": "x", "data": {"bad/key": PASSWORD}}, headers=dev)
    c.post(f"{BIZ}/secrets", json={"name": "BAD", "data": {"k": PASSWORD}}, headers=dev)
    c.post(f"{BIZ}/secrets", json={"name": "y", "data": {"k": [PASSWORD]}}, headers=dev)
    c.post(
        f"{BIZ}/secrets", json={"name": "z", "data": {"k": PASSWORD}}, headers=world.as_("viewer")
    )
    c.get(f"{BIZ}/secrets/db", params={"reveal": "true"}, headers=dev)
    c.delete(f"{BIZ}/secrets/db", headers=dev)

    records = c.get("/api/v1/records", params={"limit": 500}, headers=world.admin)
    assert records.status_code == 200
    mine = [r for r in records.json()["items"] if "/secrets" in r["path"]]
    # Calls refused by validation never reach the route, so they carry the route's name.
    assert {r["action"] for r in mine} == {
        "secret.create",
        "secret.replace",
        "secret.reveal",
        "secret.delete",
        "create_secret",
    }
    assert len([r for r in mine if r["result"] == "failure"]) == 5
    events = c.get("/api/v1/events", params={"limit": 500}, headers=world.admin)
    for where in (records.text, events.text, caplog.text):
        assert PASSWORD not in where

    replace = next(r for r in mine if r["action"] == "secret.replace")
    assert replace["summary"] == "replaced Secret 'db': changed password; removed user"


def test_configmap_records_name_keys_and_changes(world: World) -> None:
    c, dev = world.client, world.as_("developer")
    _create(world, "configmaps", {"name": "cm", "data": {"a": "1", "b": "2"}})
    c.put(f"{BIZ}/configmaps/cm", json={"data": {"a": "1", "c": "3"}}, headers=dev)
    c.delete(f"{BIZ}/configmaps/cm", headers=dev)
    records = c.get("/api/v1/records", params={"business": "alpha"}, headers=dev).json()["items"]
    summaries = {r["action"]: r["summary"] for r in records if r["action"].startswith("configmap")}
    assert summaries == {
        "configmap.create": "created ConfigMap 'cm' with keys: a, b",
        "configmap.replace": "replaced ConfigMap 'cm': added c; removed b",
        "configmap.delete": "deleted ConfigMap 'cm' (keys: a, c)",
    }


# --- permissions and tenancy ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_viewers_read_developers_write(world: World, kind: str) -> None:
    c, viewer = world.client, world.as_("viewer")
    refused = c.post(f"{BIZ}/{kind}", json={"name": "cfg"}, headers=viewer)
    assert refused.status_code == 403 and "app.write" in refused.json()["message"]
    _create(world, kind, {"name": "cfg"}, who="developer")
    assert c.put(f"{BIZ}/{kind}/cfg", json={"data": {}}, headers=viewer).status_code == 403
    assert c.delete(f"{BIZ}/{kind}/cfg", headers=viewer).status_code == 403
    assert c.get(f"{BIZ}/{kind}/cfg", headers=viewer).status_code == 200
    for who in ("business-admin", "platform-admin"):
        r = c.put(f"{BIZ}/{kind}/cfg", json={"data": {"by": who}}, headers=world.as_(who))
        assert r.status_code == 200, (who, r.text)


@pytest.mark.parametrize("kind", KINDS)
def test_other_businesses_configs_are_invisible(world: World, kind: str) -> None:
    c, outsider = world.client, world.as_("outsider")
    _create(world, kind, {"name": "cfg", "data": {"k": "alpha-only"}})
    r = c.post("/api/v1/businesses/beta/" + kind, json={"name": "cfg"}, headers=outsider)
    assert r.status_code == 201, r.text
    for method, url in (
        ("GET", f"{BIZ}/{kind}"),
        ("GET", f"{BIZ}/{kind}/cfg"),
        ("POST", f"{BIZ}/{kind}"),
        ("PUT", f"{BIZ}/{kind}/cfg"),
        ("DELETE", f"{BIZ}/{kind}/cfg"),
    ):
        body = {"name": "x", "data": {}} if method == "POST" else {"data": {}}
        r = c.request(method, url, json=body, headers=outsider)
        assert r.status_code == 404 and r.json()["message"] == "business 'alpha' not found"
    # Same name in two businesses: two objects, each seen only by its own members.
    theirs = c.get(f"/api/v1/businesses/beta/{kind}", headers=outsider).json()["items"]
    assert [i["name"] for i in theirs] == ["cfg"] and "alpha-only" not in str(theirs)
    ours = c.get(f"{BIZ}/{kind}", headers=world.as_("viewer")).json()["items"]
    assert len(ours) == 1


def test_deleting_a_business_deletes_its_configs(world: World, platform: Platform) -> None:
    c = world.client
    c.post("/api/v1/businesses", json={"name": "gamma"}, headers=world.admin)
    for kind in KINDS:
        r = c.post(f"/api/v1/businesses/gamma/{kind}", json={"name": "cfg"}, headers=world.admin)
        assert r.status_code == 201
    assert c.delete("/api/v1/businesses/gamma", headers=world.admin).status_code == 204
    with platform.db.read_session() as s:
        count = s.execute(text("SELECT count(*) FROM config_items")).scalar_one()
    assert count == 0


# --- the store helper the app controller uses ----------------------------------------------


def test_load_config_data_decrypts_secrets_and_tells_kinds_apart(
    world: World, platform: Platform
) -> None:
    _create(world, "secrets", {"name": "db", "data": {"password": PASSWORD}})
    _create(world, "configmaps", {"name": "db", "data": {"host": "pg"}})
    with platform.db.read_session() as s:
        alpha = s.query(Business).filter_by(name="alpha").one()
        beta = s.query(Business).filter_by(name="beta").one()

        def load(business: Business, secret: bool, name: str = "db") -> dict[str, str] | None:
            return load_config_data(
                s, secrets=platform.secrets, business_id=business.id, name=name, secret=secret
            )

        assert load(alpha, True) == {"password": PASSWORD}
        assert load(alpha, False) == {"host": "pg"}
        assert load(alpha, True, "nope") is None
        assert load(beta, True) is None


def test_a_secret_sealed_with_a_lost_key_can_be_replaced(world: World, platform: Platform) -> None:
    _create(world, "secrets", {"name": "db", "data": {"password": PASSWORD}})
    other = SecretBox(Fernet.generate_key())
    with platform.db.write_session() as s:
        item = s.query(ConfigItem).filter_by(name="db").one()
        item.data_encrypted = other.encrypt('{"password": "old"}')
    dev = world.as_("developer")
    r = world.client.put(f"{BIZ}/secrets/db", json={"data": {"password": "new"}}, headers=dev)
    assert r.status_code == 200, r.text
    revealed = world.client.get(f"{BIZ}/secrets/db", params={"reveal": "true"}, headers=dev)
    assert revealed.json()["data"] == {"password": "new"}
