"""A CDC recipe: apply a Debezium-style change stream, out of order and with replays, in batches.

    python demo/cdc_recipe.py [DSN] [--seed N] [--keys 200] [--batch 100] [--schema cdc_recipe]

Connects with DSN, or with the PG* environment variables when it is left out (scripts/demo.sh
sets them). It (re)creates the schema `cdc_recipe` with a table `customers`, then:

 1. makes the source of truth: the history of a source table customers(id, name, email), every
    change with its LSN: a snapshot of most keys, then inserts, updates and deletes;
 2. turns it into Debezium events (`op` c/u/r/d, `before`/`after`, `source.lsn`, `ts_ms`),
    duplicates about 10% of them (at-least-once delivery) and shuffles them all;
 3. applies them in batches: per batch, one transaction with one safe_upsert_many call (the
    `after` images) and one safe_delete_many call (the `before` images), the LSN as the version;
 4. checks that the table is the source's final state: every live row with its newest values,
    every deleted key absent and kept as a tombstone at its delete's LSN. Exits 1 if not.
"""

import argparse
import collections
import json
import random
import sys

import psycopg

UPSERT_OUTCOMES = ("inserted", "updated", "stale", "duplicate", "tie")
DELETE_OUTCOMES = ("deleted", "absent", "stale", "duplicate")


def source_history(rng, keys):
    """The source's changes in commit order: (op, lsn, before, after). Returns them and the
    final state: id -> ("row", lsn, row) or ("deleted", lsn, None)."""
    history, table, final = [], {}, {}
    lsn = 1_000_000
    for k in range(1, keys + 1):  # the initial snapshot ("r"): one LSN for all its rows
        if rng.random() < 0.8:
            table[k] = {"id": k, "name": f"customer {k}", "email": f"c{k}@example.com"}
            history.append(("r", lsn, None, table[k]))
            final[k] = ("row", lsn, table[k])
    for n in range(keys * 6):
        lsn += rng.randint(8, 200)
        k = rng.randint(1, keys)
        if k not in table:
            op, after = "c", {"id": k, "name": f"customer {k}", "email": f"c{k}.{n}@example.com"}
        elif rng.random() < 0.2:
            op, after = "d", None
        else:
            op, after = "u", {**table[k], rng.choice(("name", "email")): f"change {n} of {k}"}
        history.append((op, lsn, table.get(k), after))
        if after is None:
            del table[k]
            final[k] = ("deleted", lsn, None)
        else:
            table[k] = after
            final[k] = ("row", lsn, after)
    return history, final


def debezium_events(rng, history):
    """Debezium envelopes (REPLICA IDENTITY FULL: `before` is the whole old row of u and d;
    with the default identity it holds only the key, which works the same), about 10% sent
    twice, all shuffled: what several partitions, consumer restarts and replays deliver."""
    ts = 1_700_000_000_000
    events = []
    for op, lsn, before, after in history:
        ts += rng.randint(1, 50)
        events.append({"op": op, "before": before, "after": after,
                       "source": {"table": "customers", "lsn": lsn, "ts_ms": ts}, "ts_ms": ts + rng.randint(5, 900)})
    events += rng.sample(events, len(events) // 10)
    rng.shuffle(events)
    return events


def apply_batch(conn, table, batch, outcomes):
    """The pattern to copy: one transaction, one call for the batch's upserts and one for its
    deletes. The version is the event's source.lsn, never ts_ms (clocks and commit order may
    disagree; the LSN is the order of the source's commits). Debezium's `after` image is the
    row without our `lsn` column, and the `before` image of a delete holds the row's old values,
    so the version is put into the row sent: the event's LSN.

    Why the two calls may come in either order (and why the events of a key need not be sent
    in arrival order): each call compares the version it brings for a key with what the key
    holds (a row or a tombstone) and keeps the higher one, so the key ends with the highest
    version of all its events, whichever call comes first; and when an upsert and a delete
    carry the same version, the delete wins in both orders (a delete at the stored row's
    version removes it; an upsert at the tombstone's version is stale). Within one call,
    the newest event of a key wins and the others are stale or duplicate."""
    upserts = [{**e["after"], "lsn": e["source"]["lsn"]} for e in batch if e["op"] in ("c", "u", "r")]
    deletes = [{**e["before"], "lsn": e["source"]["lsn"]} for e in batch if e["op"] == "d"]
    with conn.transaction():
        for op, func, rows in (("upsert", "safe_upsert_many", upserts), ("delete", "safe_delete_many", deletes)):
            if rows:
                got = conn.execute(f"SELECT outcome::text FROM {func}(%s::regclass, %s::jsonb, 'lsn') ORDER BY ord",
                                   (table, json.dumps(rows))).fetchall()
                outcomes.update((op, o) for (o,) in got)


def check(conn, table, final):
    """Problems found: the table and its tombstones against the source's final state."""
    rows = {r[0]: r[1:] for r in conn.execute(f"SELECT id, name, email, lsn FROM {table}")}
    tombstones = {int(k): v for k, v in conn.execute(
        "SELECT key->>'id', version::bigint FROM safe_upsert_tombstones WHERE relid = %s::regclass", (table,))}
    want_rows = {k: (r["name"], r["email"], lsn) for k, (state, lsn, r) in final.items() if state == "row"}
    want_tombstones = {k: lsn for k, (state, lsn, _) in final.items() if state == "deleted"}
    problems = []
    for what, got, want in (("row", rows, want_rows), ("tombstone", tombstones, want_tombstones)):
        for k in sorted(set(got) | set(want)):
            if got.get(k) != want.get(k):
                problems.append(f"id {k}: {what} {got.get(k)!r}, the source says {want.get(k)!r}")
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dsn", nargs="?", default="", help="libpq connection string (default: PG* variables)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--schema", default="cdc_recipe")
    a = p.parse_args()
    rng = random.Random(a.seed)
    table = f'"{a.schema}".customers'

    history, final = source_history(rng, a.keys)
    events = debezium_events(rng, history)
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_safeupsert")
        conn.execute(f'DROP SCHEMA IF EXISTS "{a.schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{a.schema}"')
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text, email text, lsn bigint NOT NULL)")
        print(f"cdc: seed {a.seed}: {len(history)} source changes of {a.keys} keys, "
              f"{len(events)} events delivered shuffled ({len(events) - len(history)} twice), "
              f"in batches of {a.batch}")

        outcomes = collections.Counter()
        for i in range(0, len(events), a.batch):
            apply_batch(conn, table, events[i:i + a.batch], outcomes)

        stats = conn.execute("SELECT inserted, updated, stale, duplicate, tie, deleted, absent, delete_stale, "
                             "delete_duplicate FROM safe_upsert_stats WHERE relid = %s::regclass", (table,)).fetchone()
        seen = [outcomes["upsert", o] for o in UPSERT_OUTCOMES] + [outcomes["delete", o] for o in DELETE_OUTCOMES]
        for source, counts in (("calls", seen), ("safe_upsert_stats", stats)):
            if counts is None:
                print(f"cdc: {source}: no row (safe_upsert.track = off?)")
                continue
            up, dl = counts[:len(UPSERT_OUTCOMES)], counts[len(UPSERT_OUTCOMES):]
            print(f"cdc: {source}: upserts " + ", ".join(f"{o} {n}" for o, n in zip(UPSERT_OUTCOMES, up))
                  + "; deletes " + ", ".join(f"{o} {n}" for o, n in zip(DELETE_OUTCOMES, dl)))
        print(f"cdc: the statistics {'agree with' if stats is not None and list(stats) == seen else 'differ from'} "
              "the calls' outcomes")

        problems = check(conn, table, final)
    live = sum(1 for state, _, _ in final.values() if state == "row")
    if problems:
        print(f"cdc: WRONG: {len(problems)} keys differ from the source:", *problems[:20], sep="\n  ")
        return 1
    print(f"cdc: ok: {live} rows hold their newest values, {len(final) - live} deleted keys are absent "
          "and kept as tombstones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
