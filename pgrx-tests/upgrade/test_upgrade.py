"""Upgrades and dump/restore, on the test cluster (PGHOST/PGPORT from scripts/test-upgrade.sh),
each test in databases of its own:

  - every released version's install script, updated to the current version with `ALTER
    EXTENSION ... UPDATE`, gives exactly the objects of a fresh install (compared by a catalog
    query over the extension's members: definitions, signatures, volatility, parallel safety,
    enum labels in order, ACLs, comments), and the user's data and columns of the extension's
    types survive it;
  - the library serves a database whose SQL is still the old version's, before and after the
    update;
  - pg_dump -Fc and pg_restore bring a database back, into a new database with or without the
    extension created, and calls work on it.
"""

import os
import re
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
RELEASED = sorted(
    m.group(1) for p in SQL_DIR.glob("pg_safeupsert--*.sql") if (m := re.fullmatch(r"pg_safeupsert--([0-9.]+)\.sql", p.name))
)
PG_BIN = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))

# Each member of the extension, described by what a user or a dump relies on.
MEMBERS = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object,
       CASE d.classid
         WHEN 'pg_proc'::regclass THEN (
           SELECT format('%s returns %s volatile=%s parallel=%s strict=%s secdef=%s acl=%s cost=%s rows=%s src=%s',
                         p.oid::regprocedure, pg_get_function_result(p.oid), p.provolatile, p.proparallel,
                         p.proisstrict, p.prosecdef, p.proacl, p.procost, p.prorows, p.prosrc)
           FROM pg_proc p WHERE p.oid = d.objid)
         WHEN 'pg_type'::regclass THEN (
           SELECT format('%s type=%s labels=%s acl=%s', t.typname, t.typtype,
                         (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                         t.typacl)
           FROM pg_type t WHERE t.oid = d.objid)
         WHEN 'pg_class'::regclass THEN (
           SELECT format('%s kind=%s acl=%s columns=%s view=%s', c.relname, c.relkind, c.relacl,
                         (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                         CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END)
           FROM pg_class c WHERE c.oid = d.objid)
       END AS definition,
       obj_description(d.objid, d.classid::regclass::text) AS comment
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_safeupsert')
ORDER BY 1
"""


@pytest.fixture
def new_database():
    """Makes empty databases on the test cluster; drops them at the end."""
    made = []

    def make(extension_version=None):
        name = f"upg_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(dbname="postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        made.append(name)
        conn = psycopg.connect(dbname=name, autocommit=True)
        if extension_version == "current":
            conn.execute("CREATE EXTENSION pg_safeupsert")
        elif extension_version:
            conn.execute(sql.SQL("CREATE EXTENSION pg_safeupsert VERSION {}").format(sql.Literal(extension_version)))
        return name, conn

    yield make
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        for name in made:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def current_version(conn):
    return conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_safeupsert'").fetchone()[0]


def installed_version(conn):
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_safeupsert'").fetchone()[0]


def members(conn):
    return conn.execute(MEMBERS).fetchall()


def write_some(conn):
    """Rows, a conflict of each kind, and a user column of the extension's enum type."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, ver int, val text)")
    conn.execute("CREATE TABLE audit (id int, outcome safe_upsert_outcome)")
    outcomes = []
    for row in [{"id": 1, "ver": 2, "val": "a"}, {"id": 1, "ver": 1, "val": "old"}, {"id": 1, "ver": 2, "val": "b"},
                {"id": 1, "ver": 2, "val": "a"}, {"id": 2, "ver": 1, "val": "c"}]:
        (o,) = conn.execute("SELECT safe_upsert('items', %s, 'ver')", (Jsonb(row),)).fetchone()
        outcomes.append(o)
        conn.execute("INSERT INTO audit VALUES (%s, %s)", (row["id"], o))
    assert outcomes == ["inserted", "stale", "tie", "duplicate", "inserted"]
    return outcomes


def calls_work(conn, first_id):
    """Single and batch calls and the views, on the table write_some made."""
    row = {"id": first_id, "ver": 1, "val": "x"}
    assert conn.execute("SELECT safe_upsert('items', %s, 'ver')::text", (Jsonb(row),)).fetchone()[0] == "inserted"
    many = conn.execute(
        "SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('items', %s, 'ver')",
        (Jsonb([row, {"id": first_id + 1, "ver": 1, "val": "y"}]),),
    ).fetchone()[0]
    assert many == "duplicate inserted"
    conn.execute("SELECT * FROM safe_upsert_stats").fetchall()
    conn.execute("SELECT * FROM safe_upsert_conflicts").fetchall()
    assert conn.execute("SELECT count(*) FROM safe_upsert_info").fetchone()[0] == 1


@pytest.mark.parametrize("version", [v for v in RELEASED])
def test_an_updated_release_has_the_objects_of_a_fresh_install_and_keeps_the_data(new_database, version):
    _, fresh = new_database("current")
    _, old = new_database(version)
    assert installed_version(old) == version
    write_some(old)
    old.execute("ALTER EXTENSION pg_safeupsert UPDATE")
    assert installed_version(old) == current_version(old)
    assert members(old) == members(fresh)
    assert old.execute("SELECT string_agg(outcome::text, ' ' ORDER BY ctid) FROM audit").fetchone()[0] == \
        "inserted stale tie duplicate inserted"
    assert old.execute("SELECT string_agg(format('%s:%s:%s', id, ver, val), ' ' ORDER BY id) FROM items").fetchone()[0] == \
        "1:2:a 2:1:c"
    calls_work(old, 10)


def test_the_released_versions_and_their_upgrade_path_are_all_there():
    assert RELEASED, f"no frozen install script in {SQL_DIR}"
    with psycopg.connect(dbname="postgres") as c:
        current = current_version(c)
        available = {v for (v,) in c.execute("SELECT version FROM pg_available_extension_versions WHERE name = 'pg_safeupsert'")}
        assert set(RELEASED) | {current} <= available
        for v in RELEASED:
            if v != current:
                (path,) = c.execute(
                    "SELECT path FROM pg_extension_update_paths('pg_safeupsert') WHERE source = %s AND target = %s", (v, current)
                ).fetchone()
                assert path, f"no update path from {v} to {current}"


@pytest.mark.parametrize("version", [v for v in RELEASED])
def test_the_library_serves_the_old_sql_before_and_after_the_update(new_database, version):
    # This server runs the current library; the database's SQL objects are the release's until
    # ALTER EXTENSION ... UPDATE, as after a new library is installed and the server restarted.
    _, old = new_database(version)
    write_some(old)
    calls_work(old, 20)
    old.execute("ALTER EXTENSION pg_safeupsert UPDATE")
    calls_work(old, 30)
    # the updated database has what the release added: versioned deletes
    assert old.execute("SELECT safe_delete('items', '{\"id\": 30, \"ver\": 1}', 'ver')::text").fetchone()[0] == "deleted"
    assert old.execute("SELECT safe_upsert('items', '{\"id\": 30, \"ver\": 1}', 'ver')::text").fetchone()[0] == "stale"


def dump(dbname, path):
    subprocess.run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(path), "-d", dbname], check=True)


def restore(path, dbname):
    subprocess.run([str(PG_BIN / "pg_restore"), "--exit-on-error", "-d", dbname, str(path)], check=True)


@pytest.mark.parametrize("extension_first", [False, True], ids=["into_an_empty_database", "into_one_with_the_extension"])
def test_dump_and_restore_bring_back_data_and_a_working_extension(new_database, tmp_path, extension_first):
    src_name, src = new_database("current")
    write_some(src)
    # tombstones: a deleted key and one deleted before it was ever written
    for row, expected in [({"id": 2, "ver": 5}, "deleted"), ({"id": 3, "ver": 1}, "absent")]:
        assert src.execute("SELECT safe_delete('items', %s, 'ver')::text", (Jsonb(row),)).fetchone()[0] == expected
    archive = tmp_path / "src.dump"
    dump(src_name, archive)
    dst_name, dst = new_database("current" if extension_first else None)
    restore(archive, dst_name)
    assert installed_version(dst) == installed_version(src)
    assert members(dst) == members(src)
    assert dst.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_safeupsert'").fetchone()[0] == 1
    for q in ["SELECT string_agg(outcome::text, ' ' ORDER BY ctid) FROM audit",
              "SELECT string_agg(format('%s:%s:%s', id, ver, val), ' ' ORDER BY id) FROM items",
              "SELECT string_agg(format('%s %s %s', relname, key, version), ', ' ORDER BY key::text) FROM safe_upsert_tombstones",
              "SELECT string_agg(format('%s %s %s %s', target, tombstones, key_cols, version_cols), ', ') FROM safe_upsert_data.tombstone_tables"]:
        assert dst.execute(q).fetchone() == src.execute(q).fetchone()
    assert dst.execute("SELECT count(*) FROM safe_upsert_tombstones").fetchone()[0] == 2
    # the tombstones still refuse older writes, and still go with their table
    assert dst.execute("SELECT safe_upsert('items', '{\"id\": 2, \"ver\": 4}', 'ver')::text").fetchone()[0] == "stale"
    assert dst.execute("SELECT safe_delete('items', '{\"id\": 3, \"ver\": 1}', 'ver')::text").fetchone()[0] == "duplicate"
    # the restored table is a table like any other: its OID changed, its plans are new
    assert dst.execute("SELECT safe_upsert('items', '{\"id\": 1, \"ver\": 1, \"val\": \"old\"}', 'ver')::text").fetchone()[0] == "stale"
    calls_work(dst, 40)
    dst.execute("DROP TABLE items")
    assert dst.execute("SELECT count(*) FROM safe_upsert_data.tombstone_tables").fetchone()[0] == 0
    assert dst.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'safe_upsert_data'").fetchone()[0] == 1
