#!/usr/bin/env bash
# pytest on pgrx-tests/clients/ with the venv, against the private test cluster (started if it
# is not running), in a fresh database with the extension created. Tests find the server in
# PGHOST/PGPORT/PGUSER/PGDATABASE, and restart or crash it with SAFEUPSERT_CLUSTER_SH (the path
# of scripts/cluster.sh) and SAFEUPSERT_CLUSTER (its name); see pgrx-tests/clients/conftest.py.
# Extra arguments go to pytest (-k NAME, -x, -v, ...). No test collected is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

db=clients_safeupsert
use_test_cluster
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
psql -qX -d "$db" -c "CREATE EXTENSION ${CLIENTS_EXTENSION-pg_safeupsert}"
# CLIENTS_UPDATE=1: the tests run on the extension as ALTER EXTENSION ... UPDATE leaves it
if [ "${CLIENTS_UPDATE:-0}" = 1 ]; then psql -qX -d "$db" -c "ALTER EXTENSION pg_safeupsert UPDATE"; fi
export PGDATABASE=$db SAFEUPSERT_CLUSTER=$TEST_CLUSTER SAFEUPSERT_CLUSTER_SH=$PWD/scripts/cluster.sh

status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider "${CLIENTS_DIR:-pgrx-tests/clients}" "$@" || status=$?
case $status in
  0) echo "test-clients: ok" ;;
  5) echo "test-clients: FAILED: no tests collected"; exit 1 ;;
  *) echo "test-clients: FAILED (pytest exit $status)"; exit 1 ;;
esac
