#!/usr/bin/env bash
# Runs pg_regress (or, with KIND=isolation, pg_isolation_regress) against the private test
# cluster (scripts/cluster.sh; started if it is not running), in a fresh database: given --host
# and --port, pg_regress uses that server, drops and creates the database with its own settings
# and creates the extension. (--use-existing would skip the database and the extension too.)
#   inputs:   pgrx-tests/$KIND/sql/*.sql    (isolation: specs/*.spec), in name order, or the
#             order of pgrx-tests/$KIND/schedule if there is one
#   expected: pgrx-tests/$KIND/expected/*.out
#   results:  pgrx-tests/$KIND/results/ (gitignored): results/*.out, regression.diffs
#   ACCEPT=1 scripts/test-regress.sh   runs and then copies the results over the expected files
#   scripts/test-regress.sh NAME...    runs only those tests
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

KIND=${KIND:-regress}
dir=${TESTS_DIR:-pgrx-tests/$KIND}
out=$dir/results
case "$KIND" in
  regress)   runner=pg_regress;           subdir=sql;   ext=sql;  path=regress ;;
  isolation) runner=pg_isolation_regress; subdir=specs; ext=spec; path=isolation ;;
  *) echo "test-$KIND: unknown KIND" >&2; exit 2 ;;
esac
bin="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/$path/$runner"
db=${KIND}_safeupsert

if [ $# -gt 0 ]; then tests=("$@")
elif [ -f "$dir/schedule" ]; then tests=(--schedule="$dir/schedule")
else
  tests=()
  for f in "$dir/$subdir"/*."$ext"; do [ -e "$f" ] && tests+=("$(basename "$f" ."$ext")"); done
fi
if [ ${#tests[@]} -eq 0 ]; then
  echo "test-$KIND: FAILED: no tests in $dir/$subdir" >&2; exit 1
fi

# pg_regress stops at the first test that has no expected file: make empty ones to accept into,
# or say which are missing.
names=("${tests[@]}")
if [ -f "$dir/schedule" ] && [ $# -eq 0 ]; then
  read -ra names <<<"$(sed -n 's/^test: *//p' "$dir/schedule" | tr '\n' ' ')"
fi
for t in "${names[@]}"; do
  [ -f "$dir/expected/$t.out" ] && continue
  if [ "${ACCEPT:-0}" = 1 ]; then mkdir -p "$dir/expected" && : >"$dir/expected/$t.out"
  else echo "test-$KIND: FAILED: no $dir/expected/$t.out (ACCEPT=1 makes it)" >&2; exit 1; fi
done

use_test_cluster
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null   # kill leftovers
rm -rf "$out" && mkdir -p "$out"

opts=(--bindir="$("$PG_CONFIG" --bindir)" --host="$PGHOST" --port="$PGPORT"
      --user=postgres --dbname="$db" --inputdir="$dir" --outputdir="$out")
ext_name=${REGRESS_EXTENSION-pg_safeupsert}   # set it empty to create no extension
if [ -n "$ext_name" ]; then opts+=(--load-extension="$ext_name"); fi

status=0
"$bin" "${opts[@]}" "${tests[@]}" || status=$?

if [ "${ACCEPT:-0}" = 1 ]; then
  ls "$out"/results/*.out >/dev/null 2>&1 || { echo "test-$KIND: FAILED: no results" >&2; exit 1; }
  for r in "$out"/results/*.out; do
    e=$dir/expected/$(basename "$r")
    cmp -s "$r" "$e" || { cp "$r" "$e"; echo "test-$KIND: accepted $e"; }
  done
  exit 0
fi
if [ $status -ne 0 ]; then
  [ -s "$out/regression.diffs" ] && head -n 100 "$out/regression.diffs"
  echo "test-$KIND: FAILED (diffs in $out/regression.diffs; ACCEPT=1 to take the new output)"
  exit $status
fi
echo "test-$KIND: ok"
