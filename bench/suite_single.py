"""Suite 1: one row per transaction, pgbench -M prepared, 2 clients, over 100,000 keys.

Every transaction picks one of three kinds at random: a new key, a newer version of a stored
key, or a stale version of a stored key. Each contender gets a freshly made, identical table.

  - new keys are unique per client and transaction (100,001 + n * clients + client_id);
  - newer versions go to keys 1..50,000 (stored at version 0), each client to its own slice of
    them, with its transaction counter as the version: always newer than what is stored;
  - stale versions go to keys 50,001..100,000, stored at a version higher than any sent.

pgbench cannot build a string, so the JSON row is concatenated from pgbench's parameters in the
statement itself (`'{"id":' || :id || ...)::jsonb`): that is the JSON text a client would send,
and its cost (a few microseconds) is charged to safe_upsert and the PL/pgSQL function.
"""

from common import SIZES, check_stale_zone, connect, log, median, pgbench, rotated, set_notify, versioned_table

TABLE = "bench1"
CLIENTS = 2

HEADER = r"""\set n :n + 1
\set kind random(0, 2)
\set q random(1, 1000000)
\if :kind = 0
\set id 100001 + :n * :nc + :client_id
\set v 1
\elif :kind = 1
\set id 1 + :client_id + :nc * random(0, 50000 / :nc - 1)
\set v :n
\else
\set id random(50001, 100000)
\set v random(1, 1000000)
\endif
"""

JSON_ROW = """('{"id":' || :id || ',"version":' || :v || ',"qty":' || :q || ',"val":"v' || :q || '"}')::jsonb"""

STATEMENTS = {
    "safe_upsert": f"SELECT safe_upsert('{TABLE}', {JSON_ROW}, 'version');",
    "static": (
        f"INSERT INTO {TABLE} AS t (id, version, qty, val) VALUES (:id, :v, :q, 'v' || :q) "
        "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, qty = EXCLUDED.qty, val = EXCLUDED.val "
        "WHERE t.version < EXCLUDED.version;"
    ),
    "plpgsql": f"SELECT plpgsql_upsert('{TABLE}', {JSON_ROW}, 'version');",
    "merge": (
        f"MERGE INTO {TABLE} AS t USING (SELECT :id::bigint AS id, :v::bigint AS version, :q::int AS qty, "
        "'v' || :q AS val) AS s ON t.id = s.id "
        "WHEN MATCHED AND t.version < s.version THEN UPDATE SET version = s.version, qty = s.qty, val = s.val "
        "WHEN NOT MATCHED THEN INSERT (id, version, qty, val) VALUES (s.id, s.version, s.qty, s.val);"
    ),
}

# name -> (statement, extra PGOPTIONS, safe_upsert.notify)
CONTENDERS = {
    "safe_upsert": ("safe_upsert", "", True),
    "static": ("static", "", True),
    "plpgsql": ("plpgsql", "", True),
    "merge": ("merge", "", True),
    "safe_upsert_track_off": ("safe_upsert", "-c safe_upsert.track=off", True),
    "safe_upsert_notify_off": ("safe_upsert", "", False),
}

LABELS = {
    "safe_upsert": "safe_upsert(table, jsonb, 'version')",
    "static": "static prepared INSERT ... ON CONFLICT DO UPDATE ... WHERE (ceiling)",
    "plpgsql": "generic PL/pgSQL: EXECUTE format(...) + jsonb_populate_record",
    "merge": "MERGE ... WHEN MATCHED AND older ... WHEN NOT MATCHED",
    "safe_upsert_track_off": "safe_upsert with safe_upsert.track = off (no counting, no conflict log, no notifications)",
    "safe_upsert_notify_off": "safe_upsert with safe_upsert.notify = off (counted and logged, not notified)",
}


def scripts():
    return {name: HEADER + STATEMENTS[c[0]] + "\n" for name, c in CONTENDERS.items()}


def run():
    log(f"suite 1: single row, pgbench -M prepared -c {CLIENTS}, {SIZES.single_secs} s x {SIZES.rounds} rounds")
    texts = scripts()
    tps = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    with connect() as conn:
        # warm-up, not measured: WAL segments, caches, the first connection of every kind
        versioned_table(conn, TABLE)
        pgbench(texts["safe_upsert"], clients=CLIENTS, seconds=min(5, SIZES.single_secs),
                defines={"n": 0, "nc": CLIENTS}, pgoptions="-c synchronous_commit=off")
        for r in range(SIZES.rounds):
            for name in rotated(names, r):
                set_notify(conn, CONTENDERS[name][2])
                versioned_table(conn, TABLE)
                res = pgbench(texts[name], clients=CLIENTS, seconds=SIZES.single_secs,
                              defines={"n": 0, "nc": CLIENTS},
                              pgoptions=f"-c synchronous_commit=off {CONTENDERS[name][1]}".strip())
                check_stale_zone(conn, TABLE)
                tps[name].append(res.tps)
                log(f"  round {r + 1} {name}: {res.tps:.0f} tps")
        set_notify(conn, True)
    return {
        "clients": CLIENTS,
        "seconds": SIZES.single_secs,
        "rounds": SIZES.rounds,
        "tps": tps,
        "median": {n: median(v) for n, v in tps.items()},
        "labels": LABELS,
        "scripts": texts,
    }
