#!/usr/bin/env bash
# Plain #[test]s of the pure modules (statement builder, parsing, ...), no server needed.
# In a pgrx crate they are ordinary libtest tests: `cargo test --lib` links and runs them (the
# PostgreSQL symbols are only resolved inside a server, and no plain test calls them). The same
# binary holds the #[pg_test]s, which need a server: they all live in the `tests` schema module
# and pgrx names them `pg_<fn>`, so they are skipped here and run by scripts/test-pgrx.sh.
# Extra arguments go to libtest (a name filter, --nocapture, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if cargo test --lib --features pg15 -- --skip tests::pg_ "$@"; then
  echo "test-unit: ok"
else
  echo "test-unit: FAILED"; exit 1
fi
