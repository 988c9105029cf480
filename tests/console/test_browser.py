"""The console in a real browser (Playwright + Debian's Chromium) against a live Gaia.

The issue's journey: log in, create a business and an app from the form, watch its instances
reach Running, tick two instances and gray-upgrade them, see their version change and the events
appear, switch the language, and a viewer not seeing another business's app. Screenshots of the
main pages go to ``artifacts/screenshots``.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_PASSWORD, missing_component
from tests.console.conftest import Console

TIMEOUT_MS = 60_000


def log_in(page: Any, console: Console, username: str, password: str) -> None:
    page.goto(f"{console.origin}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/console$"))


def csp_violations(page: Any) -> list[str]:
    """What the browser reports refusing under the Content-Security-Policy (filled as the page
    runs): the console must work with its policy on, so the list must stay empty."""
    seen: list[str] = []
    page.on(
        "console",
        lambda msg: seen.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.on("pageerror", lambda exc: seen.append(f"page error: {exc}"))
    return seen


def test_log_in_see_the_overview_and_switch_language(
    console: Console, browser: Any, shots: Path
) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    violations = csp_violations(page)
    response = page.goto(f"{console.origin}/console")
    page.wait_for_url(re.compile(r".*/console/login.*"))
    # the console's policy is on: scripts from this origin only, not in a frame
    assert response is not None
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.screenshot(path=str(shots / "login.png"))
    log_in(page, console, "admin", ADMIN_PASSWORD)
    assert page.get_by_role("heading", name="Overview").is_visible()
    assert page.get_by_role("link", name="sim-1").first.is_visible()
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # switch to Simplified Chinese with the keyboard: the choice is remembered for this user
    page.get_by_label("Language").focus()
    page.get_by_label("Language").select_option("zh-CN")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="概览").is_visible()
    # a font with the Chinese glyphs, or the screenshot shows boxes (scripts/test.sh installs
    # Debian's fonts-wqy-microhei)
    cjk = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True)
    if not cjk.stdout.strip():
        missing_component("a CJK font (fc-list :lang=zh)", "apt-get install fonts-wqy-microhei")
    page.screenshot(path=str(shots / "overview-zh-CN.png"), full_page=True)
    me = console.api("GET", "/api/v1/users/admin")
    assert me["language"] == "zh-CN"
    page.reload()
    assert page.get_by_role("heading", name="概览").is_visible()
    page.get_by_label("语言").select_option("en")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Overview").is_visible()
    assert violations == []
    page.close()


QUOTA = {"cpu": 40, "memory": 81920, "local_disk": 100, "bandwidth": 1000, "gpu": 8}


def test_create_an_app_gray_upgrade_two_instances_and_see_the_events(
    console: Console, browser: Any, shots: Path
) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)

    # a business, from the form
    page.get_by_role("link", name="Businesses").click()
    page.get_by_label("Name", exact=True).last.fill("shop")
    page.get_by_label("Display name").fill("Online shop")
    page.get_by_role("button", name="Create business").click()
    page.get_by_text("Online shop").first.wait_for()
    # its quota on the cluster: the platform admin's job, done through the API here
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    page.goto(f"{console.origin}/console/businesses/shop/quotas")
    page.screenshot(path=str(shots / "business-quotas.png"), full_page=True)

    # an app, from the form
    page.goto(f"{console.origin}/console/apps/new?biz=shop")
    page.locator("#app-name").fill("web")
    page.locator("#app-cluster").select_option("sim-1")
    page.locator("#app-replicas").fill("4")
    page.locator("#app-version").fill("v1")
    page.locator("#app-image").fill("shop/web:1.0")
    page.locator("#app-cpu").fill("0.5")
    page.locator("#app-memory").fill("512")
    page.screenshot(path=str(shots / "app-create.png"), full_page=True)
    # a full-page shot of a page taller than the window leaves headless Chromium's compositor
    # at the old scroll offset while the page reports another one: a click then lands beside
    # the button it aimed at. Scrolling once puts the two back in step.
    page.evaluate("() => window.scrollTo(0, 0)")
    page.get_by_role("button", name="Create app", exact=True).click()
    page.wait_for_url(re.compile(r".*/console/b/shop/apps/web.*"))

    # its instances reach Running by themselves (the table refreshes without reloading)
    page.goto(f"{console.origin}/console/b/shop/apps/web/instances")
    page.wait_for_function(
        "() => document.querySelectorAll('td.state-Running').length === 4", timeout=TIMEOUT_MS
    )
    page.screenshot(path=str(shots / "app-instances.png"), full_page=True)

    # a second version, then tick two instances and gray-upgrade them to it
    page.goto(f"{console.origin}/console/b/shop/apps/web/upgrade")
    page.locator("#tpl-version").fill("v2")
    page.locator("#tpl-image").fill("shop/web:2.0")
    page.locator("#add-version-button").click()
    page.wait_for_load_state("networkidle")
    page.goto(f"{console.origin}/console/b/shop/apps/web/instances")
    page.get_by_label("Select instance web-0").check()
    page.get_by_label("Select instance web-2").check()
    page.get_by_label("Upgrade to version").select_option("v2")
    page.get_by_role("button", name="Gray upgrade").click()
    page.get_by_text(re.compile("Upgrade .* started")).wait_for()

    def versions() -> dict[str, str]:
        cells = page.eval_on_selector_all(
            "tr[id^=instance-]",
            "rows => rows.map(r => [r.id, r.querySelector('td.version').textContent.trim()])",
        )
        return {rid.removeprefix("instance-"): v for rid, v in cells}

    page.wait_for_function(
        "() => ['instance-0', 'instance-2'].every(id => "
        "document.querySelector('#' + id + ' td.version').textContent.trim() === 'v2')",
        timeout=TIMEOUT_MS,
    )
    assert versions() == {"0": "v2", "1": "v1", "2": "v2", "3": "v1"}
    page.screenshot(path=str(shots / "app-instances-upgraded.png"), full_page=True)
    page.goto(f"{console.origin}/console/b/shop/apps/web/upgrade")
    page.screenshot(path=str(shots / "app-upgrade.png"), full_page=True)

    # the events of the upgrade appear in the app's events tab
    page.goto(f"{console.origin}/console/b/shop/apps/web/events")
    events = page.locator("table#events")
    events.get_by_text("web-0").first.wait_for()
    reasons = page.eval_on_selector_all(
        "table#events td.reason", "cells => cells.map(c => c.textContent.trim())"
    )
    assert any(r in ("InPlaceUpgrade", "Killing", "UpgradeBatch") for r in reasons), reasons
    page.screenshot(path=str(shots / "app-events.png"), full_page=True)

    # more main pages, for the record
    for name, path in (
        ("app-overview", "/console/b/shop/apps/web"),
        ("app-monitoring", "/console/b/shop/apps/web/monitoring"),
        ("app-logs", "/console/b/shop/apps/web/logs"),
        ("app-terminal", "/console/b/shop/apps/web/terminal?instance=0"),
        ("apps", "/console/apps"),
        ("clusters", "/console/clusters"),
        ("cluster-nodes", "/console/clusters/sim-1"),
        ("records", "/console/records"),
        ("events", "/console/events"),
    ):
        page.goto(console.origin + path)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    node = console.api("GET", "/api/v1/clusters/sim-1/nodes")
    first = node["items"][0]["name"]
    page.goto(f"{console.origin}/console/clusters/sim-1/nodes/{first}")
    page.screenshot(path=str(shots / "node-gpu-topology.png"), full_page=True)
    page.close()


def test_a_viewer_does_not_see_another_business_app(
    console: Console, browser: Any, shots: Path
) -> None:
    for biz in ("shop", "bank"):
        console.api("POST", "/api/v1/businesses", json={"name": biz})
        console.api("PUT", f"/api/v1/businesses/{biz}/quotas/sim-1", json={"hard": QUOTA})
        console.api(
            "POST",
            f"/api/v1/businesses/{biz}/apps",
            json={
                "name": f"{biz}-api",
                "cluster": "sim-1",
                "replicas": 1,
                "templates": [
                    {
                        "name": "v1",
                        "image": f"{biz}/api:1",
                        "resources": {"cpu": 0.5, "memory": 256},
                    }
                ],
            },
        )
    password = console.make_user("vera", business="bank", role="viewer")
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "vera", password)
    page.get_by_role("link", name="Apps").click()
    page.get_by_role("link", name="bank-api").wait_for()
    assert page.get_by_role("link", name="shop-api").count() == 0
    page.screenshot(path=str(shots / "apps-as-viewer.png"), full_page=True)
    response = page.goto(f"{console.origin}/console/b/shop/apps/shop-api")
    assert response is not None and response.status == 404
    assert "not found" in page.locator("main").inner_text()
    page.close()


def test_the_instances_tab_pages_by_cursor_and_filters_through_the_api(
    console: Console, browser: Any, shots: Path
) -> None:
    """Issue 20: the tab shows one page of the instances API at a time (Next, Previous and
    First follow the API's cursors), filters by part of the name, status and node there, and
    shows the API's counts (every instance per status; how many the filters match)."""
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    template = {"name": "v1", "image": "shop/web:1", "resources": {"cpu": 0.1, "memory": 64}}
    console.api(
        "POST",
        "/api/v1/businesses/shop/apps",
        json={"name": "web", "cluster": "sim-1", "replicas": 45, "templates": [template]},
    )
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while console.api("GET", "/api/v1/businesses/shop/apps/web").get("ready") != 45:
        assert time.monotonic() < deadline, "45 instances did not become ready"
        time.sleep(0.5)
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)
    page.goto(f"{console.origin}/console/b/shop/apps/web/instances")

    def shown() -> list[str]:
        return [
            re.sub(r"^\d+\s+", "", name)
            for name in page.locator("#instances tbody th[scope=row]").all_inner_texts()
        ]

    def names(ids: range) -> list[str]:
        return [f"web-{i}" for i in ids]

    assert page.locator("#f-status option:checked").inner_text() == "All (45)"
    page.locator("#f-size").select_option("20")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*size=20.*"))
    assert shown() == names(range(20))
    assert "20 of 45 instances shown" in page.locator("nav.pager").inner_text()
    pager = page.locator("nav.pager")
    pager.get_by_role("link", name="Next").click()
    page.wait_for_url(re.compile(r".*cursor=.*"))
    assert shown() == names(range(20, 40))
    pager.get_by_role("link", name="Next").click()
    page.wait_for_function("() => document.querySelectorAll('#instances tbody tr').length === 5")
    assert shown() == names(range(40, 45))
    assert pager.get_by_role("link", name="Next").count() == 0  # the last page
    pager.get_by_role("link", name="Previous").click()
    page.wait_for_function("() => document.querySelectorAll('#instances tbody tr').length === 20")
    assert shown() == names(range(20, 40))
    pager.get_by_role("link", name="First").click()
    page.wait_for_url(re.compile(r"^(?!.*cursor=).*size=20.*$"))
    assert shown() == names(range(20))
    assert pager.get_by_role("link", name="Previous").count() == 0  # page one

    # part of the name, with a status: web-1 and web-10 to web-19
    page.get_by_label("Instance", exact=True).fill("web-1")
    page.locator("#f-status").select_option("Running")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*name=web-1.*"))
    assert shown() == ["web-1", *names(range(10, 20))]
    assert "11 match the filters" in page.locator("#instances-count").inner_text()
    page.screenshot(path=str(shots / "app-instances-filtered.png"), full_page=True)
    # part of a node's name: only that node's instances
    node = page.locator("#instance-1 td a[href*='/nodes/']").inner_text()
    page.get_by_label("Instance", exact=True).fill("")
    page.get_by_label("Node", exact=True).fill(node)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*node=sim.*"))
    nodes = page.locator("#instances tbody td a[href*='/nodes/']").all_inner_texts()
    assert "web-1" in shown() and nodes and all(node in n for n in nodes)
    page.close()


def test_the_terminal_runs_commands_and_logs_follow_live(
    console: Console, browser: Any, shots: Path
) -> None:
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    console.api(
        "POST",
        "/api/v1/businesses/shop/apps",
        json={
            "name": "web",
            "cluster": "sim-1",
            "replicas": 1,
            "templates": [{"name": "v1", "image": "shop/web:1", "resources": {"cpu": 0.5}}],
        },
    )
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    violations = csp_violations(page)  # xterm.js, the WebSocket and EventSource under the CSP
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)
    page.goto(f"{console.origin}/console/b/shop/apps/web/instances")
    page.wait_for_function("() => document.querySelectorAll('td.state-Running').length === 1")

    # the web terminal: a shell over a WebSocket, typed into with the keyboard (xterm.js)
    page.goto(f"{console.origin}/console/b/shop/apps/web/terminal?instance=0")
    page.locator("#terminal").click()
    # keys typed before the shell is ready are dropped: wait for its prompt first
    page.wait_for_function("() => document.querySelector('#terminal').innerText.includes('web-0')")
    page.keyboard.type("hostname")
    page.keyboard.press("Enter")
    # the prompt, the output (the instance's hostname) and the next prompt
    page.wait_for_function(
        "() => document.querySelector('#terminal').innerText.split('web-0').length > 3"
    )
    page.screenshot(path=str(shots / "app-terminal-session.png"))
    records = console.api(
        "GET", "/api/v1/records", params={"action": "app.instance.exec", "business": "shop"}
    )["items"]
    assert any("hostname" in r["summary"] for r in records), records

    # logs in follow mode: new lines arrive without reloading the page
    page.goto(f"{console.origin}/console/b/shop/apps/web/logs")
    page.get_by_role("button", name="Follow new lines").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#follow-lines tr').length > 0", timeout=TIMEOUT_MS
    )
    page.screenshot(path=str(shots / "app-logs-follow.png"))
    assert violations == []
    page.close()


def test_a_build_record_streams_its_log_live_and_shows_the_failure_when_it_ends(
    console: Console, browser: Any, shots: Path
) -> None:
    """The runner's part is played through the store (lines appended, the run finished), as the
    runner loop writes them; the page must show the lines without a reload and, when the run
    ends, reload itself with the failure first."""
    from gaia.store import pipelines as store
    from gaia.store.models import PipelineRun

    console.api("POST", "/api/v1/businesses", json={"name": "ci"})
    console.api(
        "POST",
        "/api/v1/businesses/ci/pipelines",
        json={"name": "web", "git_url": "https://git.example.com/ci/web.git"},
    )
    console.api("POST", "/api/v1/businesses/ci/pipelines/web/runs")
    db = console.platform.db
    with db.write_session() as session:
        run = session.query(PipelineRun).filter_by(number=1).one()
        run.state = "running"
        run_id = run.id
        store.append_logs(session, run_id=run_id, lines=[("clone", "Cloning into src")])

    page = browser.new_page(viewport={"width": 1366, "height": 800})
    violations = csp_violations(page)  # the EventSource under the CSP
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)
    page.goto(f"{console.origin}/console/b/ci/pipelines/web/runs/1")
    page.wait_for_function(
        "() => document.querySelector('#follow-status').textContent.startsWith('Live')"
    )
    with db.write_session() as session:
        store.append_logs(
            session, run_id=run_id, lines=[("build", "STEP 2/3: RUN make test"), ("build", "boom")]
        )
    page.wait_for_function(
        "() => document.querySelector('#build-lines').innerText.includes('boom')"
    )
    assert page.locator("#build-lines tr").count() == 3
    with db.write_session() as session:
        store.finish_run(
            session,
            run_id=run_id,
            state="failed",
            steps=[{"name": "build", "state": "failed", "duration": 2.0, "exit_code": 2}],
            failure={"step": "build", "instruction": "RUN make test", "line": 3, "reason": "boom"},
            commit="",
            image="",
            digest="",
        )
    # the end event reloads the page: the failure comes first, and nothing follows any more
    page.wait_for_selector("section.failure", timeout=TIMEOUT_MS)
    assert "Dockerfile line 3" in page.locator("section.failure").inner_text()
    assert page.locator("[data-build-follow]").count() == 0
    page.screenshot(path=str(shots / "pipeline-run-failed.png"), full_page=True)
    page.goto(f"{console.origin}/console/pipelines")
    page.screenshot(path=str(shots / "pipelines.png"), full_page=True)
    assert violations == []
    page.close()


def test_an_admin_sees_the_pools_and_an_app_network_and_changes_its_mode(
    console: Console, browser: Any, shots: Path
) -> None:
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    console.api(
        "POST",
        "/api/v1/clusters/sim-1/ip-pools",
        json={"name": "rack-a", "subnet": "10.9.0.0/24", "zone": "ap-shanghai-2"},
    )
    console.api(
        "POST",
        "/api/v1/businesses/shop/apps",
        json={
            "name": "web",
            "cluster": "sim-1",
            "replicas": 2,
            "templates": [
                {
                    "name": "v1",
                    "image": "shop/web:1",
                    "resources": {"cpu": 0.5, "memory": 256, "bandwidth": 100},
                    "network_mode": "floating-ip",
                    "ip_release": "app",
                }
            ],
        },
    )
    console.api(
        "POST",
        "/api/v1/clusters/sim-1/nodes",
        json={"name": "rack-a-1", "cpu": 8, "memory_mib": 16384,
              "labels": {"gaia.io/subnet": "10.9.0.0_24"}},
    )  # fmt: skip
    token = console.api("GET", "/api/v1/clusters/sim-1/ipam/token")["token"]
    for pod in ("web-0", "web-1"):  # as each node's gaia-cni would
        console.api(
            "POST",
            "/api/v1/clusters/sim-1/ipam/add",
            token=token,
            json={"namespace": "shop", "pod": pod, "container_id": f"c-{pod}", "node": "n1",
                  "mode": "floating-ip", "subnet": "10.9.0.0/24"},
        )  # fmt: skip
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    violations = csp_violations(page)
    log_in(page, console, "admin", ADMIN_PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Network").click()
    page.wait_for_url(re.compile(r".*/console/network$"))
    row = page.locator("#pool-sim-1-rack-a")
    assert row.locator(".used").inner_text() == "2"
    assert "rack-a" in page.locator(".node-pools tr", has_text="rack-a-1").inner_text()
    page.screenshot(path=str(shots / "network-pools.png"), full_page=True)
    page.goto(f"{console.origin}/console/b/shop/apps/web/network")
    assert page.locator("#network-mode").inner_text() == "floating-ip"
    assert page.locator("#network-release").inner_text() == "app"
    assert "100 Mbit/s" in page.locator("#network-instances").inner_text()
    assert "10.9.0." in page.locator("#net-0").inner_text()
    page.screenshot(path=str(shots / "app-network.png"), full_page=True)
    page.get_by_label("Mode").select_option("nat")
    page.get_by_label("Release policy").select_option("")
    page.get_by_role("button", name="Save network").click()
    page.locator(".flash").filter(has_text="v1-nat").wait_for()
    assert page.locator("#network-mode").inner_text() == "nat"
    assert violations == []
    page.close()


def test_a_user_creates_an_api_token_sees_it_once_and_revokes_it(
    console: Console, browser: Any, shots: Path
) -> None:
    password = console.make_user("tina")
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    violations = csp_violations(page)
    log_in(page, console, "tina", password)
    page.get_by_role("link", name="tina").click()  # the name in the header is the account link
    page.get_by_role("heading", name="Your account").wait_for()
    page.get_by_label("Token name").fill("deploy-bot")
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("shown only this once").wait_for()
    token = page.locator("#new-token code").inner_text()
    assert token and console.api("GET", "/api/v1/users/me", token=token)["username"] == "tina"
    page.screenshot(path=str(shots / "account-token-created.png"), full_page=True)
    page.get_by_role("link", name="Back to your account").click()
    page.get_by_role("heading", name="API tokens").wait_for()
    assert token not in page.content()
    page.get_by_role("button", name="Revoke token deploy-bot").click()
    page.get_by_text("Token revoked.").wait_for()
    assert page.locator("#tokens").get_by_text("revoked").is_visible()
    page.screenshot(path=str(shots / "account.png"), full_page=True)
    assert violations == []


def test_alert_records_show_notifications_and_a_record_is_silenced(
    console: Console, browser: Any, shots: Path
) -> None:
    """The evaluator's part is played through the store (a firing record, its notifications), as
    the evaluator and the notifier write them; from the list to the record, then a silence."""
    from tests.console.test_alerts import seed_record

    console.api("POST", "/api/v1/businesses", json={"name": "alpha"})
    record = seed_record(console.platform)
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    violations = csp_violations(page)
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Alerts", exact=True).first.click()
    page.wait_for_url(re.compile(r".*/console/alerts$"))
    row = page.locator(f"#alert-{record}")
    assert "firing" in row.inner_text() and "critical" in row.inner_text()
    page.screenshot(path=str(shots / "alerts.png"), full_page=True)
    page.get_by_label("Status").select_option("resolved")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*status=resolved.*"))
    assert page.locator(f"#alert-{record}").count() == 0
    page.goto(f"{console.origin}/console/alerts")
    page.get_by_role("link", name="web-cpu-high").click()
    page.wait_for_url(re.compile(rf".*/console/alerts/{record}$"))
    notifications = page.locator("table.notifications").inner_text()
    assert "250 2.0.0 queued as ABC123" in notifications and "gateway timeout" in notifications
    page.screenshot(path=str(shots / "alert-record.png"), full_page=True)
    page.get_by_label("For (hours)").fill("2")
    page.get_by_label("Comment").fill("deploying")
    page.get_by_role("button", name="Silence").click()
    page.wait_for_url(re.compile(r".*ok=.*"))
    assert "silenced until" in page.locator(".flash").inner_text()
    (silence,) = console.api("GET", "/api/v1/alerts/silences")["items"]
    assert silence["comment"] == "deploying" and silence["matchers"]["app"] == "web"
    assert violations == []
    page.close()


def test_a_receiver_and_a_group_are_edited_from_their_page(
    console: Console, browser: Any, shots: Path
) -> None:
    console.api("POST", "/api/v1/businesses", json={"name": "alpha"})
    for name in ("oncall", "backup"):
        console.api(
            "POST",
            "/api/v1/alerts/receivers",
            json={"business": "alpha", "name": name, "email": f"{name}@example.com"},
        )
    receivers = {r["name"]: r for r in console.api("GET", "/api/v1/alerts/receivers")["items"]}
    console.api(
        "POST",
        "/api/v1/alerts/receiver-groups",
        json={"business": "alpha", "name": "sre", "receiver_ids": [receivers["oncall"]["id"]]},
    )
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    violations = csp_violations(page)
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)
    page.goto(f"{console.origin}/console/alerts/receivers")

    page.get_by_role("link", name="Edit receiver oncall").click()
    form = page.locator("#receiver-edit-form")
    form.get_by_label("Email").fill("not-an-address")  # refused: the API's message on the field
    form.get_by_role("button", name="Save receiver").click()
    page.locator("#err-edit_email").wait_for()
    assert (
        page.locator("#receiver-edit-form").get_by_label("Email").input_value() == "not-an-address"
    )
    page.locator("#receiver-edit-form").get_by_label("Email").fill("pager@example.com")
    page.locator("#receiver-edit-form").get_by_role("button", name="Save receiver").click()
    page.wait_for_url(re.compile(r".*ok=.*"))
    assert (
        "pager@example.com" in page.locator(f"#receiver-{receivers['oncall']['id']}").inner_text()
    )

    page.get_by_role("link", name="Edit group sre").click()
    form = page.locator("#group-edit-form")
    form.get_by_label("Name").fill("sre-day")
    form.get_by_role("checkbox", name="oncall").uncheck()
    form.get_by_role("checkbox", name="backup").check()
    page.screenshot(path=str(shots / "alert-group-edit.png"), full_page=True)
    form.get_by_role("button", name="Save group").click()
    page.wait_for_url(re.compile(r".*ok=.*"))
    (group,) = console.api("GET", "/api/v1/alerts/receiver-groups")["items"]
    assert group["name"] == "sre-day" and group["receiver_ids"] == [receivers["backup"]["id"]]
    assert "backup" in page.locator(f"#group-{group['id']}").inner_text()
    assert violations == []
    page.close()
