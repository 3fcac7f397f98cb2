"""Nothing sent from SQL may crash, hang or stop the server.

Each test feeds the server what once took it down, on a private cluster where that needs other
settings, and checks that the server stayed up (the same postmaster, no PANIC or crash in its
log) and answered with a proper error or the right result:
  - without shared_preload_libraries, CREATE EXTENSION works and every function and view raises
    55000 with a hint; the session lives on;
  - a conflict with a ~20 kB key and ~200 kB text versions, committed or prepared, is logged cut
    to the slot's size; later conflicts in every slot still commit;
  - a statistics file holding over-long strings, lying lengths or garbage never stops start-up;
  - stale rows on a table of 1,598 columns are logged as valid JSON of at most 1 kB;
  - thousands of random JSON documents, single and batched: never a crash, never XX000.
"""

import json
import os
import random
import re
import struct
import time

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

SAVE_FILE = "pg_stat/pg_safeupsert.stat"
MARKER = re.compile(r"…\[cut \d+ bytes\]$")


def start_time(conn):
    return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def assert_no_crash(cluster, since=0):
    """The cluster's log, from offset `since`, shows no crash of any kind."""
    text = cluster.log_text()[since:]
    for bad in ("PANIC", "terminated by signal", "was terminated", "server process (PID", "stuck spinlock"):
        assert bad not in text, f"{bad!r} in the server log:\n{text[-3000:]}"


# ---------------------------------------------------------------------------------------------
# 1. not preloaded
# ---------------------------------------------------------------------------------------------


def test_without_preload_create_extension_works_and_every_call_raises_55000(private_cluster):
    srv = private_cluster("no_preload", ["shared_preload_libraries = ''"])
    with srv.connect() as c:
        c.execute("CREATE EXTENSION pg_safeupsert")
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text, ver int)")
        pid = c.info.backend_pid
        calls = [
            "SELECT safe_upsert('t', '{\"id\": 1, \"ver\": 1}', 'ver')",
            "SELECT safe_upsert('t', '{\"id\": 1, \"ver\": 1}', ARRAY['ver']::name[])",
            "SELECT * FROM safe_upsert_many('t', '[{\"id\": 1, \"ver\": 1}]', 'ver')",
            "SELECT * FROM safe_upsert_many('t', '[{\"id\": 1, \"ver\": 1}]', ARRAY['ver']::name[])",
            "SELECT * FROM safe_upsert_stats",
            "SELECT * FROM safe_upsert_conflicts",
            "SELECT * FROM safe_upsert_info",
            "SELECT safe_upsert_stats_reset()",
        ]
        for call in calls:
            with pytest.raises(errors.ObjectNotInPrerequisiteState) as e:  # 55000
                c.execute(call)
            assert "shared_preload_libraries" in e.value.diag.message_primary, call
            assert "shared_preload_libraries" in (e.value.diag.message_hint or ""), call
            # the same session goes on
            assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        # no setting was defined: a placeholder is all there is
        assert c.execute("SELECT count(*) FROM pg_settings WHERE name LIKE 'safe_upsert.%'").fetchone()[0] == 0
    assert "FATAL" not in srv.log_text()


# ---------------------------------------------------------------------------------------------
# 2. long values in a conflict, at COMMIT and at PREPARE TRANSACTION
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(private_cluster):
    srv = private_cluster("hardening", ["safe_upsert.conflict_log_size = 5", "max_prepared_transactions = 4"])
    with srv.connect() as c:
        c.execute("CREATE EXTENSION pg_safeupsert")
    return srv


def test_a_conflict_with_long_values_is_cut_to_fit_at_commit_and_prepare(small):
    since = len(small.log_text())
    with small.connect() as c:
        started = start_time(c)
        c.execute("CREATE TABLE long_values (k text PRIMARY KEY, ver text, v text)")
        key, newer, older = "k" * 20_000, "b" * 200_000, "a" * 200_000
        row = {"k": key, "ver": older, "v": "v" * 1000}
        sql = "SELECT safe_upsert('long_values', %s, 'ver')::text"
        assert c.execute(sql, (Jsonb({"k": key, "ver": newer}),)).fetchone()[0] == "inserted"
        assert c.execute(sql, (Jsonb(row),)).fetchone()[0] == "stale"

        # the same at PREPARE TRANSACTION: the client gets no error, the transaction commits
        w = small.connect(autocommit=False)
        assert w.execute(sql, (Jsonb(row),)).fetchone()[0] == "stale"
        w.execute("PREPARE TRANSACTION 'long_values'")
        w.close()
        c.execute("COMMIT PREPARED 'long_values'")

        # every slot of the log (5) written again, with a statement_timeout in case one spins
        c.execute("SET statement_timeout = '10s'")
        for i in range(12):
            assert c.execute(sql, (Jsonb({"k": key, "ver": f"a{i}"}),)).fetchone()[0] == "stale"
        rows = c.execute(
            "SELECT key #>> '{}', stored_version #>> '{}', incoming_version #>> '{}', incoming_row::text "
            "FROM safe_upsert_conflicts WHERE relname = 'long_values' ORDER BY id"
        ).fetchall()
        assert len(rows) == 5
        # a cut JSON text is no longer JSON: the view shows it as a JSON string of that text
        for logged_key, stored, incoming, incoming_row in rows:
            assert MARKER.search(logged_key) and logged_key.startswith('{"k":"kkk') and len(logged_key.encode()) <= 256
            assert MARKER.search(stored) and stored.startswith('"bbb') and len(stored.encode()) <= 128
            assert incoming.startswith("a") and len(incoming.encode()) <= 128
            assert len(incoming_row.encode()) <= 1100  # jsonb's output adds spaces to the 1 kB kept
        assert start_time(c) == started
    assert_no_crash(small, since)


# ---------------------------------------------------------------------------------------------
# 3. the statistics file
# ---------------------------------------------------------------------------------------------


def encode_snapshot(tables, conflicts, next_id=100):
    """The file format of src/stats/record.rs (Snapshot::encode)."""
    u64 = lambda v: struct.pack("<Q", v)  # noqa: E731
    i64 = lambda v: struct.pack("<q", v)  # noqa: E731

    def text(s, length=None):
        b = s.encode()
        return u64(len(b) if length is None else length) + b

    out = b"PGSUPS03" + u64(next_id) + u64(0) + i64(0) + u64(len(tables))
    for dbid, relid in tables:
        out += u64(dbid) + u64(relid) + b"".join(u64(n) for n in range(1, 14)) + i64(0) + i64(0) + u64(1)
    out += u64(len(conflicts))
    for c in conflicts:
        out += u64(c["id"]) + i64(0) + u64(c["dbid"]) + u64(c["relid"]) + u64(10) + i64(1) + u64(2) + u64(0)
        out += text(c["key"]) + u64(1) + text(c["stored"]) + text(c["incoming"]) + text(c["row"])
    return out


def restart_with_file(srv, content):
    """Stops the server (which saves its own file), puts `content` in its place, starts it."""
    srv.stop()
    path = srv.data / SAVE_FILE
    path.write_bytes(content)
    st = os.stat(srv.data)
    os.chown(path, st.st_uid, st.st_gid)
    srv.start()


def test_a_crafted_statistics_file_never_stops_start_up(small):
    with small.connect() as c:
        c.execute("CREATE TABLE IF NOT EXISTS from_file (k int PRIMARY KEY, ver int)")
        dbid = c.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        relid = c.execute("SELECT 'from_file'::regclass::oid").fetchone()[0]
    oversized = {"id": 42, "dbid": dbid, "relid": relid, "key": json.dumps({"k": "x" * 30_000}),
                 "stored": "9" * 50_000, "incoming": "1" * 50_000, "row": json.dumps({"v": "y" * 70_000})}

    # well formed, but every string longer than a slot holds: loaded, cut to fit
    restart_with_file(small, encode_snapshot([(dbid, relid)], [oversized]))
    with small.connect() as c:
        key, stored = c.execute(
            "SELECT key #>> '{}', stored_version #>> '{}' FROM safe_upsert_conflicts WHERE id = 42"
        ).fetchone()
        assert len(key.encode()) <= 256 and MARKER.search(key) and key.startswith('{"k": "xxx')
        assert len(stored.encode()) <= 128 and MARKER.search(stored) and stored.startswith("999")
        assert c.execute("SELECT inserted FROM safe_upsert_stats WHERE relid = %s", (relid,)).fetchone()[0] == 1

    # a length that points far past the end, a truncated file, another format, an empty file:
    # each ignored with a LOG line, and the server starts
    lying = bytearray(encode_snapshot([], [oversized]))
    at = 8 + 8 * 5 + 8 * 8  # the key's length
    lying[at:at + 8] = struct.pack("<Q", 1 << 62)
    good = encode_snapshot([(dbid, relid)], [oversized])
    # a file that another layout of the statistics wrote (PGSUPS02, 0.1.0's, had 8 counters a
    # table and no tombstone flag)
    other_layout = b"PGSUPS02" + good[8:]
    for content in (bytes(lying), good[: len(good) // 2], other_layout, b"something else entirely", b""):
        since = len(small.log_text())
        restart_with_file(small, content)
        with small.connect() as c:
            assert c.execute("SELECT count(*) FROM safe_upsert_conflicts").fetchone()[0] == 0
        assert "ignoring statistics file" in small.log_text()[since:]
        assert not (small.data / SAVE_FILE).exists()  # removed once read
    assert_no_crash(small)


# ---------------------------------------------------------------------------------------------
# 4. wide rows
# ---------------------------------------------------------------------------------------------


def test_stale_rows_of_1598_columns_are_logged_as_valid_json_of_1_kb(small):
    since = len(small.log_text())
    columns = [f"c{i:04}" for i in range(1, 1597)]
    with small.connect() as c:
        c.execute("CREATE TABLE wide (k int PRIMARY KEY, ver int, " + ", ".join(f"{n} text" for n in columns) + ")")
        c.execute("INSERT INTO wide (k, ver) SELECT g, 2 FROM generate_series(1, 20) g")
        rows = [{"k": k, "ver": 1, **{n: "w" * 40 for n in columns}} for k in range(1, 21)]
        outcomes = c.execute("SELECT outcome::text FROM safe_upsert_many('wide', %s, 'ver')", (Jsonb(rows),)).fetchall()
        assert outcomes == [("stale",)] * 20
        for row in rows[:5]:
            assert c.execute("SELECT safe_upsert('wide', %s, 'ver')::text", (Jsonb(row),)).fetchone()[0] == "stale"
        logged = c.execute("SELECT incoming_row FROM safe_upsert_conflicts WHERE relname = 'wide'").fetchall()
        assert len(logged) == 5
        for (incoming_row,) in logged:
            assert len(json.dumps(incoming_row, ensure_ascii=False, separators=(",", ":")).encode()) <= 1024
            # the members that fit, in key order, then how many were left out
            left_out = int(incoming_row["…"].removesuffix(" more columns"))
            assert len(incoming_row) - 1 + left_out == 1598
            assert all(v == "…[cut 42 bytes]" for k, v in incoming_row.items() if k != "…")
    assert_no_crash(small, since)


# ---------------------------------------------------------------------------------------------
# 5. fuzzing
# ---------------------------------------------------------------------------------------------

FUZZ_COLUMNS = {
    "i2": "smallint", "i4": "int", "i8": "bigint", "num": "numeric(10,2)", "f4": "real", "f8": "double precision",
    "t": "text", "vc": "varchar(5)", "ch": "char(3)", "b": "boolean", "d": "date", "ts": "timestamptz",
    "iv": "interval", "u": "uuid", "j": "json", "jb": "jsonb", "ia": "int[]", "ta": "text[]", "by": "bytea",
    "ip": "inet", "dom": "fuzz_positive", "en": "fuzz_mood",
}


def fuzz_value(rnd, depth=0):
    pick = rnd.random()
    if pick < 0.12:
        return rnd.choice([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**40, 1e308, -0.0, 1e-300, 3.5, 123456789.123456789])
    if pick < 0.22:
        return rnd.choice(["", "x", "NaN", "Infinity", "-inf", "2024-02-30", "1 day", "{1,2}", "{", "ünï©ødé", "\\x00ff",
                           "127.0.0.1/33", "happy", "00000000-0000-0000-0000-000000000000", "null", "\t\n\r",
                           "a" * rnd.choice([10, 300, 5000]), "é" * 3000])
    if pick < 0.27:
        return "s" * rnd.choice([100_000, 1_000_000])
    if pick < 0.35:
        return rnd.choice([True, False, None])
    if pick < 0.45 and depth < 4:
        return [fuzz_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if pick < 0.52 and depth < 4:
        return {rnd.choice(["a", "b", "k", "ver", "", "🙂"]): fuzz_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}
    if pick < 0.56:
        return Deep(rnd.choice([50, 500, 1999, 2001, 50_000]), rnd.random() < 0.5)
    return rnd.randint(-1000, 1000)


class Deep:
    """A value nested `depth` levels deep (arrays or objects), spliced into the JSON text as is:
    Python's json module cannot nest that deep."""

    def __init__(self, depth, arrays):
        self.depth, self.arrays = depth, arrays

    def text(self):
        d = self.depth
        return "[" * d + "]" * d if self.arrays else '{"a":' * d + "1" + "}" * d


def fuzz_row(rnd):
    names = list(FUZZ_COLUMNS) + ["k", "ver"]
    row = {}
    for name in rnd.sample(names, rnd.randint(0, len(names))):
        row[name] = fuzz_value(rnd)
    if rnd.random() < 0.7:
        row["k"] = rnd.randint(1, 50)
    if rnd.random() < 0.7:
        row["ver"] = rnd.randint(1, 5)
    if rnd.random() < 0.05:
        row[rnd.choice(["nope", "K", "k ", "a\u0002b", "ver\u0001"])] = 1
    return row


def as_text(rnd, doc):
    """JSON text for the document; sometimes with a key repeated (jsonb keeps the last)."""
    deep = []

    def placeholder(v):
        deep.append(v)
        return f"@@deep{len(deep) - 1}@@"

    text = json.dumps(doc, default=placeholder)
    for i, v in enumerate(deep):
        text = text.replace(f'"@@deep{i}@@"', v.text())
    if isinstance(doc, dict) and doc and rnd.random() < 0.1:
        key = next(iter(doc))
        text = "{" + json.dumps(key) + ": 0, " + text[1:]
    return text


def test_random_documents_never_crash_nor_raise_xx000(small):
    seed = int(os.environ.get("FUZZ_SEED", time.time_ns() % 1_000_000))
    rnd = random.Random(seed)
    since = len(small.log_text())
    with small.connect() as c:
        c.execute("CREATE DOMAIN fuzz_positive AS int CHECK (VALUE > 0)")
        c.execute("CREATE TYPE fuzz_mood AS ENUM ('happy', 'sad')")
        c.execute("CREATE TABLE fuzz (k int PRIMARY KEY, ver bigint NOT NULL, "
                  + ", ".join(f"{n} {t}" for n, t in FUZZ_COLUMNS.items()) + ")")
        c.execute("SET statement_timeout = '30s'")
        pid, started = c.info.backend_pid, start_time(c)
        seen = {}
        for n in range(3000):
            batch = n % 3 == 0
            doc = [fuzz_row(rnd) for _ in range(rnd.randint(0, 8))] if batch else fuzz_row(rnd)
            if rnd.random() < 0.03:
                doc = fuzz_value(rnd)  # not an object or array at all
            sql = ("SELECT count(*) FROM safe_upsert_many('fuzz', %s::jsonb, 'ver')" if batch
                   else "SELECT safe_upsert('fuzz', %s::jsonb, 'ver')::text")
            text = as_text(rnd, doc)
            try:
                c.execute(sql, (text,))
                seen["ok"] = seen.get("ok", 0) + 1
            except psycopg.Error as e:
                if c.closed or e.sqlstate is None:
                    pytest.fail(f"seed {seed}, document {n}: the connection was lost ({e})\n{text[:500]}")
                assert e.sqlstate and e.sqlstate != "XX000", f"seed {seed}, document {n}: {e}\n{text[:500]}"
                assert "panicked" not in str(e), f"seed {seed}, document {n}: {e}"
                seen[e.sqlstate] = seen.get(e.sqlstate, 0) + 1
        assert c.info.backend_pid == pid and start_time(c) == started
        # some calls went through, and many kinds of errors were met
        assert seen.get("ok", 0) > 100 and len(seen) > 5, seen
    assert_no_crash(small, since)
