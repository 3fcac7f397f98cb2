"""Conflict notifications (issue 4), as a LISTENing user's program sees them.

Every test here runs on private clusters of this module (named with the pid of the run, on free
ports, removed at the end), not on the shared test cluster: the tests change server-wide
settings (ALTER SYSTEM + pg_reload_conf), kill the workers, crash and restart the server, and
count the workers, which would disturb (and be disturbed by) other test files. `srv` has the
default settings (plus max_prepared_transactions); `side` has safe_upsert.queue_size = 16, for
overflow, and 17 more databases for the tests that keep many databases' notifiers busy.

Listeners are psycopg 3 connections (conn.notifies(timeout=...)) and, for the core behaviour,
psycopg2 connections in autocommit mode driven by the select-and-poll loop users write
(select.select([conn], [], [], timeout); conn.poll(); conn.notifies).

"Nothing arrives" is checked with a marker where possible: a conflict on another table of the
same database, committed afterwards; once the marker is heard, anything queued before it has
been sent too (a database's events are sent in queue order, each batch in one transaction), and
a short extra wait covers the rest. Where no marker can exist (notify = off), a bounded wait.

What the tests pin down:
  - a stale and a tie arrive after commit, once per (table, kind) per transaction, with the
    documented fields, and ids that name the matching rows of safe_upsert_conflicts; nothing
    before commit, nothing for a rolled-back transaction or savepoint; table names are quoted;
    with 4 concurrent writers, the counts add up and every conflict is in some id range;
  - notifications stay in their database; databases without the extension hear nothing;
  - safe_upsert.notify_channel, safe_upsert.notify and safe_upsert.notify_payload change on reload;
  - the full payload carries key and versions for a single conflict, and stays under 8000 bytes;
  - the launcher and the notifiers show in pg_stat_activity; the notifier leaves after ~1 s idle;
  - the launcher comes back within 5 s of SIGTERM and sends what was committed meanwhile; a
    notifier killed with SIGTERM (or pg_terminate_backend) is replaced, and no event is lost;
  - a full queue drops events, counts them, and says so with an overflow notification;
  - DROP DATABASE and CREATE DATABASE ... TEMPLATE succeed right after conflicts in the database;
    DROP EXTENSION / CREATE EXTENSION work while the workers run;
  - a clean restart is not held up by the workers; notifications resume after it and after a
    crash;
  - the server log shows no errors from all of the above.

Also: a prepared transaction is notified only once committed; an unusable channel name is
refused; a few busy databases do not starve another; a 17th database is notified too.
"""

import json
import os
import re
import select
import signal
import threading
import time
import uuid

import psycopg
import psycopg2
import psycopg2.extensions
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from conftest import PrivateCluster

DEFAULT_CHANNEL = "safe_upsert"
MINIMAL_FIELDS = {"database", "table", "kind", "op", "count", "first_id", "last_id"}
FULL_FIELDS = MINIMAL_FIELDS | {"key", "stored_version", "incoming_version"}
DEFAULTS = {"notify": "on", "notify_channel": DEFAULT_CHANNEL, "notify_payload": "minimal"}
# How long a notification may take after its commit (documented: milliseconds; the first one
# after an idle second includes starting a notifier).
ARRIVAL = 5.0
# Extra wait after a marker was heard, before concluding that nothing else will come.
SETTLE = 0.3


# ---------------------------------------------------------------------------------------------
# private clusters
# ---------------------------------------------------------------------------------------------


class Server(PrivateCluster):
    """A private cluster run by scripts/cluster.sh (conftest), with databases made easy."""

    def execute(self, query, params=None, dbname="postgres"):
        with self.connect(dbname) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None

    def create_database(self, name, extension=True):
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if extension:
            self.execute("CREATE EXTENSION pg_safeupsert", dbname=name)

    def log_text(self):
        return self.log.read_text(errors="replace")


def server(name, conf):
    # one name per run (PrivateCluster adds the pid): two runs of this file at once do not collide
    return Server(name, conf)


@pytest.fixture(scope="module")
def srv():
    s = server("notify_tests", ["max_prepared_transactions = 5"])
    try:
        s.start()
        s.create_database("app")
        s.create_database("other")
        s.create_database("noext", extension=False)
        yield s
    finally:
        s.remove()


@pytest.fixture(scope="module")
def side():
    s = server("notify_side", ["safe_upsert.queue_size = 16"])
    try:
        s.start()
        s.create_database("app")
        for i in range(1, 18):
            s.create_database(f"d{i:02}")
        yield s
    finally:
        s.remove()


# ---------------------------------------------------------------------------------------------
# listeners
# ---------------------------------------------------------------------------------------------


class Note:
    def __init__(self, channel, payload, pid):
        self.channel = channel
        self.raw = payload
        self.pid = pid
        self.at = time.monotonic()
        try:
            self.payload = json.loads(payload)
        except ValueError:
            self.payload = {"unparsable": payload}

    def __repr__(self):
        return f"Note({self.channel!r}, {self.raw}, pid={self.pid})"


class Listener:
    """Collects every notification its connection receives, in order, in `received`."""

    def __init__(self):
        self.received = []

    def _receive(self, timeout):
        raise NotImplementedError

    def wait(self, predicate, timeout=ARRIVAL):
        """Receives until predicate(self) is true (True) or timeout seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.received += self._receive(min(left, 0.2))
        return True

    def drain(self, seconds):
        """Receives for `seconds`."""
        self.wait(lambda _: False, seconds)
        return self

    def about(self, table, kind=None):
        """Payloads of notifications about `table` (and `kind`)."""
        return [n.payload for n in self.received if n.payload.get("table") == table and kind in (None, n.payload.get("kind"))]

    def expect(self, table, kind, count=1, timeout=ARRIVAL):
        """Waits for `count` notifications about (table, kind); returns their payloads."""
        ok = self.wait(lambda l: len(l.about(table, kind)) >= count, timeout)
        assert ok, f"no {kind} notification about {table} within {timeout} s; received {self.received}"
        return self.about(table, kind)

    def notes(self, table, kind=None):
        return [n for n in self.received if n.payload.get("table") == table and kind in (None, n.payload.get("kind"))]


class Psycopg3Listener(Listener):
    def __init__(self, dsn, channel):
        super().__init__()
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _receive(self, timeout):
        return [Note(n.channel, n.payload, n.pid) for n in self.conn.notifies(timeout=timeout, stop_after=1)]

    def close(self):
        self.conn.close()


class Psycopg2Listener(Listener):
    """The select-and-poll loop of psycopg2's documentation, in autocommit mode."""

    def __init__(self, dsn, channel):
        super().__init__()
        self.conn = psycopg2.connect(dsn)
        self.conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with self.conn.cursor() as cur:
            cur.execute('LISTEN "%s"' % channel.replace('"', '""'))

    def _receive(self, timeout):
        if select.select([self.conn], [], [], timeout) != ([], [], []):
            self.conn.poll()
        out = []
        while self.conn.notifies:
            n = self.conn.notifies.pop(0)
            out.append(Note(n.channel, n.payload, n.pid))
        return out

    def close(self):
        self.conn.close()


LISTENERS = {"psycopg3": Psycopg3Listener, "psycopg2": Psycopg2Listener}


class Session:
    """Connections, listeners and tables of one test on one server; closed afterwards."""

    def __init__(self, server):
        self.server = server
        self.opened = []

    def connect(self, dbname="app", autocommit=True):
        c = self.server.connect(dbname, autocommit)
        self.opened.append(c)
        return c

    def listen(self, dbname="app", channel=DEFAULT_CHANNEL, client="psycopg3"):
        listener = LISTENERS[client](self.server.dsn(dbname), channel)
        self.opened.append(listener)
        return listener

    def table(self, dbname="app", name="t", rows=10):
        """A table in a schema of its own, rows k = 1..rows at ver 10; its payload name."""
        schema = "n_" + uuid.uuid4().hex[:10]
        qualified = f"{schema}.{name}"
        with self.server.connect(dbname) as c:
            c.execute(f"CREATE SCHEMA {schema}")
            c.execute(f"CREATE TABLE {qualified} (k int PRIMARY KEY, v text, ver int)")
            c.execute(f"INSERT INTO {qualified} SELECT g, 'base', 10 FROM generate_series(1, {rows}) g")
        return qualified

    def close(self):
        for c in reversed(self.opened):
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def pg(srv):
    s = Session(srv)
    yield s
    s.close()


@pytest.fixture(params=sorted(LISTENERS))
def client(request):
    return request.param


# ---------------------------------------------------------------------------------------------
# writing conflicts, reading the views
# ---------------------------------------------------------------------------------------------


def upsert(conn, table, k, v, ver):
    return conn.execute(
        "SELECT safe_upsert(%s::regclass, %s::jsonb, 'ver')::text", (table, Jsonb({"k": k, "v": v, "ver": ver}))
    ).fetchone()[0]


def stale(conn, table, k=1):
    """A stale write: ver 1 against the stored ver 10."""
    assert upsert(conn, table, k, "old", 1) == "stale"


def tie(conn, table, k=1):
    """A tie: ver 10, as stored, with a different value."""
    assert upsert(conn, table, k, "other-" + uuid.uuid4().hex[:6], 10) == "tie"


def conflict_rows(conn, first_id, last_id):
    """Rows of safe_upsert_conflicts with ids first_id..last_id, as dicts."""
    cur = conn.execute(
        "SELECT id, quote_ident(schemaname) || '.' || quote_ident(relname) AS table, kind, key, "
        "stored_version, incoming_version "
        "FROM safe_upsert_conflicts WHERE id BETWEEN %s AND %s ORDER BY id",
        (first_id, last_id),
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def info(conn):
    cur = conn.execute("SELECT * FROM safe_upsert_info")
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def workers(server):
    """{pid: (backend_type, datname)} of pg_safeupsert's workers."""
    rows = server.execute(
        "SELECT pid, backend_type, datname FROM pg_stat_activity WHERE backend_type LIKE '%pg_safeupsert%'"
    )
    return {pid: (bt, db) for pid, bt, db in rows}


def launcher_pids(server):
    return [pid for pid, (bt, _) in workers(server).items() if bt == "pg_safeupsert launcher"]


def notifier_pids(server, dbname):
    return [pid for pid, (bt, db) in workers(server).items() if bt == "pg_safeupsert notifier" and db == dbname]


def until(predicate, timeout, step=0.05):
    """Polls predicate() until it is truthy (returns it) or timeout seconds passed (None)."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


def no_notifier(server, dbname, timeout=5.0):
    """Waits for the database's notifier to leave (it lingers ~1 s after its last work)."""
    assert until(lambda: not notifier_pids(server, dbname), timeout), f"a notifier stays connected to {dbname}"


def assert_minimal(payload, dbname, table, kind, count, op="upsert"):
    assert set(payload) == MINIMAL_FIELDS, payload
    assert payload["database"] == dbname
    assert payload["table"] == table
    assert payload["kind"] == kind
    assert payload["op"] == op
    assert payload["count"] == count
    assert isinstance(payload["first_id"], int) and isinstance(payload["last_id"], int), payload
    assert payload["last_id"] - payload["first_id"] + 1 >= count


def assert_logged(conn, payload):
    """The payload's ids name its conflicts in safe_upsert_conflicts: first_id and last_id are
    two of them, and the range holds `count` of the table and kind (and maybe others')."""
    rows = conflict_rows(conn, payload["first_id"], payload["last_id"])
    mine = [r for r in rows if r["table"] == payload["table"] and r["kind"] == payload["kind"]]
    assert len(mine) == payload["count"], (payload, rows)
    assert mine[0]["id"] == payload["first_id"] and mine[-1]["id"] == payload["last_id"], (payload, rows)
    return mine


@pytest.fixture
def settings(srv):
    """set(**gucs): ALTER SYSTEM SET safe_upsert.<name> and reload; reset at the end."""
    changed = set()

    def apply(**values):
        with srv.connect() as c:
            for name, value in values.items():
                changed.add(name)
                if value is None:
                    c.execute(f"ALTER SYSTEM RESET safe_upsert.{name}")
                else:
                    c.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL("safe_upsert." + name), sql.Literal(value)))
            c.execute("SELECT pg_reload_conf()")
        expected = {n: DEFAULTS[n] if v is None else v for n, v in values.items()}

        def seen():
            # A new backend forks from the postmaster after it reloaded, and after it signalled
            # the running workers; they apply the reload when they wake for the signal.
            with srv.connect() as c:
                return all(c.execute(f"SHOW safe_upsert.{n}").fetchone()[0] == v for n, v in expected.items())

        assert until(seen, 5), f"reload of {expected} not seen"
        time.sleep(0.1)

    yield apply
    if changed:
        apply(**{n: None for n in changed})


# ---------------------------------------------------------------------------------------------
# the notifications
# ---------------------------------------------------------------------------------------------


def test_stale_and_tie_arrive_after_commit(pg, client):
    table, marker = pg.table(), pg.table()
    listener = pg.listen(client=client)
    writer = pg.connect(autocommit=False)
    stale(writer, table, k=1)
    tie(writer, table, k=2)
    # Open transaction: a conflict committed meanwhile by another session is heard, ours is not.
    listener.drain(0.5)
    stale(pg.connect(), marker)
    listener.expect(marker, "stale")
    listener.drain(SETTLE)
    assert listener.about(table) == [], "notified before commit"

    writer.commit()
    t_commit = time.monotonic()
    [s] = listener.expect(table, "stale")
    [t] = listener.expect(table, "tie")
    delay = max(n.at for n in listener.notes(table)) - t_commit
    assert_minimal(s, "app", table, "stale", 1)
    assert_minimal(t, "app", table, "tie", 1)
    assert s["first_id"] == s["last_id"] and t["first_id"] == t["last_id"]
    reader = pg.connect()
    [row] = assert_logged(reader, s)
    assert row["key"] == {"k": 1} and row["stored_version"] == 10 and row["incoming_version"] == 1
    [row] = assert_logged(reader, t)
    assert row["key"] == {"k": 2} and row["stored_version"] == 10 and row["incoming_version"] == 10
    # sent by a worker, not by the writer (which would take NOTIFY's commit lock)
    writer_pid = writer.info.backend_pid
    assert all(n.pid != writer_pid for n in listener.notes(table))
    assert all(n.channel == DEFAULT_CHANNEL for n in listener.received)
    listener.drain(SETTLE)
    assert len(listener.about(table)) == 2, listener.received
    print(f"{client}: commit to notification {delay * 1000:.1f} ms")


def test_stale_deletes_and_writes_refused_by_a_tombstone_are_notified_with_their_operation(pg):
    table = pg.table()
    listener = pg.listen()
    writer = pg.connect(autocommit=False)
    delete = "SELECT safe_delete(%s, jsonb_build_object('k', %s, 'ver', %s), 'ver')::text"
    assert writer.execute(delete, (table, 1, 5)).fetchone()[0] == "stale"  # stored at 10
    assert writer.execute(delete, (table, 2, 20)).fetchone()[0] == "deleted"
    assert upsert(writer, table, 2, "late", 15) == "stale"  # the tombstone is at 20
    listener.drain(SETTLE)
    assert listener.about(table) == [], "notified before commit"
    writer.commit()
    # one notification per table, kind and operation
    notes = listener.expect(table, "stale", count=2)
    by_op = {n["op"]: n for n in notes}
    assert sorted(by_op) == ["delete", "upsert"], notes
    for op, n in by_op.items():
        assert_minimal(n, "app", table, "stale", 1, op=op)
    reader = pg.connect()
    [row] = assert_logged(reader, by_op["delete"])
    assert (row["key"], row["stored_version"], row["incoming_version"]) == ({"k": 1}, 10, 5)
    [row] = assert_logged(reader, by_op["upsert"])
    assert (row["key"], row["stored_version"], row["incoming_version"]) == ({"k": 2}, 20, 15)
    listener.drain(SETTLE)
    assert len(listener.about(table)) == 2


def test_one_notification_per_table_and_kind(pg):
    a, b = pg.table(), pg.table()
    listener = pg.listen()
    with pg.connect(autocommit=False) as writer:
        for k in (1, 2, 3):
            stale(writer, a, k)
        tie(writer, a, 4)
        tie(writer, a, 5)
        stale(writer, b, 1)
    [a_stale] = listener.expect(a, "stale")
    [a_tie] = listener.expect(a, "tie")
    [b_stale] = listener.expect(b, "stale")
    listener.drain(SETTLE)
    assert len(listener.about(a)) == 2 and len(listener.about(b)) == 1, listener.received
    assert_minimal(a_stale, "app", a, "stale", 3)
    assert_minimal(a_tie, "app", a, "tie", 2)
    assert_minimal(b_stale, "app", b, "stale", 1)
    reader = pg.connect()
    assert [r["key"]["k"] for r in assert_logged(reader, a_stale)] == [1, 2, 3]
    assert [r["key"]["k"] for r in assert_logged(reader, a_tie)] == [4, 5]
    assert [r["key"]["k"] for r in assert_logged(reader, b_stale)] == [1]


def test_rolled_back_conflicts_send_nothing(pg, client):
    table = pg.table()
    listener = pg.listen(client=client)
    writer = pg.connect(autocommit=False)
    stale(writer, table, 1)
    tie(writer, table, 2)
    writer.rollback()
    # a savepoint rolled back inside a committed transaction: only what survives is sent
    with writer.transaction():
        try:
            with writer.transaction():  # SAVEPOINT
                stale(writer, table, 3)
                raise RuntimeError("roll back to the savepoint")
        except RuntimeError:
            pass
        tie(writer, table, 4)
    writer.commit()
    [t] = listener.expect(table, "tie")  # the marker: the rolled-back events were queued before it
    listener.drain(SETTLE)
    assert listener.about(table) == [t], listener.received
    assert_minimal(t, "app", table, "tie", 1)
    rows = conflict_rows(pg.connect(), 1, 2**62)
    assert [r["key"] for r in rows if r["table"] == table] == [{"k": 4}]


def test_prepared_transaction_notified_only_when_committed(pg):
    table, marker = pg.table(), pg.table()
    listener = pg.listen()
    writer = pg.connect(autocommit=False)
    stale(writer, table, 1)
    gid = "notify_" + uuid.uuid4().hex[:8]
    writer.execute(f"PREPARE TRANSACTION '{gid}'")
    writer.commit()  # psycopg's transaction ends with the PREPARE
    try:
        stale(pg.connect(), marker)
        listener.expect(marker, "stale")
        listener.drain(SETTLE)
        assert listener.about(table) == [], "a prepared, uncommitted conflict was notified"
    finally:
        pg.connect().execute(f"ROLLBACK PREPARED '{gid}'")
    listener.drain(SETTLE)
    assert listener.about(table) == [], "a rolled-back prepared conflict was notified"


def test_other_database_not_heard(pg, client):
    in_app, in_other = pg.table("app"), pg.table("other")
    app = pg.listen("app", client=client)
    other = pg.listen("other", client=client)
    noext = pg.listen("noext", client=client)

    stale(pg.connect("other"), in_other)
    [p] = other.expect(in_other, "stale")
    assert_minimal(p, "other", in_other, "stale", 1)
    assert_logged(pg.connect("other"), p)
    tie(pg.connect("app"), in_app)
    [p] = app.expect(in_app, "tie")
    assert_minimal(p, "app", in_app, "tie", 1)

    for listener in (app, other, noext):
        listener.drain(SETTLE)
    assert [n.payload for n in app.received] == [p], "app heard another database's conflict"
    assert all(n.payload["database"] == "other" for n in other.received), other.received
    assert noext.received == [], "a database without the extension heard something"


def test_table_names_are_quoted(pg):
    """The payload's table is quote_ident(schema) || '.' || quote_ident(name)."""
    admin = pg.connect()
    schema = "Odd Schema " + uuid.uuid4().hex[:6]
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    ident = sql.Identifier(schema, 'T"x').as_string(admin)
    admin.execute(f"CREATE TABLE {ident} (k int PRIMARY KEY, v text, ver int)")
    admin.execute(f"INSERT INTO {ident} VALUES (1, 'base', 10)")
    listener = pg.listen()
    stale(admin, ident)
    assert listener.wait(lambda l: l.about(ident)), f"nothing about {ident}: {listener.received}"
    [note] = listener.notes(ident)
    [row] = assert_logged(admin, note.payload)
    assert row["kind"] == "stale" and row["key"] == {"k": 1}


def test_no_conflict_lost_with_concurrent_writers(pg):
    """4 writers commit 200 single conflicts each as fast as they can: the counts add up."""
    table = pg.table(rows=800)
    listener = pg.listen()
    conns = [pg.connect() for _ in range(4)]

    def write(conn, keys):
        for k in keys:
            stale(conn, table, k)

    threads = [threading.Thread(target=write, args=(c, range(1 + i, 801, 4))) for i, c in enumerate(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    counted = lambda l: sum(p["count"] for p in l.about(table))  # noqa: E731
    assert listener.wait(lambda l: counted(l) >= 800, 10), f"{counted(listener)} of 800 conflicts notified"
    listener.drain(SETTLE)
    assert counted(listener) == 800
    notes = listener.about(table, "stale")
    assert len(notes) == len(listener.about(table))
    # every logged conflict of the table is in some notification's id range. Not always in
    # exactly one: ids are taken per conflict as transactions commit side by side, so one
    # transaction's (or one wake-up's) first_id..last_id can span ids that another
    # notification reports; a listener reading by range should keep the highest id it has read.
    rows = [r for r in conflict_rows(pg.connect(), 1, 2**62) if r["table"] == table]
    assert len(rows) == 800
    covering = [sum(p["first_id"] <= r["id"] <= p["last_id"] for p in notes) for r in rows]
    assert min(covering) >= 1, [r["id"] for r, c in zip(rows, covering) if c == 0]
    overlap = sum(c > 1 for c in covering)
    print(f"800 conflicts in {took:.2f} s from 4 writers: {len(notes)} notifications, "
          f"{overlap} conflicts inside more than one notification's id range "
          f"(widest range {max(p['last_id'] - p['first_id'] + 1 for p in notes)} ids for a count of "
          f"{max(notes, key=lambda p: p['last_id'] - p['first_id'])['count']})")


# ---------------------------------------------------------------------------------------------
# settings, changed on reload
# ---------------------------------------------------------------------------------------------


def test_channel_changes_on_reload(pg, settings):
    table = pg.table()
    old = pg.listen(channel=DEFAULT_CHANNEL)
    new = pg.listen(channel="su_renamed")
    stale(pg.connect(), table, 1)
    old.expect(table, "stale")  # a notifier is connected now, and gets the reload signal

    settings(notify_channel="su_renamed")
    stale(pg.connect(), table, 2)
    [p] = new.expect(table, "stale")
    assert new.received[-1].channel == "su_renamed"
    assert [r["key"] for r in assert_logged(pg.connect(), p)] == [{"k": 2}]
    old.drain(SETTLE)
    assert len(old.about(table)) == 1, f"the old channel still hears: {old.received}"

    settings(notify_channel=None)  # back to the default
    tie(pg.connect(), table, 3)
    old.expect(table, "tie")
    new.drain(SETTLE)
    assert new.about(table, "tie") == []


@pytest.mark.parametrize("channel", ["", "c" * 64], ids=["empty", "64_bytes"])
def test_invalid_channel_is_refused(srv, channel):
    """ALTER SYSTEM should refuse a channel pg_notify cannot use. Never reloaded here: the value
    only ever reaches postgresql.auto.conf, and is reset at once."""
    with srv.connect() as c:
        try:
            with pytest.raises(psycopg.Error):
                c.execute(sql.SQL("ALTER SYSTEM SET safe_upsert.notify_channel = {}").format(sql.Literal(channel)))
        finally:
            c.execute("ALTER SYSTEM RESET safe_upsert.notify_channel")


def test_notify_off_sends_nothing(pg, settings):
    table = pg.table()
    listener = pg.listen()
    settings(notify="off")
    before = info(pg.connect())
    writer = pg.connect()  # after the reload: it has the new value
    stale(writer, table, 1)
    tie(writer, table, 2)
    listener.drain(2.0)
    assert listener.about(table) == [], listener.received
    after = info(pg.connect())
    assert after["notify_events_queued"] == before["notify_events_queued"]
    assert after["notifications_sent"] == before["notifications_sent"]
    # the conflicts are still counted and logged; only the notifications are off
    assert len([r for r in conflict_rows(pg.connect(), 1, 2**62) if r["table"] == table]) == 2

    settings(notify=None)
    stale(pg.connect(), table, 3)
    [p] = listener.expect(table, "stale")
    assert [r["key"] for r in assert_logged(pg.connect(), p)] == [{"k": 3}]


def test_full_payload_carries_key_and_versions(pg, settings):
    table = pg.table()
    listener = pg.listen()
    settings(notify_payload="full")
    writer = pg.connect()
    stale(writer, table, 1)
    [s] = listener.expect(table, "stale")
    tie(writer, table, 2)
    [t] = listener.expect(table, "tie")
    assert set(s) == FULL_FIELDS and set(t) == FULL_FIELDS, (s, t)
    assert (s["key"], s["stored_version"], s["incoming_version"], s["count"]) == ({"k": 1}, 10, 1, 1)
    assert (t["key"], t["stored_version"], t["incoming_version"], t["count"]) == ({"k": 2}, 10, 10, 1)
    assert s["database"] == "app" and s["table"] == table and s["first_id"] == s["last_id"]
    assert_logged(pg.connect(), s)

    # more than one conflict per (table, kind): no row data
    with pg.connect(autocommit=False) as w:
        stale(w, table, 3)
        stale(w, table, 4)
    [_, many] = listener.expect(table, "stale", count=2)
    assert_minimal(many, "app", table, "stale", 2)

    settings(notify_payload=None)
    stale(pg.connect(), table, 5)
    [_, _, minimal] = listener.expect(table, "stale", count=3)
    assert_minimal(minimal, "app", table, "stale", 1)


def test_full_payload_never_carries_rows_of_a_table_with_row_security(pg, settings):
    table = pg.table()
    with pg.connect() as c:
        c.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    listener = pg.listen()
    settings(notify_payload="full")
    stale(pg.connect(), table, 1)
    [p] = listener.expect(table, "stale")
    assert_minimal(p, "app", table, "stale", 1)


def test_full_payload_stays_under_8000_bytes(pg, settings):
    """Versions of 5000 bytes each: the full payload would be too long, so the minimal is sent."""
    schema = "n_" + uuid.uuid4().hex[:10]
    table = f"{schema}.big"
    admin = pg.connect()
    admin.execute(f"CREATE SCHEMA {schema}")
    admin.execute(f"CREATE TABLE {table} (k int PRIMARY KEY, v text, ver text)")
    admin.execute(f"INSERT INTO {table} VALUES (1, 'base', repeat('b', 5000))")
    listener = pg.listen()
    settings(notify_payload="full")
    row = {"k": 1, "v": "x", "ver": "a" * 5000}
    outcome = admin.execute("SELECT safe_upsert(%s::regclass, %s::jsonb, 'ver')::text", (table, Jsonb(row))).fetchone()[0]
    assert outcome == "stale"
    [p] = listener.expect(table, "stale")
    assert len(listener.notes(table)[0].raw.encode()) < 8000
    assert MINIMAL_FIELDS <= set(p) and p["count"] == 1, p


# ---------------------------------------------------------------------------------------------
# the workers
# ---------------------------------------------------------------------------------------------


def test_workers_in_pg_stat_activity(pg, srv):
    table = pg.table()
    [launcher] = launcher_pids(srv)
    assert workers(srv)[launcher] == ("pg_safeupsert launcher", None)
    listener = pg.listen()
    sent_before = info(pg.connect())["notifications_sent"]
    stale(pg.connect(), table)
    listener.expect(table, "stale")
    note = listener.notes(table)[0]
    # the notification came from the database's notifier, which is still there (it lingers)
    assert workers(srv).get(note.pid) == ("pg_safeupsert notifier", "app"), workers(srv)
    now = info(pg.connect())
    assert now["notify_workers"] >= 1
    assert now["notifications_sent"] >= sent_before + 1
    assert now["last_notification_at"] is not None

    # ... and it leaves after about a second without work
    t0 = time.monotonic()
    no_notifier(srv, "app")
    print(f"notifier left {time.monotonic() - t0:.2f} s after its notification was received")
    idle = info(pg.connect())
    assert idle["notify_workers"] == 0 and idle["notify_events_pending"] == 0, idle
    assert launcher_pids(srv) == [launcher]


def test_launcher_restarted_after_sigterm(pg, srv):
    table = pg.table()
    listener = pg.listen()
    no_notifier(srv, "app")  # so that only the launcher can start one for what follows
    [old] = launcher_pids(srv)
    t0 = time.monotonic()
    assert pg.connect("postgres").execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0]
    assert until(lambda: old not in workers(srv), 5), "the launcher did not stop"
    launcher_down = not launcher_pids(srv)
    stale(pg.connect(), table, 1)  # committed while the launcher is (most likely) down
    tie(pg.connect(), table, 2)
    new = until(lambda: launcher_pids(srv), 5 - (time.monotonic() - t0), step=0.02)
    assert new and new[0] != old, f"no new launcher within 5 s of SIGTERM (old pid {old})"
    print(f"launcher back after {time.monotonic() - t0:.2f} s (down at commit: {launcher_down})")
    [s] = listener.expect(table, "stale")
    [t] = listener.expect(table, "tie")
    assert [r["key"] for r in assert_logged(pg.connect(), s)] == [{"k": 1}]
    assert [r["key"] for r in assert_logged(pg.connect(), t)] == [{"k": 2}]


def test_notifier_killed_is_replaced(pg, srv):
    table = pg.table()
    listener = pg.listen()
    writer = pg.connect()
    stale(writer, table, 1)
    listener.expect(table, "stale")
    first = listener.notes(table)[0]
    assert workers(srv).get(first.pid) == ("pg_safeupsert notifier", "app")

    # SIGTERM, and a conflict committed right away, while the notifier is going: not lost
    os.kill(first.pid, signal.SIGTERM)
    stale(writer, table, 2)
    listener.expect(table, "stale", count=2)
    assert until(lambda: first.pid not in workers(srv), 5), "the notifier ignored SIGTERM"

    # a later conflict gets a new notifier
    stale(writer, table, 3)
    listener.expect(table, "stale", count=3)
    third = listener.notes(table, "stale")[2]
    assert third.pid != first.pid
    assert workers(srv).get(third.pid, ("gone",))[0] in ("pg_safeupsert notifier", "gone")
    keys = [r["key"]["k"] for n in listener.notes(table) for r in assert_logged(pg.connect(), n.payload)]
    assert keys == [1, 2, 3]

    # pg_terminate_backend works too
    assert pg.connect("postgres").execute("SELECT pg_terminate_backend(%s)", (third.pid,)).fetchone()[0]
    assert until(lambda: third.pid not in workers(srv), 5)
    tie(writer, table, 4)
    [p] = listener.expect(table, "tie")
    assert [r["key"] for r in assert_logged(pg.connect(), p)] == [{"k": 4}]


def test_overflow_is_reported(side):
    session = Session(side)
    try:
        tables = [session.table(name=f"t{i:02}", rows=1) for i in range(20)]
        listener = session.listen()
        before = info(session.connect())
        # one transaction, 20 (table, kind) events: 16 fit in the queue, 4 are dropped
        with session.connect(autocommit=False) as writer:
            for t in tables:
                stale(writer, t)
        assert listener.wait(lambda l: any(n.payload.get("kind") == "overflow" for n in l.received)), listener.received
        listener.drain(SETTLE)
        kinds = [n.payload.get("kind") for n in listener.received]
        assert kinds == ["stale"] * 16 + ["overflow"], listener.received
        assert len({n.payload["table"] for n in listener.received[:16]} & set(tables)) == 16
        assert listener.received[-1].payload == {"database": "app", "kind": "overflow", "dropped": 4}
        after = info(session.connect())
        assert after["notify_events_dropped"] - before["notify_events_dropped"] == 4, (before, after)
        assert after["notify_events_queued"] - before["notify_events_queued"] == 16, (before, after)

        # the queue works normally again, without another overflow notification
        notified = {n.payload["table"] for n in listener.received[:16]}
        dropped = [t for t in tables if t not in notified]
        tie(session.connect(), dropped[0])
        [p] = listener.expect(dropped[0], "tie")
        assert_logged(session.connect(), p)
        listener.drain(SETTLE)
        assert [n.payload.get("kind") for n in listener.received[17:]] == ["tie"]
    finally:
        session.close()


def busy_databases(server, names, stop, period=0.2):
    """Commits a stale conflict in each database every `period` s until `stop` is set."""
    session = Session(server)
    tables = {name: session.table(name, rows=1) for name in names}
    writers = {name: session.connect(name) for name in names}

    def run():
        try:
            while not stop.is_set():
                for name in names:
                    stale(writers[name], tables[name])
                stop.wait(period)
        finally:
            session.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_busy_databases_do_not_starve_another(side):
    """Six databases with a conflict every 0.2 s; a seventh's conflict still arrives within 5 s."""
    names = [f"d{i:02}" for i in range(1, 7)]
    session = Session(side)
    stop = threading.Event()
    try:
        table = session.table("d07", rows=1)
        listener = session.listen("d07")
        busy = busy_databases(side, names, stop)
        assert until(lambda: len([p for p, (bt, db) in workers(side).items() if db in names]) == 6, 5)
        stale(session.connect("d07"), table)
        heard = listener.wait(lambda l: l.about(table), 5)
        stop.set()
        busy.join(5)
        listener.expect(table, "stale", timeout=5)  # once they stop, it comes
        assert heard, "the 7th database was not notified while 6 others kept their notifiers busy"
    finally:
        stop.set()
        session.close()
        until(lambda: not workers(side).keys() - set(launcher_pids(side)), 5)


def test_seventeenth_database_hears_of_its_dropped_events(side):
    names = [f"d{i:02}" for i in range(1, 18)]
    session = Session(side)
    try:
        tables = {name: session.table(name, rows=1) for name in names}
        writers = {name: session.connect(name) for name in names}
        last = session.listen("d17")
        dropped_before = info(writers["d01"])["notify_events_dropped"]
        for name in names:  # well within a second: the first 16 hold every slot
            stale(writers[name], tables[name])
        dropped = info(writers["d01"])["notify_events_dropped"] - dropped_before
        heard = last.wait(lambda l: l.received, 5)
        assert heard, f"d17 heard nothing; notify_events_dropped rose by {dropped}"
        assert last.received[0].payload.get("kind") in ("stale", "overflow")
    finally:
        session.close()
        until(lambda: not workers(side).keys() - set(launcher_pids(side)), 5)


# ---------------------------------------------------------------------------------------------
# databases and the extension, while the workers run
# ---------------------------------------------------------------------------------------------


def test_drop_database_after_conflicts(pg, srv):
    for name in ("dropme_heard", "dropme_now"):
        srv.create_database(name)
        table = pg.table(name)
        listener = pg.listen(name)
        with srv.connect(name) as writer:
            stale(writer, table)
        if name == "dropme_heard":
            listener.expect(table, "stale")  # its notifier is connected now
            assert notifier_pids(srv, name)
        listener.close()
        t0 = time.monotonic()
        # DROP DATABASE waits up to 5 s for other sessions, then fails
        srv.execute(f"DROP DATABASE {name}")
        took = time.monotonic() - t0
        print(f"DROP DATABASE {name}: {took:.2f} s")
        assert took < 5
    # the queue is not left holding the dropped databases' events
    assert until(lambda: info(pg.connect())["notify_events_pending"] == 0, 5), info(pg.connect())
    table = pg.table()
    listener = pg.listen()
    stale(pg.connect(), table)
    listener.expect(table, "stale")


def test_create_database_from_template_after_conflicts(pg, srv):
    srv.create_database("tmpl_src")
    try:
        table = pg.table("tmpl_src")
        listener = pg.listen("tmpl_src")
        with srv.connect("tmpl_src") as writer:
            stale(writer, table)
        listener.expect(table, "stale")
        listener.close()
        t0 = time.monotonic()
        srv.execute("CREATE DATABASE tmpl_copy TEMPLATE tmpl_src")
        took = time.monotonic() - t0
        print(f"CREATE DATABASE ... TEMPLATE: {took:.2f} s")
        assert took < 5
    finally:
        srv.execute("DROP DATABASE IF EXISTS tmpl_copy")
        srv.execute("DROP DATABASE IF EXISTS tmpl_src")


def test_drop_and_create_extension_while_workers_run(pg, srv):
    srv.create_database("extdb")
    try:
        table = pg.table("extdb")
        listener = pg.listen("extdb")
        admin = pg.connect("extdb")
        stale(admin, table, 1)
        listener.expect(table, "stale")
        assert notifier_pids(srv, "extdb")
        tie(admin, table, 2)  # queued, maybe not sent yet, when the extension goes
        t0 = time.monotonic()
        admin.execute("DROP EXTENSION pg_safeupsert")
        dropped_in = time.monotonic() - t0
        [p] = listener.expect(table, "tie")  # a committed conflict is still notified
        assert_minimal(p, "extdb", table, "tie", 1)
        admin.execute("CREATE EXTENSION pg_safeupsert")
        stale(admin, table, 3)
        [_, p] = listener.expect(table, "stale", count=2)
        assert [r["key"] for r in assert_logged(admin, p)] == [{"k": 3}]
        assert dropped_in < 2, f"DROP EXTENSION took {dropped_in:.2f} s"
        listener.close()
    finally:
        pg.close()
        srv.execute("DROP DATABASE IF EXISTS extdb")


def test_clean_restart_not_held_up(srv):
    session = Session(srv)
    try:
        table = session.table()
        listener = session.listen()
        stale(session.connect(), table)
        listener.expect(table, "stale")
        assert notifier_pids(srv, "app")
        session.close()
        t0 = time.monotonic()
        srv.restart()  # fast shutdown with a notifier connected, then start
        took = time.monotonic() - t0
        print(f"restart with a notifier connected: {took:.2f} s")
        assert took < 10
    finally:
        session.close()
    session = Session(srv)
    try:
        assert until(lambda: launcher_pids(srv), 5)
        listener = session.listen()
        tie(session.connect(), table)
        [p] = listener.expect(table, "tie")
        assert_logged(session.connect(), p)
    finally:
        session.close()


def test_notified_after_crash_recovery(srv):
    """kill -9 of a server process: the postmaster resets shared memory (queued events are
    gone), starts the launcher again, and later conflicts are notified."""
    srv.crash()
    session = Session(srv)
    try:
        assert until(lambda: launcher_pids(srv), 5), "no launcher after crash recovery"
        table = session.table()
        listener = session.listen()
        stale(session.connect(), table)
        [p] = listener.expect(table, "stale")
        assert_logged(session.connect(), p)
    finally:
        session.close()


def test_server_log_is_clean(srv):
    """Runs last: nothing above left an error, a panic or a warning in the server log."""
    bad = re.compile(r"\b(ERROR|FATAL|PANIC|WARNING):|panicked")
    # expected: what the crash test causes, a listener closed while a notification was on its
    # way to it, the channel names the invalid-channel test has refused, and a notifier started
    # for a database that test_drop_database_after_conflicts dropped before the notifier could
    # connect (it exits, taking that database's events with it)
    expected = re.compile(r"terminating connection because of crash of another server process|"
                          r"FATAL:  database \d+ does not exist|"
                          r"invalid value for parameter \"safe_upsert.notify_channel\"|"
                          r"the database system is in recovery mode|database system was not properly shut down|"
                          r"connection to client lost")
    lines = [line for line in srv.log_text().splitlines() if bad.search(line) and not expected.search(line)]
    assert lines == [], "\n".join(lines[:20])
