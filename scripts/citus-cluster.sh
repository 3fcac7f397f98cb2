#!/usr/bin/env bash
# A local three-node Citus cluster (a coordinator and two workers), each node a private server of
# scripts/cluster.sh (run as the postgres OS user, under /tmp/pg_safeupsert/NAME), preloading
# citus and pg_safeupsert. Citus must be installed first: scripts/citus.sh ensure.
#
#   citus-cluster.sh start [postgresql.conf line ...]
#                        fresh nodes (running ones are stopped and wiped first), CREATE EXTENSION
#                        citus on each, the coordinator and both workers registered in the
#                        coordinator's metadata; extra conf lines go to every node
#   citus-cluster.sh stop    fast shutdown of the three nodes; no-op for those not running
#   citus-cluster.sh status  exit 0 if all three run (and how to connect), 3 if not
#   citus-cluster.sh env     print PGHOST/PGPORT/PGUSER exports for the coordinator, for eval
#
# Nodes and ports: citus-coord $CITUS_COORD_PORT (54391), citus-w1 $CITUS_W1_PORT (54392),
# citus-w2 $CITUS_W2_PORT (54393). The coordinator reaches the workers (and itself) over TCP at
# localhost:PORT as user postgres: each node listens on localhost, and initdb's trust
# authentication (cluster.sh) admits the postgres user from 127.0.0.1 and ::1.
# pg_safeupsert is preloaded but not created: run CREATE EXTENSION pg_safeupsert yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

COORD_PORT=${CITUS_COORD_PORT:-54391}
W1_PORT=${CITUS_W1_PORT:-54392}
W2_PORT=${CITUS_W2_PORT:-54393}
NODES=(citus-coord citus-w1 citus-w2)
PORTS=("$COORD_PORT" "$W1_PORT" "$W2_PORT")

usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

psql_node() {  # psql_node NAME SQL
  local dir
  dir=$(dirname "$(scripts/cluster.sh datadir "$1")")
  "$(cat "$dir/bindir")/psql" -X -q -v ON_ERROR_STOP=1 -At -h "$dir/sock" -p "$(cat "$dir/port")" \
    -U postgres -d postgres -c "$2"
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
start)
  scripts/citus.sh status >/dev/null || exit 1
  t0=$(now)
  conf=("listen_addresses = 'localhost'"
        "shared_preload_libraries = 'citus,pg_safeupsert'"
        "$@")
  # the three servers in parallel: initdb and start take about a second each
  pids=()
  for i in 0 1 2; do
    scripts/cluster.sh start "${NODES[$i]}" "${PORTS[$i]}" "${conf[@]}" >/dev/null &
    pids+=($!)
  done
  failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ "$failed" = 0 ] || { echo "citus-cluster.sh: a node failed to start" >&2; "$0" stop >/dev/null; exit 1; }
  echo "citus-cluster.sh: 3 servers up in $(since "$t0")"
  t1=$(now)
  for n in "${NODES[@]}"; do psql_node "$n" "CREATE EXTENSION citus" & done
  wait
  for n in "${NODES[@]}"; do
    [ "$(psql_node "$n" "SELECT count(*) FROM pg_extension WHERE extname = 'citus'")" = 1 ] \
      || { echo "citus-cluster.sh: CREATE EXTENSION citus failed on $n" >&2; exit 1; }
  done
  psql_node citus-coord "SELECT citus_set_coordinator_host('localhost', $COORD_PORT)" >/dev/null
  psql_node citus-coord "SELECT citus_add_node('localhost', $W1_PORT)" >/dev/null
  psql_node citus-coord "SELECT citus_add_node('localhost', $W2_PORT)" >/dev/null
  echo "citus-cluster.sh: Citus $(psql_node citus-coord "SELECT extversion FROM pg_extension WHERE extname = 'citus'") on" \
    "coordinator localhost:$COORD_PORT, workers localhost:$W1_PORT, localhost:$W2_PORT" \
    "(metadata in $(since "$t1"), $(since "$t0") in all)"
  psql_node citus-coord "SELECT nodename || ':' || nodeport || ' ' || noderole || CASE WHEN groupid = 0 THEN ' (coordinator)' ELSE '' END FROM pg_dist_node ORDER BY groupid" | sed 's/^/  /'
  echo "  connect: eval \"\$(scripts/citus-cluster.sh env)\"; psql   (the coordinator)"
  echo "  stop:    scripts/citus-cluster.sh stop"
  ;;
stop)
  t0=$(now)
  for n in "${NODES[@]}"; do scripts/cluster.sh stop "$n" & done
  wait
  echo "citus-cluster.sh: stopped in $(since "$t0")"
  ;;
status)
  rc=0
  for n in "${NODES[@]}"; do scripts/cluster.sh status "$n" || rc=3; done
  exit $rc
  ;;
env)
  scripts/cluster.sh env citus-coord
  ;;
*) usage ;;
esac
