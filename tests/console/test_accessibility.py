"""Accessibility of the console's main pages (issue 20): axe-core (npm's, pinned in
package.json; installed by scripts/console-assets.sh's `npm ci`) runs in Debian's Chromium on
each page; no violation of impact "serious" or "critical" is allowed, and every page's title
is text. Pages are visited as a
platform admin with a business, an app with instances and a pipeline, so that tables, forms and
actions are on screen, in both languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, missing_component
from tests.console.conftest import Console
from tests.console.test_alerts import seed_record
from tests.console.test_browser import log_in

AXE = Path(__file__).parents[2] / "node_modules" / "axe-core" / "axe.min.js"
QUOTA = {"cpu": 40, "memory": 81920, "local_disk": 100, "bandwidth": 1000, "gpu": 8}
PAGES = [
    "/console/login",
    "/console",
    "/console/clusters",
    "/console/clusters/sim-1",
    "/console/businesses",
    "/console/businesses/shop/quotas",
    "/console/apps?biz=shop",
    "/console/apps/new?biz=shop",
    "/console/b/shop/apps/web",
    "/console/b/shop/apps/web/instances",
    "/console/b/shop/apps/web/upgrade",
    "/console/b/shop/apps/web/yaml",
    "/console/b/shop/apps/web/events",
    "/console/pipelines?biz=shop",
    "/console/registry",
    "/console/backups",
    "/console/records",
    "/console/search?q=web",
    "/console/components",
    "/console/alerts",
    "/console/alerts/policies",
    "/console/alerts/policies/new",
    "/console/alerts/channels",
    "/console/alerts/receivers?edit_receiver=1&edit_group=1",
    "/console/alerts/silences",
]


def _violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
            }));
        }"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_main_pages_have_no_serious_accessibility_violation(
    console: Console, browser: Any, language: str
) -> None:
    if not AXE.is_file():
        missing_component("axe-core (npm)", "run scripts/console-assets.sh (npm ci)")
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    template = {"name": "v1", "image": "shop/web:1", "resources": {"cpu": 0.5, "memory": 256}}
    app = {"name": "web", "cluster": "sim-1", "templates": [template], "replicas": 2}
    console.api("POST", "/api/v1/businesses/shop/apps", json=app)
    # the alerting pages with rows and forms: a receiver and a group (both id 1, edited on the
    # receivers page) and a record with its notifications (as the evaluator writes them)
    receiver = {"business": "shop", "name": "oncall", "email": "oncall@example.com"}
    console.api("POST", "/api/v1/alerts/receivers", json=receiver)
    group = {"business": "shop", "name": "sre", "receiver_ids": [1]}
    console.api("POST", "/api/v1/alerts/receiver-groups", json=group)
    record = seed_record(console.platform, business="shop")
    # axe is injected as a script of the test's: the console's policy (scripts from its origin
    # only) is bypassed for it, and for nothing the pages do themselves
    context = browser.new_context(bypass_csp=True, viewport={"width": 1366, "height": 800})
    page = context.new_page()
    log_in(page, console, "admin", ADMIN_PASSWORD)
    console.api("PATCH", "/api/v1/users/admin", json={"language": language})
    report: dict[str, list[dict[str, Any]]] = {}
    for path in [*PAGES, f"/console/alerts/{record}"]:
        if path == "/console/login":
            other = browser.new_context(bypass_csp=True).new_page()
            other.goto(f"{console.origin}{path}")
            found = _violations(other)
            other.context.close()
        else:
            response = page.goto(f"{console.origin}{path}")
            assert response is not None and response.ok, (path, response and response.status)
            page.wait_for_load_state("networkidle")
            # a title of text only (the upgrade page's once held its form's HTML)
            assert "<" not in page.title() and page.title().endswith("· Gaia"), page.title()
            found = _violations(page)
        if found:
            report[path] = found
    context.close()
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)
