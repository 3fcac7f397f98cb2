#!/usr/bin/env bash
# make package: for each PostgreSQL major in PACKAGE_PG (default "15 18") a tarball with the
# library, the control file and every SQL script (this version's, the frozen ones of released
# versions, the upgrade scripts), install.sh and INSTALL, and the monitoring files (monitoring/:
# the exporter's queries, the alerting rules and their tests), with its SHA-256 checksum; for 15
# also a .deb (dpkg-deb) that installs into Debian's PostgreSQL 15, the monitoring files in its
# documentation directory. Written to PACKAGE_DIR (default target/packages).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

version=$(sed -nE 's/^version = "(.*)"$/\1/p' Cargo.toml | head -1)
arch=$(uname -m)
out=${PACKAGE_DIR:-target/packages}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for major in ${PACKAGE_PG:-15 18}; do
  case $major in
    15) config=$PG_CONFIG ;;
    18) config=$PG18_CONFIG ;;
    *) echo "package: no pg_config for PostgreSQL $major" >&2; exit 2 ;;
  esac
  t0=$SECONDS
  stage=$(mktemp -d)
  cargo pgrx package --pg-config "$config" --no-default-features --features "pg$major" --out-dir "$stage/tree" >"$stage/build.log" 2>&1 \
    || { cat "$stage/build.log" >&2; exit 1; }
  name=pg_safeupsert-$version-pg$major-$arch
  pkg=$stage/$name
  mkdir -p "$pkg/lib" "$pkg/extension" "$pkg/monitoring"
  cp "$stage/tree$("$config" --pkglibdir)/pg_safeupsert.so" "$pkg/lib/"
  cp "$stage/tree$("$config" --sharedir)/extension/"pg_safeupsert* "$pkg/extension/"
  install_frozen_sql "$pkg/extension"
  install -m 0644 monitoring/* "$pkg/monitoring/"
  for f in INSTALL install.sh; do
    sed -e "s/@VERSION@/$version/g" -e "s/@PG_MAJOR@/$major/g" -e "s/@ARCH@/$arch/g" "packaging/$f.in" >"$pkg/$f"
  done
  chmod 0755 "$pkg/install.sh"
  tar -C "$stage" --owner=0 --group=0 -czf "$out/$name.tar.gz" "$name"
  (cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
  echo "package: $out/$name.tar.gz ($((SECONDS - t0)) s)"

  if [ "$major" = 15 ] && command -v dpkg-deb >/dev/null; then
    deb=$stage/deb
    mkdir -p "$deb/DEBIAN"
    cp -r "$stage/tree/." "$deb/"
    install_frozen_sql "$deb$("$config" --sharedir)/extension"
    mkdir -p "$deb/usr/share/doc/postgresql-$major-pg-safeupsert/monitoring"
    install -m 0644 monitoring/* "$deb/usr/share/doc/postgresql-$major-pg-safeupsert/monitoring/"
    cat >"$deb/DEBIAN/control" <<CONTROL
Package: postgresql-$major-pg-safeupsert
Version: $version
Architecture: $(dpkg --print-architecture)
Depends: postgresql-$major
Maintainer: pg_safeupsert developers <noreply@localhost>
Section: database
Priority: optional
Description: versioned, race-free upserts for PostgreSQL $major
 safe_upsert and safe_upsert_many, conflict statistics views and a notifier worker.
 Add pg_safeupsert to shared_preload_libraries, restart, then CREATE EXTENSION pg_safeupsert.
CONTROL
    debname=postgresql-$major-pg-safeupsert_${version}_$(dpkg --print-architecture).deb
    dpkg-deb --root-owner-group --build "$deb" "$out/$debname" >/dev/null
    (cd "$out" && sha256sum "$debname" >"$debname.sha256")
    echo "package: $out/$debname"
  fi
  rm -rf "$stage"
done
