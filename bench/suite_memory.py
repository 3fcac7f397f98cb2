"""Suite 4: memory.

A backend's RSS (/proc/<pid>/status, pid from pg_backend_pid()) while it makes SIZES.memory_calls
safe_upsert calls over 50 tables, each written with 3 column sets: 150 plans, more than the
plan cache keeps at its default size (safe_upsert.plan_cache_size = 64), so plans are evicted
and rebuilt all along. The calls come in statements of CHUNK calls, each statement (one
transaction) using 10 of the 150 shapes in turn and the next statement the next 10. Three in
four calls write a newer version, one in four an older one (stale: a conflict, logged).

VmRSS counts the shared buffers the backend has touched too; RssAnon is its private memory,
where a leak would show.

And the extension's shared memory at default settings: pg_shmem_allocations, names starting
with 'pg_safeupsert'.

And one batch of SIZES.memory_calls rows (suite 2's rows, keys repeating), written once by
safe_upsert_many and once by suite 2's hand-written SQL, each by a new backend into a fresh
table: the peak of the backend's private memory (RssAnon, sampled every few milliseconds while
the statement runs) above what it held before.
"""

import threading
import time

import suite_batch as s2
from common import SIZES, connect, log, proc_status, versioned_table

TABLES = 50
SETS = 3
SHAPES = TABLES * SETS
CHUNK = 10_000
EXTRA_TYPES = ["int", "text", "numeric", "timestamptz", "boolean", "jsonb", "bigint", "date"]


def make_tables(conn):
    for t in range(1, TABLES + 1):
        extras = ", ".join(f"x{j} {EXTRA_TYPES[(t + j) % len(EXTRA_TYPES)]}" for j in range(t % 6))
        conn.execute(f"DROP TABLE IF EXISTS m{t:02d}")
        conn.execute(f"CREATE TABLE m{t:02d} (id int PRIMARY KEY, version bigint, a text, b int, c numeric"
                     + (f", {extras}" if extras else "") + ")")


# One statement, CHUNK calls: call g (global index) goes to shape ((first_shape + g % 10) % 150),
# i.e. table shape % 50 + 1 with column set shape / 50.
CALLS = """
SELECT count(safe_upsert(format('m%%s', lpad((s %% 50 + 1)::text, 2, '0'))::regclass,
         CASE s / 50
           WHEN 0 THEN jsonb_build_object('id', k, 'version', v, 'a', 'x' || g)
           WHEN 1 THEN jsonb_build_object('id', k, 'version', v, 'a', 'x' || g, 'b', g %% 100000)
           ELSE jsonb_build_object('id', k, 'version', v, 'b', g %% 100000, 'c', g * 0.5)
         END, 'version'))
FROM (SELECT g, (%(first)s::int + g %% 10) %% 150 AS s, g %% 1000 + 1 AS k,
             CASE WHEN g %% 4 = 0 THEN 0 ELSE g END AS v
      FROM generate_series(%(lo)s::int, %(hi)s::int) g) calls
"""


def batch_peak(name, text):
    """(peak RssAnon above the backend's own before the statement, in kB; the table's rows)."""
    with connect() as admin:
        versioned_table(admin, s2.TABLE)
    with connect(autocommit=False) as conn:
        conn.execute("SET synchronous_commit = off")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.commit()
        before = proc_status(pid)["RssAnon"]
        peak, running = [before], [True]

        def sample():
            while running[0]:
                peak[0] = max(peak[0], proc_status(pid)["RssAnon"])
                time.sleep(0.002)

        poller = threading.Thread(target=sample)
        poller.start()
        try:
            conn.execute(s2.SQL[name], (text,))
            conn.commit()
        finally:
            running[0] = False
            poller.join()
        rows = conn.execute(f"SELECT count(*), sum(version)::text FROM {s2.TABLE}").fetchone()
    return peak[0] - before, tuple(rows)


def run_batch():
    n = SIZES.memory_calls
    log(f"suite 4: memory, one batch of {n:,} rows")
    rows = [r for _, texts, _ in s2.make_batches(n // s2.BATCH, seed=11) for r in texts]
    text = "[" + ", ".join(rows) + "]"
    peaks, tables = {}, {}
    for name in ("handwritten", "safe_upsert_many"):
        peaks[name], tables[name] = batch_peak(name, text)
        log(f"  {name}: peak RssAnon {peaks[name] / 1024:.1f} MB above its start")
    if len(set(tables.values())) != 1:
        raise RuntimeError(f"suite 4: the batch contenders left different tables: {tables}")
    return {"rows": n, "json_bytes": len(text.encode()), "peak_kb": peaks}


def run():
    result = run_calls()
    result["batch"] = run_batch()
    return result


def run_calls():
    total = SIZES.memory_calls
    log(f"suite 4: memory, {total:,} safe_upsert calls over {TABLES} tables x {SETS} column sets in one backend")
    with connect() as admin:
        make_tables(admin)
        shmem = admin.execute(
            "SELECT name, size, allocated_size FROM pg_shmem_allocations WHERE name LIKE 'pg_safeupsert%' ORDER BY name"
        ).fetchall()
        info_bytes = admin.execute("SELECT shared_memory_bytes FROM safe_upsert_info").fetchone()[0]
        shared_buffers = admin.execute(
            "SELECT setting::bigint * pg_size_bytes(unit) FROM pg_settings WHERE name = 'shared_buffers'"
        ).fetchone()[0]
        gucs = dict(admin.execute(
            "SELECT name, setting FROM pg_settings WHERE name LIKE 'safe_upsert.%' ORDER BY name").fetchall())

    samples = []
    with connect() as conn:
        conn.execute("SET synchronous_commit = off")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        samples.append((0, proc_status(pid)))
        done, chunk_no = 0, 0
        every = max(1, (total // CHUNK) // 25)
        while done < total:
            n = min(CHUNK, total - done)
            conn.execute(CALLS, {"first": (chunk_no * 10) % SHAPES, "lo": done + 1, "hi": done + n})
            done += n
            chunk_no += 1
            if chunk_no == 1 or chunk_no % every == 0 or done == total:
                samples.append((done, proc_status(pid)))
        cache = conn.execute("SELECT plan_cache_entries, plan_cache_size FROM safe_upsert_info").fetchone()
    first = next(s for c, s in samples if c > 0)
    last = samples[-1][1]
    log(f"  VmRSS {first['VmRSS'] / 1024:.1f} MB after {samples[1][0]:,} calls, {last['VmRSS'] / 1024:.1f} MB after "
        f"{total:,}; RssAnon {first['RssAnon'] / 1024:.1f} -> {last['RssAnon'] / 1024:.1f} MB; plan cache {cache[0]}/{cache[1]}")
    total_shmem = sum(r[2] for r in shmem)
    log(f"  shared memory: {total_shmem:,} bytes in {len(shmem)} allocations")
    return {
        "calls": total,
        "tables": TABLES,
        "shapes": SHAPES,
        "chunk": CHUNK,
        "samples": [{"calls": c, **s} for c, s in samples],
        "plan_cache_entries": cache[0],
        "plan_cache_size": cache[1],
        "shmem": [{"name": r[0], "size": r[1], "allocated_size": r[2]} for r in shmem],
        "shmem_total": total_shmem,
        "info_shared_memory_bytes": info_bytes,
        "shared_buffers": shared_buffers,
        "gucs": gucs,
    }
