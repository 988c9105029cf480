"""The businesses and configs pages, as each role sees them (server-rendered HTML over TestClient).

Each test logs in through the console's own login form (the session cookie then rides on the
client), reads pages and posts their forms, and checks the HTML and, through the API, the state.
"""

from __future__ import annotations

import re

from tests.conftest import World
from tests.console.forms import log_in, post


def rows(html: str) -> str:
    """The <tbody> parts of a page, where list rows are."""
    return "".join(re.findall(r"<tbody>(.*?)</tbody>", html, flags=re.S))


# ---------------------------------------------------------------- the list


def test_a_member_sees_only_their_businesses_and_no_create_form(world: World) -> None:
    log_in(world.client, "viewer")
    html = world.client.get("/console/businesses").text
    assert 'href="/console/businesses/alpha"' in html
    assert "/console/businesses/beta" not in html
    assert (
        'method="post" action="/console/businesses"' not in html
    )  # creating is for platform admins
    # Members and usage vs quota from the overview: alpha has 3 members and a CPU quota of 10.
    body = rows(html)
    assert ">3<" in body and "0 / 10 cores" in body


def test_platform_admin_sees_all_filters_and_pages(world: World) -> None:
    for i in range(12):
        r = world.client.post(
            "/api/v1/businesses", json={"name": f"team-{i:02d}"}, headers=world.admin
        )
        assert r.status_code == 201
    log_in(world.client, "admin")
    html = world.client.get("/console/businesses").text
    assert "/console/businesses/alpha" in html and "/console/businesses/beta" in html
    assert 'method="post" action="/console/businesses"' in html

    page1 = world.client.get("/console/businesses?name=team&size=5").text
    listed = re.findall(r'href="/console/businesses/(team-\d\d)"', rows(page1))
    assert listed == ["team-00", "team-01", "team-02", "team-03", "team-04"]
    assert "alpha" not in rows(page1)
    assert "1\u20135 of 12" in page1  # the pager: "1 to 5 of 12"
    assert 'href="?name=team&amp;size=5&amp;page=2"' in page1  # the filter survives paging
    page3 = world.client.get("/console/businesses?name=team&size=5&page=3").text
    assert re.findall(r'href="/console/businesses/(team-\d\d)"', rows(page3)) == [
        "team-10",
        "team-11",
    ]


def test_platform_admin_creates_a_business_and_sees_field_errors(world: World) -> None:
    log_in(world.client, "admin")
    target = post(
        world.client,
        "/console/businesses",
        {"name": "gamma", "display_name": "Gamma team", "admins": "dev, viewer"},
    )
    assert target.startswith("/console/businesses/gamma?ok=")
    page = world.client.get(target).text
    assert "created business gamma" in page
    members = world.client.get("/api/v1/businesses/gamma/members", headers=world.admin).json()[
        "items"
    ]
    assert {(m["username"], m["role"]) for m in members} == {
        ("dev", "business-admin"),
        ("viewer", "business-admin"),
    }

    r = world.client.post("/console/businesses", data={"name": "Bad Name!"})
    assert r.status_code == 422
    assert 'class="field-error" id="err-name"' in r.text
    assert 'value="Bad Name!"' in r.text  # the form keeps what was typed


def test_creating_a_business_is_refused_to_others(world: World) -> None:
    log_in(world.client, "ba")
    target = post(world.client, "/console/businesses", {"name": "delta"})
    assert "error=" in target
    assert world.client.get("/api/v1/businesses/delta", headers=world.admin).status_code == 404


# ---------------------------------------------------------------- one business


def test_another_business_answers_404_as_the_api_does(world: World) -> None:
    log_in(world.client, "outsider")
    for path in ("", "/quotas", "/instance-configs", "/configs", "/configs/secret/x"):
        r = world.client.get(f"/console/businesses/alpha{path}")
        assert r.status_code == 404, path
        assert "business &#39;alpha&#39; not found" in r.text
    r = world.client.get("/console/businesses/beta/configs/other/x")
    assert r.status_code == 404


def test_business_admin_adds_changes_and_removes_a_member(world: World) -> None:
    log_in(world.client, "ba")
    html = world.client.get("/console/businesses/alpha").text
    assert ">dev<" in html and ">viewer<" in html
    assert 'href="/console/apps?biz=alpha"' in html

    target = post(
        world.client,
        "/console/businesses/alpha/members",
        {"username": "outsider", "role": "viewer"},
    )
    assert "ok=" in target
    assert "outsider is now viewer of alpha" in world.client.get(target).text

    post(world.client, "/console/businesses/alpha/members/outsider/role", {"role": "developer"})
    members = world.client.get("/api/v1/businesses/alpha/members", headers=world.admin).json()[
        "items"
    ]
    assert {m["username"]: m["role"] for m in members}["outsider"] == "developer"

    html = world.client.get("/console/businesses/alpha?member=outs").text
    assert 'action="/console/businesses/alpha/members/outsider/delete"' in html
    assert 'data-confirm="Remove outsider from alpha?' in html
    assert ">dev<" not in rows(html)  # the filter keeps only matching members

    target = post(world.client, "/console/businesses/alpha/members/outsider/delete", {})
    assert "removed outsider from alpha" in world.client.get(target).text
    members = world.client.get("/api/v1/businesses/alpha/members", headers=world.admin).json()[
        "items"
    ]
    assert "outsider" not in {m["username"] for m in members}

    # The API's refusal comes back as the flash: nobody of that name.
    target = post(
        world.client, "/console/businesses/alpha/members", {"username": "nobody", "role": "viewer"}
    )
    assert "user &#39;nobody&#39; not found" in world.client.get(target).text


def test_a_viewer_sees_members_without_the_forms(world: World) -> None:
    log_in(world.client, "viewer")
    html = world.client.get("/console/businesses/alpha").text
    assert ">ba<" in html
    assert (
        "/members/dev/delete" not in html
        and 'method="post" action="/console/businesses/alpha/members"' not in html
    )
    # Posting anyway is answered by the API.
    target = post(world.client, "/console/businesses/alpha/members/dev/delete", {})
    assert "error=" in target


def test_quota_page_has_one_table_per_cluster_with_every_dimension(world: World) -> None:
    log_in(world.client, "viewer")
    html = world.client.get("/console/businesses/alpha/quotas").text
    assert 'id="quota-sim-1"' in html
    for line in (
        "0 / 10 cores",
        "0 / 10240 MiB",
        "0 / 100 GiB",
        "0 / 200 GiB",
        "0 / 50 GiB",
        "0 / 1000 Mbit/s",
        "0 / 4 cards",
        "0 / 65536 MiB",
    ):
        assert line in html, line
    assert html.count('role="meter"') == 8


def test_business_admin_creates_and_deletes_an_instance_configuration(world: World) -> None:
    world.client.post(
        "/api/v1/instance-configs",
        json={"name": "small", "resources": {"cpu": 1, "memory": 1024}},
        headers=world.admin,
    )
    log_in(world.client, "ba")
    fields = {"name": "ocr", "cpu": "4", "memory": "10240", "local_disk": "4", "gpu": "2"}
    target = post(world.client, "/console/businesses/alpha/instance-configs", fields)
    assert "created instance configuration ocr" in world.client.get(target).text

    html = world.client.get("/console/businesses/alpha/instance-configs").text
    assert ">ocr<" in html and ">small<" in html  # the business's and the platform's
    assert 'action="/console/businesses/alpha/instance-configs/ocr/delete"' in html
    assert "/instance-configs/small/delete" not in html  # platform shapes are not theirs to delete
    assert "data-confirm=" in html

    r = world.client.post(
        "/console/businesses/alpha/instance-configs", data={"name": "bad", "cpu": "lots"}
    )
    assert r.status_code == 422
    assert 'id="err-cpu"' in r.text

    post(world.client, "/console/businesses/alpha/instance-configs/ocr/delete", {})
    left = world.client.get("/api/v1/businesses/alpha/instance-configs", headers=world.admin)
    assert left.json() == {"items": [], "next_cursor": None}


def test_developer_cannot_manage_instance_configurations(world: World) -> None:
    log_in(world.client, "dev")
    html = world.client.get("/console/businesses/alpha/instance-configs").text
    assert 'method="post" action="/console/businesses/alpha/instance-configs"' not in html


# ---------------------------------------------------------------- ConfigMaps and Secrets


def test_developer_creates_configs_from_rows_and_lines(world: World) -> None:
    log_in(world.client, "dev")
    target = post(
        world.client,
        "/console/businesses/alpha/configs",
        {
            "kind": "configmap",
            "name": "web",
            "key": ["LOG_LEVEL", ""],
            "value": ["debug", ""],
            "pairs": "# comment\nURL=http://x/?a=b\n\n",
        },
    )
    assert target.startswith("/console/businesses/alpha/configs/configmap/web?ok=")
    got = world.client.get("/api/v1/businesses/alpha/configmaps/web", headers=world.admin).json()
    assert got["data"] == {"LOG_LEVEL": "debug", "URL": "http://x/?a=b"}

    post(
        world.client,
        "/console/businesses/alpha/configs",
        {"kind": "secret", "name": "db", "pairs": "password=hunter2-secret"},
    )
    html = world.client.get("/console/businesses/alpha/configs").text
    assert ">web<" in html and ">db<" in html
    assert "<code>password</code>" in html and "<code>LOG_LEVEL</code>" in html
    assert "hunter2-secret" not in html

    only = world.client.get("/console/businesses/alpha/configs?kind=secret").text
    assert ">db<" in only and ">web<" not in rows(only)

    r = world.client.post(
        "/console/businesses/alpha/configs",
        data={"kind": "configmap", "name": "x", "pairs": "no equals sign"},
    )
    assert r.status_code == 422 and 'id="err-data"' in r.text and "line 1" in r.text
    r = world.client.post(
        "/console/businesses/alpha/configs", data={"kind": "configmap", "name": "Not_A_Name"}
    )
    assert r.status_code == 422 and 'id="err-name"' in r.text


def test_secret_values_stay_hidden_until_revealed_and_the_reveal_is_recorded(
    world: World,
) -> None:
    r = world.client.post(
        "/api/v1/businesses/alpha/secrets",
        json={"name": "db", "data": {"password": "hunter2-secret"}},
        headers=world.admin,
    )
    assert r.status_code == 201

    log_in(world.client, "viewer")
    html = world.client.get("/console/businesses/alpha/configs/secret/db").text
    assert "<code>password</code>" in html and "14 bytes" in html
    assert "hunter2-secret" not in html
    assert "/reveal" not in html and "/delete" not in html
    r = world.client.post(
        "/console/businesses/alpha/configs/secret/db/reveal", follow_redirects=False
    )
    assert r.status_code == 303 and "hunter2-secret" not in r.headers["location"]

    log_in(world.client, "dev")
    html = world.client.get("/console/businesses/alpha/configs/secret/db").text
    assert "hunter2-secret" not in html
    assert 'action="/console/businesses/alpha/configs/secret/db/reveal"' in html
    r = world.client.post("/console/businesses/alpha/configs/secret/db/reveal")
    assert r.status_code == 200
    assert "hunter2-secret" in r.text
    assert r.headers["cache-control"] == "no-store"
    records = world.client.get(
        "/api/v1/records", params={"action": "secret.reveal"}, headers=world.admin
    ).json()["items"]
    assert [(x["actor"], x["result"]) for x in records] == [
        ("dev", "success"),
        ("viewer", "failure"),
    ]


def test_developer_edits_and_deletes_a_config(world: World) -> None:
    world.client.post(
        "/api/v1/businesses/alpha/configmaps",
        json={"name": "web", "data": {"A": "1", "B": "2"}},
        headers=world.admin,
    )
    log_in(world.client, "dev")
    html = world.client.get("/console/businesses/alpha/configs/configmap/web").text
    assert 'name="key" value="A"' in html  # the edit form starts from the current data
    post(
        world.client,
        "/console/businesses/alpha/configs/configmap/web",
        {"description": "front", "key": ["A", ""], "value": ["10", "2"], "pairs": "C=3"},
    )
    got = world.client.get("/api/v1/businesses/alpha/configmaps/web", headers=world.admin).json()
    assert got["data"] == {"A": "10", "C": "3"} and got["description"] == "front"

    assert (
        'data-confirm="Delete ConfigMap web of alpha?'
        in world.client.get("/console/businesses/alpha/configs/configmap/web").text
    )
    target = post(world.client, "/console/businesses/alpha/configs/configmap/web/delete", {})
    assert "deleted ConfigMap web" in world.client.get(target).text
    gone = world.client.get("/api/v1/businesses/alpha/configmaps/web", headers=world.admin)
    assert gone.status_code == 404


def test_pages_render_in_simplified_chinese(world: World) -> None:
    r = world.client.patch(
        "/api/v1/users/dev", json={"language": "zh-CN"}, headers=world.users["developer"]
    )
    assert r.status_code == 200
    log_in(world.client, "dev")
    assert "成员与角色" in world.client.get("/console/businesses/alpha").text
    assert "每个集群的配额" in world.client.get("/console/businesses/alpha/quotas").text
    html = world.client.get("/console/businesses/alpha/configs").text
    assert "创建 ConfigMap 或 Secret" in html
    target = post(
        world.client,
        "/console/businesses/alpha/configs",
        {"kind": "configmap", "name": "web", "pairs": "A=1"},
    )
    assert "已创建 ConfigMap web" in world.client.get(target).text


# ---------------------------------------------------------------- the overview


def test_the_overview_lists_200_businesses_busiest_first_one_row_each(world: World) -> None:
    """Issue 20: a business with no quota filled the overview with a table of zeros, one per
    business. Now: one row per business, a dash where it has no quota, the business nearest
    its quota first, 25 to a page."""
    for i in range(200):
        r = world.client.post(
            "/api/v1/businesses", json={"name": f"t-{i:03d}"}, headers=world.admin
        )
        assert r.status_code == 201
    quota = {"cpu": 10, "memory": 10240, "gpu": 0}
    for name in ("t-007", "t-150"):
        r = world.client.put(
            f"/api/v1/businesses/{name}/quotas/sim-1", json={"hard": quota}, headers=world.admin
        )
        assert r.status_code == 200, r.text
    app = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [{"name": "v1", "image": "w:1", "resources": {"cpu": 4, "memory": 256}}],
    }
    r = world.client.post("/api/v1/businesses/t-150/apps", json=app, headers=world.admin)
    assert r.status_code == 201, r.text
    log_in(world.client, "admin")
    html = world.client.get("/console").text
    listed = re.findall(r'<a href="/console/businesses/([a-z0-9-]+)">', rows(html))
    assert len(listed) == 25
    assert listed[0] == "t-150"  # 40 % of its CPU quota held
    assert "4 / 10 cores" in rows(html)
    assert "of 202" in html  # the pager: 200 and the world's alpha and beta
    # a business without quota: dashes, not a bar of zeros
    row = re.search(r'<a href="/console/businesses/t-000">.*?</tr>', rows(html), re.S)
    assert row is not None and "\u2013" in row.group(0) and "0 / 0" not in row.group(0)


def test_the_search_box_finds_an_app_and_links_it(world: World) -> None:
    r = world.client.post(
        "/api/v1/businesses/alpha/apps",
        json={
            "name": "webshop",
            "cluster": "sim-1",
            "templates": [{"name": "v1", "image": "w:1", "resources": {"cpu": 0.1, "memory": 64}}],
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    log_in(world.client, "viewer")
    page = world.client.get("/console").text
    assert 'action="/console/search" role="search"' in page  # on every page's header
    found = world.client.get("/console/search", params={"q": "shop"}).text
    assert '<a href="/console/b/alpha/apps/webshop">webshop</a>' in found
    none = world.client.get("/console/search", params={"q": "zzzz"}).text
    assert "Nothing matches zzzz." in none
