#!/usr/bin/env bash
# A private PostgreSQL server for the demo, the tests and the benchmarks, run as the `postgres`
# OS user (initdb refuses root), under /tmp/pg_safeupsert/NAME, with pg_safeupsert preloaded.
#
#   cluster.sh start [--keep] NAME PORT [postgresql.conf line ...]
#                            a fresh cluster (a running one of that NAME is stopped and wiped
#                            first); --keep starts the existing data directory instead
#   cluster.sh stop NAME     fast shutdown (the extension saves its state); no-op if not running
#   cluster.sh restart NAME  fast shutdown and start again, same data
#   cluster.sh crash NAME    kill -9 a server child: the postmaster kills the others, reinitializes
#                            shared memory and runs crash recovery; returns once it accepts
#                            connections again
#   cluster.sh status NAME   exit 0 if running (and how to connect), 3 if not
#   cluster.sh datadir NAME  print the data directory
#   cluster.sh env NAME      print PGHOST/PGPORT/PGUSER exports, for eval
#   cluster.sh stop-all      stop every cluster under /tmp/pg_safeupsert
#
# The binaries are those of $PG_CONFIG (PostgreSQL 15 by default, see env.sh); a cluster keeps
# the ones it was created with. Extra conf lines come last, so they override the defaults, e.g.
#   cluster.sh start t 54399 "shared_preload_libraries = ''" "safe_upsert.notify = off"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

ROOT=${PG_SAFEUPSERT_CLUSTERS:-/tmp/pg_safeupsert}

usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }
as_pg() { runuser -u postgres -- "$@"; }

[ $# -ge 1 ] || usage
cmd=$1; shift
if [ "$cmd" = stop-all ]; then
  for d in "$ROOT"/*/data; do [ -d "$d" ] && "$0" stop "$(basename "$(dirname "$d")")"; done
  exit 0
fi
keep=0
if [ "$cmd" = start ] && [ "${1:-}" = --keep ]; then keep=1; shift; fi
[ $# -ge 1 ] || usage
name=$1; shift
case "$name" in */*|.*|"") echo "cluster.sh: bad name '$name'" >&2; exit 2 ;; esac

dir=$ROOT/$name
data=$dir/data
sock=$dir/sock
log=$dir/server.log
bindir=$(cat "$dir/bindir" 2>/dev/null || "$PG_CONFIG" --bindir)
port=$(cat "$dir/port" 2>/dev/null || echo "")

pg_ctl() { as_pg "$bindir/pg_ctl" -D "$data" "$@"; }
running() { [ -f "$data/postmaster.pid" ] && pg_ctl status >/dev/null 2>&1; }
ready_count() { grep -c "database system is ready to accept connections" "$log" 2>/dev/null || true; }

how_to_connect() {
  echo "cluster $name: $("$bindir/postgres" --version), port $port, data $data, log $log"
  echo "  connect: psql -h $sock -p $port -U postgres postgres   (or -h 127.0.0.1; trust auth)"
  echo "  stop:    scripts/cluster.sh stop $name"
}

wait_ready() {  # $1: number of "ready" log lines to wait for
  for _ in $(seq 1 600); do
    if [ "$(ready_count)" -ge "$1" ] && "$bindir/pg_isready" -q -h "$sock" -p "$port"; then return 0; fi
    sleep 0.1
  done
  echo "cluster.sh: $name not ready after 60 s; log tail:" >&2; tail -n 30 "$log" >&2; return 1
}

start_server() {
  if ! pg_ctl -l "$log" -w -t 60 start >/dev/null; then
    echo "cluster.sh: $name failed to start; log tail:" >&2; tail -n 30 "$log" >&2; exit 1
  fi
}

case "$cmd" in
start)
  [ $# -ge 1 ] || usage
  port=$1; shift
  if [ "$keep" = 1 ] && [ -f "$data/PG_VERSION" ]; then
    running || start_server
    how_to_connect; exit 0
  fi
  if running; then pg_ctl -m immediate -w stop >/dev/null; fi
  rm -rf "$dir"
  mkdir -p "$ROOT" "$sock" && chmod 755 "$ROOT"
  bindir=$("$PG_CONFIG" --bindir)
  echo "$bindir" >"$dir/bindir"; echo "$port" >"$dir/port"
  chown -R postgres:postgres "$dir"
  as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust --no-locale -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  {
    echo "# pg_safeupsert private cluster"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$sock'"
    echo "shared_preload_libraries = 'pg_safeupsert'"
    echo "fsync = off"
    echo "full_page_writes = off"
    echo "max_connections = 100"
    for line in "$@"; do echo "$line"; done
  } >>"$data/postgresql.conf"
  start_server
  how_to_connect
  ;;
stop)
  if running; then pg_ctl -m fast -w stop >/dev/null; echo "cluster $name: stopped"; fi
  ;;
restart)
  [ -f "$data/PG_VERSION" ] || { echo "cluster.sh: no cluster $name" >&2; exit 1; }
  if running; then pg_ctl -m fast -w stop >/dev/null; fi
  start_server
  echo "cluster $name: restarted"
  ;;
crash)
  running || { echo "cluster.sh: $name is not running" >&2; exit 1; }
  before=$(ready_count)
  postmaster=$(head -n 1 "$data/postmaster.pid")
  victim=$(ps -o pid=,args= --ppid "$postmaster" | awk '/checkpointer/ {print $1; exit}')
  [ -n "$victim" ] || { echo "cluster.sh: no checkpointer under postmaster $postmaster" >&2; exit 1; }
  kill -9 "$victim"
  wait_ready $((before + 1))
  echo "cluster $name: crashed (kill -9 of checkpointer $victim) and recovered"
  ;;
status)
  if running; then how_to_connect; else echo "cluster $name: not running"; exit 3; fi
  ;;
datadir)
  echo "$data"
  ;;
env)
  echo "export PGHOST=$sock PGPORT=$port PGUSER=postgres PGDATABASE=postgres"
  ;;
*) usage ;;
esac
