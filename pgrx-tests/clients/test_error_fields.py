"""What a driver reads from a failed call besides SQLSTATE and message: PostgreSQL's error fields
(psycopg's `e.diag`: schema, table, column, data type and constraint names), for single calls
and batches, for PostgreSQL's own errors (another unique constraint, a domain's check) and for
ours; and the position of the failing row in a batch, at the start of the message.
"""

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb


def failure(conn, sql, *params):
    """The error that `sql` raises, as psycopg reports it; the connection carries on."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    return caught.value


def single(table, row):
    return (f"SELECT safe_upsert('{table}', %s, 'ver')", Jsonb(row))


def batch(table, rows):
    return (f"SELECT * FROM safe_upsert_many('{table}', %s, 'ver')", Jsonb(rows))


@pytest.fixture
def tables(db, conn):
    conn.execute("CREATE DOMAIN small_int AS int CONSTRAINT small_int_range CHECK (VALUE < 10)")
    t = db.table("id int PRIMARY KEY, ver int, email text CONSTRAINT email_taken UNIQUE, n small_int, m int", "people")
    conn.execute(f"INSERT INTO {t} VALUES (1, 1, 'a@example.com', 1, 1)")
    return db.schema


def test_another_unique_constraint_keeps_its_constraint_schema_and_table(conn, tables):
    for sql, arg in [
        single("people", {"id": 2, "ver": 1, "email": "a@example.com"}),
        batch("people", [{"id": 3, "ver": 1, "email": "b@example.com"}, {"id": 2, "ver": 1, "email": "a@example.com"}]),
    ]:
        e = failure(conn, sql, arg)
        assert isinstance(e, errors.UniqueViolation), e
        assert (e.diag.constraint_name, e.diag.schema_name, e.diag.table_name) == ("email_taken", tables, "people")
        assert "email_taken" in e.diag.message_primary
        assert e.diag.message_detail == "Key (email)=(a@example.com) already exists."


def test_a_domain_check_keeps_its_constraint_and_type_and_names_the_column_and_row(conn, tables):
    e = failure(conn, *single("people", {"id": 2, "ver": 1, "n": 50}))
    assert isinstance(e, errors.CheckViolation), e
    assert e.diag.message_primary.startswith('invalid value for column "n" of table ')
    assert (e.diag.constraint_name, e.diag.datatype_name, e.diag.column_name) == ("small_int_range", "small_int", "n")
    assert (e.diag.schema_name, e.diag.table_name) == (tables, "people")

    e = failure(conn, *batch("people", [{"id": 2, "ver": 1, "n": 5}, {"id": 3, "ver": 1, "n": 50}]))
    assert isinstance(e, errors.CheckViolation), e
    assert e.diag.message_primary.startswith('row 2: invalid value for column "n" of table ')
    assert (e.diag.constraint_name, e.diag.datatype_name, e.diag.column_name, e.diag.table_name) == (
        "small_int_range", "small_int", "n", "people")


def test_a_value_its_type_refuses_names_column_type_and_table(conn, tables):
    e = failure(conn, *batch("people", [{"id": 2, "ver": 1, "m": 1}, {"id": 3, "ver": 1, "m": "many"}]))
    assert isinstance(e, errors.InvalidTextRepresentation), e
    assert e.diag.message_primary.startswith('row 2: invalid value for column "m" of table ')
    assert (e.diag.schema_name, e.diag.table_name, e.diag.column_name, e.diag.datatype_name) == (
        tables, "people", "m", "int4")
    assert e.diag.constraint_name is None


def test_our_own_errors_name_their_table_and_column(conn, tables):
    e = failure(conn, *single("people", {"id": 2, "ver": 1, "nope": 1}))
    assert isinstance(e, errors.UndefinedColumn), e
    assert (e.diag.schema_name, e.diag.table_name, e.diag.column_name) == (tables, "people", "nope")

    e = failure(conn, *batch("people", [{"id": 2, "ver": 1}, {"id": 3}]))
    assert isinstance(e, errors.NullValueNotAllowed), e  # 22004: the version is missing
    assert e.diag.message_primary.startswith('row 2: version column "ver" of table ')
    assert (e.diag.table_name, e.diag.column_name) == ("people", "ver")


def test_a_failed_call_leaves_the_next_errors_fields_alone(conn, tables):
    # A call that fails with fields, then one that fails without: nothing carries over.
    failure(conn, *single("people", {"id": 2, "ver": 1, "email": "a@example.com"}))
    e = failure(conn, "SELECT safe_upsert('people', '{\"id\": 2, \"ver\": 1}', 'ver', on_tie => 'sometimes')")
    assert isinstance(e, errors.InvalidParameterValue), e
    assert e.diag.constraint_name is None and e.diag.column_name is None
    e = failure(conn, "SELECT 1/0")
    assert e.diag.table_name is None
    # and a call that succeeds after them is unaffected
    sql, row = single("people", {"id": 2, "ver": 1})
    assert conn.execute(sql, (row,)).fetchone()[0] == "inserted"


def test_a_failure_caught_by_plpgsql_and_retried_keeps_the_session_sound(conn, tables):
    # The fields are attached while the error is raised; a handler that catches it and goes on
    # must find the session as usual.
    conn.execute("""
        CREATE FUNCTION try_twice() RETURNS text LANGUAGE plpgsql AS $$
        DECLARE c text; n int := 0;
        BEGIN
          LOOP
            BEGIN
              PERFORM safe_upsert('people', '{"id": 5, "ver": 1, "email": "a@example.com"}', 'ver');
            EXCEPTION WHEN unique_violation THEN
              GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME;
              n := n + 1;
              EXIT WHEN n = 2;
            END;
          END LOOP;
          RETURN c || ' ' || n;
        END $$""")
    assert conn.execute("SELECT try_twice()").fetchone()[0] == "email_taken 2"
    assert conn.execute("SELECT 1").fetchone()[0] == 1
