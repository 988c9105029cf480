#!/usr/bin/env bash
# The console's browser libraries from the npm registry (pinned by package-lock.json), copied
# into gaia/console/static/vendor. Needs node and npm (Debian: apt-get install nodejs npm).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: apt-get install nodejs npm (the console works without its libraries," >&2
  echo "without live updates and the terminal)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error >/dev/null
"${PYTHON:-.venv/bin/python}" -m gaia.console.assets node_modules
