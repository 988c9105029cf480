"""Role-aware pages in the browser (issue 20): a viewer's app pages hold no write control at
all (no form that posts, no selection boxes, no terminal tab); a developer's hold the app's
actions, and no quota editing. The header's language and logout forms are everyone's."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import Console
from tests.console.test_browser import log_in

QUOTA = {"cpu": 40, "memory": 81920, "local_disk": 100, "bandwidth": 1000, "gpu": 8}
HEADER_FORMS = ("/console/language", "/console/logout")


def _posting_forms(page: Any) -> list[str]:
    actions: list[str] = page.eval_on_selector_all(
        "form[method=post]", "forms => forms.map(f => f.getAttribute('action'))"
    )
    return [a for a in actions if a not in HEADER_FORMS]


def test_a_viewer_sees_no_write_control_and_a_developer_no_quota_editing(
    console: Console, browser: Any
) -> None:
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    template = {"name": "v1", "image": "shop/web:1", "resources": {"cpu": 0.5, "memory": 256}}
    app = {"name": "web", "cluster": "sim-1", "templates": [template], "replicas": 2}
    console.api("POST", "/api/v1/businesses/shop/apps", json=app)
    viewer = console.make_user("ann", business="shop", role="viewer")
    developer = console.make_user("dan", business="shop", role="developer")
    base = f"{console.origin}/console/b/shop/apps/web"
    pages = ("", "/instances", "/upgrade", "/terminal")

    page = browser.new_page()
    log_in(page, console, "ann", viewer)
    for path in pages:
        page.goto(base + path)
        assert _posting_forms(page) == [], path
        assert page.locator("input[type=checkbox][name=ids]").count() == 0, path
        assert page.get_by_role("link", name="Terminal").count() == 0, path
    page.goto(f"{console.origin}/console/businesses/shop/quotas")
    assert _posting_forms(page) == []
    page.close()

    page = browser.new_page()
    log_in(page, console, "dan", developer)
    page.goto(base + "/instances")
    assert page.get_by_role("button", name="Gray upgrade").is_visible()
    assert page.locator("input[type=checkbox][name=ids]").count() == 2
    assert page.get_by_role("link", name="Terminal").count() == 1
    page.goto(f"{console.origin}/console/businesses/shop/quotas")
    assert _posting_forms(page) == []  # quotas are the platform admins'
    page.close()
