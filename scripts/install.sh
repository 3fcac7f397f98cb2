#!/usr/bin/env bash
# Builds pg_safeupsert in release mode and installs it into the PostgreSQL 15 that the private
# clusters run (root can write /usr/lib/postgresql and /usr/share/postgresql).
#   PG_CONFIG=... scripts/install.sh   installs into another PostgreSQL (e.g. "$PG18_CONFIG")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

t0=$SECONDS
cargo pgrx install --release --pg-config "$PG_CONFIG"
echo "install: pg_safeupsert into $("$PG_CONFIG" --pkglibdir) ($((SECONDS - t0)) s)"
