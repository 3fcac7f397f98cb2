"""Where a suite's time goes: perf on one server process while the suite's load runs.

    BENCH_KEEP=1 BENCH_SUITES=4 make bench QUICK=1     # leaves the bench server up
    eval "$(scripts/cluster.sh env bench)"
    .venv/bin/python bench/profile.py single            # or: static, single-notify, batch, batch-handwritten, notifier

  single         a pgbench backend running suite 1's safe_upsert (notify off: the backend alone)
  single-notify  the same with notify on (defaults)
  static         a pgbench backend running suite 1's static INSERT ... ON CONFLICT (the baseline)
  batch          the backend running suite 2's safe_upsert_many batches
  batch-handwritten  the same batches written by suite 2's hand-written set-based SQL (the baseline)
  notifier       the notification worker during suite 3's "worker" variant (8 clients)

perf records cpu-clock samples (this VM has no hardware counters) with DWARF call graphs, and
the samples are folded into a tree of inclusive shares under the interesting root, then turned
into microseconds of CPU per transaction (per batch for `batch`). Debian's postgres binary is
stripped of its static functions' names: those frames show as [unknown] and are skipped.
Options: --seconds N (default 4), --depth N (default 5), --min PCT (default 0.8), --root FRAME
(also show the tree under FRAME, e.g. pg_safeupsert::upsert::jsonb_read::to_value; repeatable).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import connect, pgbench, set_notify, versioned_table  # noqa: E402

SKIP = re.compile(r"call_with_sigsetjmp|call_from_c_to_rust|run_guarded|^\[unknown\]$|\(inlined\)|\{closure\}$|"
                  r"catch_unwind|panicking|std::panic|^$")


def demangle(sym):
    m = re.match(r"_ZN(.*)17h[0-9a-f]{16}E$", sym)
    if not m:
        return sym
    parts, rest = [], m.group(1)
    while rest and rest[0].isdigit():
        n = re.match(r"(\d+)", rest).group(1)
        rest = rest[len(n):]
        parts.append(rest[:int(n)])
        rest = rest[int(n):]
    name = "::".join(parts)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$RF$", "&"), ("$C$", ","), ("..", "::"),
                 ("_$u7b$$u7b$closure$u7d$$u7d$", "{closure}"), ("$u7b$", "{"), ("$u7d$", "}")):
        name = name.replace(a, b)
    return name


def stacks(path):
    out = subprocess.run(["perf", "script", "-i", path, "--no-demangle", "-F", "ip,sym"], capture_output=True,
                         text=True).stdout
    cur = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            if cur:
                yield cur[::-1]  # root first
            cur = []
        else:
            cur.append(demangle(line.partition(" ")[2]))
    if cur:
        yield cur[::-1]


def tree(samples, root, depth, min_pct, us_per_sample, per):
    top = {"n": 0, "c": {}}
    n_all = len(samples)
    for st in samples:
        if root not in st:
            continue
        path = [f for f in st[st.index(root) + 1:] if not SKIP.search(f)][:depth]
        node = top
        node["n"] += 1
        for f in path:
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += 1

    def show(node, name, ind):
        pct = 100 * node["n"] / n_all
        if pct < min_pct:
            return
        print(f"{'  ' * ind}{pct:5.1f}%  {node['n'] * us_per_sample:7.1f} µs/{per}  {name}")
        for k, v in sorted(node["c"].items(), key=lambda kv: -kv[1]["n"]):
            show(v, k, ind + 1)

    if n_all:
        show(top, root, 0)


def backend_pid(app):
    with connect() as c:
        for _ in range(100):
            row = c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state IS NOT NULL "
                            "ORDER BY pid LIMIT 1", (app,)).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise RuntimeError(f"no backend of {app}")


def notifier_pid():
    with connect() as c:
        for _ in range(100):
            row = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_safeupsert notifier' "
                            "AND datname = current_database()").fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise RuntimeError("no notifier")


def record(pid, seconds, path, freq):
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(freq), "--call-graph", "dwarf,16384",
                    "-p", str(pid), "-o", path, "--", "sleep", str(seconds)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["single", "single-notify", "static", "batch", "batch-handwritten", "notifier"])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--min", type=float, default=0.8)
    ap.add_argument("--root", action="append", default=[], help="also show the tree under this frame")
    args = ap.parse_args()
    freq = 2000
    out = tempfile.mktemp(suffix=".perf")
    load_secs = int(args.seconds + 4)
    result = {}

    with connect() as conn:
        if args.what in ("single", "single-notify", "static"):
            import suite_single as s1
            set_notify(conn, args.what == "single-notify")
            versioned_table(conn, s1.TABLE)
            script = s1.scripts()["static" if args.what == "static" else "safe_upsert"]
            th = threading.Thread(target=lambda: result.update(r=pgbench(
                script, clients=s1.CLIENTS, seconds=load_secs, defines={"n": 0, "nc": s1.CLIENTS},
                pgoptions="-c synchronous_commit=off")))
            th.start()
            time.sleep(1.5)
            pid = backend_pid("pgbench")
            record(pid, args.seconds, out, freq)
            th.join()
            per_backend_tps = result["r"].tps / s1.CLIENTS
            units, per = per_backend_tps * args.seconds, "tx"
            root = "PostgresMain"
            print(f"{args.what}: {result['r'].tps:,.0f} tps with {s1.CLIENTS} clients; backend {pid}")
        elif args.what in ("batch", "batch-handwritten"):
            import suite_batch as s2
            versioned_table(conn, s2.TABLE)
            batches = s2.make_batches(1200)  # more than the load time needs: the backend must outlive perf
            done = []

            def load():
                with connect(autocommit=False, application_name="profile-batch") as c:
                    c.execute("SET synchronous_commit = off")
                    c.commit()
                    t0 = time.monotonic()
                    for text, _, _ in batches:
                        c.execute(s2.SQL["safe_upsert_many" if args.what == "batch" else "handwritten"], (text,))
                        c.commit()
                        done.append(time.monotonic())
                        if time.monotonic() - t0 > load_secs:
                            break

            th = threading.Thread(target=load)
            th.start()
            time.sleep(1.5)
            pid = backend_pid("profile-batch")
            t0 = time.monotonic()
            record(pid, args.seconds, out, freq)
            t1 = time.monotonic()
            th.join()
            units, per = sum(1 for t in done if t0 <= t <= t1), "batch"
            root = "PostgresMain"
            print(f"{args.what}: {units / (t1 - t0):,.1f} batches of 1,000 rows per second; backend {pid}")
        else:
            import suite_notify as s3
            with open(os.path.join(common.HERE, "sql", "notify_trigger.sql")) as f:
                conn.execute(f.read())
            set_notify(conn, True)
            s3.prepare(conn, False)
            th = threading.Thread(target=lambda: result.update(r=pgbench(
                s3.HEADER + s3.PLAIN, clients=s3.CLIENTS, seconds=load_secs,
                defines={"n": 0, "nc": s3.CLIENTS, "share": 50}, pgoptions="-c synchronous_commit=on")))
            th.start()
            time.sleep(1.5)
            pid = notifier_pid()
            before = conn.execute("SELECT notifications_sent FROM safe_upsert_info").fetchone()[0]
            record(pid, args.seconds, out, freq)
            sent = conn.execute("SELECT notifications_sent FROM safe_upsert_info").fetchone()[0] - before
            th.join()
            units, per = sent, "notification"
            root = "pg_safeupsert_notifier_main"
            print(f"notifier {pid}: {sent / args.seconds:,.0f} notifications/s while pgbench ran "
                  f"{result['r'].tps:,.0f} tps (half conflicting)")

    samples = list(stacks(out))
    os.unlink(out)
    us_per_sample = 1e6 / freq / max(1, units)
    print(f"{len(samples)} samples = {len(samples) / freq / args.seconds:.0%} of one CPU; "
          f"{len(samples) * 1e6 / freq / max(1, units):.1f} µs of CPU per {per}")
    tree(samples, root, args.depth, args.min, us_per_sample, per)
    for interesting in ("safe_upsert_one_wrapper", "safe_upsert_many_one_wrapper", "CommitTransactionCommand",
                        *args.root):
        if root != interesting and any(interesting in s for s in samples):
            print()
            tree(samples, interesting, args.depth, args.min, us_per_sample, per)


if __name__ == "__main__":
    main()
