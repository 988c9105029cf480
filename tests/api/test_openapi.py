"""The public API does not change by accident: the OpenAPI document is compared with the one
committed in ``tests/api/openapi.json`` (paths, methods, parameters, schemas, status codes,
operation ids), apart from descriptions, which are prose.

An intended change of the API regenerates the snapshot in the same commit, so the diff shows it:
``GAIA_UPDATE_OPENAPI=1 .venv/bin/pytest tests/api/test_openapi.py``.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from gaia.app import Platform, create_app

SNAPSHOT = Path(__file__).with_name("openapi.json")


def without_descriptions(node: Any) -> Any:
    """The document less its prose: a string under a ``description`` key goes (a property that
    is *named* description is a schema, a dict, and stays)."""
    if isinstance(node, dict):
        return {
            key: without_descriptions(value)
            for key, value in node.items()
            if not (key == "description" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [without_descriptions(item) for item in node]
    return node


def test_openapi_document_matches_the_snapshot(platform: Platform) -> None:
    document = create_app(platform, run_loops=False).openapi()
    if os.environ.get("GAIA_UPDATE_OPENAPI") == "1":
        SNAPSHOT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    got, want = without_descriptions(document), without_descriptions(expected)
    if got != want:
        diff = difflib.unified_diff(
            json.dumps(want, indent=1, sort_keys=True).splitlines(),
            json.dumps(got, indent=1, sort_keys=True).splitlines(),
            "tests/api/openapi.json",
            "the app's /api/openapi.json",
            lineterm="",
            n=2,
        )
        raise AssertionError("the API changed:\n" + "\n".join(list(diff)[:200]))


def test_without_descriptions_keeps_a_property_named_description() -> None:
    schema = {
        "description": "prose",
        "properties": {"description": {"type": "string", "description": "more prose"}},
    }
    assert without_descriptions(schema) == {"properties": {"description": {"type": "string"}}}
