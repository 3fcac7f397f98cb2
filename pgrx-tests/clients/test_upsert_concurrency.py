"""safe_upsert as the users' programs see it: many processes writing the same keys out of order,
failed calls and their SQLSTATEs, the caller's privileges and row-level security, DDL from
another session, partitioned tables.

Run by scripts/test-clients.sh (fixtures in conftest.py). The concurrent workload uses psycopg2 in
a ProcessPoolExecutor (one connection per process, autocommit); the other tests use psycopg 3.
"""

import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import random
import time
import uuid

import psycopg
import psycopg.errors
import pytest

KEYS = 500
VERSIONS = 40  # each key is sent with versions 1..VERSIONS
WORKERS = 8
SEED = 20240924
OUTCOMES = ("inserted", "updated", "stale", "duplicate", "tie")


def row_for(key, version):
    """The row sent for (key, version): every value is derived from both, so the final row
    shows which write won."""
    digest = hashlib.sha256(f"{key}/{version}".encode()).hexdigest()[:16]
    return {
        "k": key,
        "ver": version,
        "v": f"key {key} version {version} {digest}",
        "n": key * 1000 + version,
        "doc": {"key": key, "version": version, "digest": digest},
    }


def _worker(dsn, table, items, start_at):
    """One process: one psycopg2 connection in autocommit mode, one safe_upsert per item.
    Returns (outcome counts, errors as (key, version, sqlstate, message), (first, last) wall
    clock times of the loop)."""
    import psycopg2  # imported here: the pool's processes are spawned

    counts = collections.Counter()
    errors = []
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "PREPARE up(jsonb) AS SELECT safe_upsert(%s::regclass, $1, 'ver')::text", (table,)
        )
        # start together, so that the processes really overlap
        time.sleep(max(0.0, start_at - time.time()))
        first = time.time()
        for key, version in items:
            try:
                cur.execute("EXECUTE up(%s)", (json.dumps(row_for(key, version)),))
                counts[cur.fetchone()[0]] += 1
            except psycopg2.Error as e:
                errors.append((key, version, e.pgcode, str(e).strip()))
        last = time.time()
    conn.close()
    return dict(counts), errors, (first, last)


def test_concurrent_shuffled_versions(db, dsn):
    """8 processes, 20,000 calls over 500 keys, each key's versions 1..40 shuffled across the
    whole workload: no errors, every key ends with the row of its highest version, and the
    outcomes add up (each key inserted exactly once)."""
    table = db.table("k int PRIMARY KEY, v text NOT NULL, n bigint NOT NULL, doc jsonb, ver int NOT NULL")
    work = [(k, ver) for k in range(KEYS) for ver in range(1, VERSIONS + 1)]
    random.Random(SEED).shuffle(work)
    chunks = [work[i::WORKERS] for i in range(WORKERS)]

    t0 = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx) as pool:
        start_at = time.time() + 2.0  # time for the spawned processes to start and connect
        futures = [pool.submit(_worker, dsn, table, chunk, start_at) for chunk in chunks]
        results = [f.result(timeout=50) for f in futures]
    elapsed = time.monotonic() - t0

    counts = collections.Counter()
    errors = []
    for c, e, _ in results:
        counts.update(c)
        errors.extend(e)
    # the 8 processes were all writing at the same time for a while
    spans = [span for _, _, span in results]
    assert max(first for first, _ in spans) < min(last for _, last in spans), spans
    assert errors == [], f"{len(errors)} errors, first: {errors[:5]}"
    assert set(counts) <= set(OUTCOMES), counts
    assert sum(counts.values()) == KEYS * VERSIONS, counts
    assert counts["inserted"] == KEYS, counts
    # every (key, version) is sent once with its own values: no replay, no tie
    assert counts["duplicate"] == 0 and counts["tie"] == 0, counts
    assert counts["updated"] + counts["stale"] == KEYS * (VERSIONS - 1), counts

    rows = db.conn.execute(f"SELECT k, ver, v, n, doc FROM {table} ORDER BY k").fetchall()
    assert len(rows) == KEYS
    wrong = []
    for k, ver, v, n, doc in rows:
        want = row_for(k, VERSIONS)
        if (ver, v, n, doc) != (want["ver"], want["v"], want["n"], want["doc"]):
            wrong.append((k, ver, v))
    assert wrong == [], f"{len(wrong)} keys without their newest row, first: {wrong[:5]}"
    print(f"\n{KEYS * VERSIONS} calls in {elapsed:.1f} s with {WORKERS} processes: {dict(counts)}")


# --- failed calls --------------------------------------------------------------------------


def _call(conn, table, row, version="ver", **kwargs):
    args = ", ".join(f"{name} => %({name})s" for name in kwargs)
    sql = f"SELECT safe_upsert(%(t)s::regclass, %(row)s::jsonb, %(version)s{', ' + args if args else ''})::text"
    params = {"t": table, "row": json.dumps(row), "version": version, **kwargs}
    return conn.execute(sql, params).fetchone()[0]


def _snapshot(conn, table):
    return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def test_failed_call_in_transaction_writes_nothing(db, connect):
    """A call that fails (a value that does not convert) writes nothing: inside a transaction,
    rolling back to a savepoint keeps the work done before it, and the transaction goes on."""
    table = db.table("k int PRIMARY KEY, v text, n int, ver int")
    db.conn.execute(f"INSERT INTO {table} VALUES (1, 'one', 1, 1)")
    conn = connect(autocommit=False)
    with conn.transaction():
        assert _call(conn, table, {"k": 2, "v": "two", "n": 2, "ver": 1}) == "inserted"
        # a new key whose value does not convert
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            with conn.transaction():  # a savepoint
                _call(conn, table, {"k": 3, "v": "three", "n": "three", "ver": 1})
        assert e.value.diag.sqlstate == "22P02"
        assert 'column "n"' in e.value.diag.message_primary and "t1" in e.value.diag.message_primary
        # an existing key, a newer version, and a value that does not convert
        with pytest.raises(psycopg.errors.NumericValueOutOfRange) as e:
            with conn.transaction():
                _call(conn, table, {"k": 1, "v": "uno", "n": 2**40, "ver": 2})
        assert e.value.diag.sqlstate == "22003"
        # the transaction goes on after the savepoint was rolled back
        assert _call(conn, table, {"k": 4, "v": "four", "n": 4, "ver": 1}) == "inserted"
        assert _call(conn, table, {"k": 1, "v": "uno", "n": 11, "ver": 2}) == "updated"
    assert _snapshot(db.conn, table) == [
        (1, "uno", 11, 2),
        (2, "two", 2, 1),
        (4, "four", 4, 1),
    ]


def test_failed_call_aborts_transaction(db, connect):
    """Without a savepoint, a failed call aborts the transaction as any failed statement does:
    the calls before it in the transaction are rolled back too."""
    table = db.table("k int PRIMARY KEY, v text, ver int")
    conn = connect(autocommit=False)
    assert _call(conn, table, {"k": 1, "v": "a", "ver": 1}) == "inserted"
    with pytest.raises(psycopg.errors.UndefinedColumn) as e:
        _call(conn, table, {"k": 2, "v": "b", "ver": 1, "nope": 1})
    assert e.value.diag.sqlstate == "42703"
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        _call(conn, table, {"k": 3, "v": "c", "ver": 1})
    conn.rollback()
    assert _snapshot(db.conn, table) == []


# (description, table columns, setup SQL ({schema}, {table}), row, version_col, other arguments
#  ("target" replaces the table), SQLSTATE, words the primary message must contain)
STORED = "INSERT INTO {table} (k, ver) VALUES (1, 1)"
BAD_INPUTS = [
    ("target not a table", "k int PRIMARY KEY, ver int", [STORED, "CREATE VIEW {schema}.vw AS SELECT * FROM {table}"],
     {"k": 1, "ver": 2}, "ver", {"target": "{schema}.vw"}, "42809", ["vw", "is not a table"]),
    ("target a sequence", "k int PRIMARY KEY, ver int", [STORED, "CREATE SEQUENCE {schema}.sq"],
     {"k": 1, "ver": 2}, "ver", {"target": "{schema}.sq"}, "42809", ["sq", "is not a table"]),
    ("row not an object", "k int PRIMARY KEY, ver int", [STORED],
     [{"k": 1, "ver": 2}], "ver", {}, "22023", ["t1", "must be a JSON object"]),
    ("row empty", "k int PRIMARY KEY, ver int", [STORED],
     {}, "ver", {}, "22023", ["t1", "empty"]),
    ("unknown key", "k int PRIMARY KEY, ver int", [STORED],
     {"k": 1, "ver": 2, "colour": "red"}, "ver", {}, "42703", ['"colour"', "t1"]),
    ("key missing", "k int PRIMARY KEY, v text, ver int", [STORED],
     {"v": "x", "ver": 2}, "ver", {}, "23502", ['"k"', "t1"]),
    ("key null", "k int PRIMARY KEY, v text, ver int", [STORED],
     {"k": None, "v": "x", "ver": 2}, "ver", {}, "23502", ['"k"', "t1"]),
    ("version column unknown", "k int PRIMARY KEY, ver int", [STORED],
     {"k": 1, "ver": 2}, "version", {}, "42703", ['"version"', "t1"]),
    ("version column is the key", "k int PRIMARY KEY, ver int", [STORED],
     {"k": 1, "ver": 2}, "k", {}, "42P10", ['"k"', "t1"]),
    ("version missing", "k int PRIMARY KEY, v text, ver int", [STORED],
     {"k": 1, "v": "x"}, "ver", {}, "22004", ['"ver"', "t1"]),
    ("version null", "k int PRIMARY KEY, v text, ver int", [STORED],
     {"k": 1, "v": "x", "ver": None}, "ver", {}, "22004", ['"ver"', "t1"]),
    ("version type unordered", "k int PRIMARY KEY, ver point", ["INSERT INTO {table} VALUES (1, '(0,0)')"],
     {"k": 1, "ver": "(1,1)"}, "ver", {}, "42883", ['"ver"', "t1", "point"]),
    ("value does not convert", "k int PRIMARY KEY, v date, ver int", [STORED],
     {"k": 1, "v": "someday", "ver": 2}, "ver", {}, "22007", ['"v"', "t1", "someday"]),
    ("value out of range", "k int PRIMARY KEY, v smallint, ver int", [STORED],
     {"k": 1, "v": 70000, "ver": 2}, "ver", {}, "22003", ['"v"', "t1"]),
    ("generated column", "k int PRIMARY KEY, ver int, g int GENERATED ALWAYS AS (ver + 1) STORED", [STORED],
     {"k": 1, "ver": 2, "g": 3}, "ver", {}, "428C9", ['"g"', "t1"]),
    ("no primary key", "k int, ver int", [STORED],
     {"k": 1, "ver": 2}, "ver", {}, "42P10", ["t1", "no primary key"]),
    ("conflict_cols match no unique index", "k int PRIMARY KEY, v text, ver int", [STORED],
     {"k": 1, "v": "x", "ver": 2}, "ver", {"conflict_cols": ["v"]}, "42P10", ["t1", "(v)"]),
    ("unknown on_tie", "k int PRIMARY KEY, ver int", [STORED],
     {"k": 1, "ver": 2}, "ver", {"on_tie": "newest"}, "22023", ['"newest"']),
    ("tie with on_tie error", "k int PRIMARY KEY, v text, ver int", [STORED],
     {"k": 1, "v": "other", "ver": 1}, "ver", {"on_tie": "error"}, "23000", ["t1", '{"k":1}']),
    ("another unique constraint", "k int PRIMARY KEY, v text UNIQUE, ver int", [STORED, "INSERT INTO {table} VALUES (2, 'taken', 1)"],
     {"k": 1, "v": "taken", "ver": 2}, "ver", {}, "23505", ['"t1_v_key"']),
]


@pytest.mark.parametrize(
    "columns, setup, row, version, extra, sqlstate, words",
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_reaches_client_with_sqlstate(db, columns, setup, row, version, extra, sqlstate, words):
    """Each bad input ends in its documented SQLSTATE, visible to the client as e.diag.sqlstate,
    with a message naming what is at fault; the table is unchanged and the connection usable."""
    table = db.table(columns)
    names = {"schema": f'"{db.schema}"', "table": table}
    for sql in setup:
        db.conn.execute(sql.format(**names))
    extra = dict(extra)
    target = extra.pop("target", "{table}").format(**names)
    before = _snapshot(db.conn, table)
    with pytest.raises(psycopg.Error) as e:
        _call(db.conn, target, row, version, **extra)
    assert e.value.diag.sqlstate == sqlstate, e.value.diag.message_primary
    for w in words:
        assert w in e.value.diag.message_primary, e.value.diag.message_primary
    assert _snapshot(db.conn, table) == before
    # the connection, its backend and the plan cache still work
    if "PRIMARY KEY" in columns and "point" not in columns:
        assert _call(db.conn, table, {"k": 1, "ver": 3}) == "updated"


# --- caller's rights -----------------------------------------------------------------------


@pytest.fixture
def role(conn, dsn):
    """A role of its own (no login: used through SET ROLE), dropped after the test."""
    name = f"safeupsert_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{name}" NOLOGIN')
    yield name
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'DROP OWNED BY "{name}"')
        c.execute(f'DROP ROLE "{name}"')


def test_runs_with_callers_privileges(db, role, connect):
    """safe_upsert needs what INSERT ... ON CONFLICT DO UPDATE needs: without INSERT (or UPDATE)
    privilege the call fails with 42501 and writes nothing, even when the same backend has the
    plan cached from a privileged caller."""
    table = db.table("k int PRIMARY KEY, v text, ver int")
    db.conn.execute(f'GRANT USAGE ON SCHEMA "{db.schema}" TO "{role}"')
    db.conn.execute(f'GRANT SELECT ON {table} TO "{role}"')
    conn = connect()
    # the owner's call caches the plan in this backend
    assert _call(conn, table, {"k": 1, "v": "owner", "ver": 1}) == "inserted"

    conn.execute(f'SET ROLE "{role}"')
    for row in ({"k": 2, "v": "new key", "ver": 1}, {"k": 1, "v": "newer", "ver": 2}):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            _call(conn, table, row)
        assert e.value.diag.sqlstate == "42501"
        assert "permission denied for table t1" in e.value.diag.message_primary

    # INSERT without UPDATE is not enough either: ON CONFLICT DO UPDATE needs both
    db.conn.execute(f'GRANT INSERT ON {table} TO "{role}"')
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        _call(conn, table, {"k": 2, "v": "new key", "ver": 1})
    assert e.value.diag.sqlstate == "42501"

    db.conn.execute(f'GRANT UPDATE ON {table} TO "{role}"')
    assert _call(conn, table, {"k": 2, "v": "new key", "ver": 1}) == "inserted"
    assert _call(conn, table, {"k": 1, "v": "newer", "ver": 2}) == "updated"

    # privileges taken back apply at once, to the cached plan too
    db.conn.execute(f'REVOKE INSERT, UPDATE ON {table} FROM "{role}"')
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _call(conn, table, {"k": 1, "v": "newest", "ver": 3})
    conn.execute("RESET ROLE")
    assert _snapshot(db.conn, table) == [(1, "newer", 2), (2, "new key", 1)]


def test_row_level_security_applies(db, role, connect):
    """Row-level security policies apply to safe_upsert as to INSERT ... ON CONFLICT: a role
    whose policy hides a row cannot write over it (42501, whatever the versions), nor write rows
    its policy rejects; the rows it may see behave as usual."""
    table = db.table("k int PRIMARY KEY, tenant text NOT NULL, v text, ver int")
    owner = db.conn
    owner.execute(f"INSERT INTO {table} VALUES (1, 'a', 'tenant a row', 5), (2, 'b', 'tenant b row', 5)")
    owner.execute(f'GRANT USAGE ON SCHEMA "{db.schema}" TO "{role}"')
    owner.execute(f'GRANT SELECT, INSERT, UPDATE ON {table} TO "{role}"')
    owner.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    owner.execute(
        f"""CREATE POLICY tenant_a ON {table} TO "{role}" USING (tenant = 'a') WITH CHECK (tenant = 'a')"""
    )
    before = _snapshot(owner, table)

    conn = connect()
    conn.execute(f'SET ROLE "{role}"')
    assert conn.execute(f"SELECT k FROM {table} ORDER BY k").fetchall() == [(1,)]

    # its own rows: the usual outcomes
    assert _call(conn, table, {"k": 1, "tenant": "a", "v": "a newer", "ver": 6}) == "updated"
    assert _call(conn, table, {"k": 1, "tenant": "a", "v": "a older", "ver": 4}) == "stale"
    assert _call(conn, table, {"k": 3, "tenant": "a", "v": "a new", "ver": 1}) == "inserted"

    # a row the policy hides (tenant b's key 2): any write over it is refused by the policy's
    # USING check on the stored row, whatever the versions, as INSERT ... ON CONFLICT DO UPDATE
    # refuses it in plain SQL
    for ver in (9, 5, 1):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            _call(conn, table, {"k": 2, "tenant": "a", "v": "takeover", "ver": ver})
        assert e.value.diag.sqlstate == "42501"
        assert "row-level security policy (USING expression)" in e.value.diag.message_primary

    # rows the policy's WITH CHECK rejects: neither inserted, nor written over a hidden row, nor
    # moved to another tenant
    for row in (
        {"k": 4, "tenant": "b", "v": "b new", "ver": 1},
        {"k": 2, "tenant": "b", "v": "takeover", "ver": 9},
        {"k": 2, "tenant": "b", "v": "older", "ver": 1},
        {"k": 1, "tenant": "b", "v": "moved", "ver": 7},
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            _call(conn, table, row)
        assert e.value.diag.sqlstate == "42501"
        assert "row-level security" in e.value.diag.message_primary

    conn.execute("RESET ROLE")
    after = _snapshot(owner, table)
    assert after == [
        (1, "a", "a newer", 6),
        (2, "b", "tenant b row", 5),
        (3, "a", "a new", 1),
    ]
    assert before[1] == after[1]


# --- other sessions' DDL, partitioned tables ------------------------------------------------


def test_ddl_in_another_session_never_uses_a_stale_plan(db, connect):
    """A backend keeps prepared plans per table and column set; DDL committed by another session
    (a retyped, dropped or re-added column, a dropped and re-added key) is seen by the next call,
    which neither fails nor writes through the old shape."""
    table = db.table("k int PRIMARY KEY, v text, ver int")
    a = connect()
    other = db.conn
    assert _call(a, table, {"k": 1, "v": "one", "ver": 1}) == "inserted"

    other.execute(f"ALTER TABLE {table} ALTER COLUMN v TYPE int USING length(v)")
    assert _call(a, table, {"k": 1, "v": "42", "ver": 2}) == "updated"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        _call(a, table, {"k": 1, "v": "forty-two", "ver": 3})
    assert _snapshot(other, table) == [(1, 42, 2)]

    other.execute(f"ALTER TABLE {table} DROP COLUMN v")
    other.execute(f"ALTER TABLE {table} ADD COLUMN v text DEFAULT 'default'")
    assert _call(a, table, {"k": 2, "ver": 1}) == "inserted"
    assert _call(a, table, {"k": 1, "v": "text again", "ver": 3}) == "updated"
    assert _snapshot(other, table) == [(1, 3, "text again"), (2, 1, "default")]

    other.execute(f"ALTER TABLE {table} DROP CONSTRAINT t1_pkey")
    with pytest.raises(psycopg.errors.InvalidColumnReference):
        _call(a, table, {"k": 1, "v": "no key", "ver": 4})
    other.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (k)")
    assert _call(a, table, {"k": 1, "v": "key again", "ver": 4}) == "updated"

    other.execute(f'ALTER TABLE {table} RENAME TO renamed')
    renamed = f'"{db.schema}"."renamed"'
    assert _call(a, renamed, {"k": 1, "v": "renamed", "ver": 5}) == "updated"
    assert _snapshot(other, renamed) == [(1, 5, "renamed"), (2, 1, "default")]


def test_partitioned_table(db):
    """Partitioned tables are targets too, with every outcome, and a row for no partition fails
    with PostgreSQL's own 23514."""
    db.conn.execute(
        f'CREATE TABLE "{db.schema}".pt (k int, region text, v text, ver int, PRIMARY KEY (k, region))'
        " PARTITION BY LIST (region)"
    )
    db.conn.execute(f'CREATE TABLE "{db.schema}".pt_eu PARTITION OF "{db.schema}".pt FOR VALUES IN (\'eu\')')
    table = f'"{db.schema}".pt'
    assert _call(db.conn, table, {"k": 1, "region": "eu", "v": "a", "ver": 1}) == "inserted"
    assert _call(db.conn, table, {"k": 1, "region": "eu", "v": "b", "ver": 2}) == "updated"
    assert _call(db.conn, table, {"k": 1, "region": "eu", "v": "c", "ver": 1}) == "stale"
    assert _call(db.conn, table, {"k": 1, "region": "eu", "v": "b", "ver": 2}) == "duplicate"
    assert _call(db.conn, table, {"k": 1, "region": "eu", "v": "t", "ver": 2}) == "tie"
    assert _call(db.conn, table, {"k": 2, "region": "eu", "v": "x", "ver": 1}) == "inserted"
    with pytest.raises(psycopg.errors.CheckViolation) as e:
        _call(db.conn, table, {"k": 1, "region": "us", "v": "nowhere", "ver": 1})
    assert e.value.diag.sqlstate == "23514"
    assert _snapshot(db.conn, table) == [(1, "eu", "b", 2), (2, "eu", "x", 1)]


def test_extension_created_again_in_another_schema_in_the_same_session(conn, connect):
    """A session that has used safe_upsert keeps working after DROP EXTENSION and CREATE
    EXTENSION ... SCHEMA in an existing other schema: its cached statements name the extension's
    own function, and are rebuilt with the new schema."""
    name = f"recreate_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(conn.info.dsn.replace(f"dbname={conn.info.dbname}", f"dbname={name}"),
                             autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_safeupsert")
            c.execute("CREATE SCHEMA other")
            c.execute("CREATE TABLE public.t (k int PRIMARY KEY, v text, ver int)")
            assert _call(c, "public.t", {"k": 1, "v": "a", "ver": 2}) == "inserted"
            assert _call(c, "public.t", {"k": 1, "v": "b", "ver": 1}) == "stale"
            c.execute("DROP EXTENSION pg_safeupsert")
            c.execute("CREATE EXTENSION pg_safeupsert SCHEMA other")
            row = json.dumps({"k": 1, "v": "c", "ver": 1})
            assert c.execute("SELECT other.safe_upsert('public.t', %s::jsonb, 'ver')::text", (row,)).fetchone()[0] == "stale"
            row = json.dumps({"k": 1, "v": "a", "ver": 2})
            assert c.execute("SELECT other.safe_upsert('public.t', %s::jsonb, 'ver')::text", (row,)).fetchone()[0] == "duplicate"
            assert _snapshot(c, "public.t") == [(1, "a", 2)]
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
