"""bench/results/results.md and chart.png from the results of one run."""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def fmt(x, unit=""):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if unit == "ms":
        return f"{x:.2f} ms"
    if unit == "MB":
        return f"{x / 1024:.1f} MB"  # from kB
    if unit == "bytes":
        return f"{x:,} B ({x / 1024:.0f} kB)"
    if isinstance(x, int) or abs(x) >= 100:
        return f"{x:,.0f}{(' ' + unit) if unit else ''}"
    return f"{x:.2f}{(' ' + unit) if unit else ''}"


def ratio(a, b):
    if not a or not b or any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return float("nan")
    return a / b


class Table:
    def __init__(self):
        self.rows = []
        self.targets = []  # (suite, what, value, target text, met)

    def add(self, suite, measure, value, peer="", r=None, target="", met=None, runs=""):
        status = "" if met is None else ("**met**" if met else "**MISSED**")
        rtxt = "" if r is None else ("—" if math.isnan(r) else f"{r:.2f}")
        self.rows.append((suite, measure, value, peer, rtxt, target, status, runs))
        if met is not None:
            self.targets.append((suite, measure, value, peer, rtxt, target, met))

    def markdown(self):
        head = "| suite | measure | value | peer (same run) | ratio to peer | target | status | runs |"
        sep = "|---|---|---:|---|---:|---|---|---|"
        return "\n".join([head, sep] + ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows])


def per_round(runs):
    """Ratio of a to b as the median of the rounds' ratios: each round's runs are minutes apart at
    most, so a slow drift of the machine (other work, the disk) cancels out better than in the
    ratio of the medians."""
    def R(a, b):
        xs, ys = runs[a], runs[b]
        if len(xs) != len(ys) or not xs:
            return ratio(sorted(xs)[len(xs) // 2] if xs else None, sorted(ys)[len(ys) // 2] if ys else None)
        rs = sorted(ratio(x, y) for x, y in zip(xs, ys))
        n = len(rs)
        return rs[n // 2] if n % 2 else (rs[n // 2 - 1] + rs[n // 2]) / 2
    return R


def runs_text(xs, unit=""):
    return ", ".join(fmt(x) for x in xs)


def build(results):
    t = Table()
    s = results["suites"]

    if "single" in s:
        d = s["single"]
        m, tps = d["median"], d["tps"]
        R = per_round(tps)
        u = "tps"
        t.add("1 single row", "safe_upsert", fmt(m["safe_upsert"], u), "static INSERT ... ON CONFLICT",
              R("safe_upsert", "static"), "≥ 0.85 (floor 0.80)", R("safe_upsert", "static") >= 0.85,
              runs_text(tps["safe_upsert"]))
        t.add("1 single row", "safe_upsert", fmt(m["safe_upsert"], u), "generic PL/pgSQL",
              R("safe_upsert", "plpgsql"))
        t.add("1 single row", "static INSERT ... ON CONFLICT (ceiling)", fmt(m["static"], u), "itself", 1.0,
              runs=runs_text(tps["static"]))
        t.add("1 single row", "generic PL/pgSQL (EXECUTE format + jsonb_populate_record)", fmt(m["plpgsql"], u),
              "static", R("plpgsql", "static"), runs=runs_text(tps["plpgsql"]))
        t.add("1 single row", "MERGE", fmt(m["merge"], u), "static", R("merge", "static"),
              runs=runs_text(tps["merge"]))
        t.add("1 single row", "safe_upsert, safe_upsert.track = off", fmt(m["safe_upsert_track_off"], u),
              "safe_upsert, track = on", R("safe_upsert_track_off", "safe_upsert"),
              runs=runs_text(tps["safe_upsert_track_off"]))
        t.add("1 single row", "safe_upsert, track = on (defaults)", fmt(m["safe_upsert"], u),
              "safe_upsert, track = off", R("safe_upsert", "safe_upsert_track_off"), "≥ 0.95",
              R("safe_upsert", "safe_upsert_track_off") >= 0.95)
        t.add("1 single row", "safe_upsert, safe_upsert.notify = off", fmt(m["safe_upsert_notify_off"], u),
              "static", R("safe_upsert_notify_off", "static"),
              runs=runs_text(tps["safe_upsert_notify_off"]))

    if "batch" in s:
        d = s["batch"]
        m, rr = d["median"], d["rows_per_s"]
        R = per_round(rr)
        u = "rows/s"
        t.add("2 batches of 1,000", "safe_upsert_many", fmt(m["safe_upsert_many"], u), "hand-written set-based SQL",
              R("safe_upsert_many", "handwritten"), "≥ 0.9",
              R("safe_upsert_many", "handwritten") >= 0.9, runs_text(rr["safe_upsert_many"]))
        t.add("2 batches of 1,000", "safe_upsert_many", fmt(m["safe_upsert_many"], u),
              "1,000 safe_upsert calls, a round trip each", R("safe_upsert_many", "single_calls"), "≥ 10",
              R("safe_upsert_many", "single_calls") >= 10)
        t.add("2 batches of 1,000", "safe_upsert_many", fmt(m["safe_upsert_many"], u),
              "1,000 safe_upsert calls, pipelined", R("safe_upsert_many", "single_calls_pipelined"))
        t.add("2 batches of 1,000", "safe_upsert_many", fmt(m["safe_upsert_many"], u),
              "1,000 safe_upsert calls in one statement", R("safe_upsert_many", "single_calls_server"))
        t.add("2 batches of 1,000", "hand-written set-based SQL", fmt(m["handwritten"], u), "itself", 1.0,
              runs=runs_text(rr["handwritten"]))
        t.add("2 batches of 1,000", "1,000 safe_upsert calls in one transaction, a statement and round trip each",
              fmt(m["single_calls"], u), "hand-written", R("single_calls", "handwritten"),
              runs=runs_text(rr["single_calls"]))
        t.add("2 batches of 1,000", "1,000 safe_upsert calls in one transaction, psycopg executemany (pipelined)",
              fmt(m["single_calls_pipelined"], u), "hand-written", R("single_calls_pipelined", "handwritten"),
              runs=runs_text(rr["single_calls_pipelined"]))
        t.add("2 batches of 1,000", "1,000 safe_upsert calls in one statement (SELECT ... FROM jsonb_array_elements)",
              fmt(m["single_calls_server"], u), "hand-written", R("single_calls_server", "handwritten"),
              runs=runs_text(rr["single_calls_server"]))
        t.add("2 batches of 1,000", "psycopg 3 executemany (pipelined) of the static statement",
              fmt(m["executemany_static"], u), "hand-written", R("executemany_static", "handwritten"),
              runs=runs_text(rr["executemany_static"]))

    if "notify" in s:
        d = s["notify"]
        m, tps = d["median"], d["tps"]
        R = per_round(tps)
        u = "tps"
        t.add("3 notifications", "no notification (notify = off)", fmt(m["none"], u), "itself", 1.0,
              runs=runs_text(tps["none"]))
        t.add("3 notifications", "our worker (notify = on)", fmt(m["worker"], u), "no notification",
              R("worker", "none"), "≥ 0.95", R("worker", "none") >= 0.95, runs_text(tps["worker"]))
        t.add("3 notifications", "AFTER trigger calling pg_notify, in the writing transaction", fmt(m["trigger"], u),
              "no notification", R("trigger", "none"), runs=runs_text(tps["trigger"]))
        t.add("3 notifications", "the trigger's conflict table without the trigger", fmt(m["conflict_table"], u),
              "no notification", R("conflict_table", "none"), runs=runs_text(tps["conflict_table"]))
        lw, lt = d["latency"]["worker"], d["latency"]["trigger"]
        rate = f"at {lw['conflicts_per_s']:,.0f} conflicts/s"
        t.add("3 notifications", f"worker: commit-to-listener p50 {rate}", fmt(lw["p50_ms"], "ms"), "trigger p50",
              ratio(lw["p50_ms"], lt["p50_ms"]), "≤ 1 ms", lw["p50_ms"] <= 1)
        t.add("3 notifications", f"worker: commit-to-listener p99 {rate}", fmt(lw["p99_ms"], "ms"), "trigger p99",
              ratio(lw["p99_ms"], lt["p99_ms"]), "≤ 10 ms", lw["p99_ms"] <= 10)
        o = d.get("notify_latency_py")
        if o and "error" not in o:
            t.add("3 notifications", f"worker, bench/notify_latency.py (Python writers, fsync off): p50 / p99 at "
                  f"{o['conflicts_per_s']:,.0f} conflicts/s", f"{o['p50_ms']:.2f} / {o['p99_ms']:.2f} ms",
                  "worker p50 (pgbench) above", ratio(o["p50_ms"], lw["p50_ms"]))
            if o["cold_ms"]:
                cold = sorted(o["cold_ms"])[len(o["cold_ms"]) // 2]
                t.add("3 notifications", "worker, cold start: first conflict after 1.5 s idle (notify_latency.py)",
                      fmt(cold, "ms"), "worker p50", ratio(cold, lw["p50_ms"]),
                      runs=", ".join(f"{x:.1f}" for x in o["cold_ms"]))
        t.add("3 notifications", f"trigger: commit-to-listener p50 at {lt['conflicts_per_s']:,.0f} conflicts/s",
              fmt(lt["p50_ms"], "ms"), "worker p50", ratio(lt["p50_ms"], lw["p50_ms"]))
        t.add("3 notifications", f"trigger: commit-to-listener p99 at {lt['conflicts_per_s']:,.0f} conflicts/s",
              fmt(lt["p99_ms"], "ms"), "worker p99", ratio(lt["p99_ms"], lw["p99_ms"]))

    if "delete" in s:
        d = s["delete"]
        m, tps = d["median"], d["tps"]
        R = per_round(tps)
        u = "tps"
        t.add("5 deletes", "safe_delete", fmt(m["safe_delete"], u), "hand-written DELETE + tombstone upsert",
              R("safe_delete", "handwritten"), "≥ 0.8", R("safe_delete", "handwritten") >= 0.8,
              runs_text(tps["safe_delete"]))
        t.add("5 deletes", "hand-written DELETE + tombstone upsert, one statement", fmt(m["handwritten"], u), "itself",
              1.0, runs=runs_text(tps["handwritten"]))
        t.add("5 deletes", "safe_upsert on a table with tombstones", fmt(m["upsert_tombstoned"], u),
              "safe_upsert, same table without", R("upsert_tombstoned", "upsert_plain"), "≥ 0.9",
              R("upsert_tombstoned", "upsert_plain") >= 0.9, runs_text(tps["upsert_tombstoned"]))
        t.add("5 deletes", "safe_upsert on a table without tombstones", fmt(m["upsert_plain"], u), "itself", 1.0,
              runs=runs_text(tps["upsert_plain"]))

    if "delete_batch" in s:
        d = s["delete_batch"]
        m, rr = d["median"], d["rows_per_s"]
        R = per_round(rr)
        u = "rows/s"
        t.add("6 delete batches of 1,000", "safe_delete_many", fmt(m["safe_delete_many"], u),
              "hand-written DELETE ... USING + tombstone upsert", R("safe_delete_many", "handwritten"), "≥ 0.8",
              R("safe_delete_many", "handwritten") >= 0.8, runs_text(rr["safe_delete_many"]))
        t.add("6 delete batches of 1,000", "hand-written DELETE ... USING + tombstone upsert", fmt(m["handwritten"], u),
              "itself", 1.0, runs=runs_text(rr["handwritten"]))
        t.add("6 delete batches of 1,000", "safe_upsert_many on a table with tombstones", fmt(m["upsert_tombstoned"], u),
              "safe_upsert_many, same table without", R("upsert_tombstoned", "upsert_plain"), "≥ 0.9",
              R("upsert_tombstoned", "upsert_plain") >= 0.9, runs_text(rr["upsert_tombstoned"]))
        t.add("6 delete batches of 1,000", "safe_upsert_many on a table without tombstones", fmt(m["upsert_plain"], u),
              "itself", 1.0, runs=runs_text(rr["upsert_plain"]))

    if "memory" in s:
        d = s["memory"]
        samples = [x for x in d["samples"] if x["calls"] > 0]
        first, last = samples[0], samples[-1]
        n = f"{d['calls']:,}"
        t.add("4 memory", f"backend VmRSS after {n} safe_upsert calls", fmt(last["VmRSS"], "MB"),
              f"after {first['calls']:,} calls", ratio(last["VmRSS"], first["VmRSS"]))
        t.add("4 memory", f"backend RssAnon (private) after {n} calls", fmt(last["RssAnon"], "MB"),
              f"after {first['calls']:,} calls", ratio(last["RssAnon"], first["RssAnon"]))
        t.add("4 memory", "plan cache entries at the end", str(d["plan_cache_entries"]),
              "safe_upsert.plan_cache_size", ratio(d["plan_cache_entries"], d["plan_cache_size"]),
              f"≤ {d['plan_cache_size']} (bounded)", d["plan_cache_entries"] <= d["plan_cache_size"])
        t.add("4 memory", "shared memory, pg_shmem_allocations 'pg_safeupsert%' (default settings)",
              fmt(d["shmem_total"], "bytes"), "shared_buffers", ratio(d["shmem_total"], d["shared_buffers"]))
        if "batch" in d:
            b = d["batch"]
            ours, hand = b["peak_kb"]["safe_upsert_many"], b["peak_kb"]["handwritten"]
            t.add("4 memory", f"backend private memory (RssAnon peak) for one batch of {b['rows']:,} rows",
                  fmt(ours, "MB"), f"hand-written set-based SQL: {fmt(hand, 'MB')}", ratio(ours, hand), "≤ 1.5",
                  ratio(ours, hand) <= 1.5)
    return t


def chart(results, path):
    s = results["suites"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle("pg_safeupsert make bench" + (" (QUICK)" if results["meta"]["quick"] else "")
                 + f" — {results['meta']['date']}, {results['meta']['cpus']} CPUs", fontsize=13)

    def bars(ax, title, names, runs, ylabel, colors=None, log=False):
        meds = [sorted(r)[len(r) // 2] if r else 0 for r in runs]
        lo = [m - min(r) if r else 0 for m, r in zip(meds, runs)]
        hi = [max(r) - m if r else 0 for m, r in zip(meds, runs)]
        ax.bar(range(len(names)), meds, yerr=[lo, hi], capsize=4, color=colors or "#4c72b0")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        for i, m in enumerate(meds):
            ax.annotate(f"{m:,.0f}", (i, m), ha="center", va="bottom", fontsize=8)

    ours = "#dd8452"
    other = "#4c72b0"
    if "single" in s:
        d = s["single"]
        names = ["safe_upsert", "static", "plpgsql", "merge", "safe_upsert_track_off", "safe_upsert_notify_off"]
        bars(axes[0][0], "1. single row, pgbench -M prepared, 2 clients (median, min–max)",
             ["safe_upsert", "static (ceiling)", "PL/pgSQL", "MERGE", "safe_upsert track=off",
              "safe_upsert notify=off"],
             [d["tps"][n] for n in names], "transactions/s",
             [ours, other, other, other, ours, ours])
    if "batch" in s:
        d = s["batch"]
        names = ["safe_upsert_many", "handwritten", "single_calls", "single_calls_pipelined", "single_calls_server",
                 "executemany_static"]
        bars(axes[0][1], "2. batches of 1,000 rows, 1 client", ["safe_upsert_many", "hand-written SQL",
             "1,000 calls", "1,000 calls pipelined", "1,000 calls, 1 statement", "executemany static"],
             [d["rows_per_s"][n] for n in names], "rows/s", [ours, other, ours, ours, ours, other])
    if "notify" in s:
        d = s["notify"]
        names = ["none", "worker", "trigger", "conflict_table"]
        bars(axes[0][2], "3. notifications, 8 clients, synchronous_commit = on",
             ["none", "our worker", "trigger + pg_notify", "conflict table, no NOTIFY"],
             [d["tps"][n] for n in names], "transactions/s", [other, ours, other, other])
        ax = axes[1][0]
        lw, lt = d["latency"]["worker"], d["latency"]["trigger"]
        x = range(3)
        ax.bar([i - 0.2 for i in x], [lw["p50_ms"], lw["p90_ms"], lw["p99_ms"]], 0.4, label="our worker", color=ours)
        ax.bar([i + 0.2 for i in x], [lt["p50_ms"], lt["p90_ms"], lt["p99_ms"]], 0.4, label="trigger (in transaction)",
               color=other)
        ax.set_xticks(list(x))
        ax.set_xticklabels(["p50", "p90", "p99"])
        ax.axhline(5, color="gray", ls=":", lw=1)
        ax.axhline(50, color="gray", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylabel("ms, commit to listener (log scale)")
        ax.set_title(f"3. notification latency at ~{lw['conflicts_per_s']:,.0f} conflicts/s (targets 1 / 10 ms)",
                     fontsize=10)
        ax.legend(fontsize=8)
    else:
        axes[1][0].axis("off")
    if "memory" in s:
        d = s["memory"]
        ax = axes[1][1]
        calls = [x["calls"] for x in d["samples"]]
        ax.plot(calls, [x["VmRSS"] / 1024 for x in d["samples"]], marker=".", label="VmRSS", color=ours)
        ax.plot(calls, [x["RssAnon"] / 1024 for x in d["samples"]], marker=".", label="RssAnon (private)", color=other)
        ax.set_xlabel("safe_upsert calls in the backend")
        ax.set_ylabel("MB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"4. backend memory, {d['tables']} tables x 3 column sets, plan cache {d['plan_cache_size']}",
                     fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[1][2]
        names = [r["name"].replace("pg_safeupsert ", "") for r in d["shmem"]]
        ax.bar(names, [r["allocated_size"] / 1024 for r in d["shmem"]], color=ours)
        ax.set_ylabel("kB")
        ax.set_title("4. shared memory at default settings (pg_shmem_allocations)", fontsize=10)
        for i, r in enumerate(d["shmem"]):
            ax.annotate(f"{r['allocated_size'] / 1024:,.0f} kB", (i, r["allocated_size"] / 1024), ha="center",
                        va="bottom", fontsize=8)
    else:
        axes[1][1].axis("off")
        axes[1][2].axis("off")
    for ax in axes.flat:
        if ax.has_data() is False and not ax.get_title():
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def details(results):
    s = results["suites"]
    out = []
    if "single" in s:
        d = s["single"]
        out.append(f"### 1. Single row\n\npgbench -M prepared -c {d['clients']} -j {d['clients']} -T {d['seconds']}, "
                   f"{d['rounds']} round(s), contenders alternating (each round starts with the next one), median "
                   "shown; `synchronous_commit = off` for every contender (this suite compares CPU cost per call). "
                   "A third of the transactions insert new keys, a third send newer versions of stored keys, a third "
                   "stale versions; each contender starts from a freshly made, identical 100,000-row table, and "
                   "after each run no stored row of the stale third may have been overwritten (checked). "
                   "pgbench cannot build strings, so the JSON row is concatenated from its parameters in the "
                   "statement; that cost falls on safe_upsert and PL/pgSQL only, and is small (a statement that only "
                   "builds the JSON ran at ~100,000 tps on this machine, more than twice the static INSERT). Default extension settings (track = on, "
                   "notify = on: the worker sends the stale third's notifications meanwhile, on the same 2 CPUs); "
                   "the notify = off and track = off rows show what each costs. MERGE's figure comes with its "
                   "caveat (DESIGN.md): at READ COMMITTED, concurrent inserts of the same new key make it raise "
                   "unique violations; here new keys never collide, so it never does. A 5-second warm-up run "
                   "precedes the measured rounds.\n")
        for name, text in d["scripts"].items():
            out.append(f"<details><summary>{name}: {d['labels'][name]}</summary>\n\n```\n{text}```\n</details>\n")
    if "batch" in s:
        d = s["batch"]
        out.append(f"### 2. Batches of 1,000 rows\n\nOne psycopg 3 connection, {d['batches']} batches of "
                   f"{d['batch']:,} rows per run (a third new keys, a third newer versions with keys repeating inside "
                   "a batch, a third stale), one transaction per batch, `synchronous_commit = off`, "
                   f"{d['rounds']} round(s) after a warm-up, median shown. Every contender writes the same batches, made before the "
                   "clock starts, into a fresh identical table, and must leave the same table behind (checked: "
                   f"rows, sum of versions, sum of qty = {d['final_table']}). The target's \"1,000 safe_upsert "
                   "calls in one transaction\" is read as a client making them, a statement and a round trip each: "
                   "that is the peer of the ≥ 10 target; the pipelined and one-statement variants show how much of "
                   "its cost is round trips.\n")
        for name, sql in d["sql"].items():
            out.append(f"- {name}: {d['labels'][name]}\n  `{sql}`")
        out.append("")
    if "notify" in s:
        d = s["notify"]
        lw, lt = d["latency"]["worker"], d["latency"]["trigger"]
        out.append(f"### 3. Notifications\n\npgbench -M prepared -c {d['clients']} -j 2 -T {d['seconds']}, "
                   "`synchronous_commit = on` (fsync on), half the transactions stale (a conflict), half newer "
                   f"versions; {d['rounds']} round(s) after a warm-up run, median shown; the disk's fsync times vary, "
                   "so the runs column matters here. Notifications drained per run: "
                   + "; ".join(f"{n} {v}" for n, v in d["drained"].items() if any(v)) + ".\n")
        for n, l in d["labels"].items():
            out.append(f"- {n}: {l}")
        out.append(
            f"\nLatency runs: pgbench -R {d['latency_rate']} ({d['latency_share']} % conflicting), "
            f"{lw['seconds']} s each, the first second left out; the time from pgbench's completion of the "
            "committing transaction (its --log) to a separate LISTENing process reading the notification, on "
            "the same clock. The worker's notifications name the first and last ids of the conflict log, whose "
            "incoming versions lead back to the transactions.\n")
        out.append("| | conflicts/s | notifications | samples | unmatched | p50 | p90 | p99 | max | events dropped |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, l in (("worker", lw), ("trigger", lt)):
            out.append(f"| {n} | {l['conflicts_per_s']:,.0f} | {l['notifications']:,} | {l['samples']:,} | "
                       f"{l['unmatched']:,} | {fmt(l['p50_ms'], 'ms')} | {fmt(l['p90_ms'], 'ms')} | "
                       f"{fmt(l['p99_ms'], 'ms')} | {fmt(l['max_ms'], 'ms')} | {l['dropped_total']} |")
        out.append("")
        o = d.get("notify_latency_py")
        if o:
            out.append(f"Second opinion, `{o['command']}` (another helper's script: Python writer threads, single "
                       "conflicts, its own private cluster with fsync off, the cold start measured too):\n")
            out.append("```\n" + (o.get("output") or o.get("error", "")) + "\n```\n")
        for name, text in d["scripts"].items():
            out.append(f"<details><summary>{name}</summary>\n\n```\n{text}```\n</details>\n")
    if "delete_batch" in s:
        d = s["delete_batch"]
        out.append(f"**6 delete batches.** {d['batches']} batches of {d['batch']} rows x {d['rounds']} rounds, one transaction "
                   "a batch, each contender on a fresh table, contenders alternating; see bench/suite_delete_batch.py.\n")
        for name, text in d["sql"].items():
            out.append(f"<details><summary>{name}: {d['labels'][name]}</summary>\n\n```\n{text}\n```\n</details>\n")
    if "delete" in s:
        d = s["delete"]
        out.append(f"**5 deletes.** pgbench -M prepared, {d['clients']} clients, {d['seconds']} s x {d['rounds']} rounds, "
                   "each contender on a fresh table (suite 1's), contenders alternating; see bench/suite_delete.py.\n")
        for name, text in d["scripts"].items():
            out.append(f"<details><summary>{name}: {d['labels'][name]}</summary>\n\n```\n{text}```\n</details>\n")
    if "memory" in s:
        d = s["memory"]
        out.append(f"### 4. Memory\n\nOne backend, {d['calls']:,} safe_upsert calls over {d['tables']} tables with "
                   f"3 column sets each ({d['shapes']} plans; safe_upsert.plan_cache_size = {d['plan_cache_size']}), "
                   f"in statements of {d['chunk']:,} calls, each using 10 shapes in turn and the next statement the "
                   "next 10; a quarter of the calls stale. VmRSS includes the shared buffers the backend touched; "
                   "RssAnon is its private memory.\n")
        out.append("| calls | VmRSS | RssAnon | RssShmem | VmHWM |")
        out.append("|---:|---:|---:|---:|---:|")
        for x in d["samples"]:
            out.append(f"| {x['calls']:,} | {fmt(x['VmRSS'], 'MB')} | {fmt(x['RssAnon'], 'MB')} | "
                       f"{fmt(x['RssShmem'], 'MB')} | {fmt(x['VmHWM'], 'MB')} |")
        out.append("\nShared memory (pg_shmem_allocations), default settings "
                   + ", ".join(f"{k} = {v}" for k, v in d["gucs"].items()
                               if k in ("safe_upsert.max_tables", "safe_upsert.conflict_log_size",
                                        "safe_upsert.queue_size")) + ":\n")
        out.append("| name | size | allocated |")
        out.append("|---|---:|---:|")
        for r in d["shmem"]:
            out.append(f"| {r['name']} | {r['size']:,} B | {r['allocated_size']:,} B |")
        out.append(f"| total | | {d['shmem_total']:,} B |")
        out.append(f"\nsafe_upsert_info.shared_memory_bytes says {d['info_shared_memory_bytes']:,} B.\n")
        if "batch" in d:
            b = d["batch"]
            out.append(f"One batch of {b['rows']:,} rows ({b['json_bytes'] / 1e6:.1f} MB of JSON text, suite 2's rows), "
                       "written by a new backend into a fresh table: the peak of its RssAnon above what it held "
                       "before, sampled every 2 ms: " + ", ".join(f"{k} {fmt(v, 'MB')}" for k, v in b["peak_kb"].items())
                       + " (the hand-written SQL's function scan and sort keep their rows within work_mem and spill past it).\n")
    return "\n".join(out)


def load_text(results):
    loads = [(k, v.get("loadavg")) for k, v in results["suites"].items() if v.get("loadavg")]
    if not loads:
        return ""
    return ("Load average (1 min) at the start and end of each suite, the bench's own processes included "
            "(they keep about 2 to 3 busy; more means other work on the machine): "
            + "; ".join(f"{k} {a[0]:.1f} → {a[1]:.1f}" for k, a in loads) + ".")


def write(results, outdir):
    t = build(results)
    chart(results, os.path.join(outdir, "chart.png"))
    meta = results["meta"]
    missed = [x for x in t.targets if not x[6]]
    verdict = (f"Targets: {len(t.targets) - len(missed)} met, {len(missed)} missed"
               + (": " + "; ".join(f"{m[0]}: {m[1]} = {m[2]}, ratio {m[4]} to {m[3]}, target {m[5]}" for m in missed)
                  if missed else "")
               + ".")
    lines = [
        "# pg_safeupsert benchmark" + (" (QUICK: smoke size, one short round; not for quoting)" if meta["quick"] else ""),
        "",
        f"Run {meta['date']}, commit {meta['commit']}, {meta['elapsed_s']:.0f} s of suites. "
        f"Machine: {meta['cpus']} CPUs ({meta['cpu']}), {meta['memory_gb']} GB, Linux {meta['kernel']}. "
        f"Server: {meta['server'].split(' on ')[0]}, pg_safeupsert {meta['extension']} (release build), private "
        "cluster, client and server on the same machine over the Unix socket. Settings: "
        + ", ".join(f"{k} = {v}" for k, v in sorted(meta["settings"].items()))
        + "; synchronous_commit is set per suite (below). Every ratio compares figures of this run.",
        "",
        "Values are medians over the rounds; a ratio is the median of the rounds' ratios (each round "
        "runs every contender once, minutes apart at most), so figures and ratios need not divide exactly. "
        + load_text(results),
        "",
        "![chart](chart.png)",
        "",
        t.markdown(),
        "",
        verdict,
        "",
    ]
    if results.get("errors"):
        lines += ["**Suites that failed:** " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), ""]
    lines += ["## How each suite ran", "", details(results)]
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return t.markdown() + "\n\n" + verdict
