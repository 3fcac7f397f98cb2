"""Suite 5: versioned deletes, one row per transaction, pgbench -M prepared, 2 clients.

  - safe_delete against the hand-written equivalent: one statement that deletes the stored row
    if it is not newer and upserts the key's tombstone into a tombstone table of the same shape
    (`WITH d AS (DELETE ...) INSERT INTO tomb ... ON CONFLICT (id) DO UPDATE ... WHERE older`).
    Every transaction picks a newer delete of a stored key (removed the first time, the
    tombstone raised after), a stale delete (the stored row is newer), or a delete of a key
    never stored (a tombstone recorded).
  - safe_upsert on a table with tombstones (10,000 of them, on keys the workload never sends)
    against the same table without: suite 1's workload, so the difference is the claim each
    upsert takes on its key.
"""

from common import KEYS, SIZES, connect, log, median, pgbench, rotated, set_notify, versioned_table
from suite_single import HEADER as UPSERT_HEADER, JSON_ROW

TABLE = "bench5"
CLIENTS = 2

DELETE_HEADER = r"""\set n :n + 1
\set kind random(0, 2)
\if :kind = 0
\set id 1 + :client_id + :nc * random(0, 50000 / :nc - 1)
\set v :n
\elif :kind = 1
\set id random(50001, 100000)
\set v random(1, 1000000)
\else
\set id 100001 + :n * :nc + :client_id
\set v 1
\endif
"""

DELETES = {
    "safe_delete": f"""SELECT safe_delete('{TABLE}', ('{{"id":' || :id || ',"version":' || :v || '}}')::jsonb, 'version');""",
    "handwritten": (
        f"WITH d AS (DELETE FROM {TABLE} WHERE id = :id AND version <= :v) "
        f"INSERT INTO {TABLE}_tomb AS t (id, version, deleted_at) VALUES (:id, :v, now()) "
        "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, deleted_at = EXCLUDED.deleted_at "
        "WHERE t.version < EXCLUDED.version;"
    ),
}

UPSERT = f"SELECT safe_upsert('{TABLE}', {JSON_ROW}, 'version');"

# name -> script, and whether the table gets tombstones before the run
CONTENDERS = {
    "safe_delete": (DELETE_HEADER + DELETES["safe_delete"] + "\n", False),
    "handwritten": (DELETE_HEADER + DELETES["handwritten"] + "\n", False),
    "upsert_tombstoned": (UPSERT_HEADER + UPSERT + "\n", True),
    "upsert_plain": (UPSERT_HEADER + UPSERT + "\n", False),
}

LABELS = {
    "safe_delete": "safe_delete(table, jsonb, 'version')",
    "handwritten": "hand-written DELETE ... WHERE version <= $1 plus a tombstone upsert, one statement",
    "upsert_tombstoned": "safe_upsert (suite 1's workload) on a table with 10,000 tombstones",
    "upsert_plain": "safe_upsert (suite 1's workload) on a table without tombstones",
}


def fresh(conn, table, tombstones):
    """Suite 1's table `table`, no tombstones anywhere, and the hand-written contenders' own
    tombstone table `<table>_tomb`; with `tombstones`, 10,000 tombstones of keys no workload
    sends."""
    conn.execute("SELECT safe_upsert_purge_tombstones()")
    versioned_table(conn, table)
    conn.execute(f"DROP TABLE IF EXISTS {table}_tomb")
    conn.execute(f"CREATE TABLE {table}_tomb (id bigint PRIMARY KEY, version bigint NOT NULL, deleted_at timestamptz NOT NULL)")
    if tombstones:
        conn.execute(f"""SELECT count(*) FROM safe_delete_many('{table}',
                         (SELECT jsonb_agg(jsonb_build_object('id', g, 'version', 1)) FROM generate_series(20 * {KEYS}, 20 * {KEYS} + 9999) g),
                         'version')""")
        conn.execute(f"VACUUM ANALYZE safe_upsert_data.{table}_tombstones")
    conn.execute("CHECKPOINT")


def run():
    log(f"suite 5: deletes, pgbench -M prepared -c {CLIENTS}, {SIZES.single_secs} s x {SIZES.rounds} rounds")
    tps = {name: [] for name in CONTENDERS}
    with connect() as conn:
        set_notify(conn, True)
        fresh(conn, TABLE, False)
        pgbench(CONTENDERS["safe_delete"][0], clients=CLIENTS, seconds=min(5, SIZES.single_secs),
                defines={"n": 0, "nc": CLIENTS}, pgoptions="-c synchronous_commit=off")
        for r in range(SIZES.rounds):
            for name in rotated(list(CONTENDERS), r):
                script, tombstones = CONTENDERS[name]
                fresh(conn, TABLE, tombstones)
                res = pgbench(script, clients=CLIENTS, seconds=SIZES.single_secs, defines={"n": 0, "nc": CLIENTS},
                              pgoptions="-c synchronous_commit=off")
                tps[name].append(res.tps)
                log(f"  round {r + 1} {name}: {res.tps:.0f} tps")
        conn.execute("SELECT safe_upsert_purge_tombstones()")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}, {TABLE}_tomb")
    return {
        "clients": CLIENTS,
        "seconds": SIZES.single_secs,
        "rounds": SIZES.rounds,
        "tps": tps,
        "median": {n: median(v) for n, v in tps.items()},
        "labels": LABELS,
        "scripts": {n: c[0] for n, c in CONTENDERS.items()},
    }
