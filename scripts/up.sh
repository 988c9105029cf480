#!/usr/bin/env bash
# Install Gaia into .venv and start it on its embedded default (SQLite + a simulated cluster):
#
#   scripts/up.sh [gaia up options: --port, --data-dir]
#
# The console's browser libraries (htmx, xterm.js) come from the npm registry when npm is
# present; without them the console still works, without live updates and the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e .
if command -v npm >/dev/null 2>&1; then
  scripts/console-assets.sh
else
  echo "npm not found: the console runs without htmx and the terminal (apt-get install npm)" >&2
fi
exec .venv/bin/gaia up "$@"
