#!/usr/bin/env bash
# The upgrade tier: pgrx-tests/upgrade/ (pytest) on the test cluster, with the release build
# installed (scripts/install.sh, which also installs the frozen scripts of sql/): every released
# version updated to the current one matches a fresh install, the library serves old SQL, and a
# database survives pg_dump and pg_restore.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
use_test_cluster
export PG_BINDIR=${PG_BINDIR:-$("$PG_CONFIG" --bindir)}
status=0
"$VENV/bin/python" -m pytest -p no:cacheprovider pgrx-tests/upgrade "$@" || status=$?
case $status in
  0) echo "test-upgrade: ok" ;;
  5) echo "test-upgrade: FAILED: no tests collected"; exit 1 ;;
  *) echo "test-upgrade: FAILED (pytest exit $status)"; exit 1 ;;
esac
