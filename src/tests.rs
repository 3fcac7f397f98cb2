//! In-server tests: each runs in a transaction that is rolled back.
