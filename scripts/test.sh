#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (lint, types, tests).
#
#   scripts/test.sh [pytest args...]
#
# - Debian packages: PostgreSQL (the suite runs every database test on SQLite and on a real
#   PostgreSQL server that the tests start themselves); kubectl (kubernetes-client) when none is
#   on PATH; containerd, runc, containernetworking-plugins, docker-registry and busybox-static
#   for the real worker node (a kubelet running real containers, tests/support/node.py);
#   skopeo, which copies images through the P2P agent (tests/node/p2p); buildah and git for the
#   build executor (tests/delivery: clone, build with a layer cache, push), and a user
#   gaia-build with subordinate ids for its rootless builds.
# - The Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#   KWOK, and the kubelet of the real node) built from pinned Go modules by
#   scripts/build-control-plane.sh into ~/.cache (minutes the first time, nothing the next).
# - Debian's Prometheus (promtool checks the exported alert rules; a real Prometheus scrapes
#   /metrics) and Alertmanager (posts to the platform's webhook receiver).
# - Debian's Chromium, driven by Playwright (never a downloaded browser) for the console tests;
#   the console's browser libraries from the npm registry (scripts/console-assets.sh).
# - Python: Gaia and its test extras into .venv at the repo root.
# In CI (CI=true) a real component that cannot be installed or started fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then need_apt+=(postgresql); fi
if ! command -v kubectl >/dev/null 2>&1; then need_apt+=(kubernetes-client); fi
if ! command -v npm >/dev/null 2>&1; then need_apt+=(nodejs npm); fi
# the real test node (tests/support/node.py): container runtime, CNI plugins, image registry and
# the static busybox the test images are made of; HAProxy and dnsmasq for the access layer; a
# CJK font so that the browser tests render (and screenshot) the Chinese console
# mmdebstrap makes the Debian root file system of Gaia's own image (scripts/build-image.sh)
for pkg in containerd runc containernetworking-plugins iptables docker-registry busybox-static skopeo buildah git iproute2 iperf3 haproxy dnsmasq-base fonts-wqy-microhei \
  prometheus prometheus-alertmanager chromium mmdebstrap; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    need_apt+=("$pkg")
  fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "==> missing Debian packages (${need_apt[*]}); run as root or install them" >&2
  fi
fi

# the unprivileged user the build executor's rootless test builds as (BuildTools.run_as): a
# system user with subordinate uid and gid ranges for buildah's user namespace
if [ "$(id -u)" = 0 ] && ! id gaia-build >/dev/null 2>&1; then
  echo "==> adding the user gaia-build (rootless builds, tests/delivery)"
  useradd --system --no-create-home --shell /usr/sbin/nologin gaia-build
  usermod --add-subuids 300000-365535 --add-subgids 300000-365535 gaia-build
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
echo "==> installing Gaia and test dependencies into .venv"
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"

echo "==> console assets from npm (scripts/console-assets.sh)"
scripts/console-assets.sh

echo "==> Kubernetes control plane (scripts/build-control-plane.sh)"
if command -v go >/dev/null 2>&1; then
  scripts/build-control-plane.sh >/dev/null
elif [ "${CI:-}" = "true" ]; then
  echo "no Go toolchain: the Kubernetes tests need scripts/build-control-plane.sh" >&2
  exit 1
else
  echo "    no Go toolchain: the Kubernetes tests will be skipped" >&2
fi

echo "==> ruff"
.venv/bin/ruff check gaia tests bench
.venv/bin/ruff format --check gaia tests bench
echo "==> mypy"
.venv/bin/mypy
echo "==> import contracts (lint-imports; the layers in pyproject.toml, docs/architecture.md)"
.venv/bin/lint-imports --no-cache
echo "==> pytest"
exec .venv/bin/pytest -p no:cacheprovider "$@"
