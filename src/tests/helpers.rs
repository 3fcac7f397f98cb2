//! What the in-server tests share: running SQL, reading results, observing errors.

use pgrx::prelude::*;

/// Runs statements, failing the test on any error.
pub fn run(statements: &str) {
    Spi::run(statements).unwrap_or_else(|e| panic!("{statements}\n  failed: {e}"));
}

/// The one value a query returns, as text (NULL gives None).
pub fn value(query: &str) -> Option<String> {
    Spi::get_one::<String>(query).unwrap_or_else(|e| panic!("{query}\n  failed: {e}"))
}

/// The one non-NULL value a query returns, as text.
pub fn text(query: &str) -> String {
    value(query).unwrap_or_else(|| panic!("{query}\n  returned NULL"))
}

/// `safe_upsert(table, row, version_col)`, as its outcome's label.
pub fn upsert(table: &str, row: &str, version_col: &str) -> String {
    upsert_with(table, row, &format!("'{version_col}'"))
}

/// `safe_upsert(table, row, <rest>)`: `rest` is the SQL of the third and later arguments,
/// e.g. `'v', on_tie => 'apply'` or `ARRAY['a', 'b']`.
pub fn upsert_with(table: &str, row: &str, rest: &str) -> String {
    text(&format!("SELECT safe_upsert('{table}', '{row}', {rest})::text"))
}

/// A table's rows as text, sorted: compared before and after a call to show it was untouched.
pub fn contents(table: &str) -> String {
    text(&format!("SELECT coalesce(string_agg(r::text, ' ' ORDER BY r::text), '') FROM {table} r"))
}

/// The stored row whose `id` is `id`, as a record literal, or None.
pub fn stored(table: &str, id: i64) -> Option<String> {
    value(&format!("SELECT r::text FROM {table} r WHERE id = {id}"))
}

/// Creates `pg_temp.sqlstate_of(statement text)`, once per session: it runs the statement in a
/// subtransaction and returns NULL, or its SQLSTATE, a space and its message.
pub fn install_sqlstate_of() {
    if value("SELECT to_regprocedure('pg_temp.sqlstate_of(text)')::text").is_some() {
        return;
    }
    run(r#"
        CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text
        LANGUAGE plpgsql AS $fn$
        DECLARE
            state text;
            message text;
        BEGIN
            EXECUTE statement;
            RETURN NULL;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
            RETURN state || ' ' || message;
        END
        $fn$"#);
}

/// Runs `statement` in a subtransaction; returns (SQLSTATE, message), or None if it succeeded.
pub fn error_of(statement: &str) -> Option<(String, String)> {
    install_sqlstate_of();
    assert!(!statement.contains("$stmt$"));
    value(&format!("SELECT pg_temp.sqlstate_of($stmt${statement}$stmt$)"))
        .map(|r| (r[..5].to_string(), r[6..].to_string()))
}

/// Asserts that `statement` fails with `sqlstate`, that its message contains each of
/// `mentions`, and that `table` holds the same rows afterwards. Returns the message.
pub fn assert_rejected(table: &str, statement: &str, sqlstate: &str, mentions: &[&str]) -> String {
    let before = contents(table);
    let (state, message) =
        error_of(statement).unwrap_or_else(|| panic!("{statement}\n  succeeded; expected SQLSTATE {sqlstate}"));
    assert_eq!(state, sqlstate, "{statement}\n  failed with {state}: {message}");
    for m in mentions {
        assert!(message.contains(m), "{statement}\n  message {message:?} does not mention {m:?}");
    }
    assert_eq!(contents(table), before, "{statement}\n  changed table {table}");
    message
}

/// `CREATE TABLE <name> (id int PRIMARY KEY, v bigint, val text, note text DEFAULT 'none')`
/// with one row (1, 10, 'a', 'none'): the usual target.
pub fn versioned_table(name: &str) {
    run(&format!(
        "CREATE TABLE {name} (id int PRIMARY KEY, v bigint, val text, note text DEFAULT 'none');
         INSERT INTO {name} VALUES (1, 10, 'a', 'none');"
    ));
}
