#!/usr/bin/env bash
# The monitoring tier: pgrx-tests/monitoring/ (pytest) starts Debian's
# prometheus-postgres-exporter with monitoring/queries.yaml against a private server of its own
# (cluster "monitoring" on a free port, stopped at the end whatever happens), writes known
# outcomes in two databases, scrapes /metrics over HTTP and checks the counters, their labels,
# and that the server-wide figures come once; and runs promtool check rules and promtool test
# rules on monitoring/alerts.yml. Installs the exporter and promtool (Debian packages) when they
# are missing. Extra arguments go to pytest (-k NAME, -x, -v, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if ! command -v prometheus-postgres-exporter >/dev/null || ! command -v promtool >/dev/null; then
  apt_install prometheus-postgres-exporter prometheus
  stop_prometheus_services   # the packages may have started theirs
fi
[ -x "$VENV/bin/python" ] || { echo "test-monitoring: no venv at $VENV (run scripts/bootstrap.sh)" >&2; exit 1; }

cluster=monitoring
port=$(free_port)
trap 'scripts/cluster.sh stop "$cluster" >/dev/null 2>&1 || true' EXIT
# Room for 20 tables and 16 queued events per database: the tests evict a table and overflow
# a queue on purpose.
scripts/cluster.sh start "$cluster" "$port" "safe_upsert.max_tables = 20" "safe_upsert.queue_size = 16" >/dev/null
export PGPORT=$port

status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider pgrx-tests/monitoring "$@" || status=$?
case $status in
  0) echo "test-monitoring: ok" ;;
  5) echo "test-monitoring: FAILED: no tests collected"; exit 1 ;;
  *) echo "test-monitoring: FAILED (pytest exit $status)"; exit 1 ;;
esac
