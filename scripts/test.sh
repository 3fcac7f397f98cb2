#!/usr/bin/env bash
# Every test tier, from a fresh machine if need be: bootstrap, then
#   unit          plain #[test]s (scripts/test-unit.sh)
#   pgrx-pg15/18  cargo pgrx test on PostgreSQL 15 and 18 (scripts/test-pgrx.sh)
# then the release build installed into PostgreSQL 15 and a fresh private cluster
# ($TEST_CLUSTER on port $TEST_PORT, stopped at the end whatever happens) for
#   regress       pg_regress (scripts/test-regress.sh)
#   isolation     pg_isolation_regress (scripts/test-isolation.sh)
#   clients       pytest with psycopg (scripts/test-clients.sh)
#   upgrade       released versions updated, old SQL on this library, dump and restore
#                 (scripts/test-upgrade.sh)
#   monitoring    prometheus-postgres-exporter scraped, promtool on the alerting rules, on a
#                 cluster of its own (scripts/test-monitoring.sh)
#   package       the packages built and installed into clean trees (scripts/test-package.sh)
# The pgrx tiers come before the install because they leave a pg_test build installed.
# Ends with the line "N passed, N failed" (tiers); exits non-zero if any tier failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

start=$SECONDS
passed=0; failed=0; summary=()
tier() {  # tier NAME COMMAND...
  local name=$1 t=$SECONDS; shift
  echo; echo "===== $name: $*"
  if "$@"; then passed=$((passed + 1)); summary+=("  ok      $name ($((SECONDS - t)) s)")
  else failed=$((failed + 1)); summary+=("  FAILED  $name ($((SECONDS - t)) s)"); fi
}
not_run() {  # not_run REASON NAME...
  local why=$1; shift
  for name in "$@"; do failed=$((failed + 1)); summary+=("  FAILED  $name (not run: $why)"); done
}

scripts/bootstrap.sh

tier unit scripts/test-unit.sh
tier pgrx-pg15 scripts/test-pgrx.sh pg15
tier pgrx-pg18 scripts/test-pgrx.sh pg18

server_tiers=(regress isolation clients upgrade monitoring package)
trap 'scripts/cluster.sh stop "$TEST_CLUSTER" >/dev/null 2>&1 || true' EXIT
if ! scripts/install.sh; then
  not_run "install failed" "${server_tiers[@]}"
elif ! scripts/cluster.sh start "$TEST_CLUSTER" "$TEST_PORT"; then
  not_run "cluster did not start" "${server_tiers[@]}"
else
  tier regress scripts/test-regress.sh
  tier isolation scripts/test-isolation.sh
  tier clients scripts/test-clients.sh
  tier upgrade scripts/test-upgrade.sh
  tier monitoring scripts/test-monitoring.sh
  tier package scripts/test-package.sh
  scripts/cluster.sh stop "$TEST_CLUSTER"
fi

echo; echo "===== summary ($((SECONDS - start)) s)"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
