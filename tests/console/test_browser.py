"""The console in a real browser (Playwright + Debian's Chromium) against a live Gaia.

The issue's journey: log in, create a business and an app from the form, watch its instances
reach Running, tick two instances and gray-upgrade them, see their version change and the events
appear, switch the language, and a viewer not seeing another business's app. Screenshots of the
main pages go to ``artifacts/screenshots``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_PASSWORD
from tests.console.conftest import Console

TIMEOUT_MS = 60_000


def log_in(page: Any, console: Console, username: str, password: str) -> None:
    page.goto(f"{console.origin}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/console$"))


def test_log_in_see_the_overview_and_switch_language(
    console: Console, browser: Any, shots: Path
) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.goto(f"{console.origin}/console")
    page.wait_for_url(re.compile(r".*/console/login.*"))
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
    page.screenshot(path=str(shots / "overview-zh-CN.png"), full_page=True)
    me = console.api("GET", "/api/v1/users/admin")
    assert me["language"] == "zh-CN"
    page.reload()
    assert page.get_by_role("heading", name="概览").is_visible()
    page.get_by_label("语言").select_option("en")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Overview").is_visible()
    page.close()
