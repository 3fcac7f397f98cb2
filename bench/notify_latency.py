#!/usr/bin/env python3
"""Commit-to-listener latency of conflict notifications, for single conflicts at a steady rate.

    .venv/bin/python bench/notify_latency.py [--rate 1000] [--seconds 10] [--writers 2]

Starts a private cluster with scripts/cluster.sh (PostgreSQL of $PG_CONFIG, pg_safeupsert
preloaded, a conflict log large enough to hold every conflict of the run), on a free port, and
removes it afterwards (--keep keeps it). In one process, so that every time stamp comes from the
same clock:

  - `--writers` threads, each with its own autocommit connection, commit single stale conflicts
    (safe_upsert of key k at version 1 over a stored version 10; every k used once) at an even
    pace adding up to `--rate` per second, and stamp each when its commit returns to the client;
  - a psycopg 3 connection LISTENs and stamps each notification as it reads it.

Afterwards safe_upsert_conflicts maps each log id to its key, so a notification's first_id ..
last_id leads back to the commits it covers (several, when the notifier drained more than one
at a wake-up); a conflict's latency is its notification's stamp minus its commit's stamp. A
notification read before the writer thread saw its commit reply gives a (small) negative
latency; the same measured from the start of the call is printed as an upper bound.

Also measured: the cold case, a conflict after more than a second without any (the notifier has
left, so the launcher starts a new one first), a few times.

This complements the pgbench-based latency of bench/suite_notify.py (make bench): no pgbench
logs, no log reader racing the ring, and the cold start shown on its own.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
TABLE = "notify_latency"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


class Cluster:
    def __init__(self, conflicts):
        self.name = f"notify_latency_{os.getpid()}"
        self.port = free_port()
        self.script = str(ROOT / "scripts" / "cluster.sh")
        self.dir = Path(os.environ.get("PG_SAFEUPSERT_CLUSTERS", "/tmp/pg_safeupsert")) / self.name
        conf = [f"safe_upsert.conflict_log_size = {conflicts}", "synchronous_commit = on"]
        subprocess.run([self.script, "start", self.name, str(self.port), *conf], check=True, stdout=subprocess.DEVNULL)

    def dsn(self, dbname):
        return f"host={self.dir / 'sock'} port={self.port} user=postgres dbname={dbname}"

    def remove(self, keep):
        subprocess.run([self.script, "stop", self.name], check=False, stdout=subprocess.DEVNULL)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Listener(threading.Thread):
    def __init__(self, dsn):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN safe_upsert")
        self.got = []  # (monotonic ns, payload dict)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for n in self.conn.notifies(timeout=0.1):
                self.got.append((time.monotonic_ns(), json.loads(n.payload)))

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return False


def writer(dsn, keys, interval, start_ns, commits, calls):
    """Commits one stale conflict per key, at start + i * interval; stamps each call and commit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = f"SELECT safe_upsert('{TABLE}'::regclass, %s::jsonb, 'ver')::text"
        for i, k in enumerate(keys):
            due = start_ns + int(i * interval * 1e9)
            wait = (due - time.monotonic_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
            calls[k] = time.monotonic_ns()
            outcome = conn.execute(q, (Jsonb({"k": k, "v": "old", "ver": 1}),)).fetchone()[0]
            commits[k] = time.monotonic_ns()
            assert outcome == "stale", outcome


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000, help="conflicts per second, all writers together")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--cold", type=int, default=5, help="cold-start samples (each after 1.5 s idle)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster (stopped) afterwards")
    args = ap.parse_args()

    total = int(args.rate * args.seconds)
    cluster = Cluster(conflicts=total + args.cold + 1000)
    try:
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE bench_notify")
        dsn = cluster.dsn("bench_notify")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_safeupsert")
            c.execute(f"CREATE TABLE {TABLE} (k int PRIMARY KEY, v text, ver int)")
            c.execute(f"INSERT INTO {TABLE} SELECT g, 'base', 10 FROM generate_series(1, {total + args.cold}) g")
            c.execute("VACUUM ANALYZE " + TABLE)
            server = c.execute("SELECT version()").fetchone()[0].split(" on ")[0]

        listener = Listener(dsn)
        listener.start()
        commits, calls = {}, {}

        # cold: the notifier has left (it lingers 1 s), so the launcher starts one first
        cold = []
        with psycopg.connect(dsn, autocommit=True) as c:
            for j in range(args.cold):
                time.sleep(1.5)
                k = total + 1 + j
                n0 = len(listener.got)
                c.execute(f"SELECT safe_upsert('{TABLE}'::regclass, %s::jsonb, 'ver')", (Jsonb({"k": k, "v": "old", "ver": 1}),))
                t = time.monotonic_ns()
                if listener.wait_for(lambda: len(listener.got) > n0, 5):
                    cold.append((listener.got[n0][0] - t) / 1e6)
        time.sleep(1.5)

        # steady: `rate` single conflicts per second
        interval = args.writers / args.rate
        start = time.monotonic_ns() + 50_000_000
        threads = [
            threading.Thread(target=writer, args=(dsn, list(range(1 + w, total + 1, args.writers)), interval, start, commits, calls))
            for w in range(args.writers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = (max(commits.values()) - start) / 1e9
        listener.wait_for(lambda: sum(p.get("count", 0) for _, p in listener.got if p.get("kind") == "stale") >= total + len(cold), 10)
        listener.stop.set()
        listener.join(2)

        with psycopg.connect(dsn, autocommit=True) as c:
            key_of = dict(c.execute("SELECT id, (key->>'k')::int FROM safe_upsert_conflicts WHERE relname = %s", (TABLE,)).fetchall())
            info = c.execute("SELECT notify_events_queued, notify_events_dropped, notifications_sent FROM safe_upsert_info").fetchone()

        lat, from_call, seen, notes, per_note = [], [], set(), 0, []
        for at, p in listener.got:
            if p.get("kind") != "stale" or p.get("first_id") is None:
                continue
            ks = [key_of.get(i) for i in range(p["first_id"], p["last_id"] + 1)]
            ks = [k for k in ks if k in commits and k not in seen]
            if not ks:
                continue
            notes += 1
            per_note.append(len(ks))
            for k in ks:
                seen.add(k)
                lat.append((at - commits[k]) / 1e6)
                from_call.append((at - calls[k]) / 1e6)
        missing = total - len(seen)

        print(f"server: {server}; {args.writers} writers, autocommit, synchronous_commit = on, fsync = off")
        print(f"steady: {len(commits)} single stale conflicts in {elapsed:.1f} s = {len(commits) / elapsed:.0f}/s; "
              f"{notes} notifications, {sum(per_note) / max(1, notes):.2f} conflicts each on average "
              f"(max {max(per_note, default=0)})")
        print(f"  commit -> listener latency: p50 {percentile(lat, 50):.2f} ms, p90 {percentile(lat, 90):.2f} ms, "
              f"p99 {percentile(lat, 99):.2f} ms, max {max(lat, default=float('nan')):.2f} ms; "
              f"{sum(1 for x in lat if x < 0)} negative; {missing} never notified")
        print(f"  from the call's start instead (an upper bound, includes the statement): p50 "
              f"{percentile(from_call, 50):.2f} ms, p99 {percentile(from_call, 99):.2f} ms")
        print(f"  safe_upsert_info: events queued {info[0]}, dropped {info[1]}, notifications sent {info[2]}")
        print(f"cold (a conflict after 1.5 s idle: the launcher starts a notifier): "
              + ", ".join(f"{x:.1f}" for x in cold) + " ms")
        return 0 if missing == 0 else 1
    finally:
        cluster.remove(args.keep)


if __name__ == "__main__":
    sys.exit(main())
