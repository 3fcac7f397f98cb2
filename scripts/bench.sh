#!/usr/bin/env bash
# make bench: pg_safeupsert side by side with what users would write instead, in one run, on a
# private server; writes bench/results/results.md (every figure with its ratio to its peer and
# the targets marked met/missed) and bench/results/chart.png, prints the table, and
# stops the server.
#
#   make bench            default size, about 10 minutes on 2 cores (5 rounds of each contender)
#   make bench QUICK=1    smoke size, under 2 minutes (1 short round)
#   BENCH_SUITES=1,3 make bench    only some suites (1 single row, 2 batches, 3 notify, 4 memory, 5 deletes,
#                                  6 delete batches)
#   BENCH_KEEP=1 make bench        leave the server up afterwards (scripts/cluster.sh stop bench)
#
# The server runs a private copy of PostgreSQL 15 ($BENCH_PG) holding the release build made by
# scripts/install.sh: `cargo pgrx test` installs a debug build with test functions into the
# system PostgreSQL 15 whenever it runs, and a benchmark must not pick that up.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

name=bench
port=${BENCH_PORT:-54317}
BENCH_PG=${BENCH_PG:-/opt/pg_safeupsert/bench-pg15}
t0=$SECONDS

scripts/bootstrap.sh
if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "bench: pip install -r bench/requirements.txt"
  "$VENV/bin/pip" install -q -r bench/requirements.txt
fi

# A private copy of PostgreSQL 15, relocated: its binaries find share/ and lib/ relative to
# themselves. Made once; refreshed when the system's postgres binary changes.
sys_bindir=$("$PG_CONFIG" --bindir)
sys_pkglibdir=$("$PG_CONFIG" --pkglibdir)
sys_sharedir=$("$PG_CONFIG" --sharedir)
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
pg_bindir=$BENCH_PG/lib/postgresql/$major/bin
pg_libdir=$BENCH_PG/lib/postgresql/$major/lib
pg_sharedir=$BENCH_PG/share/postgresql/$major
if ! cmp -s "$sys_bindir/postgres" "$pg_bindir/postgres"; then
  echo "bench: private copy of PostgreSQL $major in $BENCH_PG"
  rm -rf "$BENCH_PG"
  mkdir -p "$BENCH_PG/lib/postgresql" "$BENCH_PG/share/postgresql"
  cp -a "$(dirname "$sys_bindir")" "$BENCH_PG/lib/postgresql/$major"
  cp -a "$sys_sharedir" "$BENCH_PG/share/postgresql/$major"
  chmod -R a+rX "$BENCH_PG" && chmod a+rx "$(dirname "$BENCH_PG")"
fi
export PG_BENCH_BIN=$pg_bindir

# Release build, installed into the system PostgreSQL (scripts/install.sh), then copied into the
# private one. The library must be the release build just made and the SQL script must be the
# release one (a concurrent `cargo pgrx test` may have replaced both meanwhile): else again.
for attempt in 1 2 3; do
  scripts/install.sh
  ver=$(sed -nE "s/^default_version = '(.*)'/\1/p" "$sys_sharedir/extension/pg_safeupsert.control")
  sql=$sys_sharedir/extension/pg_safeupsert--$ver.sql
  tmp=$(mktemp -d)
  cp "$sys_pkglibdir/pg_safeupsert.so" "$sql" "$sys_sharedir/extension/pg_safeupsert.control" "$tmp/" 2>/dev/null || true
  if cmp -s "$tmp/pg_safeupsert.so" target/release/libpg_safeupsert.so \
     && [ -s "$tmp/$(basename "$sql")" ] && ! grep -q 'src/tests/' "$tmp/$(basename "$sql")"; then
    # unlink first: a running server may have the old library mapped
    rm -f "$pg_libdir/pg_safeupsert.so" "$pg_sharedir"/extension/pg_safeupsert*
    cp "$tmp/pg_safeupsert.so" "$pg_libdir/"
    cp "$tmp/pg_safeupsert.control" "$tmp/$(basename "$sql")" "$pg_sharedir/extension/"
    chmod a+r "$pg_libdir/pg_safeupsert.so" "$pg_sharedir"/extension/pg_safeupsert*
    rm -rf "$tmp"
    break
  fi
  rm -rf "$tmp"
  [ "$attempt" = 3 ] && { echo "bench: the installed extension kept being replaced by another build" >&2; exit 1; }
  echo "bench: the installed files are not this release build (a concurrent install?); again"
done

# The server: fsync on (the notification suite measures what a commit's WAL flush costs), the
# extension preloaded with its default settings, JIT off, checkpoints only when asked for.
export PG_CONFIG=$pg_bindir/pg_config
stop() { scripts/cluster.sh stop "$name" >/dev/null 2>&1 || true; }
trap stop EXIT
scripts/cluster.sh start "$name" "$port" \
  "shared_buffers = 256MB" \
  "fsync = on" \
  "full_page_writes = on" \
  "synchronous_commit = on" \
  "max_wal_size = 8GB" \
  "checkpoint_timeout = 1h" \
  "jit = off" \
  "max_connections = 50" \
  "log_min_messages = warning" >/dev/null
eval "$(scripts/cluster.sh env "$name")"
echo "bench: cluster $name on port $port ready ($((SECONDS - t0)) s so far)"

"$VENV/bin/python" bench/run.py
if [ "${BENCH_KEEP:-}" = 1 ]; then
  trap - EXIT
  scripts/cluster.sh status "$name"
else
  stop
  trap - EXIT
fi
echo "bench: done in $((SECONDS - t0)) s; bench/results/results.md, bench/results/chart.png"
