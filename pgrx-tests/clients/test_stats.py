"""Conflict statistics and the conflict log (issue 3), as a user's programs see them.

Most tests run on the shared test cluster (conftest: dsn, conn, connect, db, cluster), each on
tables of its own, so that the counts they read are theirs alone. Tests that need non-default
postmaster settings (safe_upsert.max_tables = 3, safe_upsert.conflict_log_size = 5,
max_prepared_transactions > 0) or that change safe_upsert.save run on a private cluster of this
module (`small`), started on a free port and stopped at the end.

What the tests pin down:
  - outcomes (of safe_upsert and safe_upsert_many) count when their transaction commits; a
    rolled-back transaction or savepoint leaves nothing; a failed call counts at once, whatever
    happens to its transaction;
  - two-phase commit: outcomes count at PREPARE TRANSACTION, and a later ROLLBACK PREPARED does
    not take them back (observed; see test_two_phase_commit_counts_at_prepare);
  - the counters are exact under 8 concurrent writer processes;
  - the conflict log shows what was sent, keeps the newest conflict_log_size rows (none when 0),
    cuts long values with a marker, and shows a role only the tables it may SELECT; PUBLIC
    cannot reset;
  - stats survive a clean restart, and are gone after a crash or with safe_upsert.save = off;
  - the least recently used table is evicted when safe_upsert.max_tables are tracked, and a
    dropped table's entry goes away.
"""

import collections
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conftest import PrivateCluster

COUNTERS = ("inserted", "updated", "stale", "duplicate", "tie", "skipped_by_trigger", "unique_violations", "errors",
            "deleted", "absent", "delete_stale", "delete_duplicate", "delete_skipped_by_trigger")
SAVE_FILE = "pg_stat/pg_safeupsert.stat"
CUT = re.compile(r"(?s)(.*)…\[cut (\d+) bytes\]")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def upsert(conn, table, row, version="ver", **kwargs):
    """safe_upsert(table, row, version) and its outcome as text."""
    extra = "".join(f", {k} => %s" for k in kwargs)
    version_sql = "%s::name[]" if isinstance(version, list) else "%s::name"
    sql = f"SELECT safe_upsert(%s::regclass, %s::jsonb, {version_sql}{extra})::text"
    return conn.execute(sql, (table, Jsonb(row), version, *kwargs.values())).fetchone()[0]


def stats_row(conn, table):
    """The table's row of safe_upsert_stats, as a dict, or None."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT * FROM safe_upsert_stats WHERE relid = %s::regclass", (table,))
        .fetchone()
    )


def counts(conn, table):
    """The table's counters (all zero when it has no row)."""
    row = stats_row(conn, table)
    return {c: (row[c] if row else 0) for c in COUNTERS}


def expect(**given):
    return {c: given.get(c, 0) for c in COUNTERS}


def conflicts(conn, table):
    """The table's rows of safe_upsert_conflicts, oldest first."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT * FROM safe_upsert_conflicts WHERE relid = %s::regclass ORDER BY id", (table,))
        .fetchall()
    )


def info(conn):
    return conn.cursor(row_factory=dict_row).execute("SELECT * FROM safe_upsert_info").fetchone()


def relid(conn, table):
    return conn.execute("SELECT %s::regclass::oid", (table,)).fetchone()[0]


def datadir(script, name):
    out = subprocess.run([script, "datadir", name], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def ready_lines(log):
    return log.read_text(errors="replace").count("database system is ready to accept connections")


def kill_backend_and_wait(dsn, log):
    """kill -9 of a client backend: the postmaster kills every other server process, resets
    shared memory and runs crash recovery. Returns once the server accepts connections again
    (its log says "ready" once more)."""
    before = ready_lines(log)
    victim = psycopg.connect(dsn, autocommit=True)
    pid = victim.info.backend_pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready_lines(log) > before:
            try:
                psycopg.connect(dsn, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                pass
        time.sleep(0.1)
    else:
        pytest.fail(f"the server did not recover within 60 s after kill -9 of backend {pid}")
    try:
        victim.close()
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# the private cluster with small postmaster settings
# ---------------------------------------------------------------------------------------------

SMALL_CONF = (
    "safe_upsert.max_tables = 3",
    "safe_upsert.conflict_log_size = 5",
    "max_prepared_transactions = 4",
)


@pytest.fixture(scope="module")
def small():
    """A cluster of this module's own: max_tables 3, conflict_log_size 5, 2PC enabled."""
    c = PrivateCluster("test_stats_small", SMALL_CONF)
    try:
        c.start()
        with c.connect() as conn:
            conn.execute("CREATE EXTENSION pg_safeupsert")
        yield c
    finally:
        c.remove()


class SmallDb:
    """A schema of the test's own in the small cluster; `conn` has it first on search_path."""

    def __init__(self, cluster, schema):
        self.cluster = cluster
        self.schema = schema
        self.conn = cluster.connect()
        self.conn.execute(f'CREATE SCHEMA "{schema}"')
        self.conn.execute(f'SET search_path = "{schema}", public')
        self._opened = [self.conn]

    def table(self, name, columns="k int PRIMARY KEY, v text, ver int"):
        qualified = f'"{self.schema}"."{name}"'
        self.conn.execute(f"CREATE TABLE {qualified} ({columns})")
        return qualified

    def connect(self):
        c = self.cluster.connect()
        self._opened.append(c)
        return c

    def close(self):
        for c in self._opened:
            try:
                c.close()
            except Exception:
                pass
        try:
            with self.cluster.connect() as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        except psycopg.OperationalError:
            pass


@pytest.fixture
def small_db(small, request):
    base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    d = SmallDb(small, f"{base}_{uuid.uuid4().hex[:8]}")
    yield d
    d.close()


# ---------------------------------------------------------------------------------------------
# the views and what they describe
# ---------------------------------------------------------------------------------------------


def test_info_is_one_row_matching_the_settings(conn):
    rows = conn.cursor(row_factory=dict_row).execute("SELECT * FROM safe_upsert_info").fetchall()
    assert len(rows) == 1
    i = rows[0]
    setting = lambda name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
    assert i["max_tables"] == int(setting("safe_upsert.max_tables"))
    assert i["conflict_log_size"] == int(setting("safe_upsert.conflict_log_size"))
    assert i["plan_cache_size"] == int(setting("safe_upsert.plan_cache_size"))
    assert i["track"] is (setting("safe_upsert.track") == "on")
    assert i["save"] is (setting("safe_upsert.save") == "on")
    assert 0 <= i["tables_tracked"] <= i["max_tables"]
    assert i["shared_memory_bytes"] > 0
    assert i["stats_reset"] is not None


def test_outcomes_are_counted_when_the_transaction_commits(db, connect):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    writer = connect(autocommit=False)
    other = connect()
    outcomes = [
        upsert(writer, t, {"k": 1, "v": "a", "ver": 1}),
        upsert(writer, t, {"k": 2, "v": "a", "ver": 1}),
        upsert(writer, t, {"k": 3, "v": "a", "ver": 1}),
        upsert(writer, t, {"k": 1, "v": "b", "ver": 2}),  # newer
        upsert(writer, t, {"k": 2, "v": "b", "ver": 0}),  # older
        upsert(writer, t, {"k": 3, "v": "a", "ver": 1}),  # the same again
        upsert(writer, t, {"k": 3, "v": "c", "ver": 1}),  # same version, other value
    ]
    assert outcomes == ["inserted", "inserted", "inserted", "updated", "stale", "duplicate", "tie"]

    # Not before COMMIT: neither for another session nor for the writer itself.
    assert stats_row(other, t) is None
    assert stats_row(writer, t) is None
    assert conflicts(other, t) == []

    before_commit = other.execute("SELECT clock_timestamp()").fetchone()[0]
    writer.commit()
    row = stats_row(other, t)
    assert {c: row[c] for c in COUNTERS} == expect(inserted=3, updated=1, stale=1, duplicate=1, tie=1)
    assert row["relid"] == relid(other, t)
    assert (row["schemaname"], row["relname"]) == (db.schema, "t1")
    assert row["last_conflict_at"] is not None and row["last_conflict_at"] <= before_commit
    assert row["stats_reset"] is not None
    assert [c["kind"] for c in conflicts(other, t)] == ["stale", "tie"]

    # Autocommit calls count one by one; a table without conflicts has no last_conflict_at.
    t2 = db.table("k int PRIMARY KEY, v text, ver int")
    for k in range(5):
        upsert(other, t2, {"k": k, "v": "x", "ver": 1})
    upsert(other, t2, {"k": 0, "v": "y", "ver": 2})
    row2 = stats_row(other, t2)
    assert {c: row2[c] for c in COUNTERS} == expect(inserted=5, updated=1)
    assert row2["last_conflict_at"] is None


def test_rolled_back_transaction_leaves_no_trace(db, connect):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    db.conn.execute(f"INSERT INTO {t} VALUES (1, 'a', 5)")
    writer = connect(autocommit=False)
    assert upsert(writer, t, {"k": 2, "v": "a", "ver": 1}) == "inserted"
    assert upsert(writer, t, {"k": 1, "v": "b", "ver": 6}) == "updated"
    assert upsert(writer, t, {"k": 1, "v": "c", "ver": 1}) == "stale"
    assert upsert(writer, t, {"k": 1, "v": "d", "ver": 6}) == "tie"
    writer.rollback()
    assert stats_row(db.conn, t) is None
    assert conflicts(db.conn, t) == []

    # The same session's next, committed, transaction counts only itself.
    assert upsert(writer, t, {"k": 1, "v": "e", "ver": 2}) == "stale"
    writer.commit()
    assert counts(db.conn, t) == expect(stale=1)
    assert [c["incoming_version"] for c in conflicts(db.conn, t)] == [2]


def test_rolled_back_savepoint_leaves_no_trace_and_released_one_counts(db, connect):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    db.conn.execute(f"INSERT INTO {t} VALUES (100, 'stored', 50)")
    w = connect(autocommit=False)
    assert upsert(w, t, {"k": 1, "v": "top", "ver": 1}) == "inserted"
    w.execute("SAVEPOINT a")
    assert upsert(w, t, {"k": 2, "v": "in a", "ver": 1}) == "inserted"
    assert upsert(w, t, {"k": 100, "v": "in a", "ver": 10}) == "stale"
    w.execute("ROLLBACK TO SAVEPOINT a")
    w.execute("SAVEPOINT b")
    assert upsert(w, t, {"k": 3, "v": "in b", "ver": 1}) == "inserted"
    assert upsert(w, t, {"k": 100, "v": "in b", "ver": 20}) == "stale"
    w.execute("RELEASE SAVEPOINT b")
    w.execute("SAVEPOINT c")
    w.execute("SAVEPOINT d")  # nested in c, released into c, rolled back with c
    assert upsert(w, t, {"k": 4, "v": "in d", "ver": 1}) == "inserted"
    assert upsert(w, t, {"k": 100, "v": "in d", "ver": 30}) == "stale"
    w.execute("RELEASE SAVEPOINT d")
    assert upsert(w, t, {"k": 100, "v": "in c", "ver": 40}) == "stale"
    w.execute("ROLLBACK TO SAVEPOINT c")
    w.execute("RELEASE SAVEPOINT c")
    # psycopg's nested transaction blocks are savepoints too
    with pytest.raises(RuntimeError):
        with w.transaction():
            assert upsert(w, t, {"k": 5, "v": "in block", "ver": 1}) == "inserted"
            raise RuntimeError("roll the block back")
    with w.transaction():
        assert upsert(w, t, {"k": 6, "v": "in block", "ver": 1}) == "inserted"
    assert stats_row(db.conn, t) is None
    w.commit()

    assert counts(db.conn, t) == expect(inserted=3, stale=1)  # k 1, 3, 6; the stale write of b
    assert [(c["kind"], c["incoming_version"]) for c in conflicts(db.conn, t)] == [("stale", 20)]
    assert [r[0] for r in db.conn.execute(f"SELECT k FROM {t} ORDER BY k")] == [1, 3, 6, 100]


def test_unconvertible_value_is_counted_as_an_error_at_once(db, connect):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    w = connect(autocommit=False)
    other = connect()
    assert upsert(w, t, {"k": 1, "v": "a", "ver": 1}) == "inserted"
    with pytest.raises(errors.InvalidTextRepresentation):  # 22P02
        upsert(w, t, {"k": 2, "v": "a", "ver": "not a number"})
    # counted while its transaction is still open (and aborted)
    assert counts(other, t) == expect(errors=1)
    w.rollback()
    assert counts(other, t) == expect(errors=1)
    assert conflicts(other, t) == []

    # A failed call inside a savepoint that the program rolls back and carries on from.
    assert upsert(w, t, {"k": 1, "v": "a", "ver": 1}) == "inserted"
    with pytest.raises(errors.InvalidTextRepresentation):
        with w.transaction():
            upsert(w, t, {"k": 2, "v": "a", "ver": "2024-13-45"})
    assert upsert(w, t, {"k": 3, "v": "a", "ver": 1}) == "inserted"
    w.commit()
    assert counts(other, t) == expect(inserted=2, errors=2)


def test_unique_violation_is_counted_and_logged_at_once(db, connect):
    t = db.table("k int PRIMARY KEY, email text UNIQUE, ver int")
    w = connect(autocommit=False)
    other = connect()
    assert upsert(w, t, {"k": 1, "email": "a@example.com", "ver": 1}) == "inserted"
    w.commit()
    sent = {"k": 2, "email": "a@example.com", "ver": 7}
    t0 = other.execute("SELECT clock_timestamp()").fetchone()[0]
    with pytest.raises(errors.UniqueViolation):  # 23505, on the other unique constraint
        upsert(w, t, sent)
    t1 = other.execute("SELECT clock_timestamp()").fetchone()[0]
    assert counts(other, t) == expect(inserted=1, unique_violations=1)
    w.rollback()
    assert counts(other, t) == expect(inserted=1, unique_violations=1)

    (c,) = conflicts(other, t)
    assert c["kind"] == "unique_violation"
    assert c["key"] == {"k": 2}
    assert c["stored_version"] is None
    assert c["incoming_version"] == 7
    assert c["incoming_row"] == sent
    assert c["pid"] == w.info.backend_pid
    assert c["usename"] == "postgres"
    assert t0 <= c["occurred_at"] <= t1
    assert stats_row(other, t)["last_conflict_at"] == c["occurred_at"]


def test_rows_a_trigger_skipped_are_counted_apart_and_never_logged(db, conn):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    conn.execute(f"""
        CREATE FUNCTION {db.schema}.skip_some() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RETURN CASE WHEN NEW.v = 'skip' THEN NULL ELSE NEW END; END $$;
        CREATE TRIGGER skip_ins BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {db.schema}.skip_some();
        CREATE TRIGGER skip_upd BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {db.schema}.skip_some()""")
    assert upsert(conn, t, {"k": 1, "v": "skip", "ver": 1}) == "skipped_by_trigger"  # BEFORE INSERT
    assert upsert(conn, t, {"k": 1, "v": "a", "ver": 1}) == "inserted"
    assert upsert(conn, t, {"k": 1, "v": "skip", "ver": 2}) == "skipped_by_trigger"  # BEFORE UPDATE
    outcomes = conn.execute(
        f"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('{t}', %s, 'ver')",
        (Jsonb([{"k": 1, "v": "skip", "ver": 3}, {"k": 2, "v": "skip", "ver": 1}, {"k": 3, "v": "b", "ver": 1}]),),
    ).fetchone()[0]
    assert outcomes == "skipped_by_trigger skipped_by_trigger inserted"
    assert counts(conn, t) == expect(inserted=2, skipped_by_trigger=4)
    assert conflicts(conn, t) == []
    assert stats_row(conn, t)["last_conflict_at"] is None


def delete(conn, table, row, version="ver"):
    """safe_delete(table, row, version) and its outcome as text."""
    return conn.execute("SELECT safe_delete(%s::regclass, %s::jsonb, %s::name)::text", (table, Jsonb(row), version)).fetchone()[0]


def test_deletes_are_counted_apart_and_their_conflicts_logged_with_the_operation(db, conn):
    t = db.table("k int PRIMARY KEY, v text, ver int NOT NULL")
    assert upsert(conn, t, {"k": 1, "v": "a", "ver": 5}) == "inserted"
    assert delete(conn, t, {"k": 1, "ver": 3}) == "stale"  # the stored row is newer
    assert delete(conn, t, {"k": 1, "ver": 7}) == "deleted"
    assert delete(conn, t, {"k": 1, "ver": 7}) == "duplicate"
    assert delete(conn, t, {"k": 1, "ver": 6}) == "stale"  # the tombstone is newer
    assert delete(conn, t, {"k": 2, "ver": 1}) == "absent"
    assert upsert(conn, t, {"k": 1, "v": "late", "ver": 6}) == "stale"  # refused by the tombstone
    outcomes = conn.execute(
        f"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_delete_many('{t}', %s, 'ver')",
        (Jsonb([{"k": 3, "ver": 1}, {"k": 2, "ver": 1}, {"k": 2, "ver": 0}]),),
    ).fetchone()[0]
    assert outcomes == "absent duplicate stale"
    assert counts(conn, t) == expect(inserted=1, stale=1, deleted=1, absent=2, delete_stale=3, delete_duplicate=2)
    logged = [(c["operation"], c["kind"], c["tombstone"], c["stored_version"], c["incoming_version"]) for c in conflicts(conn, t)]
    assert logged == [
        ("delete", "stale", False, 5, 3),
        ("delete", "stale", True, 7, 6),
        ("upsert", "stale", True, 7, 6),
        ("delete", "stale", False, 1, 0),  # against the batch's own newer row of the key
    ]
    assert stats_row(conn, t)["last_conflict_at"] is not None
    assert info(conn)["tombstones"] >= 3
    n = conn.execute(f"SELECT count(*) FROM safe_upsert_tombstones WHERE relid = '{t}'::regclass").fetchone()[0]
    assert n == 3


def test_safe_upsert_many_counts_every_row_at_commit(db, connect):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    db.conn.execute(f"INSERT INTO {t} VALUES (1, 'a', 5), (2, 'a', 5), (3, 'a', 5)")
    rows = [
        {"k": 1, "v": "b", "ver": 6},  # newer
        {"k": 2, "v": "b", "ver": 4},  # older
        {"k": 3, "v": "a", "ver": 5},  # the same again
        {"k": 3, "v": "c", "ver": 5},  # same version, other value
        {"k": 4, "v": "a", "ver": 1},  # new
        {"k": 5, "v": "a", "ver": 1},  # new
    ]
    sql = "SELECT outcome::text FROM safe_upsert_many(%s::regclass, %s::jsonb, 'ver') ORDER BY ord"
    w = connect(autocommit=False)
    w.execute(sql, (t, Jsonb(rows))).fetchall()
    w.rollback()
    assert stats_row(db.conn, t) is None

    outcomes = [r[0] for r in w.execute(sql, (t, Jsonb(rows))).fetchall()]
    assert stats_row(db.conn, t) is None
    w.commit()
    assert len(outcomes) == len(rows)
    assert counts(db.conn, t) == expect(**collections.Counter(outcomes))
    logged = conflicts(db.conn, t)
    expected_log = [(r["k"], o) for r, o in zip(rows, outcomes) if o in ("stale", "tie")]
    # (one call's conflicts are logged together; their order among themselves is not input order)
    assert sorted((c["key"]["k"], c["kind"]) for c in logged) == sorted(expected_log)
    for c in logged:
        assert c["incoming_row"] in rows


# ---------------------------------------------------------------------------------------------
# exact under concurrency
# ---------------------------------------------------------------------------------------------

PROCESSES, TRANSACTIONS, CALLS, KEYS = 8, 25, 4, 12


def _writer(args):
    """One writer process (psycopg2): TRANSACTIONS transactions of CALLS calls on random keys
    (in key order, so that writers never deadlock), every fourth rolled back. Returns what the
    server said: outcomes of committed transactions, failed calls, conflicts, its backend pid."""
    import psycopg2

    dsn, table, seed, start_at = args
    rng = random.Random(seed)
    committed = collections.Counter()
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        conn.commit()
        while time.time() < start_at:
            time.sleep(0.005)
        for n in range(TRANSACTIONS):
            seen = collections.Counter()
            try:
                for key in sorted(rng.randint(1, KEYS) for _ in range(CALLS)):
                    row = {"k": key, "v": rng.choice("ab"), "ver": rng.randint(1, 4)}
                    cur.execute(
                        "SELECT safe_upsert(%s::regclass, %s::jsonb, 'ver')::text", (table, json.dumps(row))
                    )
                    seen[cur.fetchone()[0]] += 1
            except psycopg2.Error as e:  # not expected; counted by the server at once
                conn.rollback()
                committed["unique_violations" if e.pgcode == "23505" else "errors"] += 1
                continue
            if n % 4 == 3:
                conn.rollback()
            else:
                conn.commit()
                committed.update(seen)
        return pid, dict(committed)
    finally:
        conn.close()


def test_eight_processes_sum_exactly(db, dsn):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    before = counts(db.conn, t)
    start_at = time.time() + 0.5
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        results = list(pool.map(_writer, [(dsn, t, seed, start_at) for seed in range(PROCESSES)]))

    total = collections.Counter()
    for _, c in results:
        total.update(c)
    after = counts(db.conn, t)
    delta = {c: after[c] - before[c] for c in COUNTERS}
    assert delta == expect(**total), f"view delta {delta} != outcomes the writers saw {dict(total)}"
    if not (total["errors"] or total["unique_violations"]):  # none expected: keys in order
        committed_calls = PROCESSES * (TRANSACTIONS - TRANSACTIONS // 4) * CALLS
        assert sum(delta[c] for c in COUNTERS[:5]) == committed_calls
    assert delta["stale"] > 0 and delta["inserted"] == KEYS  # every key was written

    # One log row per committed conflict, attributed to the process that had it.
    expected_conflicts = total["stale"] + total["tie"]
    assert expected_conflicts <= info(db.conn)["conflict_log_size"]
    logged = conflicts(db.conn, t)
    assert len(logged) == expected_conflicts
    per_pid = collections.Counter(c["pid"] for c in logged)
    for pid, c in results:
        assert per_pid[pid] == c.get("stale", 0) + c.get("tie", 0), f"conflicts logged for pid {pid}"
    assert sum(per_pid.values()) == expected_conflicts
    ids = [c["id"] for c in logged]
    assert ids == sorted(set(ids))
    kinds = collections.Counter(c["kind"] for c in logged)
    assert (kinds["stale"], kinds["tie"]) == (total["stale"], total["tie"])


# ---------------------------------------------------------------------------------------------
# the conflict log
# ---------------------------------------------------------------------------------------------


def test_conflict_log_rows_match_what_was_sent(db, connect):
    t = db.table("id int, region text, ver bigint, payload jsonb, note text, PRIMARY KEY (id, region)")
    w = connect()
    stored = {"id": 1, "region": "eu", "ver": 5, "payload": {"a": 1}, "note": "first"}
    late = {"id": 1, "region": "eu", "ver": 3, "payload": {"a": [1, 2]}, "note": "late"}
    other = {"id": 1, "region": "eu", "ver": 5, "payload": {"a": 3}, "note": None}
    assert upsert(w, t, stored) == "inserted"
    t0 = w.execute("SELECT clock_timestamp()").fetchone()[0]
    w.execute("BEGIN")
    assert upsert(w, t, late) == "stale"
    assert upsert(w, t, other) == "tie"
    assert upsert(w, t, stored) == "duplicate"  # not a conflict
    w.execute("COMMIT")
    t1 = w.execute("SELECT clock_timestamp()").fetchone()[0]

    rows = conflicts(db.conn, t)
    assert [r["kind"] for r in rows] == ["stale", "tie"]
    assert rows[0]["id"] < rows[1]["id"]
    for r, sent in zip(rows, [late, other]):
        assert r["relid"] == relid(db.conn, t)
        assert (r["schemaname"], r["relname"]) == (db.schema, "t1")
        assert r["key"] == {"id": 1, "region": "eu"}
        assert r["stored_version"] == 5
        assert r["incoming_version"] == sent["ver"]
        assert r["incoming_row"] == sent
        assert r["pid"] == w.info.backend_pid
        assert r["usename"] == "postgres"
        assert t0 <= r["occurred_at"] <= t1
    assert rows[0]["occurred_at"] <= rows[1]["occurred_at"]
    assert stats_row(db.conn, t)["last_conflict_at"] == rows[1]["occurred_at"]


def test_conflict_log_shows_several_version_columns_as_arrays(db, conn):
    t = db.table("k text PRIMARY KEY, major int, minor int, v text")
    assert upsert(conn, t, {"k": "x", "major": 2, "minor": 5, "v": "a"}, version=["major", "minor"]) == "inserted"
    assert upsert(conn, t, {"k": "x", "major": 2, "minor": 1, "v": "b"}, version=["major", "minor"]) == "stale"
    (r,) = conflicts(conn, t)
    assert (r["kind"], r["key"], r["stored_version"], r["incoming_version"]) == ("stale", {"k": "x"}, [2, 5], [2, 1])


def test_batch_rows_losing_to_their_keys_winner_log_its_version_as_to_jsonb_writes_it(db, conn):
    # Inside a batch the rows of one key are compared with its winner in the backend: the
    # logged stored version must read as the single call's (`to_jsonb` of the stored column),
    # for versions whose JSON is not what was sent.
    t = db.table("k int PRIMARY KEY, at timestamp, n int, v text")
    rows = [
        {"k": 1, "at": "2024-05-01 10:00", "n": 2, "v": "a"},
        {"k": 1, "at": "2024-04-01 10:00", "n": 9, "v": "b"},
        {"k": 1, "at": "2024-05-01 10:00", "n": 2, "v": "c"},
    ]
    got = conn.execute(
        "SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many(%s, %s, ARRAY['at', 'n'])",
        (t, Jsonb(rows)),
    ).fetchone()[0]
    assert got == "inserted stale tie"
    stored = conn.execute(f"SELECT jsonb_build_array(at, n) FROM {t}").fetchone()[0]
    logged = [(r["kind"], r["stored_version"], r["incoming_version"]) for r in conflicts(conn, t)]
    assert stored == ["2024-05-01T10:00:00", 2]
    assert logged == [("stale", stored, ["2024-04-01 10:00", 9]), ("tie", stored, ["2024-05-01 10:00", 2])]
    # the same row sent alone, against the stored one, logs the same stored version
    assert upsert(conn, t, rows[1], version=["at", "n"]) == "stale"
    assert conflicts(conn, t)[-1]["stored_version"] == stored


def test_long_values_in_incoming_row_are_cut_with_a_marker(db, conn):
    t = db.table("k int PRIMARY KEY, ver int, body text, note text, tags int[]")
    conn.execute(f"INSERT INTO {t} VALUES (1, 10, 'stored', 'stored', NULL)")
    body = "y" * 5000 + "tail"
    note = "é" * 2000  # multibyte: cut on a character boundary
    tags = list(range(1000))
    sent = {"k": 1, "ver": 1, "body": body, "note": note, "tags": tags}
    assert upsert(conn, t, sent) == "stale"
    (r,) = conflicts(conn, t)
    row = r["incoming_row"]
    assert (row["k"], row["ver"]) == (1, 1)
    assert r["key"] == {"k": 1} and r["incoming_version"] == 1 and r["stored_version"] == 10
    for name, value in [("body", body), ("note", note), ("tags", json.dumps(tags, separators=(",", ":")))]:
        shown = row[name]
        assert isinstance(shown, str), (name, shown)
        m = CUT.fullmatch(shown)
        assert m, f"{name} shown as {shown[:80]!r}…, without the marker"
        prefix, left_out = m.group(1), int(m.group(2))
        assert prefix and value.startswith(prefix), name
        assert len(prefix.encode()) + left_out == len(value.encode()), name
        assert len(shown) < 300, name
    assert "\ufffd" not in row["note"]
    # The table got nothing of it (stale), and what was written whole is in the table.
    assert conn.execute(f"SELECT body FROM {t}").fetchone()[0] == "stored"


def test_incoming_row_shows_every_scalar_as_sent_up_to_the_cut_in_single_calls_and_batches(db, conn):
    # Rows of scalars that fit the log are printed straight from the jsonb, others through the
    # cut: either way the log must show what was sent (escapes, control characters, numbers as
    # jsonb keeps them), and the boundaries of both cuts must hold.
    t = db.table("k int PRIMARY KEY, ver int, s text, n numeric, b boolean, z text, f1 text, f2 text, f3 text")
    conn.execute(f"INSERT INTO {t} (k, ver) SELECT g, 100 FROM generate_series(1, 10) g")
    compact = lambda row: len(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode())
    base = {"k": 0, "ver": 1, "s": "", "n": 1, "b": False, "z": None}
    texts = ['quote " back \\ slash / tab \t nl \n', "\x01\x1f\x7f é € 𝄞", "", "v" * 256, "v" * 257]
    numbers = ["1.50", "-0", "1e5", "12345678901234567890.123456789", "-0.000001"]
    rows = [json.dumps({**base, "k": i + 1, "s": s, "b": i % 2 == 0}).replace('"n": 1', f'"n": {n}')
            for i, (s, n) in enumerate(zip(texts, numbers))]
    # rows of exactly 1,024 bytes as compact JSON, no value longer than 256 (uncut), and a byte
    # longer (its longest value shown as a marker)
    wide = {**base, "z": "", "f1": "", "f2": "", "f3": ""}
    width = 1024 - compact(wide)
    spread = lambda n: {f: "w" * (n // 5 + (i < n % 5)) for i, f in enumerate(["s", "z", "f1", "f2", "f3"])}
    rows += [json.dumps({**wide, "k": 6, **spread(width)}), json.dumps({**wide, "k": 7, **spread(width + 1)})]
    assert compact(json.loads(rows[-2])) == 1024
    for send in ("single", "batch"):
        before = len(conflicts(conn, t))
        if send == "single":
            outcomes = [conn.execute(f"SELECT safe_upsert('{t}', %s::jsonb, 'ver')::text", (r,)).fetchone()[0] for r in rows]
        else:
            outcomes = [o for (o,) in conn.execute(
                f"SELECT outcome::text FROM safe_upsert_many('{t}', %s::jsonb, 'ver') ORDER BY ord",
                ("[" + ", ".join(rows) + "]",))]
        assert outcomes == ["stale"] * len(rows), send
        logged = conflicts(conn, t)[before:]
        assert len(logged) == len(rows), send
        for sent, c in zip(rows, logged):
            sent_row, shown = json.loads(sent), c["incoming_row"]
            assert compact(shown) <= 1024, (send, sent_row["k"])
            cut = [n for n, v in shown.items() if isinstance(v, str) and CUT.fullmatch(v)]
            assert len(cut) == (1 if sent_row["k"] in (5, 7) else 0), (send, sent_row["k"], cut)
            if cut:
                assert {n: v for n, v in shown.items() if n not in cut} == {n: v for n, v in sent_row.items() if n not in cut}
            else:
                # compared as jsonb in the server, numbers by value at full precision
                same = conn.execute("SELECT incoming_row = %s::jsonb FROM safe_upsert_conflicts WHERE id = %s",
                                    (sent, c["id"])).fetchone()[0]
                assert same, (send, sent, shown)


@pytest.fixture
def login_role(db, dsn):
    """A LOGIN role of the test's own, with USAGE on the test's schema; dropped afterwards."""
    role = f"stats_role_{uuid.uuid4().hex[:8]}"
    db.conn.execute(f'CREATE ROLE "{role}" LOGIN')
    db.conn.execute(f'GRANT USAGE ON SCHEMA "{db.schema}" TO "{role}"')
    yield role
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'DROP OWNED BY "{role}"')
        c.execute(f'DROP ROLE "{role}"')


def test_role_sees_only_conflicts_of_tables_it_may_select(db, connect, login_role):
    secret = db.table("k int PRIMARY KEY, v text, ver int", name="secret")
    shared = db.table("k int PRIMARY KEY, v text, ver int", name="shared")
    su = db.conn
    su.execute(f'GRANT SELECT, INSERT, UPDATE ON {shared} TO "{login_role}"')
    for t in (secret, shared):
        assert upsert(su, t, {"k": 1, "v": "a", "ver": 5}) == "inserted"
        assert upsert(su, t, {"k": 1, "v": "b", "ver": 1}) == "stale"
    r = connect(user=login_role)
    # the role's own conflict on the table it may write: its name and pid
    assert upsert(r, shared, {"k": 1, "v": "c", "ver": 2}) == "stale"

    seen = r.cursor(row_factory=dict_row).execute(
        "SELECT relname, usename, pid, incoming_version FROM safe_upsert_conflicts WHERE schemaname = %s ORDER BY id",
        (db.schema,),
    ).fetchall()
    assert seen == [
        {"relname": "shared", "usename": "postgres", "pid": su.info.backend_pid, "incoming_version": 1},
        {"relname": "shared", "usename": login_role, "pid": r.info.backend_pid, "incoming_version": 2},
    ]
    # the superuser sees both tables
    assert [c["usename"] for c in conflicts(su, secret)] == ["postgres"]
    assert [c["usename"] for c in conflicts(su, shared)] == ["postgres", login_role]


def test_row_security_hides_row_data_from_roles_it_applies_to(db, connect, login_role):
    t = db.table("k int PRIMARY KEY, v text, ver int", name="guarded")
    su = db.conn
    su.execute(f'GRANT SELECT ON {t} TO "{login_role}"')
    su.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")  # no policy: the role sees no row
    assert upsert(su, t, {"k": 1, "v": "a", "ver": 5}) == "inserted"
    assert upsert(su, t, {"k": 1, "v": "b", "ver": 1}) == "stale"
    r = connect(user=login_role)
    assert r.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0
    logged = "SELECT kind, key, stored_version, incoming_version, incoming_row FROM safe_upsert_conflicts WHERE relid = %s::regclass"
    # the role sees that a conflict happened, and the counts, but none of the row's data
    assert r.execute(logged, (t,)).fetchall() == [("stale", None, None, None, None)]
    assert counts(r, t) == expect(inserted=1, stale=1)
    # the owner (a superuser here) sees it all, as RLS does not apply to it
    assert su.execute(logged, (t,)).fetchall() == [("stale", {"k": 1}, 5, 1, {"k": 1, "v": "b", "ver": 1})]
    # FORCE makes RLS apply to the owner too: a role that owns the table then sees no data
    su.execute(f'ALTER TABLE {t} OWNER TO "{login_role}"')
    assert r.execute(logged, (t,)).fetchall() == [("stale", {"k": 1}, 5, 1, {"k": 1, "v": "b", "ver": 1})]
    su.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
    assert r.execute(logged, (t,)).fetchall() == [("stale", None, None, None, None)]


def test_public_cannot_reset_stats(db, connect, login_role):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    db.conn.execute(f'GRANT SELECT, INSERT, UPDATE ON {t} TO "{login_role}"')
    upsert(db.conn, t, {"k": 1, "v": "a", "ver": 5})
    upsert(db.conn, t, {"k": 1, "v": "a", "ver": 1})
    r = connect(user=login_role)
    for call in (f"SELECT safe_upsert_stats_reset('{t}')", "SELECT safe_upsert_stats_reset()"):
        with pytest.raises(errors.InsufficientPrivilege):  # 42501, even for a table it may write
            r.execute(call)
    assert counts(db.conn, t) == expect(inserted=1, stale=1)


def test_superuser_resets_one_table(db, conn):
    a = db.table("k int PRIMARY KEY, v text, ver int")
    b = db.table("k int PRIMARY KEY, v text, ver int")
    for t in (a, b):
        upsert(conn, t, {"k": 1, "v": "a", "ver": 5})
        upsert(conn, t, {"k": 1, "v": "b", "ver": 1})
    reset_before = stats_row(conn, a)["stats_reset"]
    b_before = stats_row(conn, b)
    conn.execute("SELECT safe_upsert_stats_reset(%s::regclass)", (a,))
    ra = stats_row(conn, a)
    assert {c: ra[c] for c in COUNTERS} == expect()
    assert ra["last_conflict_at"] is None
    assert ra["stats_reset"] > reset_before
    assert stats_row(conn, b) == b_before
    # counting goes on from zero
    upsert(conn, a, {"k": 1, "v": "c", "ver": 2})
    assert counts(conn, a) == expect(stale=1)


def test_track_off_records_nothing(db, conn, connect):
    t = db.table("k int PRIMARY KEY, email text UNIQUE, ver int")
    conn.execute("SET safe_upsert.track = off")
    assert info(conn)["track"] is False
    assert upsert(conn, t, {"k": 1, "email": "a", "ver": 5}) == "inserted"
    assert upsert(conn, t, {"k": 1, "email": "a", "ver": 1}) == "stale"
    assert upsert(conn, t, {"k": 1, "email": "a", "ver": 5}) == "duplicate"
    assert upsert(conn, t, {"k": 1, "email": "b", "ver": 5}) == "tie"
    with pytest.raises(errors.InvalidTextRepresentation):
        upsert(conn, t, {"k": 2, "email": "c", "ver": "x"})
    with pytest.raises(errors.UniqueViolation):
        upsert(conn, t, {"k": 3, "email": "a", "ver": 1})
    other = connect()
    assert stats_row(other, t) is None
    assert conflicts(other, t) == []
    # the writes themselves happened
    assert conn.execute(f"SELECT k, email, ver FROM {t}").fetchall() == [(1, "a", 5)]
    # another session still counts while this one does not
    assert upsert(other, t, {"k": 1, "email": "a", "ver": 2}) == "stale"
    assert counts(other, t) == expect(stale=1)
    conn.execute("SET safe_upsert.track = on")
    assert upsert(conn, t, {"k": 1, "email": "a", "ver": 3}) == "stale"
    assert counts(other, t) == expect(stale=2)


def test_dropped_table_row_goes_away(db, conn):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    keep = db.table("k int PRIMARY KEY, v text, ver int")
    for x in (t, keep):
        upsert(conn, x, {"k": 1, "v": "a", "ver": 5})
        upsert(conn, x, {"k": 1, "v": "a", "ver": 1})
    oid = relid(conn, t)
    conn.execute(f"DROP TABLE {t}")
    assert conn.execute("SELECT count(*) FROM safe_upsert_stats WHERE relid = %s", (oid,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM safe_upsert_conflicts WHERE relid = %s", (oid,)).fetchone()[0] == 0
    assert counts(conn, keep) == expect(inserted=1, stale=1)


def test_reading_the_stats_inside_a_rolled_back_drop_keeps_them(db, connect):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    c = connect()
    upsert(c, t, {"k": 1, "v": "a", "ver": 5})
    upsert(c, t, {"k": 1, "v": "a", "ver": 1})
    oid = relid(c, t)
    w = connect(autocommit=False)
    w.execute(f"DROP TABLE {t}")
    # this transaction no longer sees the table, so neither does its view of the stats ...
    assert w.execute("SELECT count(*) FROM safe_upsert_stats WHERE relid = %s", (oid,)).fetchone()[0] == 0
    w.rollback()
    # ... but the drop did not commit: the counters are still there
    assert counts(c, t) == expect(inserted=1, stale=1)
    # a committed drop frees them
    c.execute(f"DROP TABLE {t}")
    assert c.execute("SELECT count(*) FROM safe_upsert_stats WHERE relid = %s", (oid,)).fetchone()[0] == 0


# ---------------------------------------------------------------------------------------------
# restarts and crashes (the shared test cluster)
# ---------------------------------------------------------------------------------------------


def _some_outcomes(conn, t):
    """Commits inserted 2, updated 1, stale 1, tie 1, errors 1 on t (from k int, v text, ver int)."""
    upsert(conn, t, {"k": 1, "v": "a", "ver": 5})
    upsert(conn, t, {"k": 2, "v": "a", "ver": 5})
    upsert(conn, t, {"k": 2, "v": "b", "ver": 6})
    upsert(conn, t, {"k": 1, "v": "b", "ver": 4})
    upsert(conn, t, {"k": 1, "v": "c", "ver": 5})
    with pytest.raises(errors.InvalidTextRepresentation):
        upsert(conn, t, {"k": 3, "v": "a", "ver": "x"})
    return expect(inserted=2, updated=1, stale=1, tie=1, errors=1)


def test_stats_survive_a_clean_restart(db, dsn, cluster):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    expected = _some_outcomes(db.conn, t)
    row = stats_row(db.conn, t)
    logged = conflicts(db.conn, t)
    assert {c: row[c] for c in COUNTERS} == expected and len(logged) == 2
    info_before = info(db.conn)

    cluster.restart()
    with psycopg.connect(dsn, autocommit=True) as c:
        assert stats_row(c, t) == row
        assert conflicts(c, t) == logged
        i = info(c)
        assert i["conflicts_logged"] >= info_before["conflicts_logged"]
        assert i["stats_reset"] == info_before["stats_reset"]
        data = Path(c.execute("SHOW data_directory").fetchone()[0])
        assert not (data / SAVE_FILE).exists(), "the file is removed once loaded"
        # ids go on from where they were, never reused
        upsert(c, t, {"k": 2, "v": "z", "ver": 1})
        after = conflicts(c, t)
        assert after[:2] == logged and after[2]["id"] > max(x["id"] for x in logged)
        assert counts(c, t) == {**expected, "stale": 2}


def test_stats_are_gone_after_a_crash(db, dsn, cluster):
    t = db.table("k int PRIMARY KEY, v text, ver int")
    expected = _some_outcomes(db.conn, t)
    # saved and loaded by a clean restart first: the crash must not bring that file back
    cluster.restart()
    with psycopg.connect(dsn, autocommit=True) as c:
        assert counts(c, t) == expected
        upsert(c, t, {"k": 2, "v": "z", "ver": 1})
        assert counts(c, t)["stale"] == 2

    log = datadir(cluster.script, cluster.name).parent / "server.log"
    crashed_at = time.time()
    kill_backend_and_wait(dsn, log)

    with psycopg.connect(dsn, autocommit=True) as c:
        assert stats_row(c, t) is None
        assert conflicts(c, t) == []
        assert info(c)["stats_reset"].timestamp() >= crashed_at - 1
        # and counting starts again
        upsert(c, t, {"k": 1, "v": "d", "ver": 1})
        assert counts(c, t) == expect(stale=1)


# ---------------------------------------------------------------------------------------------
# the small cluster: max_tables = 3, conflict_log_size = 5, max_prepared_transactions = 4
# ---------------------------------------------------------------------------------------------


def test_small_cluster_info(small_db):
    i = info(small_db.conn)
    assert (i["max_tables"], i["conflict_log_size"]) == (3, 5)


def test_conflict_log_keeps_only_the_newest_rows(small_db):
    c = small_db.conn
    t = small_db.table("t")
    upsert(c, t, {"k": 1, "v": "stored", "ver": 100})
    logged_before = info(c)["conflicts_logged"]
    for ver in range(1, 9):  # 8 conflicts, one transaction each
        assert upsert(c, t, {"k": 1, "v": f"v{ver}", "ver": ver}) == "stale"
    rows = conflicts(c, t)
    assert [r["incoming_version"] for r in rows] == [4, 5, 6, 7, 8]
    assert [r["incoming_row"]["v"] for r in rows] == ["v4", "v5", "v6", "v7", "v8"]
    ids = [r["id"] for r in rows]
    assert ids == list(range(ids[0], ids[0] + 5))
    assert info(c)["conflicts_logged"] - logged_before == 8
    assert counts(c, t) == expect(inserted=1, stale=8)  # the counters keep everything

    # 7 conflicts in one transaction: the newest 5 of them, after the older ones
    c.execute("BEGIN")
    for ver in range(11, 18):
        assert upsert(c, t, {"k": 1, "v": f"v{ver}", "ver": ver}) == "stale"
    c.execute("COMMIT")
    rows = conflicts(c, t)
    assert [r["incoming_version"] for r in rows] == [13, 14, 15, 16, 17]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and rows[0]["id"] > ids[-1]
    assert counts(c, t) == expect(inserted=1, stale=15)
    # the log is shared by all tables: another table's conflict pushes the oldest out
    u = small_db.table("u")
    upsert(c, u, {"k": 1, "v": "a", "ver": 9})
    upsert(c, u, {"k": 1, "v": "a", "ver": 1})
    assert [r["incoming_version"] for r in conflicts(c, t)] == [14, 15, 16, 17]
    assert len(c.execute("SELECT * FROM safe_upsert_conflicts").fetchall()) == 5


def test_least_recently_used_table_is_evicted(small_db):
    c = small_db.conn
    a, b, t3, d = (small_db.table(n) for n in ("a", "b", "c", "d"))
    for i, t in enumerate((a, b, t3)):  # the 3 entries now hold a, b, c
        upsert(c, t, {"k": 1, "v": "x", "ver": i})
    evicted = info(c)["tables_evicted"]
    assert info(c)["tables_tracked"] == 3
    upsert(c, a, {"k": 1, "v": "x", "ver": 10})  # a is used again: b is the least recent
    upsert(c, d, {"k": 1, "v": "x", "ver": 1})
    i = info(c)
    assert (i["tables_tracked"], i["tables_evicted"]) == (3, evicted + 1)
    names = [r[0] for r in c.execute("SELECT relname FROM safe_upsert_stats ORDER BY relname")]
    assert names == ["a", "c", "d"]
    assert counts(c, a) == expect(inserted=1, updated=1)

    # b comes back from zero, pushing out c (now the least recent)
    b_row_reset = c.execute("SELECT clock_timestamp()").fetchone()[0]
    upsert(c, b, {"k": 1, "v": "x", "ver": 0})
    assert counts(c, b) == expect(stale=1)
    assert stats_row(c, b)["stats_reset"] >= b_row_reset
    assert info(c)["tables_evicted"] == evicted + 2
    assert [r[0] for r in c.execute("SELECT relname FROM safe_upsert_stats ORDER BY relname")] == ["a", "b", "d"]

    # reading the views does not count as use
    for _ in range(3):
        stats_row(c, a)
        conflicts(c, a)
    upsert(c, t3, {"k": 2, "v": "x", "ver": 1})  # evicts a (least recently written)
    assert [r[0] for r in c.execute("SELECT relname FROM safe_upsert_stats ORDER BY relname")] == ["b", "c", "d"]


def test_dropped_table_frees_its_entry(small_db):
    c = small_db.conn
    a, b, t3, d = (small_db.table(n) for n in ("a", "b", "c", "d"))
    for t in (a, b, t3):
        upsert(c, t, {"k": 1, "v": "x", "ver": 1})
    assert info(c)["tables_tracked"] == 3
    evicted = info(c)["tables_evicted"]
    c.execute(f"DROP TABLE {b}")
    assert [r[0] for r in c.execute("SELECT relname FROM safe_upsert_stats ORDER BY relname")] == ["a", "c"]
    assert info(c)["tables_tracked"] == 2
    upsert(c, d, {"k": 1, "v": "x", "ver": 1})  # takes the freed entry: nobody is evicted
    assert info(c)["tables_evicted"] == evicted
    assert [r[0] for r in c.execute("SELECT relname FROM safe_upsert_stats ORDER BY relname")] == ["a", "c", "d"]


def test_superuser_resets_every_table_of_the_database(small_db):
    c = small_db.conn
    a, b = small_db.table("a"), small_db.table("b")
    for t in (a, b):
        upsert(c, t, {"k": 1, "v": "x", "ver": 5})
        upsert(c, t, {"k": 1, "v": "x", "ver": 1})
    before = info(c)["stats_reset"]
    c.execute("SELECT safe_upsert_stats_reset()")
    for t in (a, b):
        row = stats_row(c, t)
        assert {k: row[k] for k in COUNTERS} == expect() and row["last_conflict_at"] is None
        assert row["stats_reset"] > before
    assert info(c)["stats_reset"] > before


def test_other_databases_are_not_shown(small, small_db):
    c = small_db.conn
    dbname = f"stats_other_{uuid.uuid4().hex[:8]}"
    c.execute(f'CREATE DATABASE "{dbname}"')
    try:
        with small.connect(dbname) as o:
            o.execute("CREATE EXTENSION pg_safeupsert")
            o.execute("CREATE TABLE elsewhere (k int PRIMARY KEY, v text, ver int)")
            upsert(o, "elsewhere", {"k": 1, "v": "x", "ver": 5})
            upsert(o, "elsewhere", {"k": 1, "v": "x", "ver": 1})
            assert counts(o, "elsewhere") == expect(inserted=1, stale=1)
            assert len(conflicts(o, "elsewhere")) == 1
            oid = relid(o, "elsewhere")
        assert c.execute("SELECT count(*) FROM safe_upsert_stats_rows() WHERE relid = %s", (oid,)).fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM safe_upsert_conflict_rows() WHERE relid = %s", (oid,)).fetchone()[0] == 0
        # a reset of every table here leaves the other database alone
        c.execute("SELECT safe_upsert_stats_reset()")
        with small.connect(dbname) as o:
            assert counts(o, "elsewhere") == expect(inserted=1, stale=1)
    finally:
        c.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')


def test_two_phase_commit_counts_at_prepare(small_db):
    """Observed and pinned: outcomes are published at PREPARE TRANSACTION, as the preparing
    session loses sight of the transaction then. COMMIT PREPARED adds nothing more, and
    ROLLBACK PREPARED does not take them back: a prepared transaction that is rolled back
    later stays counted (and its conflicts logged)."""
    c = small_db.conn
    t = small_db.table("t")
    upsert(c, t, {"k": 100, "v": "stored", "ver": 50})
    w, observer = small_db.connect(), small_db.connect()
    gids = [f"stats_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        w.execute("BEGIN")
        assert upsert(w, t, {"k": 1, "v": "x", "ver": 1}) == "inserted"
        assert upsert(w, t, {"k": 100, "v": "x", "ver": 1}) == "stale"
        assert counts(observer, t) == expect(inserted=1)
        w.execute(f"PREPARE TRANSACTION '{gids[0]}'")
        assert counts(observer, t) == expect(inserted=2, stale=1)
        assert [r["incoming_version"] for r in conflicts(observer, t)] == [1]
        observer.execute(f"COMMIT PREPARED '{gids[0]}'")
        assert counts(observer, t) == expect(inserted=2, stale=1)

        w.execute("BEGIN")
        assert upsert(w, t, {"k": 2, "v": "x", "ver": 1}) == "inserted"
        assert upsert(w, t, {"k": 100, "v": "x", "ver": 2}) == "stale"
        w.execute(f"PREPARE TRANSACTION '{gids[1]}'")
        assert counts(observer, t) == expect(inserted=3, stale=2)
        observer.execute(f"ROLLBACK PREPARED '{gids[1]}'")
        assert counts(observer, t) == expect(inserted=3, stale=2)
        assert [r["incoming_version"] for r in conflicts(observer, t)] == [1, 2]
        assert [r[0] for r in observer.execute(f"SELECT k FROM {t} ORDER BY k")] == [1, 100]
    finally:
        for gid in gids:
            if observer.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone():
                observer.execute(f"ROLLBACK PREPARED '{gid}'")


def test_save_off_loses_stats_at_restart(small, small_db):
    c = small_db.conn
    t = small_db.table("t")
    save_file = small.data / SAVE_FILE

    def setting_seen_by_new_sessions(value):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with small.connect() as n:
                if n.execute("SHOW safe_upsert.save").fetchone()[0] == value:
                    return
            time.sleep(0.05)
        pytest.fail(f"safe_upsert.save did not become {value} after pg_reload_conf()")

    upsert(c, t, {"k": 1, "v": "x", "ver": 5})
    upsert(c, t, {"k": 1, "v": "x", "ver": 1})
    c.execute("ALTER SYSTEM SET safe_upsert.save = off")
    try:
        c.execute("SELECT pg_reload_conf()")
        setting_seen_by_new_sessions("off")
        small.stop()
        assert not save_file.exists(), "nothing is saved with safe_upsert.save = off"
        small.start()
        with small.connect() as n:
            assert stats_row(n, t) is None
            assert conflicts(n, t) == []
            assert info(n)["save"] is False
            upsert(n, t, {"k": 1, "v": "x", "ver": 2})
        small.restart()
        with small.connect() as n:
            assert stats_row(n, t) is None
    finally:
        with small.connect() as n:
            n.execute("ALTER SYSTEM RESET safe_upsert.save")
            n.execute("SELECT pg_reload_conf()")
        setting_seen_by_new_sessions("on")
    # back on: saved again
    with small.connect() as n:
        upsert(n, t, {"k": 1, "v": "x", "ver": 3})
        assert counts(n, t) == expect(stale=1)
    small.restart()
    with small.connect() as n:
        assert counts(n, t) == expect(stale=1)


@contextlib.contextmanager
def conflict_log_off(small):
    """The small cluster restarted with safe_upsert.conflict_log_size = 0, and back to 5 after."""
    with small.connect() as n:
        n.execute("ALTER SYSTEM SET safe_upsert.conflict_log_size = 0")
    try:
        small.restart()
        yield
    finally:
        with small.connect() as n:
            n.execute("ALTER SYSTEM RESET safe_upsert.conflict_log_size")
        small.restart()
        with small.connect() as n:
            assert info(n)["conflict_log_size"] == 5


def test_conflict_log_size_zero_turns_the_log_off(small, small_db):
    t = small_db.table("t", "k int PRIMARY KEY, v text UNIQUE, ver int")
    with conflict_log_off(small), small.connect() as n:
        assert info(n)["conflict_log_size"] == 0
        logged = info(n)["conflicts_logged"]
        assert upsert(n, t, {"k": 1, "v": "x", "ver": 5}) == "inserted"
        assert upsert(n, t, {"k": 1, "v": "x", "ver": 1}) == "stale"
        assert upsert(n, t, {"k": 1, "v": "y", "ver": 5}) == "tie"
        with pytest.raises(errors.UniqueViolation):
            upsert(n, t, {"k": 2, "v": "x", "ver": 1})
        # counted all the same, but nothing logged
        assert counts(n, t) == expect(inserted=1, stale=1, tie=1, unique_violations=1)
        assert stats_row(n, t)["last_conflict_at"] is not None
        assert n.execute("SELECT count(*) FROM safe_upsert_conflicts").fetchone()[0] == 0
        assert info(n)["conflicts_logged"] == logged
    with small.connect() as n:  # and saved across the restarts
        assert counts(n, t) == expect(inserted=1, stale=1, tie=1, unique_violations=1)


def test_last_conflict_at_does_not_depend_on_the_log(small, small_db):
    """A unique violation sets last_conflict_at when the log is on (see
    test_unique_violation_is_counted_and_logged_at_once); it must with the log off too, as stale
    and tie conflicts do."""
    t = small_db.table("t", "k int PRIMARY KEY, v text UNIQUE, ver int")
    with conflict_log_off(small), small.connect() as n:
        upsert(n, t, {"k": 1, "v": "x", "ver": 5})
        before = n.execute("SELECT clock_timestamp()").fetchone()[0]
        with pytest.raises(errors.UniqueViolation):
            upsert(n, t, {"k": 2, "v": "x", "ver": 1})
        row = stats_row(n, t)
        assert row["unique_violations"] == 1
        assert row["last_conflict_at"] is not None and row["last_conflict_at"] >= before
