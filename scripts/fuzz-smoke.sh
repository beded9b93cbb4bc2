#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time (default 5s each):
# a smoke run that proves the targets and their committed corpora still work.
# Long runs: scripts/fuzz-smoke.sh 10m (results go in docs/reliability.md).
set -euo pipefail
fuzztime=${1:-5s}
cd "$(dirname "$0")/.."
status=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
  for t in $targets; do
    echo "fuzz $pkg $t for $fuzztime"
    if ! go test -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz-$t.log 2>&1; then
      cat /tmp/fuzz-$t.log
      status=1
    fi
  done
done
exit $status
