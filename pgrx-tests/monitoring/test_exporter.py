"""The monitoring tier: Debian's prometheus-postgres-exporter with monitoring/queries.yaml, scraped
over HTTP, against a private server; and monitoring/alerts.yml through promtool.

scripts/test-monitoring.sh starts the server (safe_upsert.max_tables = 20,
safe_upsert.queue_size = 16) and sets PGPORT. The module writes known outcomes in two
databases, mon_a (the extension in public; the exporter's DSN) and mon_b (the extension in
schema tools); creates the extension in postgres too, with no writes, and leaves mon_c without
it. It starts the exporter as README's "Monitoring" sets it up: --auto-discover-databases, a
login role with pg_monitor, a non-root OS user; on a free loopback port.
"""

import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import errors
from psycopg.types.json import Jsonb

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
PORT = os.environ.get("PGPORT", "")
SERVER = f"127.0.0.1:{PORT}"  # the exporter's `server` label: the DSN's host and port
OUTCOMES = ("inserted", "updated", "stale", "duplicate", "tie", "skipped_by_trigger")
FAILURES = ("unique_violation", "error")
DELETES = tuple(f"delete:{o}" for o in ("deleted", "absent", "stale", "duplicate", "skipped_by_trigger"))
PER_DATABASE = {"pg_safeupsert_tombstones_count"}
BURST = 17  # tables given a stale write in one transaction: one event more than the queue holds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(dbname):
    return psycopg.connect(f"host=127.0.0.1 port={PORT} user=postgres dbname={dbname}", autocommit=True)


def upsert(conn, fn, table, row):
    return conn.execute(f"SELECT {fn}(%s, %s, 'ver')::text", (table, Jsonb(row))).fetchone()[0]


def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- the writes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written():
    """Writes known outcomes; returns the expected per-table counters, the expected server
    figures, and those the server gives that depend on it (shared memory, time)."""
    assert PORT, "PGPORT is not set: run scripts/test-monitoring.sh"
    with connect("postgres") as c:
        for db in ("mon_a", "mon_b", "mon_c"):
            c.execute(f"CREATE DATABASE {db}")
        c.execute("CREATE ROLE prometheus LOGIN")
        c.execute("GRANT pg_monitor TO prometheus")
        c.execute("CREATE EXTENSION pg_safeupsert")  # and no writes: a third place for the server figures
    a, b = connect("mon_a"), connect("mon_b")
    a.execute("CREATE EXTENSION pg_safeupsert")
    b.execute("CREATE SCHEMA tools")
    b.execute("GRANT USAGE ON SCHEMA tools TO prometheus")
    b.execute("CREATE EXTENSION pg_safeupsert SCHEMA tools")
    up_a = lambda t, row: upsert(a, "safe_upsert", t, row)  # noqa: E731
    up_b = lambda t, row: upsert(b, "tools.safe_upsert", t, row)  # noqa: E731

    # mon_b.public.scratch is written first, so that it is the least recently used table when
    # the burst below needs a 21st entry of the 20: it is evicted.
    b.execute("CREATE TABLE scratch (id int PRIMARY KEY, ver int)")
    assert up_b("scratch", {"id": 1, "ver": 1}) == "inserted"

    a.execute("CREATE TABLE items (id int PRIMARY KEY, ver int, val text)")
    for i in (1, 2, 3):
        assert up_a("items", {"id": i, "ver": 1, "val": "v"}) == "inserted"
    assert up_a("items", {"id": 1, "ver": 2, "val": "w"}) == "updated"
    assert up_a("items", {"id": 2, "ver": 2, "val": "w"}) == "updated"
    assert up_a("items", {"id": 1, "ver": 1, "val": "old"}) == "stale"
    assert up_a("items", {"id": 3, "ver": 1, "val": "v"}) == "duplicate"
    assert up_a("items", {"id": 3, "ver": 1, "val": "other"}) == "tie"
    with a.transaction(force_rollback=True):  # rolled back: not counted
        assert up_a("items", {"id": 9, "ver": 1}) == "inserted"
    # a delete of a key never stored: counted apart, and a tombstone (no conflict)
    assert a.execute("SELECT safe_delete('items', %s, 'ver')::text", (Jsonb({"id": 7, "ver": 1}),)).fetchone()[0] == "absent"

    a.execute("CREATE SCHEMA sales")
    a.execute("CREATE TABLE sales.orders (id int PRIMARY KEY, ver int, code text UNIQUE)")
    a.execute("""
        CREATE FUNCTION sales.skip() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RETURN CASE WHEN NEW.code = 'skip' THEN NULL ELSE NEW END; END $$;
        CREATE TRIGGER skip BEFORE INSERT ON sales.orders FOR EACH ROW EXECUTE FUNCTION sales.skip()""")
    many = a.execute(
        "SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('sales.orders', %s, 'ver')",
        (Jsonb([{"id": 1, "ver": 1, "code": "a"}, {"id": 2, "ver": 1, "code": "b"}]),),
    ).fetchone()[0]
    assert many == "inserted inserted"
    with pytest.raises(errors.UniqueViolation):  # the other unique constraint: a failed call
        up_a("sales.orders", {"id": 3, "ver": 1, "code": "a"})
    with pytest.raises(errors.InvalidTextRepresentation):  # bad input: a failed call
        up_a("sales.orders", {"id": 4, "ver": "x", "code": "c"})
    assert up_a("sales.orders", {"id": 5, "ver": 1, "code": "skip"}) == "skipped_by_trigger"

    b.execute("CREATE TABLE items (id int PRIMARY KEY, ver int, val text)")
    assert up_b("items", {"id": 1, "ver": 5}) == "inserted"
    with b.transaction():  # three stale rows, one commit: one event
        for v in (1, 2, 3):
            assert up_b("items", {"id": 1, "ver": v}) == "stale"

    # The burst: one commit with a stale write to each of 17 tables queues 17 events into
    # mon_b's queue of 16 once the notifier has emptied it: the 17th conflict is dropped.
    for i in range(1, BURST + 1):
        b.execute(f"CREATE TABLE burst_{i} (id int PRIMARY KEY, ver int)")
        b.execute(f"INSERT INTO burst_{i} VALUES (1, 2)")
    pending = "SELECT notify_events_pending FROM safe_upsert_info"
    wait_for("the notifier to empty the queue", lambda: a.execute(pending).fetchone()[0] == 0)
    with b.transaction():
        for i in range(1, BURST + 1):
            assert up_b(f"burst_{i}", {"id": 1, "ver": 1}) == "stale"
    # one NOTIFY per event (no two share a table and kind), and one for the overflow
    sent = 1 + 1 + 1 + (BURST - 1) + 1
    quiet = f"SELECT notify_events_pending = 0 AND notifications_sent = {sent} FROM safe_upsert_info"
    wait_for(f"{sent} notifications sent", lambda: a.execute(quiet).fetchone()[0])

    def table(**counts):
        return {**{o: 0 for o in OUTCOMES + FAILURES + DELETES}, **counts}

    tables = {
        ("mon_a", "public", "items"): table(inserted=3, updated=2, stale=1, duplicate=1, tie=1, **{"delete:absent": 1}),
        ("mon_a", "sales", "orders"): table(inserted=2, skipped_by_trigger=1, unique_violation=1, error=1),
        ("mon_b", "public", "items"): table(inserted=1, stale=3),
        **{("mon_b", "public", f"burst_{i}"): table(stale=1) for i in range(1, BURST + 1)},
    }
    server = {
        "tables_tracked": 20,
        "max_tables": 20,
        "tables_evicted_total": 1,
        "conflict_log_size": 1000,
        # stale and tie on mon_a.items, the unique violation, 3 stale on mon_b.items, the burst
        "conflicts_logged_total": 1 + 1 + 1 + 3 + BURST,
        "conflicts_skipped_total": 0,
        # one event per committing transaction and (table, kind): a unique violation is none
        "notify_events_queued_total": 1 + 1 + 1 + (BURST - 1),
        "notify_events_pending": 0,
        "notify_events_dropped_total": 1,
        "notifications_sent_total": sent,
        "launchers": 1,
    }
    # the figures that are not known in advance, as the server gives them
    cur = a.execute("SELECT shared_memory_bytes, last_notification_at FROM safe_upsert_info")
    info = dict(zip([d.name for d in cur.description], cur.fetchone()))
    a.close()
    b.close()
    return tables, server, info


# --- the exporter ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter(written, tmp_path_factory):
    """Starts the exporter as the OS user postgres; yields its base URL and log file."""
    port = free_port()
    log = tmp_path_factory.mktemp("exporter") / "exporter.log"
    env = {
        "PATH": os.environ["PATH"],
        "DATA_SOURCE_NAME": f"host=127.0.0.1 port={PORT} user=prometheus dbname=mon_a sslmode=disable",
    }
    cmd = [
        "prometheus-postgres-exporter",
        "--auto-discover-databases",
        f"--extend.query-path={MONITORING / 'queries.yaml'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd="/", user="postgres", group="postgres", extra_groups=[],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def listening():
        assert proc.poll() is None, f"the exporter exited: {log.read_text()}"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return True
        except OSError:
            return False

    try:
        wait_for("the exporter to listen", listening)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text format -> ([(name, labels, value)], {name: type})."""
    samples, types = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = dict(LABEL.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return samples, types


@pytest.fixture(scope="module")
def scraped(exporter):
    url, _ = exporter
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        assert r.status == 200
        return parse(r.read().decode())


def ours(samples, name):
    return [(labels, value) for n, labels, value in samples if n == name]


# --- the tests ---------------------------------------------------------------------------------


def test_every_table_of_both_databases_with_its_counters(written, scraped):
    tables, _, _ = written
    samples, types = scraped
    got = {}
    for name, label, prefix in (("pg_safeupsert_rows_total", "outcome", ""), ("pg_safeupsert_failed_calls_total", "kind", ""),
                                ("pg_safeupsert_deletes_total", "outcome", "delete:")):
        assert types[name] == "counter"
        for labels, value in ours(samples, name):
            key = (labels.pop("datname"), labels.pop("schemaname"), labels.pop("relname"))
            which = prefix + labels.pop(label)
            assert labels == {"server": SERVER}, f"{name}: unexpected labels {labels}"
            assert which not in got.setdefault(key, {}), f"{name}: {key} {which} twice"
            got[key][which] = value
    # postgres has no writes, mon_c no extension: no rows; scratch was evicted: gone
    assert got == tables


def test_server_figures_once_with_the_right_values(written, scraped):
    _, server, info = written
    samples, types = scraped
    figures = {n: ours(samples, n) for n in {n for n, _, _ in samples if n.startswith("pg_safeupsert_")}}
    per_table = {"pg_safeupsert_rows_total", "pg_safeupsert_failed_calls_total", "pg_safeupsert_deletes_total"} | PER_DATABASE
    for name in set(figures) - per_table:
        # once per server, however many databases the exporter discovered
        assert [labels for labels, _ in figures[name]] == [{"server": SERVER}], name
        assert types[name] == ("counter" if name.endswith("_total") else "gauge"), name
    value = {name[len("pg_safeupsert_"):]: figures[name][0][1] for name in set(figures) - per_table}
    exact = {k: value.get(k) for k in server}
    assert exact == server
    assert value["shared_memory_bytes"] == info["shared_memory_bytes"]
    assert value["last_notification_timestamp_seconds"] == pytest.approx(info["last_notification_at"].timestamp(), abs=0.01)
    assert value["notify_workers"] in (0, 1, 2)  # a notifier leaves after a second without work
    assert set(value) == set(server) | {"shared_memory_bytes", "last_notification_timestamp_seconds", "notify_workers"}


def test_tombstones_per_database(written, scraped):
    samples, types = scraped
    assert types["pg_safeupsert_tombstones_count"] == "gauge"
    got = {labels.pop("datname"): (labels, value) for labels, value in ours(samples, "pg_safeupsert_tombstones_count")}
    # mon_c has no extension: no row; the delete of mon_a.items left one tombstone
    assert got == {db: ({"server": SERVER}, n) for db, n in (("mon_a", 1.0), ("mon_b", 0.0), ("postgres", 0.0))}


def test_databases_without_the_extension_are_no_error(exporter, scraped):
    _, log = exporter
    samples, _ = scraped
    assert ours(samples, "pg_up") == [({}, 1.0)]
    assert ours(samples, "pg_exporter_last_scrape_error") == [({}, 0.0)]
    assert "level=error" not in log.read_text()


def test_launchers_unknown_without_pg_monitor(written):
    # without pg_monitor the launcher is hidden: the figure is NULL (the exporter's NaN), never 0,
    # so that the notifier alert cannot fire on a missing grant
    query = yaml.safe_load((MONITORING / "queries.yaml").read_text())["pg_safeupsert"]["query"]
    with connect("mon_a") as c:
        c.execute("CREATE ROLE plain_reader")
        try:
            c.execute("SET ROLE plain_reader")
            cur = c.execute(query)
            row = dict(zip([d.name for d in cur.description], cur.fetchone()))
        finally:
            c.execute("RESET ROLE")
            c.execute("DROP ROLE plain_reader")
    assert row["launchers"] is None
    assert row["tables_tracked"] == 20  # the rest of the view needs no grant


# --- the alerting rules ------------------------------------------------------------------------


def promtool(*args):
    r = subprocess.run(["promtool", *args], cwd=MONITORING, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_rules_pass_promtool_check():
    out = promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in out


def test_each_alert_fires_on_its_series():
    promtool("test", "rules", "alerts_test.yml")
    # every alert of the rules file has a test
    alerts = set(re.findall(r"^\s*- alert: (\S+)", (MONITORING / "alerts.yml").read_text(), re.M))
    tested = set(re.findall(r"^\s*alertname: (\S+)", (MONITORING / "alerts_test.yml").read_text(), re.M))
    assert alerts and alerts == tested
