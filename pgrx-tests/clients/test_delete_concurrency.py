"""safe_delete and safe_upsert from many processes at once, as the users' programs call them: a
stream of versioned upserts and deletes over the same keys, delivered out of order, some
events twice, each call in its own transaction at READ COMMITTED (autocommit).

Whatever the order, every key must end as its newest event says: deleted (no row, and a
tombstone of that version) or upserted (the row of that version, and no tombstone).

Run by scripts/test-clients.sh (fixtures in conftest.py). The workload runs in spawned processes
(multiprocessing), one psycopg 3 connection each. SAFEUPSERT_DELETE_SEED=N picks another event
stream; the seed is printed (pytest -s shows it).
"""

import collections
import concurrent.futures
import json
import multiprocessing
import os
import random
import time

import psycopg

KEYS = 200
EVENTS_PER_KEY = (8, 40)  # each key gets this many events (inclusive range), versions increasing
DELETE_SHARE = 0.4  # the chance that an event is a delete
DUPLICATE_SHARE = 0.1  # the share of events sent twice
WORKERS = 8
BATCHING_WORKERS = 2  # the last ones send runs of events of one kind as safe_upsert_many / safe_delete_many
BATCH = 4
SEED = int(os.environ.get("SAFEUPSERT_DELETE_SEED", "20241202"))
DEADLOCK_RETRIES = 5

UPSERT_OUTCOMES = {"inserted", "updated", "stale", "duplicate"}
DELETE_OUTCOMES = {"deleted", "absent", "stale", "duplicate"}


def row_for(key, version):
    """The row an upsert sends for (key, version): its values show which write is stored."""
    return {"k": key, "ver": version, "v": f"key {key} version {version}", "n": key * 100000 + version}


def make_events(rng):
    """Per key, a run of events with distinct increasing versions, each an upsert or a delete;
    some sent twice; all of them shuffled together. Returns (events, newest event per key)."""
    events, newest = [], {}
    for key in range(KEYS):
        n = rng.randint(*EVENTS_PER_KEY)
        versions = sorted(rng.sample(range(1, 10 * EVENTS_PER_KEY[1]), n))
        for version in versions:
            op = "delete" if rng.random() < DELETE_SHARE else "upsert"
            events.append((op, key, version))
        newest[key] = events[-1]
    events += rng.sample(events, int(len(events) * DUPLICATE_SHARE))
    rng.shuffle(events)
    return events, newest


def _with_retry(run, stats):
    """Runs one call (its own transaction); retries it on a deadlock (40P01), counting."""
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            return run()
        except psycopg.errors.DeadlockDetected:
            stats["deadlock_retries"] += 1
            if attempt == DEADLOCK_RETRIES:
                raise


def _worker(dsn, table, events, batching, start_at):
    """One process: one autocommit connection; every event in a call of its own, or, when
    batching, runs of up to BATCH consecutive events of one kind in one safe_upsert_many or
    safe_delete_many. Returns (outcome counts by op, errors as (events, sqlstate, message),
    statistics, (first, last) wall clock times of the loop)."""
    counts = collections.Counter()
    errors = []
    stats = collections.Counter()
    conn = psycopg.connect(dsn, autocommit=True)
    single = {
        "upsert": f"SELECT safe_upsert('{table}'::regclass, %s::jsonb, 'ver')::text",
        "delete": f"SELECT safe_delete('{table}'::regclass, %s::jsonb, 'ver')::text",
    }
    many = {
        "upsert": f"SELECT outcome::text FROM safe_upsert_many('{table}'::regclass, %s::jsonb, 'ver') ORDER BY ord",
        "delete": f"SELECT outcome::text FROM safe_delete_many('{table}'::regclass, %s::jsonb, 'ver') ORDER BY ord",
    }

    def arg(op, key, version):
        return row_for(key, version) if op == "upsert" else {"k": key, "ver": version}

    def call(sql, value):
        return [r[0] for r in conn.execute(sql, (json.dumps(value),), prepare=True).fetchall()]

    def send(batch):
        if not batch:
            return
        op = batch[0][0]
        try:
            if len(batch) == 1:
                outcomes = _with_retry(lambda: call(single[op], arg(*batch[0])), stats)
            else:
                outcomes = _with_retry(lambda: call(many[op], [arg(*ev) for ev in batch]), stats)
                stats["batches"] += 1
            assert len(outcomes) == len(batch), (batch, outcomes)
            counts.update((op, o) for o in outcomes)
            stats["calls"] += 1
        except psycopg.Error as e:
            errors.append((batch, e.diag.sqlstate, str(e).strip()))

    time.sleep(max(0.0, start_at - time.time()))  # start together, so that the processes overlap
    first = time.time()
    pending = []
    for ev in events:
        if pending and (ev[0] != pending[0][0] or len(pending) == (BATCH if batching else 1)):
            send(pending)
            pending = []
        pending.append(ev)
    send(pending)
    last = time.time()
    conn.close()
    return dict(counts), errors, dict(stats), (first, last)


def _run_workers(worker, args_per_worker, timeout):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=len(args_per_worker), mp_context=ctx) as pool:
        futures = [pool.submit(worker, *args) for args in args_per_worker]
        return [f.result(timeout=timeout) for f in futures]


def _tombstones(conn, table):
    rows = conn.execute(
        "SELECT (key ->> 'k')::int, version FROM safe_upsert_tombstones WHERE relid = %s::regclass ORDER BY 1",
        (table,),
    ).fetchall()
    return dict(rows)


def test_concurrent_upserts_and_deletes(db, dsn):
    """8 processes apply a shuffled stream of upserts and deletes (some sent twice) over 200
    keys, each call its own transaction: no errors, no deadlocks, every outcome one that its
    operation may have, and every key as its newest event says, with or without a tombstone."""
    table = db.table("k int PRIMARY KEY, ver int NOT NULL, v text NOT NULL, n bigint NOT NULL")
    # the tombstone table, made by a first delete (of a key the stream never uses) before the
    # workload: the race of a table's first deletes is test_first_deletes_of_a_table's
    first = db.conn.execute("SELECT safe_delete(%s::regclass, %s::jsonb, 'ver')::text", (table, json.dumps({"k": -1, "ver": 1})))
    assert first.fetchone()[0] == "absent"

    events, newest = make_events(random.Random(SEED))
    chunks = [events[i::WORKERS] for i in range(WORKERS)]
    t0 = time.monotonic()
    start_at = time.time() + 2.0  # time for the spawned processes to start and connect
    results = _run_workers(
        _worker,
        [(dsn, table, chunk, i >= WORKERS - BATCHING_WORKERS, start_at) for i, chunk in enumerate(chunks)],
        timeout=60,
    )
    elapsed = time.monotonic() - t0

    counts, stats, errors = collections.Counter(), collections.Counter(), []
    for c, e, s, _ in results:
        counts.update(c)
        errors.extend(e)
        stats.update(s)
    spans = [span for _, _, _, span in results]
    summary = (
        f"seed {SEED}: {len(events)} events ({stats['calls']} calls, {stats['batches']} batches) in "
        f"{elapsed:.1f} s with {WORKERS} processes; deadlock retries: {stats['deadlock_retries']}; "
        f"outcomes: {dict(sorted(counts.items()))}"
    )
    print("\n" + summary)

    assert errors == [], f"{len(errors)} errors, first: {errors[:5]}"
    assert stats["deadlock_retries"] == 0, summary
    # the processes were all writing at the same time for a while
    assert max(first for first, _ in spans) < min(last for _, last in spans), spans
    assert sum(counts.values()) == len(events), summary
    wrong_outcomes = {k: n for k, n in counts.items()
                      if k[1] not in (UPSERT_OUTCOMES if k[0] == "upsert" else DELETE_OUTCOMES)}
    assert wrong_outcomes == {}, summary

    rows = {k: (ver, v, n) for k, ver, v, n in db.conn.execute(f"SELECT k, ver, v, n FROM {table}").fetchall()}
    tombstones = _tombstones(db.conn, table)
    assert tombstones.pop(-1, None) == 1, "the first delete's tombstone"
    wrong = []
    for key in range(KEYS):
        op, _, version = newest[key]
        if op == "delete":
            if key in rows or tombstones.get(key) != version:
                wrong.append((key, f"newest: delete {version}", rows.get(key), tombstones.get(key)))
        else:
            want = row_for(key, version)
            if rows.get(key) != (want["ver"], want["v"], want["n"]) or key in tombstones:
                wrong.append((key, f"newest: upsert {version}", rows.get(key), tombstones.get(key)))
    assert wrong == [], f"{len(wrong)} keys not as their newest event says (key, newest, row, tombstone), first: {wrong[:5]}"
    assert set(rows) <= set(range(KEYS)) and set(tombstones) <= set(range(KEYS))


# --- a table's first deletes --------------------------------------------------------------

FIRST_DELETE_TABLES = 60


def _first_delete_worker(dsn, tables, me, barrier, queue):
    """One process: for each table, waits for the others, then deletes its own key (me) there,
    in a call of its own; retries on a deadlock, counting."""
    errors, stats, outcomes = [], collections.Counter(), collections.Counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            barrier.wait(timeout=30)
            sql = f"SELECT safe_delete('{table}'::regclass, %s::jsonb, 'ver')::text"
            try:
                outcome = _with_retry(lambda: conn.execute(sql, (json.dumps({"k": me, "ver": 1}),)).fetchone()[0], stats)
                outcomes[outcome] += 1
            except psycopg.Error as e:
                errors.append((table, e.diag.sqlstate, str(e).strip()))
    queue.put((me, dict(outcomes), errors, dict(stats)))


def test_first_deletes_of_a_table(db, dsn):
    """8 processes make their first safe_delete of a fresh table at the same moment, 60 tables
    in turn: each is 'absent' (the keys were never stored), every table ends with the 8
    tombstones, and no call deadlocks: a delete that finds no tombstone table must not upgrade
    the ROW EXCLUSIVE lock it holds on the table to SHARE ROW EXCLUSIVE while another delete
    does the same (40P01 deadlock)."""
    tables = [db.table("k int PRIMARY KEY, ver int NOT NULL, v text") for _ in range(FIRST_DELETE_TABLES)]
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_first_delete_worker, args=(dsn, tables, me, barrier, queue)) for me in range(WORKERS)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    elapsed = time.monotonic() - t0

    outcomes, stats, errors = collections.Counter(), collections.Counter(), []
    for _, o, e, s in results:
        outcomes.update(o)
        errors.extend(e)
        stats.update(s)
    summary = (f"{WORKERS} processes x {FIRST_DELETE_TABLES} first deletes in {elapsed:.1f} s: {dict(outcomes)}; "
               f"deadlock retries: {stats['deadlock_retries']}")
    print("\n" + summary)
    assert errors == [], f"{len(errors)} errors, first: {errors[:5]}"
    assert outcomes == {"absent": WORKERS * FIRST_DELETE_TABLES}, summary
    for table in tables:
        assert _tombstones(db.conn, table) == {me: 1 for me in range(WORKERS)}, table
    assert stats["deadlock_retries"] == 0, summary
