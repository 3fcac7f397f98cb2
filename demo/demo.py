"""Four writers, the same 50 keys, every version in a different order: the newest always wins.

Each process writes versions 1..VERSIONS of every key, shuffled, with safe_upsert() in autocommit;
a version's value is the same whoever writes it, so a repeat is a 'duplicate'. At the end every
row holds its newest version, whatever the interleaving, and no write raised a unique violation.
Connects with the PG* environment variables (scripts/demo.sh sets them).
"""

import collections
import json
import multiprocessing
import random

import psycopg

WRITERS, KEYS, VERSIONS = 4, 50, 8
TABLE = "demo_items"


def writer(seed):
    rng = random.Random(seed)
    writes = [(k, v) for k in range(1, KEYS + 1) for v in range(1, VERSIONS + 1)]
    rng.shuffle(writes)
    outcomes = collections.Counter()
    with psycopg.connect(autocommit=True) as conn:
        for key, version in writes:
            row = {"id": key, "version": version, "value": f"key {key} version {version}"}
            (outcome,) = conn.execute(
                "SELECT safe_upsert(%s::regclass, %s::jsonb, 'version')", (TABLE, json.dumps(row))
            ).fetchone()
            outcomes[str(outcome)] += 1
    return outcomes


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_safeupsert")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, version int, value text)")

    print(f"demo: {WRITERS} processes write versions 1..{VERSIONS} of the same {KEYS} keys "
          f"of {TABLE}, each in its own shuffled order")
    with multiprocessing.Pool(WRITERS) as pool:
        per_writer = pool.map(writer, range(WRITERS))
    total = sum(per_writer, collections.Counter())
    print("demo: outcomes seen by the writers: "
          + ", ".join(f"{k} {total[k]}" for k in ("inserted", "updated", "stale", "duplicate", "tie")))

    with psycopg.connect(autocommit=True) as conn:
        (newest,) = conn.execute(
            f"SELECT count(*) FROM {TABLE} WHERE version = %s AND value = %s || id || ' version ' || %s",
            (VERSIONS, "key ", VERSIONS),
        ).fetchone()
    ok = newest == KEYS and total["inserted"] == KEYS
    print(f"demo: {newest} of {KEYS} rows hold their newest version: {'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
