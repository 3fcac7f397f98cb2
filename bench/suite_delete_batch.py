"""Suite 6: versioned deletes in batches of 1,000 rows, one client (psycopg 3), one transaction
per batch, as suite 2 runs upserts.

  - safe_delete_many against hand-written set-based SQL doing the same: the newest delete per
    key (DISTINCT ON), `DELETE ... USING` of the stored rows it may remove, and an upsert of
    the tombstones into a tombstone table of the same shape (`INSERT ... ON CONFLICT ... WHERE
    older`), skipping keys whose stored row is newer. A third of each batch deletes stored keys
    with newer versions, a third sends stale versions, a third deletes keys never stored.
  - safe_upsert_many on a table with tombstones (10,000, on keys the batches never send) against
    the same table without: suite 2's batches, so the difference is the claims each batch
    takes on its keys.
"""

import json
import random
import time

from common import KEYS, SIZES, UPDATE_ZONE, check_stale_zone, connect, log, median, rotated
from suite_batch import BATCH, make_batches
from suite_delete import fresh

TABLE = "bench6"

SQL = {
    "safe_delete_many": f"SELECT count(*) FROM safe_delete_many('{TABLE}', %s::jsonb, 'version')",
    "handwritten": (
        f"WITH input AS (SELECT DISTINCT ON (id) id, version FROM jsonb_to_recordset(%s::jsonb) AS r(id bigint, version bigint) "
        "                ORDER BY id, version DESC), "
        f"     d AS (DELETE FROM {TABLE} t USING input i WHERE t.id = i.id AND t.version <= i.version) "
        f"INSERT INTO {TABLE}_tomb AS tb (id, version, deleted_at) "
        f"SELECT id, version, now() FROM input i WHERE NOT EXISTS (SELECT FROM {TABLE} t WHERE t.id = i.id AND t.version > i.version) "
        "ORDER BY id ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, deleted_at = EXCLUDED.deleted_at "
        "WHERE tb.version < EXCLUDED.version"
    ),
    "upsert_tombstoned": f"SELECT count(*) FROM safe_upsert_many('{TABLE}', %s::jsonb, 'version')",
    "upsert_plain": f"SELECT count(*) FROM safe_upsert_many('{TABLE}', %s::jsonb, 'version')",
}

LABELS = {
    "safe_delete_many": "safe_delete_many(table, jsonb array, 'version')",
    "handwritten": "hand-written set-based SQL: DISTINCT ON + DELETE ... USING + tombstone INSERT ... ON CONFLICT ... WHERE",
    "upsert_tombstoned": "safe_upsert_many (suite 2's batches) on a table with 10,000 tombstones",
    "upsert_plain": "safe_upsert_many (suite 2's batches) on the same table without tombstones",
}


def delete_batches(count, seed=6):
    rnd = random.Random(seed)
    next_key = 10 * KEYS
    version = 0
    batches = []
    for _ in range(count):
        rows = []
        for i in range(BATCH):
            kind = i % 3
            if kind == 0:
                version += 1
                rows.append({"id": rnd.randint(1, UPDATE_ZONE), "version": version})
            elif kind == 1:
                rows.append({"id": rnd.randint(UPDATE_ZONE + 1, KEYS), "version": rnd.randint(1, 1_000_000)})
            else:
                rows.append({"id": next_key, "version": 1})
                next_key += 1
        rnd.shuffle(rows)
        batches.append(json.dumps(rows))
    return batches


def write(name, batches):
    with connect(autocommit=False) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        cur = conn.cursor()
        start = time.perf_counter()
        for text in batches:
            cur.execute(SQL[name], (text,))
            if cur.description:
                cur.fetchall()
            conn.commit()
        elapsed = time.perf_counter() - start
    return len(batches) * BATCH / elapsed


def run():
    names = list(SQL)
    log(f"suite 6: delete batches of {BATCH} rows, {SIZES.batch_count} batches per run x {SIZES.rounds} rounds")
    deletes = delete_batches(SIZES.batch_count)
    upserts = [b[0] for b in make_batches(SIZES.batch_count)]
    rates = {n: [] for n in names}
    states = {}
    with connect() as conn:
        fresh(conn, TABLE, False)
        write("safe_delete_many", deletes[:3])  # warm-up, not measured
        for r in range(SIZES.rounds):
            for name in rotated(names, r):
                fresh(conn, TABLE, name == "upsert_tombstoned")
                rate = write(name, upserts if name.startswith("upsert") else deletes)
                check_stale_zone(conn, TABLE)
                if not name.startswith("upsert"):
                    # both deletes leave the same rows, and tombstones of the same keys and versions
                    tomb = f"safe_upsert_data.{TABLE}_tombstones" if name == "safe_delete_many" else f"{TABLE}_tomb"
                    states[name] = tuple(conn.execute(
                        f"SELECT (SELECT count(*) FROM {TABLE}), (SELECT count(*) FROM {tomb}), "
                        f"(SELECT sum(version)::text FROM {tomb})").fetchone())
                rates[name].append(rate)
                log(f"  round {r + 1} {name}: {rate:.0f} rows/s")
        conn.execute("SELECT safe_upsert_purge_tombstones()")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}, {TABLE}_tomb")
    if len(set(states.values())) != 1:
        raise RuntimeError(f"suite 6: the deletes left different tables: {states}")
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
