"""Suite 3: conflict notifications. pgbench, 8 clients, synchronous_commit = on, a newer version
or a stale one at random (half the rows conflicting), no new keys; each variant gets a freshly
made, identical table.

Variants, in TPS:
  - none:    safe_upsert with safe_upsert.notify = off;
  - worker:  safe_upsert with safe_upsert.notify = on; our background worker sends the NOTIFYs,
             and a client LISTENs and drains them;
  - trigger: safe_upsert with notify off, and what users do without the worker: in the same
             statement, a conflict (outcome stale or tie) is inserted into a second table whose
             AFTER INSERT trigger calls pg_notify (bench/sql/notify_trigger.sql), so the writing
             transaction takes NOTIFY's lock at commit; a client LISTENs and drains;
  - conflict_table: the trigger variant without its trigger: what writing the conflict row
             costs by itself, so that the NOTIFY's share of the trigger variant shows.

Latency, commit to listener: pgbench at a fixed rate (about 1,000 conflicts per second) with
--log, which gives each transaction's completion time (the client saw its commit) on the
machine's clock; every conflicting row carries a unique version, n * 64 + client_id (n: the
client's transaction count), so that a notification leads back to its transactions: directly
in the trigger's payload, and through safe_upsert_conflicts' incoming_version for the worker's
(its payload names the first and last ids of the log). A separate process LISTENs and stamps
each notification when it reads it; another reads the conflict log as it fills. The first
second of each latency run (the notifier starting up) is left out.
"""

import glob
import json
import multiprocessing as mp
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg

from common import SIZES, check_stale_zone, connect, dsn, log, median, pgbench, rotated, set_notify, versioned_table

TABLE = "bench3"
CONFLICTS = "bench3_conflicts"
CLIENTS = 8
CHANNELS = {"worker": "safe_upsert", "trigger": "bench_conflicts"}

HEADER = r"""\set n :n + 1
\set v :n * 64 + :client_id
\set c random(1, 100)
\if :c <= :share
\set id random(50001, 100000)
\else
\set id 1 + :client_id + :nc * random(0, 50000 / :nc - 1)
\endif
"""

JSON_ROW = """('{"id":' || :id || ',"version":' || :v || ',"qty":' || :c || ',"val":"v' || :c || '"}')::jsonb"""
PLAIN = f"SELECT safe_upsert('{TABLE}', {JSON_ROW}, 'version');\n"
WITH_CONFLICT_ROW = (
    f"WITH o AS (SELECT safe_upsert('{TABLE}', {JSON_ROW}, 'version') AS outcome) "
    f"INSERT INTO {CONFLICTS} (relname, kind, id, version) "
    f"SELECT '{TABLE}', outcome::text, :id, :v FROM o WHERE outcome IN ('stale', 'tie');\n"
)

# name -> (script, safe_upsert.notify, trigger on the conflict table, channel to drain)
VARIANTS = {
    "none": (PLAIN, False, False, None),
    "worker": (PLAIN, True, False, "safe_upsert"),
    "trigger": (WITH_CONFLICT_ROW, False, True, "bench_conflicts"),
    "conflict_table": (WITH_CONFLICT_ROW, False, False, None),
}

LABELS = {
    "none": "no notification (safe_upsert.notify = off)",
    "worker": "our worker (safe_upsert.notify = on), a client LISTENing",
    "trigger": "AFTER INSERT trigger calling pg_notify on a conflict table, in the writing transaction",
    "conflict_table": "the same conflict table without its trigger (no NOTIFY)",
}


# ---- processes: a listener, and a reader of the conflict log ----------------------------------

def _listen(channel, ready, stop, out):
    got = []
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        ready.set()
        while not stop.is_set():
            for n in conn.notifies(timeout=0.2):
                got.append((time.time_ns(), n.payload))
        end = time.monotonic() + 1.0  # what is still on its way
        while time.monotonic() < end:
            for n in conn.notifies(timeout=0.2):
                got.append((time.time_ns(), n.payload))
    out.put(got)


def _read_log(ready, stop, out):
    versions = {}
    last = 0
    with psycopg.connect(dsn(), autocommit=True) as conn:
        last = conn.execute("SELECT coalesce(max(id), 0) FROM safe_upsert_conflicts").fetchone()[0]
        ready.set()
        final = False
        while True:
            rows = conn.execute(
                "SELECT id, incoming_version::text FROM safe_upsert_conflicts WHERE id > %s AND relname = %s",
                (last, TABLE),
            ).fetchall()
            for i, v in rows:
                versions[i] = int(v)
                last = max(last, i)
            if final:
                break
            if stop.is_set():
                final = True
                time.sleep(0.5)
                continue
            time.sleep(0.2)
    out.put(versions)


class Helper:
    """A child process that reports one result when stopped."""

    def __init__(self, target, *args):
        ctx = mp.get_context("spawn")  # no inherited connections
        self.ready, self.stop_event, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=target, args=(*args, self.ready, self.stop_event, self.out), daemon=True)
        self.proc.start()
        if not self.ready.wait(30):
            raise RuntimeError(f"{target.__name__} did not start")

    def stop(self):
        self.stop_event.set()
        try:
            result = self.out.get(timeout=60)
        except queue.Empty:
            raise RuntimeError("a helper process did not report")
        self.proc.join(10)
        return result


# ---- runs -----------------------------------------------------------------------------------

def prepare(conn, trigger):
    versioned_table(conn, TABLE)
    conn.execute(f"DROP TABLE IF EXISTS {CONFLICTS}")
    conn.execute(f"CREATE TABLE {CONFLICTS} (relname text, kind text, id bigint, version bigint)")
    if trigger:
        conn.execute(f"CREATE TRIGGER bench_notify AFTER INSERT ON {CONFLICTS} "
                     "FOR EACH ROW EXECUTE FUNCTION bench_notify_conflict()")
    conn.execute("CHECKPOINT")


def tps_run(conn, name):
    script, notify, trigger, channel = VARIANTS[name]
    set_notify(conn, notify)
    prepare(conn, trigger)
    listener = Helper(_listen, channel) if channel else None
    try:
        res = pgbench(HEADER + script, clients=CLIENTS, seconds=SIZES.notify_secs,
                      defines={"n": 0, "nc": CLIENTS, "share": 50}, pgoptions="-c synchronous_commit=on")
    finally:
        got = listener.stop() if listener else []
    check_stale_zone(conn, TABLE)
    return res.tps, len(got)


def _commit_times(prefix):
    """version tag -> completion time (ns) from pgbench's per-transaction logs."""
    times = {}
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                p = line.split()
                client, cnt, epoch, us = int(p[0]), int(p[1]), int(p[4]), int(p[5])
                times[cnt * 64 + client] = epoch * 1_000_000_000 + us * 1000
    return times


def _percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def latency_run(conn, name, rate, share):
    script, notify, trigger, channel = VARIANTS[name]
    set_notify(conn, notify)
    prepare(conn, trigger)
    tmp = tempfile.mkdtemp(prefix="bench-latency-")
    os.chmod(tmp, 0o777)
    prefix = os.path.join(tmp, "tx")
    reader = Helper(_read_log) if name == "worker" else None
    listener = Helper(_listen, channel)
    try:
        res = pgbench(HEADER + script, clients=CLIENTS, seconds=SIZES.latency_secs, rate=rate, log_prefix=prefix,
                      defines={"n": 0, "nc": CLIENTS, "share": share}, pgoptions="-c synchronous_commit=on")
    finally:
        got = listener.stop()
        versions = reader.stop() if reader else {}
    commits = _commit_times(prefix)
    shutil.rmtree(tmp, ignore_errors=True)
    start = min(commits.values()) + 1_000_000_000  # leave out the first second
    lat, unmatched = [], 0
    for recv, payload in got:
        p = json.loads(payload)
        if name == "trigger":
            tags = [p["version"]]
        else:
            if p.get("kind") != "stale" or p.get("first_id") is None:
                continue
            tags = [versions.get(i) for i in range(p["first_id"], p["last_id"] + 1)]
        for tag in tags:
            t = commits.get(tag) if tag is not None else None
            if t is None:
                unmatched += 1
            elif t >= start:
                lat.append((recv - t) / 1e6)
    if name == "worker":
        info = conn.execute("SELECT notify_events_dropped, notifications_sent FROM safe_upsert_info").fetchone()
    else:
        info = (0, len(got))
    conflicts = conn.execute(f"SELECT stale FROM safe_upsert_stats WHERE relname = %s", (TABLE,)).fetchone()
    secs = SIZES.latency_secs
    return {
        "tps": res.tps,
        "conflicts_per_s": (res.tps * share / 100),
        "notifications": len(got),
        "samples": len(lat),
        "unmatched": unmatched,
        "dropped_total": info[0],
        "p50_ms": _percentile(lat, 50),
        "p90_ms": _percentile(lat, 90),
        "p99_ms": _percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "seconds": secs,
        "stale_counted": conflicts[0] if conflicts else None,
    }


def second_opinion():
    """bench/notify_latency.py (Python writers, its own private cluster, fsync off): the steady
    latency measured another way, and the cold start (the first conflict after the notifier
    left). Its figures are reported beside ours; a failure of it is reported, not fatal."""
    from common import QUICK
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notify_latency.py")
    if not os.path.exists(script):
        return None
    args = ["--rate", "1000", "--seconds", "3" if QUICK else "10", "--cold", "2" if QUICK else "5"]
    p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    lat = re.search(r"commit -> listener latency: p50 ([-0-9.]+) ms, p90 ([-0-9.]+) ms, p99 ([-0-9.]+) ms", out)
    rate = re.search(r"= (\d+)/s;", out)
    cold = re.search(r"^cold .*\): (.*) ms$", out, re.M)
    if not lat:
        return {"error": f"exit {p.returncode}: {out[-500:]}", "command": " ".join(["bench/notify_latency.py", *args])}
    colds = [float(x) for x in cold.group(1).split(", ") if x] if cold else []
    return {
        "command": " ".join(["bench/notify_latency.py", *args]),
        "conflicts_per_s": float(rate.group(1)) if rate else float("nan"),
        "p50_ms": float(lat.group(1)), "p90_ms": float(lat.group(2)), "p99_ms": float(lat.group(3)),
        "cold_ms": colds,
        "output": out.strip(),
    }


def run():
    names = list(VARIANTS)
    log(f"suite 3: notifications, pgbench -c {CLIENTS}, {SIZES.notify_secs} s x {SIZES.rounds} rounds")
    tps = {n: [] for n in names}
    drained = {n: [] for n in names}
    with connect() as conn:
        with open(os.path.join(os.path.dirname(__file__), "sql", "notify_trigger.sql")) as f:
            conn.execute(f.read())
        try:
            # warm-up, not measured: the first run with synchronous commits is slower (WAL files)
            set_notify(conn, False)
            prepare(conn, False)
            pgbench(HEADER + PLAIN, clients=CLIENTS, seconds=min(5, SIZES.notify_secs),
                    defines={"n": 0, "nc": CLIENTS, "share": 50}, pgoptions="-c synchronous_commit=on")
            for r in range(SIZES.rounds):
                for name in rotated(names, r):
                    t, n = tps_run(conn, name)
                    tps[name].append(t)
                    drained[name].append(n)
                    log(f"  round {r + 1} {name}: {t:.0f} tps" + (f", {n} notifications drained" if VARIANTS[name][3] else ""))
            # about 1,000 conflicts per second: half of 2,000 tps if the server has room, else
            # every transaction a conflict at 1,000 tps
            rate, share = (2000, 50) if median(tps["none"]) >= 2600 else (1000, 100)
            latency = {}
            for name in ("worker", "trigger"):
                latency[name] = latency_run(conn, name, rate, share)
                l = latency[name]
                log(f"  latency {name}: {l['conflicts_per_s']:.0f} conflicts/s, p50 {l['p50_ms']:.2f} ms, "
                    f"p99 {l['p99_ms']:.2f} ms ({l['samples']} samples, {l['unmatched']} unmatched)")
        finally:
            set_notify(conn, True)
    try:
        other = second_opinion()
    except Exception as e:  # a second opinion; ours stands without it
        other = {"error": f"{type(e).__name__}: {e}", "command": "bench/notify_latency.py"}
    if other and "error" not in other:
        log(f"  bench/notify_latency.py: p50 {other['p50_ms']:.2f} ms, p99 {other['p99_ms']:.2f} ms at "
            f"{other['conflicts_per_s']:.0f}/s; cold start {', '.join(f'{x:.0f}' for x in other['cold_ms'])} ms")
    elif other:
        log(f"  bench/notify_latency.py failed: {other['error']}")
    return {
        "notify_latency_py": other,
        "clients": CLIENTS,
        "seconds": SIZES.notify_secs,
        "rounds": SIZES.rounds,
        "tps": tps,
        "median": {n: median(v) for n, v in tps.items()},
        "drained": drained,
        "latency": latency,
        "latency_rate": rate,
        "latency_share": share,
        "labels": LABELS,
        "scripts": {n: HEADER + v[0] for n, v in VARIANTS.items()},
    }
