"""What the suites share: sizes (default or QUICK), the server, pgbench, tables, medians.

The server is the private cluster scripts/bench.sh starts; PGHOST/PGPORT/PGUSER say where it is
and PG_BENCH_BIN where its binaries (pgbench among them) are. Everything runs in the database
`bench`, made afresh with the extension by run.py.
"""

import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import psycopg

QUICK = os.environ.get("QUICK", "") not in ("", "0", "no", "false")
DBNAME = "bench"
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


@dataclass(frozen=True)
class Sizes:
    rounds: int             # each contender runs this many times, contenders alternating
    single_secs: int        # suite 1: pgbench -T per run
    batch_count: int        # suite 2: batches of 1,000 rows per run
    notify_secs: int        # suite 3: pgbench -T per TPS run
    latency_secs: int       # suite 3: pgbench -T of each latency run (the first second is warm-up)
    memory_calls: int       # suite 4: safe_upsert calls in one backend


SIZES = (
    Sizes(rounds=1, single_secs=3, batch_count=10, notify_secs=3, latency_secs=4, memory_calls=100_000)
    if QUICK
    else Sizes(rounds=5, single_secs=9, batch_count=30, notify_secs=7, latency_secs=15, memory_calls=1_000_000)
)

KEYS = 100_000          # pre-populated keys of suites 1 and 3
UPDATE_ZONE = 50_000    # keys 1..50,000 are stored with version 0: any counter value is newer
STALE_VERSION = 4_000_000_000_000_000_000  # keys 50,001..100,000: every incoming version is older


def dsn(dbname=DBNAME):
    env = os.environ
    return "host={} port={} user={} dbname={}".format(
        env.get("PGHOST", "127.0.0.1"), env.get("PGPORT", "54317"), env.get("PGUSER", "postgres"), dbname
    )


def connect(dbname=DBNAME, autocommit=True, **kwargs):
    return psycopg.connect(dsn(dbname), autocommit=autocommit, **kwargs)


def bindir():
    if os.environ.get("PG_BENCH_BIN"):
        return os.environ["PG_BENCH_BIN"]
    out = subprocess.run([os.environ.get("PG_CONFIG", "pg_config"), "--bindir"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def rotated(items, r):
    """The contenders in the order of round r: each takes every position in turn."""
    r %= len(items)
    return items[r:] + items[:r]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def versioned_table(conn, name, keys=KEYS):
    """A fresh table of `keys` rows: the first UPDATE_ZONE at version 0 (so that the newer
    versions the scripts send always win), the others at STALE_VERSION (so that everything sent
    for them is stale). Vacuumed, analyzed and checkpointed, so that each contender starts alike."""
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, version bigint NOT NULL, qty int, val text)")
    conn.execute(
        f"INSERT INTO {name} SELECT g, CASE WHEN g <= %s THEN 0 ELSE %s END, g %% 1000, 'v' || g "
        f"FROM generate_series(1, %s) g",
        (UPDATE_ZONE, STALE_VERSION, keys),
    )
    conn.execute(f"VACUUM ANALYZE {name}")
    conn.execute("CHECKPOINT")


def check_stale_zone(conn, name):
    """No contender may overwrite a stored row with an older version."""
    n = conn.execute(f"SELECT count(*) FROM {name} WHERE id > %s AND id <= %s AND version <> %s",
                     (UPDATE_ZONE, KEYS, STALE_VERSION)).fetchone()[0]
    if n:
        raise RuntimeError(f"{name}: {n} stored rows of the stale zone were overwritten by older versions")


def set_notify(conn, on):
    """safe_upsert.notify is a reload setting: ALTER SYSTEM, reload, and wait until a new
    session sees it."""
    value = "on" if on else "off"
    conn.execute(f"ALTER SYSTEM SET safe_upsert.notify = {value}")
    conn.execute("SELECT pg_reload_conf()")
    for _ in range(100):
        with connect() as c:
            if c.execute("SHOW safe_upsert.notify").fetchone()[0] == value:
                time.sleep(0.2)  # the background workers apply it at their next wake-up
                return
        time.sleep(0.05)
    raise RuntimeError(f"safe_upsert.notify did not become {value}")


@dataclass
class PgbenchResult:
    tps: float
    transactions: int
    latency_ms: float
    output: str = field(repr=False)


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_TX = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def pgbench(script, *, clients, seconds, defines=None, pgoptions="", rate=None, log_prefix=None, jobs=None):
    """Runs pgbench -M prepared with the given script text; returns its TPS. Any failed or
    aborted transaction is an error: the figures would not compare like with like."""
    jobs = jobs or min(clients, 2)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    cmd = [os.path.join(bindir(), "pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", str(jobs),
           "-T", str(seconds), "-f", path]
    for k, v in (defines or {}).items():
        cmd += ["-D", f"{k}={v}"]
    if rate:
        cmd += ["-R", str(rate)]
    if log_prefix:
        cmd += ["--log", f"--log-prefix={log_prefix}"]
    cmd.append(DBNAME)
    env = dict(os.environ, PGOPTIONS=pgoptions)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        os.unlink(path)
    out = p.stdout + p.stderr
    tps, tx, failed = _TPS.search(out), _TX.search(out), _FAILED.search(out)
    if p.returncode != 0 or not tps or (failed and int(failed.group(1)) > 0):
        raise RuntimeError(f"pgbench failed (exit {p.returncode}):\n{' '.join(cmd)}\n{out[-3000:]}")
    lat = _LAT.search(out)
    return PgbenchResult(float(tps.group(1)), int(tx.group(1)), float(lat.group(1)) if lat else float("nan"), out)


def proc_status(pid):
    """VmRSS, RssAnon, RssShmem, VmHWM of a process, in kB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                fields[k] = int(v.split()[0])
    return fields
