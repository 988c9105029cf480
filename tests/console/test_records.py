"""The platform's operation records and events pages, as each role sees them.

Records come from what the ``world`` fixture and each test do through the API; events are
written straight into the store (the pages only read them, through the API).
"""

from __future__ import annotations

import re

from sqlalchemy import select

from gaia.platform import Platform
from gaia.store.models import Business, Event, OperationRecord
from tests.conftest import World
from tests.console.forms import log_in


def rows(html: str) -> list[str]:
    body = "".join(re.findall(r"<tbody>(.*?)</tbody>", html, flags=re.S))
    return re.findall(r"<tr id=\"(?:record|event)-\d+\">(.*?)</tr>", body, flags=re.S)


def ids(html: str) -> set[str]:
    return set(re.findall(r"<tr id=\"((?:record|event)-\d+)\">", html))


def ours(html: str) -> list[str]:
    """The rows of the events ``add_events`` wrote (the world has a few of its own)."""
    return [r for r in rows(html) if "event number" in r]


def older_link(html: str) -> str:
    found = re.search(r'href="(\?[^"]*cursor=[^"]+)" rel="next"', html)
    return found.group(1).replace("&amp;", "&") if found else ""


def add_events(platform: Platform) -> None:
    with platform.db.write_session() as session:
        ids = {b.name: b.id for b in session.scalars(select(Business))}
        for n in range(30):
            biz = "alpha" if n % 2 else "beta"
            session.add(
                Event(
                    key=f"k{n}",
                    business_id=ids[biz],
                    business=biz,
                    cluster="sim-1",
                    object_kind="Instance",
                    object_name=f"{biz}-web-{n}",
                    reason="BackOff" if n % 3 == 0 else "Started",
                    message=f"event number {n}",
                    type="Warning" if n % 3 == 0 else "Normal",
                    count=1 + n % 4,
                )
            )


# ---------------------------------------------------------------- records


def test_an_admin_sees_every_record_and_filters_them(world: World) -> None:
    client = world.client
    for n in range(3):  # refused changes are recorded too
        r = client.post("/api/v1/users", json={"username": f"x{n}"}, headers=world.admin)
        assert r.status_code == 422
    log_in(client, "admin")
    html = client.get("/console/records").text
    assert "Operation records" in html
    found = rows(html)
    assert any("alpha" in r for r in found) and any("beta" in r for r in found)

    failures = rows(client.get("/console/records", params={"result": "failure"}).text)
    assert len(failures) == 3 and all("failure" in r for r in failures)
    actions = rows(client.get("/console/records", params={"business": "beta"}).text)
    assert actions and all(">beta<" in r for r in actions)
    recent = rows(client.get("/console/records", params={"window": "1h", "actor": "admin"}).text)
    assert recent and all(">admin<" in r for r in recent)


def test_records_page_by_the_api_cursor(world: World) -> None:
    client = world.client
    for n in range(25):
        client.post("/api/v1/users", json={"username": f"y{n}"}, headers=world.admin)
    log_in(client, "admin")
    first = client.get("/console/records", params={"size": 20, "result": "failure"}).text
    assert len(rows(first)) == 20
    link = older_link(first)
    assert "size=20" in link and "result=failure" in link  # filters survive the paging
    second = client.get("/console/records" + link).text
    assert len(rows(second)) == 5 and 'rel="first"' in second
    assert not ids(first) & ids(second)
    assert older_link(second) == ""


def test_a_viewer_sees_only_the_records_of_their_business(world: World) -> None:
    client = world.client
    log_in(client, "viewer")
    found = rows(client.get("/console/records").text)
    assert found and all(">alpha<" in r for r in found)
    assert rows(client.get("/console/records", params={"business": "beta"}).text) == []


def test_a_bad_filter_is_shown_not_a_traceback(world: World) -> None:
    client = world.client
    log_in(client, "admin")
    r = client.get("/console/records", params={"actor": "a\x01b"})
    assert r.status_code == 200 and 'class="flash error"' in r.text


# ---------------------------------------------------------------- events


def test_events_are_listed_filtered_and_paged(world: World, platform: Platform) -> None:
    add_events(platform)
    client = world.client
    log_in(client, "admin")
    html = client.get("/console/events").text
    assert len(ours(html)) == 30 and "event number 29" in html
    warnings = ours(client.get("/console/events", params={"type": "Warning"}).text)
    assert len(warnings) == 10 and all("Warning" in r for r in warnings)
    one = rows(client.get("/console/events", params={"object_name": "alpha-web-7"}).text)
    assert len(one) == 1 and "event number 7" in one[0]
    first = client.get("/console/events", params={"size": 20}).text
    second = client.get("/console/events" + older_link(first)).text
    assert len(rows(first)) == 20 and rows(second) and not ids(first) & ids(second)


def test_a_member_sees_only_their_business_events(world: World, platform: Platform) -> None:
    add_events(platform)
    client = world.client
    log_in(client, "viewer")
    html = client.get("/console/events").text
    assert len(ours(html)) == 15 and all("alpha-web-" in r for r in ours(html))
    assert all(">beta<" not in r for r in rows(html))


def test_records_and_events_speak_chinese(world: World, platform: Platform) -> None:
    add_events(platform)
    client = world.client
    r = client.patch(
        "/api/v1/users/viewer", json={"language": "zh-CN"}, headers=world.as_("viewer")
    )
    assert r.status_code == 200, r.text
    log_in(client, "viewer")
    assert "操作人" in client.get("/console/records").text
    events = client.get("/console/events").text
    assert "原因" in events and "警告" in events


def test_a_console_login_is_recorded_once_whether_accepted_or_refused(
    world: World, platform: Platform
) -> None:
    def logins() -> list[tuple[str, str, str]]:
        with platform.db.read_session() as session:
            return [
                (r.actor, r.result, r.path)
                for r in session.scalars(
                    select(OperationRecord)
                    .where(OperationRecord.action == "auth.login")
                    .order_by(OperationRecord.id)
                )
            ]

    before = logins()
    r = world.client.post(
        "/console/login",
        data={"username": "dev", "password": "wrong", "next": "/console"},
        follow_redirects=False,
    )
    assert r.status_code == 401
    log_in(world.client, "dev")
    assert logins()[len(before) :] == [
        ("dev", "failure", "/api/v1/auth/login"),
        ("dev", "success", "/api/v1/auth/login"),
    ]
