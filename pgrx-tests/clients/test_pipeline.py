"""safe_upsert and safe_upsert_many in psycopg 3 pipeline mode (issue 5).

100 calls, single rows and batches, go in one pipeline with a failing call in the middle (a
batch whose third row has a value its column cannot take), and what committed must follow
PostgreSQL's pipeline rules (protocol docs, "Pipelining"):

  - outside an explicit transaction, the statements between two Syncs form one implicit
    transaction: a Sync commits it if every statement succeeded, and rolls it back if one
    failed; after an error the server skips everything up to the next Sync, then goes on;
  - inside an explicit transaction (BEGIN ... COMMIT in the pipeline), an error aborts the
    transaction: nothing of it commits.

So, with a Sync after every 10 calls, the block holding the failure commits nothing (not even
its calls before the failure, which did run and return outcomes) and every other block
commits; with one Sync at the end, or in one transaction, nothing commits. A failed
safe_upsert_many is atomic, and the statistics count only what committed, plus the error.
"""

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

CALLS = 100
FAILING = 47  # a batch (calls with i % 3 == 2 are batches)
BATCH_ROWS = 4
BAD_ROW = 3  # 1-based position, in the failing batch, of the row that cannot be converted

SINGLE = "SELECT safe_upsert(%s::regclass, %s::jsonb, 'ver')::text"
MANY = "SELECT ord, outcome::text FROM safe_upsert_many(%s::regclass, %s::jsonb, 'ver')"


def plan(table):
    """The 100 calls: (sql, params, keys written). Call i writes keys 10*i, 10*i+1, ..."""
    calls = []
    for i in range(CALLS):
        if i % 3 == 2:
            rows = [{"k": 10 * i + j, "v": i, "ver": 1} for j in range(BATCH_ROWS)]
            if i == FAILING:
                rows[BAD_ROW - 1]["v"] = "not a number"
            calls.append((MANY, (table, Jsonb(rows)), [r["k"] for r in rows]))
        else:
            calls.append((SINGLE, (table, Jsonb({"k": 10 * i, "v": i, "ver": 1})), [10 * i]))
    return calls


def keys_of(calls, indexes):
    return {k for i in indexes for k in calls[i][2]}


def stored(conn, table):
    return {r[0] for r in conn.execute(f"SELECT k FROM {table}")}


def counts(conn, table):
    row = conn.execute(
        "SELECT inserted, errors FROM safe_upsert_stats WHERE relid = %s::regclass", (table,)
    ).fetchone()
    return {"inserted": row[0], "errors": row[1]} if row else {"inserted": 0, "errors": 0}


def send(conn, calls, sync_every=None, pipeline=None):
    """Sends every call; returns (cursor per call, errors raised). psycopg raises a pipeline's
    errors where it reads them back (an execute or a sync), so they are collected, not raised."""
    cursors, raised = [], []
    for i, (sql, params, _) in enumerate(calls):
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
        except psycopg.Error as e:
            raised.append(e)
        cursors.append(cur)
        if sync_every and (i + 1) % sync_every == 0:
            try:
                pipeline.sync()
            except psycopg.Error as e:
                raised.append(e)
    return cursors, raised


def results(cur):
    """The rows a call returned, or None when it returned none (failed or skipped)."""
    try:
        return cur.fetchall()
    except psycopg.Error:
        return None


def check_the_failure(raised):
    real = [e for e in raised if not isinstance(e, errors.PipelineAborted)]
    assert len(real) == 1, f"one error expected, got {real!r}"
    e = real[0]
    assert e.sqlstate and e.sqlstate.startswith("22"), (e.sqlstate, str(e))  # data exception
    assert f"row {BAD_ROW}" in str(e), str(e)


def test_sync_blocks_commit_or_roll_back_whole(db, conn):
    """Autocommit, a Sync after every 10 calls: the failing call's block (calls 40..49) rolls
    back whole, the blocks before and after it commit."""
    table = db.table("k int PRIMARY KEY, v int, ver int")
    calls = plan(table)
    with conn.pipeline() as p:
        cursors, raised = send(conn, calls, sync_every=10, pipeline=p)
    check_the_failure(raised)

    block = range(40, 50)
    assert FAILING in block
    committed = [i for i in range(CALLS) if i not in block]
    assert stored(conn, table) == keys_of(calls, committed)

    # Before the failure the block's calls ran and answered, and were rolled back at its Sync;
    # after it they were skipped; the later blocks ran normally.
    for i in range(CALLS):
        got = results(cursors[i])
        if i == FAILING or FAILING < i < 50:
            assert got is None, (i, got)
        elif calls[i][0] == MANY:
            assert got == [(j + 1, "inserted") for j in range(BATCH_ROWS)], (i, got)
        else:
            assert got == [("inserted",)], (i, got)

    # Statistics describe what committed, and the failed call at once.
    assert counts(conn, table) == {"inserted": len(keys_of(calls, committed)), "errors": 1}


def test_one_sync_at_the_end_is_one_implicit_transaction(db, conn):
    """Autocommit, no Sync until the pipeline ends: the 100 calls are one implicit transaction,
    and the failure rolls all of it back, the calls before it included."""
    table = db.table("k int PRIMARY KEY, v int, ver int")
    calls = plan(table)
    raised = []
    try:
        with conn.pipeline():
            _, raised = send(conn, calls)
    except psycopg.Error as e:  # psycopg raises it where it reads it back: at the final Sync
        raised.append(e)
    check_the_failure(raised)
    assert stored(conn, table) == set()
    assert counts(conn, table) == {"inserted": 0, "errors": 1}
    # the connection is fine afterwards
    assert conn.execute(SINGLE, (table, Jsonb({"k": 1, "v": 1, "ver": 1}))).fetchone() == ("inserted",)


def test_explicit_transaction_commits_nothing(db, conn):
    """BEGIN, the 100 calls, COMMIT, all in one pipeline: the failure aborts the transaction and
    nothing commits; the pipeline goes on after it."""
    table = db.table("k int PRIMARY KEY, v int, ver int")
    calls = plan(table)
    reported = []
    with conn.pipeline() as p:
        try:
            with conn.transaction():
                _, raised = send(conn, calls)
                reported += raised
                if raised:
                    raise raised[0]  # roll back, as an application would
        except psycopg.Error as e:
            if not any(e is r for r in reported):
                reported.append(e)  # raised where the transaction ended
        p.sync()
        after = conn.execute(SINGLE, (table, Jsonb({"k": 999_999, "v": 0, "ver": 1})))
    check_the_failure(reported)
    assert after.fetchone() == ("inserted",)
    assert stored(conn, table) == {999_999}
    assert counts(conn, table) == {"inserted": 1, "errors": 1}


def test_pipelined_batches_without_failure_commit_in_order(db, conn):
    """The same 100 calls without the bad row: everything commits, and each call's outcomes come
    back in input order, the batches' ord numbered from 1."""
    table = db.table("k int PRIMARY KEY, v int, ver int")
    calls = plan(table)
    sql, (t, rows), keys = calls[FAILING]
    good = [dict(r, v=1) for r in rows.obj]
    calls[FAILING] = (sql, (t, Jsonb(good)), keys)
    with conn.pipeline() as p:
        cursors, raised = send(conn, calls, sync_every=10, pipeline=p)
    assert raised == []
    assert stored(conn, table) == keys_of(calls, range(CALLS))
    for i, cur in enumerate(cursors):
        want = [(j + 1, "inserted") for j in range(BATCH_ROWS)] if calls[i][0] == MANY else [("inserted",)]
        assert results(cur) == want, i
    assert counts(conn, table) == {"inserted": len(keys_of(calls, range(CALLS))), "errors": 0}
