#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs every test.
#   ./scripts/test.sh                 the whole suite
#   ./scripts/test.sh tests/unit/push  any pytest arguments narrow it
#   ./scripts/test.sh -m "not server"  the fast tier, for the inner loop: no real servers
# Debian packages (browsers, WebDriver, Xvfb, HAProxy, nginx) are installed with
# apt-get when missing and running as root; Python packages go into .venv; npm
# packages (socket.io-client 4.8.1 for the browser tests) into node_modules, and the
# client package's into client/node_modules, then it is built (client/dist).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(chromium chromium-driver webkit2gtk-driver xvfb xauth haproxy nginx-light)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "!! missing Debian packages: ${missing[*]} (not root: the tests that need them skip)"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== python3 -m venv .venv"
  python3 -m venv .venv
fi
echo "== pip install -r requirements-dev.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
echo "== pip install -e ."
.venv/bin/python -m pip install -q --disable-pip-version-check -e .

if command -v npm >/dev/null; then
  echo "== npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  # The client package (client/): its dependencies, then its build, which /debug and
  # the browser tests load (client/dist, copied to static/notifications*.js).
  echo "== npm ci --prefix client && npm run build --prefix client"
  npm ci --prefix client --no-audit --no-fund --loglevel=error
  npm run build --prefix client --silent
else
  echo "!! npm not found: the browser and client package tests skip"
fi

# Known vulnerabilities in requirements.txt (scripts/audit.py: exit codes, CI policy,
# reviewed exceptions in pip-audit-ignore.txt). Its verdict counts after the tests run.
echo "== pip-audit -r requirements.txt"
audit_status=0
.venv/bin/python scripts/audit.py || audit_status=$?

echo "== ruff check"
.venv/bin/ruff check .

# The layers (pyproject.toml [tool.importlinter]): each package imports only those below.
echo "== lint-imports"
.venv/bin/lint-imports

echo "== pytest"
test_status=0
.venv/bin/python -m pytest "$@" || test_status=$?
if [ "$test_status" = 0 ] && [ "$audit_status" != 0 ]; then
  echo "!! the tests passed but the dependency audit failed (status $audit_status): see above"
  exit "$audit_status"
fi
exit "$test_status"
