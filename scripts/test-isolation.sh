#!/usr/bin/env bash
# pg_isolation_regress over pgrx-tests/isolation/specs/*.spec; see test-regress.sh (ACCEPT=1 too).
set -euo pipefail
KIND=isolation exec "$(dirname "$0")/test-regress.sh" "$@"
