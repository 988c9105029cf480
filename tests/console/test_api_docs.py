"""The API's docs page (Swagger UI at /api/docs) comes from the platform itself: npm's
swagger-ui-dist copied by scripts/console-assets.sh, never a CDN, so it works with no internet
(issue 20). The browser here has no internet either: every request it makes is counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import missing_component
from tests.console.conftest import Console

BUNDLE = Path(__file__).parents[2] / "gaia" / "api" / "static" / "swagger-ui-bundle.js"


def _need_swagger_ui() -> None:
    if not BUNDLE.is_file():
        missing_component("Swagger UI (npm's swagger-ui-dist)", "run scripts/console-assets.sh")


def test_the_docs_page_names_only_the_platforms_own_files(console: Console) -> None:
    _need_swagger_ui()
    page = httpx.get(f"{console.origin}/api/docs")
    assert page.status_code == 200
    assert "/api/static/swagger-ui-bundle.js" in page.text
    assert "/api/static/swagger-ui.css" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    bundle = httpx.get(f"{console.origin}/api/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


def test_swagger_ui_renders_the_api_with_no_request_elsewhere(
    console: Console, browser: Any, shots: Path
) -> None:
    _need_swagger_ui()
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda req: None if req.url.startswith(console.origin) else elsewhere.append(req.url),
    )
    page.goto(f"{console.origin}/api/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    # the platform's own operations, rendered by the bundle (not the page's text)
    page.get_by_text("/api/v1/auth/login", exact=True).first.wait_for(timeout=10_000)
    page.screenshot(path=str(shots / "api-docs.png"))
    assert elsewhere == [], elsewhere
