#!/usr/bin/env bash
# Citus (the distributed PostgreSQL engine) for PostgreSQL 15, as a test dependency: built once per
# machine from the source kept in ../shared/citus (no package registry reachable here ships it),
# installed into the PostgreSQL of $PG_CONFIG (see env.sh). See scripts/citus-cluster.sh for a
# three-node cluster.
#
#   citus.sh ensure   nothing if citus.so and citus.control are installed for $PG_CONFIG; else
#                     installs the missing build dependencies (apt), unpacks and patches the
#                     tarball in $CITUS_BUILD_DIR, configures, builds and installs (needs root)
#   citus.sh status   exit 0 and print the installed version; 1 with how to enable it if absent
#
# Settings: CITUS_SOURCE (directory with citus-$CITUS_VERSION.tar.gz and the patches, default
# ../shared/citus relative to the repository), CITUS_VERSION (13.2.2), CITUS_BUILD_DIR (the
# build cache, outside the repository: /var/cache/pg_safeupsert/citus-$CITUS_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

CITUS_VERSION=${CITUS_VERSION:-13.2.2}
CITUS_SOURCE=${CITUS_SOURCE:-$(cd .. && pwd)/shared/citus}
CITUS_BUILD_DIR=${CITUS_BUILD_DIR:-/var/cache/pg_safeupsert/citus-$CITUS_VERSION}

usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }

pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension

installed() { [ -f "$pkglibdir/citus.so" ] && [ -f "$extdir/citus.control" ]; }
installed_version() { sed -nE "s/^default_version *= *'([^']*)'.*/\1/p" "$extdir/citus.control"; }

build() {
  local tarball=$CITUS_SOURCE/citus-$CITUS_VERSION.tar.gz t0 t
  [ -f "$tarball" ] || { echo "citus.sh: no $tarball (set CITUS_SOURCE)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "citus.sh: installing into $pkglibdir needs root" >&2; exit 1; }
  t0=$(date +%s)
  apt_install libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev \
    "postgresql-server-dev-$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
  local src=$CITUS_BUILD_DIR/citus-$CITUS_VERSION
  if [ ! -f "$src/.built" ]; then
    rm -rf "$src"; mkdir -p "$CITUS_BUILD_DIR"
    tar xzf "$tarball" -C "$CITUS_BUILD_DIR"
    # the archive unpacks to citus-VERSION (git archive --prefix); accept a bare tree too
    [ -d "$src" ] || { echo "citus.sh: $tarball did not unpack to $src" >&2; exit 1; }
    local p
    for p in "$CITUS_SOURCE"/*.patch; do
      [ -f "$p" ] || continue
      echo "citus.sh: patch $(basename "$p")"
      (cd "$src" && patch -p1 -s <"$p")
    done
    t=$(date +%s)
    (cd "$src" && ./configure PG_CONFIG="$PG_CONFIG" >"$CITUS_BUILD_DIR/configure.log" 2>&1) \
      || { tail -n 30 "$CITUS_BUILD_DIR/configure.log" >&2; exit 1; }
    echo "citus.sh: configure $(( $(date +%s) - t )) s"
    t=$(date +%s)
    (cd "$src" && make -j"$(nproc)" with_llvm=no >"$CITUS_BUILD_DIR/make.log" 2>&1) \
      || { tail -n 30 "$CITUS_BUILD_DIR/make.log" >&2; exit 1; }
    echo "citus.sh: make $(( $(date +%s) - t )) s"
    touch "$src/.built"
  fi
  (cd "$src" && make install with_llvm=no >"$CITUS_BUILD_DIR/install.log" 2>&1) \
    || { tail -n 30 "$CITUS_BUILD_DIR/install.log" >&2; exit 1; }
  echo "citus.sh: Citus $(installed_version) installed for $("$PG_CONFIG" --version) in $(( $(date +%s) - t0 )) s"
}

[ $# -eq 1 ] || usage
case "$1" in
ensure)
  if installed; then echo "citus.sh: Citus $(installed_version) already installed for $("$PG_CONFIG" --version)"; exit 0; fi
  build
  ;;
status)
  if installed; then
    echo "Citus $(installed_version) installed for $("$PG_CONFIG" --version) ($pkglibdir/citus.so)"
  else
    echo "citus.sh: Citus is not installed for $("$PG_CONFIG" --version) ($PG_CONFIG);" \
      "run scripts/citus.sh ensure (as root; builds from $CITUS_SOURCE, about a minute)" >&2
    exit 1
  fi
  ;;
*) usage ;;
esac
