"""Purging tombstones on a schedule with pg_cron (Debian's postgresql-15-cron, pg_cron 1.4).

A private cluster of this module preloads 'pg_safeupsert,pg_cron'; pg_cron's scheduler lives in
the database `postgres` and starts each job as a libpq client of the job's role, through the
cluster's Unix socket (cron.host is the socket directory; trust auth). Two roles own a table
each with tombstones, some recorded "two hours ago" (their safe_upsert_deleted_at moved back
by hand, as a superuser) and some fresh. The role `app` schedules

    SELECT safe_upsert_purge_tombstones(older_than => interval '1 hour')

every minute, and the module waits for its first run (pg_cron 1.4 has minute granularity only:
schedules in seconds came with 1.5), up to about 60 s.

What the tests pin down:
  - the run succeeded, as `app`, in `postgres`;
  - exactly the old tombstones of app's table are gone, the fresh ones stay, and the old ones
    of the other role's table stay too: a purge removes only tombstones of tables its role owns;
  - safe_upsert_info.tombstones says so;
  - what purging gives up: an upsert older than a purged delete is accepted again (inserted),
    while one older than a kept delete is still stale;
  - the same call as a superuser purges every table of the database.
"""

import time

import pytest
from psycopg.types.json import Jsonb

from conftest import PrivateCluster

PURGE = "SELECT safe_upsert_purge_tombstones(older_than => interval '1 hour')"
AGED = "2 hours"

# app's table: keys 1..10 stored at version 10, then deleted at version 20 (1..8: `deleted`),
# and deletes of never-stored keys 101..104 (`absent`); the tombstones of OLD_APP are made old
APP_STORED = range(1, 11)
APP_DELETED = list(range(1, 9)) + [101, 102, 103, 104]
OLD_APP = [1, 2, 3, 4, 101, 102]
# the other role's table: keys 1..4 deleted (absent) at version 20, the tombstones of 1 and 2 old
OTHER_DELETED = [1, 2, 3, 4]
OLD_OTHER = [1, 2]


def rows(keys, ver):
    return Jsonb([{"id": k, "v": f"key {k} version {ver}", "ver": ver} for k in keys])


def tombstone_keys(conn, table):
    """The ids of the table's tombstones, as the view safe_upsert_tombstones shows them."""
    return sorted(
        r[0]
        for r in conn.execute(
            "SELECT (key->>'id')::int FROM safe_upsert_tombstones WHERE relid = %s::regclass", (table,)
        )
    )


def tombstone_count(conn):
    return conn.execute("SELECT tombstones FROM safe_upsert_info").fetchone()[0]


def age_tombstones(conn, table, keys):
    """Moves the recording time of the keys' tombstones back by AGED, as if deleted long ago."""
    (side,) = conn.execute(
        "SELECT tombstones::text FROM safe_upsert_data.tombstone_tables WHERE target = %s::regclass", (table,)
    ).fetchone()
    n = conn.execute(
        f"UPDATE {side} SET safe_upsert_deleted_at = safe_upsert_deleted_at - interval '{AGED}' WHERE id = ANY(%s)",
        (keys,),
    ).rowcount
    assert n == len(keys)


def upsert(conn, table, key, ver):
    row = {"id": key, "v": f"key {key} version {ver}", "ver": ver}
    return conn.execute("SELECT safe_upsert(%s::regclass, %s, 'ver')::text", (table, Jsonb(row))).fetchone()[0]


@pytest.fixture(scope="module")
def server():
    c = PrivateCluster("test_purge_cron")
    c.conf = [
        "shared_preload_libraries = 'pg_safeupsert,pg_cron'",
        "cron.database_name = 'postgres'",
        # pg_cron 1.4 connects with libpq to cron.host (default 'localhost', over TCP); the
        # cluster's socket directory works whatever listen_addresses and pg_hba say of TCP
        f"cron.host = '{c.data.parent / 'sock'}'",
    ]
    try:
        c.start()
        yield c
    finally:
        c.remove()


@pytest.fixture(scope="module")
def purged(server):
    """Sets up the two tables and their tombstones, lets pg_cron run the purge once as `app`,
    and returns what was seen: the tombstone counts before and the run's cron.job_run_details row."""
    with server.connect() as su:
        su.execute("CREATE EXTENSION pg_cron")
        su.execute("CREATE EXTENSION pg_safeupsert")
        for role in ("app", "other"):
            su.execute(f"CREATE ROLE {role} LOGIN")
            su.execute(f"CREATE TABLE {role}_items (id int PRIMARY KEY, v text, ver int NOT NULL)")
            su.execute(f"ALTER TABLE {role}_items OWNER TO {role}")
        su.execute("GRANT USAGE ON SCHEMA cron TO app")

        su.execute("SET ROLE app")
        got = su.execute("SELECT outcome::text FROM safe_upsert_many('app_items', %s, 'ver')", (rows(APP_STORED, 10),))
        assert {r[0] for r in got} == {"inserted"}
        got = su.execute("SELECT outcome::text FROM safe_delete_many('app_items', %s, 'ver') ORDER BY ord",
                         (rows(APP_DELETED, 20),)).fetchall()
        assert [r[0] for r in got] == ["deleted"] * 8 + ["absent"] * 4
        su.execute("SET ROLE other")
        got = su.execute("SELECT outcome::text FROM safe_delete_many('other_items', %s, 'ver')", (rows(OTHER_DELETED, 20),))
        assert {r[0] for r in got} == {"absent"}
        su.execute("RESET ROLE")

        age_tombstones(su, "app_items", OLD_APP)
        age_tombstones(su, "other_items", OLD_OTHER)
        before = tombstone_count(su)
        assert before == len(APP_DELETED) + len(OTHER_DELETED)

        # A job scheduled at the very end of a minute might miss that minute's run: start afresh.
        (second,) = su.execute("SELECT extract(second FROM clock_timestamp())").fetchone()
        if second >= 55:
            time.sleep(60.5 - float(second))
        su.execute("SET ROLE app")
        (jobid,) = su.execute("SELECT cron.schedule('purge-tombstones', '* * * * *', %s)", (PURGE,)).fetchone()
        su.execute("RESET ROLE")
        (username, database) = su.execute("SELECT username, database FROM cron.job WHERE jobid = %s", (jobid,)).fetchone()
        assert (username, database) == ("app", "postgres")

        started = time.monotonic()
        deadline = started + 75
        run = None
        while time.monotonic() < deadline:
            run = su.execute(
                "SELECT status, return_message, username, database, start_time, end_time FROM cron.job_run_details "
                "WHERE jobid = %s AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1",
                (jobid,),
            ).fetchone()
            if run:
                break
            time.sleep(0.25)
        su.execute("SELECT cron.unschedule(%s)", (jobid,))
        waited = time.monotonic() - started
        if run is None:
            pytest.fail(f"pg_cron did not run the job within {waited:.0f} s; log tail:\n{server.log_text()[-3000:]}")
        print(f"pg_cron ran the purge after {waited:.1f} s: {run[0]} ({run[1]})")
        return {"before": before, "run": dict(zip(("status", "message", "username", "database", "start", "end"), run))}


def test_the_job_ran_as_its_role_and_succeeded(purged):
    run = purged["run"]
    assert run["status"] == "succeeded", run
    assert (run["username"], run["database"]) == ("app", "postgres")


def test_exactly_the_old_tombstones_of_the_roles_tables_are_gone(server, purged):
    with server.connect() as su:
        assert tombstone_keys(su, "app_items") == sorted(set(APP_DELETED) - set(OLD_APP))
        # another role's table: its old tombstones stay, as the job's role does not own it
        assert tombstone_keys(su, "other_items") == OTHER_DELETED
        # the rows themselves were left alone: keys 9 and 10 were never deleted
        assert [r[0] for r in su.execute("SELECT id FROM app_items ORDER BY id")] == [9, 10]


def test_safe_upsert_info_counts_what_is_left(server, purged):
    with server.connect() as su:
        assert tombstone_count(su) == purged["before"] - len(OLD_APP)


def test_an_old_upsert_of_a_purged_key_is_accepted_again(server, purged):
    """What purging gives up: the deletes at version 20 of the purged keys are forgotten."""
    with server.connect() as su:
        su.execute("SET ROLE app")
        assert upsert(su, "app_items", 1, 15) == "inserted"  # deleted (a stored row) long ago
        assert upsert(su, "app_items", 101, 5) == "inserted"  # deleted while absent, long ago
        # kept tombstones still refuse what is older than their delete
        assert upsert(su, "app_items", 5, 15) == "stale"
        assert upsert(su, "app_items", 103, 5) == "stale"
        assert upsert(su, "app_items", 8, 20) == "stale"  # a delete wins equal versions
        assert [r[0] for r in su.execute("SELECT id FROM app_items ORDER BY id")] == [1, 9, 10, 101]


def test_a_superuser_purges_every_table_of_the_database(server, purged):
    with server.connect() as su:
        with server.connect() as app:
            app.execute("SET ROLE app")
            assert app.execute(PURGE).fetchone()[0] == 0  # nothing old left in app's own table
        assert su.execute(PURGE).fetchone()[0] == len(OLD_OTHER)
        assert tombstone_keys(su, "other_items") == sorted(set(OTHER_DELETED) - set(OLD_OTHER))
