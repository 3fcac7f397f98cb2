"""make bench: runs the suites side by side on the private server that scripts/bench.sh started,
then writes bench/results/ (results.md, chart.png, results.json) and prints the table.

  QUICK=1           smoke size (see common.SIZES)
  BENCH_SUITES=1,3  only these suites (1 single row, 2 batches, 3 notifications, 4 memory, 5 deletes, 6 delete batches)
"""

import json
import os
import platform
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import psycopg  # noqa: E402

import report  # noqa: E402
import suite_batch  # noqa: E402
import suite_delete  # noqa: E402
import suite_delete_batch  # noqa: E402
import suite_memory  # noqa: E402
import suite_notify  # noqa: E402
import suite_single  # noqa: E402
from common import DBNAME, HERE, QUICK, RESULTS, SIZES, connect, dsn, log  # noqa: E402

SUITES = {"1": ("single", suite_single), "2": ("batch", suite_batch), "3": ("notify", suite_notify),
          "4": ("memory", suite_memory), "5": ("delete", suite_delete),
          "6": ("delete_batch", suite_delete_batch)}


def fresh_database():
    with psycopg.connect(dsn("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DBNAME}")
    with connect() as c:
        c.execute("CREATE EXTENSION pg_safeupsert")
        for name in ("plpgsql_upsert.sql", "notify_trigger.sql"):
            with open(os.path.join(HERE, "sql", name)) as f:
                c.execute(f.read())


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with connect() as c:
        server = c.execute("SELECT version()").fetchone()[0]
        ext = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_safeupsert'").fetchone()[0]
        settings = dict(c.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'jit', "
            "'max_wal_size', 'checkpoint_timeout', 'autovacuum', 'max_connections')").fetchall())
    dirty = sh("git", "status", "--porcelain", "--", "../src", "../sql", "../Cargo.toml")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": sh("git", "rev-parse", "--short", "HEAD") + (" (src/ modified)" if dirty else ""),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "server": server,
        "extension": ext,
        "settings": settings,
        "quick": QUICK,
        "sizes": SIZES.__dict__,
    }


def main():
    wanted = [s.strip() for s in os.environ.get("BENCH_SUITES", "1,2,3,4,5,6").split(",") if s.strip()]
    t0 = time.time()
    log(f"bench: {'QUICK ' if QUICK else ''}suites {', '.join(wanted)}; sizes {SIZES}")
    fresh_database()
    results = {"meta": machine(), "suites": {}, "errors": {}}
    for key in wanted:
        name, module = SUITES[key]
        t = time.time()
        load0 = os.getloadavg()[0]
        try:
            results["suites"][name] = module.run()
            results["suites"][name]["elapsed_s"] = round(time.time() - t, 1)
            results["suites"][name]["loadavg"] = [load0, os.getloadavg()[0]]
        except Exception as e:  # keep the other suites' figures; fail at the end
            traceback.print_exc()
            results["errors"][name] = f"{type(e).__name__}: {e}"
        log(f"  {name}: {time.time() - t:.0f} s")
    results["meta"]["elapsed_s"] = round(time.time() - t0, 1)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    table = report.write(results, RESULTS)
    print()
    print(table)
    print()
    log(f"bench: suites done in {time.time() - t0:.0f} s")
    if results["errors"]:
        print("bench: FAILED suites: " + ", ".join(results["errors"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
