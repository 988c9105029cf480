"""Every main action of the apps pages is reachable by keyboard alone (issue 20).

A user who does not use a mouse logs in, opens the app from the apps list, ticks an instance and
gray-upgrades it, scales the app out and stops it, with nothing but Tab, Space and Enter (the
address bar aside; a confirmation dialog is accepted as Enter would). Each element reached must
show where the focus is (the ``:focus-visible`` outline), and what the action did is checked
through the API.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import ADMIN_PASSWORD
from tests.console.conftest import Console
from tests.console.test_browser import QUOTA, TIMEOUT_MS

# enough for the header, the tabs and a table of a few rows; a page needing more is a finding
MAX_TABS = 120

FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const label = e.getAttribute('aria-label') || (e.labels && e.labels[0] && e.labels[0].innerText)
    || e.innerText || e.value || '';
  const style = getComputedStyle(e);
  return {tag: e.tagName.toLowerCase(), name: label.trim(), id: e.id,
          outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0};
}"""


def tab_to(page: Any, name: str | re.Pattern[str], *, tag: str = "") -> dict[str, Any]:
    """Press Tab until the focused element's accessible name is ``name`` (and its tag ``tag``,
    if given); fails after ``MAX_TABS`` presses. Returns what has the focus."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused is None:
            continue
        hit = (
            focused["name"] == name
            if isinstance(name, str)
            else re.fullmatch(name, focused["name"]) is not None
        )
        if hit and (not tag or focused["tag"] == tag):
            assert focused["outline"], f"{name!r} has the focus but shows no focus outline"
            return dict(focused)
    raise AssertionError(f"{name!r} not reached in {MAX_TABS} Tab presses on {page.url}")


def test_the_apps_pages_main_actions_are_reachable_by_keyboard(
    console: Console, browser: Any
) -> None:
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    versions = [
        {"name": v, "image": f"shop/web:{v}", "resources": {"cpu": 0.5}} for v in ("v1", "v2")
    ]
    console.api(
        "POST",
        "/api/v1/businesses/shop/apps",
        json={"name": "web", "cluster": "sim-1", "replicas": 2, "templates": versions},
    )
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)

    page.goto(f"{console.origin}/console/login")
    tab_to(page, "Username", tag="input")
    page.keyboard.type("admin")
    tab_to(page, "Password", tag="input")
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/console$"))

    page.goto(f"{console.origin}/console/apps?biz=shop")
    tab_to(page, "web", tag="a")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/console/b/shop/apps/web$"))
    tab_to(page, re.compile(r"Instances.*"), tag="a")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/console/b/shop/apps/web/instances$"))
    page.wait_for_function("() => document.querySelectorAll('td.state-Running').length === 2")

    # tick web-0 with Space, then Gray upgrade (to the last version, the default) with Enter
    tab_to(page, "Select instance web-0", tag="input")
    page.keyboard.press("Space")
    assert page.get_by_label("Select instance web-0").is_checked()
    tab_to(page, "Gray upgrade", tag="button")
    page.keyboard.press("Enter")
    page.get_by_text(re.compile("Upgrade .* started")).wait_for()
    upgrade = console.api("GET", "/api/v1/businesses/shop/apps/web")["upgrade"]
    assert upgrade is not None and upgrade["target"] == "v2", upgrade

    # scale out by one: the count is already 1; Enter on the button
    page.goto(f"{console.origin}/console/b/shop/apps/web/instances")
    tab_to(page, "Scale out", tag="button")
    page.keyboard.press("Enter")
    page.wait_for_load_state("load")  # may return before the form's navigation has begun
    waited_ms = 0
    while console.api("GET", "/api/v1/businesses/shop/apps/web")["replicas"] != 3:
        assert waited_ms < TIMEOUT_MS, "the app was not scaled out"
        page.wait_for_timeout(250)
        waited_ms += 250

    # stop the app: the confirmation is accepted as a keyboard user's Enter would
    page.goto(f"{console.origin}/console/b/shop/apps/web/instances")
    page.once("dialog", lambda dialog: dialog.accept())
    tab_to(page, "Stop app", tag="button")
    page.keyboard.press("Enter")
    page.wait_for_load_state("load")
    deadline_ms = 0
    while console.api("GET", "/api/v1/businesses/shop/apps/web")["state"] != "stopped":
        assert deadline_ms < TIMEOUT_MS, "the app did not stop"
        page.wait_for_timeout(250)
        deadline_ms += 250
    page.close()
