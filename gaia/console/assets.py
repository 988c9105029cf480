"""The console's browser libraries: copied from ``node_modules`` (installed from the npm registry
by ``scripts/console-assets.sh``, pinned by ``package-lock.json``) into ``static/vendor``.

Nothing third-party is committed. The pages work without these files (they are server-rendered
and every action is a plain form), so a console started before the copy still works; the
libraries add partial updates (htmx), live streams (htmx's SSE extension) and the terminal
(xterm.js). Swagger UI's files go to ``gaia/api/static`` for the API's docs page.

    python -m gaia.console.assets [node_modules dir]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
# the API's docs page (Swagger UI at /api/docs) is the API's own: its files go beside it
API_STATIC = Path(__file__).parent.parent / "api" / "static"

# node_modules path -> file name under static/vendor
FILES = {
    "htmx.org/dist/htmx.min.js": "htmx.min.js",
    "htmx-ext-sse/dist/sse.min.js": "htmx-sse.min.js",
    "@xterm/xterm/lib/xterm.js": "xterm.js",
    "@xterm/xterm/css/xterm.css": "xterm.css",
    "@xterm/addon-fit/lib/addon-fit.js": "xterm-addon-fit.js",
}
API_FILES = {
    "swagger-ui-dist/swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css": "swagger-ui.css",
    "swagger-ui-dist/favicon-32x32.png": "favicon-32x32.png",
}


def installed() -> set[str]:
    """The vendor files present (templates include a library only when it is there)."""
    return {name for name in FILES.values() if (VENDOR / name).is_file()}


def copy(node_modules: Path) -> list[str]:
    missing = [src for src in (*FILES, *API_FILES) if not (node_modules / src).is_file()]
    if missing:
        raise SystemExit(
            f"missing in {node_modules}: {', '.join(missing)}; run `npm ci` at the repository root"
        )
    VENDOR.mkdir(parents=True, exist_ok=True)
    for src, name in FILES.items():
        shutil.copyfile(node_modules / src, VENDOR / name)
    API_STATIC.mkdir(parents=True, exist_ok=True)
    for src, name in API_FILES.items():
        shutil.copyfile(node_modules / src, API_STATIC / name)
    return sorted([*FILES.values(), *API_FILES.values()])


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "node_modules"
    print("console assets:", ", ".join(copy(root)))


if __name__ == "__main__":
    main()
