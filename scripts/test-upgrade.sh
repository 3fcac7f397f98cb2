#!/usr/bin/env bash
# The upgrade tier: pgrx-tests/upgrade/ (pytest) on the test cluster, with the release build
# installed (scripts/install.sh, which also installs the frozen scripts of sql/): every released
# version updated to the current one matches a fresh install, the library serves old SQL, and a
# database survives pg_dump and pg_restore; then the core client tests on an updated database.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
use_test_cluster
export PG_BINDIR=${PG_BINDIR:-$("$PG_CONFIG" --bindir)}
status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider pgrx-tests/upgrade "$@" || status=$?
# The core client tests, on a database whose extension was created as the newest release and
# then updated.
previous=$(newest_release)
# (when the whole tier runs, not a selection given as arguments)
if [ $status -eq 0 ] && [ $# -eq 0 ]; then
  CLIENTS_DIR=pgrx-tests/clients/test_upsert_concurrency.py CLIENTS_EXTENSION="pg_safeupsert VERSION '$previous'" \
    CLIENTS_UPDATE=1 scripts/test-clients.sh -q pgrx-tests/clients/test_pipeline.py pgrx-tests/clients/test_error_fields.py \
    || status=1
fi
case $status in
  0) echo "test-upgrade: ok" ;;
  5) echo "test-upgrade: FAILED: no tests collected"; exit 1 ;;
  *) echo "test-upgrade: FAILED (pytest exit $status)"; exit 1 ;;
esac
