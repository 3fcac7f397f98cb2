//! In-server tests: each runs in a transaction that is rolled back. They live in the SQL schema
//! `tests`, where `cargo pgrx test` calls them: each topic's file holds a `#[pg_schema] mod
//! tests`.
//!
//! Every test makes its own tables (names prefixed by the test's theme), so that tests running
//! side by side in other sessions never wait on each other's catalog rows. Errors are observed
//! through `pg_temp.sqlstate_of`, a PL/pgSQL function that runs a statement in a subtransaction
//! and returns its SQLSTATE and message: the test's own transaction carries on.

mod batches;
mod conversion;
mod deletes;
mod errors;
mod helpers;
mod outcomes;
mod plans;
mod security;
mod triggers;
