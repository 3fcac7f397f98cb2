#!/usr/bin/env bash
# `cargo pgrx test` for PostgreSQL 15 and 18: builds the extension with the pg_test feature,
# installs it into that PostgreSQL, starts a temporary server as the postgres OS user (initdb
# refuses root) and runs every test of the crate, the #[pg_test]s inside the server.
# It leaves that pg_test build installed: run scripts/install.sh afterwards (test.sh does).
#   scripts/test-pgrx.sh [pg15|pg18 ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

versions=("$@"); [ ${#versions[@]} -gt 0 ] || versions=(pg15 pg18)
failed=()
for v in "${versions[@]}"; do
  pgdata=/tmp/pg_safeupsert/pgrx/$v       # its parent must be writable by postgres
  mkdir -p "$pgdata" && chown postgres:postgres /tmp/pg_safeupsert/pgrx "$pgdata"
  # it installs a pg_test build over the installed library: unlink that first, as install.sh does
  case $v in pg18) pg_config=$PG18_CONFIG ;; *) pg_config=$PG_CONFIG ;; esac
  rm -f "$("$pg_config" --pkglibdir)/pg_safeupsert.so"
  echo "test-pgrx: cargo pgrx test $v"
  t0=$SECONDS
  if cargo pgrx test "$v" --runas postgres --pgdata "$pgdata"; then
    echo "test-pgrx: $v ok ($((SECONDS - t0)) s)"
  else
    echo "test-pgrx: $v FAILED ($((SECONDS - t0)) s)"; failed+=("$v")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then echo "test-pgrx: FAILED: ${failed[*]}"; exit 1; fi
echo "test-pgrx: ok (${versions[*]})"
