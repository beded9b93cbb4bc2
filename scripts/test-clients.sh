#!/usr/bin/env bash
# Runs the client-side suites: the JS SDK (unit + against the real binary),
# the demo board in real Chromium, and the Python producers. Installs what a
# fresh Debian machine lacks (needs root for apt); idempotent.
#
#   scripts/test-clients.sh            # everything
#   SKIP_BROWSER=1 scripts/test-clients.sh
#
# Every suite runs even when an earlier one fails; the exit status is non-zero
# if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export DEBIAN_FRONTEND=noninteractive
PYTHON=${PYTHON:-/usr/bin/python3} # apt's python3-* packages live here, not in a pyenv/venv python

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || [ -n "${SKIP_BROWSER:-}" ] || need+=(chromium)
# The fallback proof runs the demo through a real nginx without WebSocket.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || [ -n "${SKIP_BROWSER:-}" ] || need+=(nginx)
[ -x "$PYTHON" ] || need+=(python3)
if [ -x "$PYTHON" ]; then
  "$PYTHON" -c 'import redis' 2>/dev/null || need+=(python3-redis)
  "$PYTHON" -c 'import channels, django' 2>/dev/null || need+=(python3-django-channels)
else
  need+=(python3-redis python3-django-channels)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need[*]}: run as root, or apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -d clients/js/node_modules/ws ] || [ ! -d clients/js/node_modules/playwright-core ] ||
  [ clients/js/package-lock.json -nt clients/js/node_modules/.package-lock.json ]; then
  (cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# One build for all suites (each would otherwise build its own).
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
echo "building notifybridge"
go build -o "$bindir/notifybridge" .
export NOTIFYBRIDGE_BIN="$bindir/notifybridge"

failed=()
run() {
  local name=$1
  shift
  echo "=== $name"
  # Bounded: a hung suite must not eat CI's time; the harnesses kill their own children.
  if ! timeout --kill-after=10s 600s "$@"; then
    failed+=("$name")
  fi
}

run "js sdk (unit + real binary)" bash -c "cd '$root/clients/js' && node --test --test-concurrency=1 test/unit.test.js test/types.test.js test/integration.test.js test/transports.test.js test/control.test.js"
if [ -z "${SKIP_BROWSER:-}" ]; then
  run "demo in chromium (direct, and through nginx without websocket)" bash -c "cd '$root/clients/js' && node --test --test-concurrency=1 test/browser.test.js test/fallback.test.js test/control.browser.test.js"
fi
run "python producers" bash -c "cd '$root/examples/python' && '$PYTHON' -m unittest -v"

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "client suites: all passed"
