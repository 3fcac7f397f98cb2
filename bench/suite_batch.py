"""Suite 2: batches of 1,000 rows, one client (psycopg 3), one transaction per batch.

The batches are made before any clock starts, as JSON text (for the JSON contenders) and as
tuples (for executemany), and every contender writes the very same batches into a freshly made,
identical table: a third new keys, a third newer versions (keys may repeat within a batch, the
later row carrying the higher version), a third stale versions. Rows per second is the number
of rows sent divided by the time from the first batch sent to the last commit.
"""

import json
import random
import time

from common import (KEYS, SIZES, UPDATE_ZONE, check_stale_zone, connect, log, median, rotated,
                    versioned_table)

TABLE = "bench2"
BATCH = 1000

STATIC = (
    f"INSERT INTO {TABLE} AS t (id, version, qty, val) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, qty = EXCLUDED.qty, val = EXCLUDED.val "
    "WHERE t.version < EXCLUDED.version"
)

SQL = {
    "safe_upsert_many": f"SELECT count(*) FROM safe_upsert_many('{TABLE}', %s::jsonb, 'version')",
    "handwritten": (
        f"INSERT INTO {TABLE} AS t (id, version, qty, val) "
        f"SELECT DISTINCT ON (id) id, version, qty, val FROM jsonb_populate_recordset(NULL::{TABLE}, %s::jsonb) "
        "ORDER BY id, version DESC "
        "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, qty = EXCLUDED.qty, val = EXCLUDED.val "
        "WHERE t.version < EXCLUDED.version"
    ),
    "single_calls": f"SELECT safe_upsert('{TABLE}', %s::jsonb, 'version')",
    "single_calls_pipelined": f"SELECT safe_upsert('{TABLE}', %s::jsonb, 'version')",
    "single_calls_server": f"SELECT count(safe_upsert('{TABLE}', r, 'version')) FROM jsonb_array_elements(%s::jsonb) r",
    "executemany_static": STATIC,
}

LABELS = {
    "safe_upsert_many": "safe_upsert_many(table, jsonb array, 'version')",
    "handwritten": "hand-written set-based SQL: jsonb_populate_recordset + DISTINCT ON + ON CONFLICT ... WHERE",
    "single_calls": "1,000 safe_upsert calls in one transaction, one statement (and round trip) each",
    "single_calls_pipelined": "1,000 safe_upsert calls in one transaction, sent by psycopg executemany (pipelined)",
    "single_calls_server": "1,000 safe_upsert calls in one transaction and one statement: SELECT safe_upsert(...) FROM jsonb_array_elements($1)",
    "executemany_static": "psycopg 3 executemany (pipelined) of the static INSERT ... ON CONFLICT",
}


def make_batches(count, seed=5):
    """`count` batches of BATCH rows: (json text, row json texts, tuples)."""
    rnd = random.Random(seed)
    next_key = KEYS + 1
    version = 0
    batches = []
    for _ in range(count):
        rows = []
        for i in range(BATCH):
            kind = i % 3
            q = rnd.randint(1, 1_000_000)
            if kind == 0:
                key, v = next_key, 1
                next_key += 1
            elif kind == 1:
                version += 1
                key, v = rnd.randint(1, UPDATE_ZONE), version
            else:
                key, v = rnd.randint(UPDATE_ZONE + 1, KEYS), rnd.randint(1, 1_000_000)
            rows.append({"id": key, "version": v, "qty": q, "val": f"v{q}"})
        rnd.shuffle(rows)
        batches.append((json.dumps(rows), [json.dumps(r) for r in rows],
                        [(r["id"], r["version"], r["qty"], r["val"]) for r in rows]))
    return batches


def write(name, batches):
    """Writes every batch with contender `name`; returns rows per second."""
    with connect(autocommit=False) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        cur = conn.cursor()
        start = time.perf_counter()
        for text, row_texts, tuples in batches:
            if name == "executemany_static":
                cur.executemany(STATIC, tuples)
            elif name == "single_calls_pipelined":
                cur.executemany(SQL[name], [(t,) for t in row_texts])
            elif name == "single_calls":
                for t in row_texts:
                    cur.execute(SQL[name], (t,))
                    cur.fetchone()
            else:
                cur.execute(SQL[name], (text,))
                cur.fetchall() if cur.description else None
            conn.commit()
        elapsed = time.perf_counter() - start
    return len(batches) * BATCH / elapsed


def run():
    names = list(SQL)
    log(f"suite 2: batches of {BATCH} rows, {SIZES.batch_count} batches per run x {SIZES.rounds} rounds")
    batches = make_batches(SIZES.batch_count)
    rates = {n: [] for n in names}
    states = {}
    with connect() as conn:
        versioned_table(conn, TABLE)
        write("handwritten", batches[:5])  # warm-up, not measured
        for r in range(SIZES.rounds):
            for name in rotated(names, r):
                versioned_table(conn, TABLE)
                rate = write(name, batches)
                check_stale_zone(conn, TABLE)
                states[name] = tuple(conn.execute(
                    f"SELECT count(*), sum(version)::text, sum(qty) FROM {TABLE}").fetchone())
                rates[name].append(rate)
                log(f"  round {r + 1} {name}: {rate:.0f} rows/s")
    # every contender must have left the same table behind
    if len(set(states.values())) != 1:
        raise RuntimeError(f"suite 2: the contenders left different tables: {states}")
    return {
        "batch": BATCH,
        "batches": SIZES.batch_count,
        "rounds": SIZES.rounds,
        "rows_per_s": rates,
        "median": {n: median(v) for n, v in rates.items()},
        "labels": LABELS,
        "sql": SQL,
        "final_table": list(next(iter(states.values()))),
    }
