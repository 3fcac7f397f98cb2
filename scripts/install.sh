#!/usr/bin/env bash
# Builds pg_safeupsert in release mode and installs it into the PostgreSQL 15 that the private
# clusters run (root can write /usr/lib/postgresql and /usr/share/postgresql).
#   PG_CONFIG=... scripts/install.sh   installs into another PostgreSQL (e.g. "$PG18_CONFIG")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

t0=$SECONDS
# Copying over the library that running servers have mapped crashes them (cp rewrites the same
# inode): unlink it first, so they keep the old one until they restart.
rm -f "$("$PG_CONFIG" --pkglibdir)/pg_safeupsert.so"
cargo pgrx install --release --pg-config "$PG_CONFIG"
# cargo-pgrx installs the upgrade scripts of sql/ (pg_safeupsert--A--B.sql) but not the frozen
# install scripts of released versions, which CREATE EXTENSION ... VERSION 'A' needs.
install_frozen_sql "$("$PG_CONFIG" --sharedir)/extension"
echo "install: pg_safeupsert into $("$PG_CONFIG" --pkglibdir) ($((SECONDS - t0)) s);" \
  "servers already running load it when restarted"
