#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (lint, types, tests).
#
#   scripts/test.sh [pytest args...]
#
# - Debian packages: PostgreSQL (the suite runs every database test on SQLite and on a real
#   PostgreSQL server that the tests start themselves).
# - Python: Gaia and its test extras into .venv at the repo root.
# In CI (CI=true) a real component that cannot be installed or started fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then need_apt+=(postgresql); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "==> missing Debian packages (${need_apt[*]}); run as root or install them" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
echo "==> installing Gaia and test dependencies into .venv"
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"

echo "==> ruff"
.venv/bin/ruff check gaia tests bench
.venv/bin/ruff format --check gaia tests bench
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
exec .venv/bin/pytest -p no:cacheprovider "$@"
