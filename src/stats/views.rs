//! The functions behind the views, and the views themselves.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use super::{now, pending::Counter, shared, shmem};
use crate::upsert::catalog::row_security_applies;
use crate::gucs;

fn timestamp(us: i64) -> Option<TimestampWithTimeZone> {
    (us != 0).then(|| TimestampWithTimeZone::try_from(us).ok()).flatten()
}

/// The statistics' shared memory; the callers have checked the preload already.
fn shared_or_error() -> &'static shmem::Shared {
    shared().unwrap_or_else(|| crate::error::not_preloaded())
}

fn my_database() -> u32 {
    // SAFETY: plain read of this backend's database.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

fn table_exists(relid: u32) -> bool {
    // SAFETY: plain syscache lookup.
    unsafe { pg_sys::get_rel_relkind(pg_sys::Oid::from(relid)) != 0 }
}

fn may_select(relid: u32) -> bool {
    let mut missing = false;
    // SAFETY: a missing table reports through `missing` instead of raising.
    let result = unsafe {
        pg_sys::pg_class_aclcheck_ext(pg_sys::Oid::from(relid), pg_sys::GetUserId(), pg_sys::ACL_SELECT as _, &mut missing)
    };
    !missing && result == pg_sys::AclResult::ACLCHECK_OK
}

/// Stored texts are JSON unless a cut broke them; those are shown as a JSON string.
fn json(text: &str) -> JsonB {
    JsonB(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}

pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        k if k == Counter::Stale as u8 || k == Counter::DeleteStale as u8 => "stale",
        k if k == Counter::Tie as u8 => "tie",
        _ => "unique_violation",
    }
}

/// Which call a logged conflict's kind comes from.
pub fn operation_name(kind: u8) -> &'static str {
    if kind == Counter::DeleteStale as u8 { "delete" } else { "upsert" }
}

/// The tables of this database with counters; frees the entries of tables dropped for good.
fn live_tables() -> Vec<super::record::TableRecord> {
    crate::require_preload();
    let shared = shared_or_error();
    let dbid = my_database();
    let (live, dropped): (Vec<_>, Vec<_>) = shared.tables(Some(dbid)).into_iter().partition(|t| table_exists(t.relid));
    // A table this transaction dropped may come back with a ROLLBACK: only a transaction that
    // has written nothing sees nothing but committed drops, and only it frees their entries.
    // SAFETY: plain read of this backend's transaction state.
    let wrote = unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId;
    if !dropped.is_empty() && !wrote {
        shared.forget(dbid, &dropped.iter().map(|t| t.relid).collect::<Vec<_>>());
    }
    live
}

/// 0.1.0's `safe_upsert_stats_data()`, kept for databases not updated yet.
// pgrx reads the column names from the return type, so it stays spelled out.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn safe_upsert_stats_data() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(inserted, i64),
        name!(updated, i64),
        name!(stale, i64),
        name!(duplicate, i64),
        name!(tie, i64),
        name!(skipped_by_trigger, i64),
        name!(unique_violations, i64),
        name!(errors, i64),
        name!(last_conflict_at, Option<TimestampWithTimeZone>),
        name!(stats_reset, Option<TimestampWithTimeZone>),
    ),
> {
    TableIterator::new(safe_upsert_stats_rows().map(|r| (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10)))
}

// pgrx reads the column names from the return type, so it stays spelled out.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn safe_upsert_stats_rows() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(inserted, i64),
        name!(updated, i64),
        name!(stale, i64),
        name!(duplicate, i64),
        name!(tie, i64),
        name!(skipped_by_trigger, i64),
        name!(unique_violations, i64),
        name!(errors, i64),
        name!(last_conflict_at, Option<TimestampWithTimeZone>),
        name!(stats_reset, Option<TimestampWithTimeZone>),
        name!(deleted, i64),
        name!(absent, i64),
        name!(delete_stale, i64),
        name!(delete_duplicate, i64),
        name!(delete_skipped_by_trigger, i64),
    ),
> {
    TableIterator::new(live_tables().into_iter().map(|t| {
        let c = t.counts.map(|n| n as i64);
        let at = |k: Counter| c[k as usize];
        (
            pg_sys::Oid::from(t.relid),
            at(Counter::Inserted),
            at(Counter::Updated),
            at(Counter::Stale),
            at(Counter::Duplicate),
            at(Counter::Tie),
            at(Counter::SkippedByTrigger),
            at(Counter::UniqueViolations),
            at(Counter::Errors),
            timestamp(t.last_conflict_at),
            timestamp(t.stats_reset),
            at(Counter::Deleted),
            at(Counter::Absent),
            at(Counter::DeleteStale),
            at(Counter::DeleteDuplicate),
            at(Counter::DeleteSkippedByTrigger),
        )
    }))
}

/// 0.1.0's `safe_upsert_conflicts_data()`, kept for databases not updated yet.
// pgrx reads the column names from the return type, so it stays spelled out.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn safe_upsert_conflicts_data() -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(occurred_at, Option<TimestampWithTimeZone>),
        name!(relid, pg_sys::Oid),
        name!(kind, &'static str),
        name!(key, Option<JsonB>),
        name!(stored_version, Option<JsonB>),
        name!(incoming_version, Option<JsonB>),
        name!(incoming_row, Option<JsonB>),
        name!(pid, i32),
        name!(userid, pg_sys::Oid),
    ),
> {
    TableIterator::new(safe_upsert_conflict_rows().map(|r| (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)))
}

// pgrx reads the column names from the return type, so it stays spelled out.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn safe_upsert_conflict_rows() -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(occurred_at, Option<TimestampWithTimeZone>),
        name!(relid, pg_sys::Oid),
        name!(kind, &'static str),
        name!(key, Option<JsonB>),
        name!(stored_version, Option<JsonB>),
        name!(incoming_version, Option<JsonB>),
        name!(incoming_row, Option<JsonB>),
        name!(pid, i32),
        name!(userid, pg_sys::Oid),
        name!(operation, &'static str),
        name!(tombstone, bool),
    ),
> {
    crate::require_preload();
    let dbid = my_database();
    let rows = shared_or_error().conflicts(|d, relid| d == dbid && may_select(relid));
    let mut hidden: std::collections::HashMap<u32, bool> = Default::default();
    TableIterator::new(rows.into_iter().map(move |c| {
        let shown = !*hidden.entry(c.relid).or_insert_with(|| row_security_applies(pg_sys::Oid::from(c.relid)));
        (
            c.id as i64,
            timestamp(c.occurred_at),
            pg_sys::Oid::from(c.relid),
            kind_name(c.kind),
            shown.then(|| json(&c.key)),
            c.stored_version.as_deref().filter(|_| shown).map(json),
            shown.then(|| json(&c.incoming_version)),
            shown.then(|| json(&c.incoming_row)),
            c.pid,
            pg_sys::Oid::from(c.userid),
            operation_name(c.kind),
            c.tombstone,
        )
    }))
}

// pgrx reads the column names from the return type, so it stays spelled out.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn safe_upsert_info_row() -> TableIterator<
    'static,
    (
        name!(tables_tracked, i64),
        name!(max_tables, i32),
        name!(tables_evicted, i64),
        name!(conflict_log_size, i32),
        name!(conflicts_logged, i64),
        name!(stats_reset, Option<TimestampWithTimeZone>),
        name!(shared_memory_bytes, i64),
        name!(plan_cache_entries, i32),
        name!(plan_cache_size, i32),
        name!(track, bool),
        name!(save, bool),
        name!(notify_events_queued, i64),
        name!(notify_events_pending, i64),
        name!(notify_events_dropped, i64),
        name!(notifications_sent, i64),
        name!(last_notification_at, Option<TimestampWithTimeZone>),
        name!(notify_workers, i32),
        name!(conflicts_skipped, i64),
        name!(tombstones, i64),
    ),
> {
    TableIterator::once(info_values(true))
}

/// safe_upsert_info's figures; the count of tombstones (a query per tombstone table) only when
/// asked for.
#[allow(clippy::type_complexity)]
fn info_values(tombstones: bool) -> (i64, i32, i64, i32, i64, Option<TimestampWithTimeZone>, i64, i32, i32, bool, bool, i64, i64, i64, i64, Option<TimestampWithTimeZone>, i32, i64, i64) {
    crate::require_preload();
    let s = shared_or_error();
    let h = s.header;
    let q = crate::notify::queue().unwrap_or_else(|| crate::error::not_preloaded());
    let (pending, workers) = q.pending_and_workers();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as i64;
    (
        s.tables_in_use() as i64,
        h.max_tables as i32,
        h.evicted.load(std::sync::atomic::Ordering::Relaxed) as i64,
        h.log_size as i32,
        s.conflicts_logged() as i64,
        timestamp(h.stats_reset.load(std::sync::atomic::Ordering::Relaxed)),
        (shmem::size(h.max_tables as usize, h.log_size as usize) + crate::notify::shmem_size()) as i64,
        crate::upsert::plan_cache::len() as i32,
        gucs::PLAN_CACHE_SIZE.get(),
        gucs::TRACK.get(),
        gucs::SAVE.get(),
        load(&q.header.queued),
        pending as i64,
        load(&q.header.dropped),
        load(&q.header.sent),
        timestamp(q.header.last_sent_at.load(std::sync::atomic::Ordering::Relaxed)),
        workers as i32,
        h.log_skipped.load(std::sync::atomic::Ordering::Relaxed) as i64,
        if tombstones { crate::tombstones::count() } else { 0 },
    )
}

/// 0.1.0's `safe_upsert_info_data()`, kept for databases not updated yet.
// pgrx reads the column names from the return type, so it stays spelled out.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn safe_upsert_info_data() -> TableIterator<
    'static,
    (
        name!(tables_tracked, i64),
        name!(max_tables, i32),
        name!(tables_evicted, i64),
        name!(conflict_log_size, i32),
        name!(conflicts_logged, i64),
        name!(stats_reset, Option<TimestampWithTimeZone>),
        name!(shared_memory_bytes, i64),
        name!(plan_cache_entries, i32),
        name!(plan_cache_size, i32),
        name!(track, bool),
        name!(save, bool),
        name!(notify_events_queued, i64),
        name!(notify_events_pending, i64),
        name!(notify_events_dropped, i64),
        name!(notifications_sent, i64),
        name!(last_notification_at, Option<TimestampWithTimeZone>),
        name!(notify_workers, i32),
        name!(conflicts_skipped, i64),
    ),
> {
    let r = info_values(false);
    TableIterator::once((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, r.13, r.14, r.15, r.16, r.17))
}

#[pg_extern(sql = false)]
fn safe_upsert_stats_reset(target: Option<pg_sys::Oid>) {
    crate::require_preload();
    shared_or_error().reset(my_database(), target.map(|t| t.to_u32()), now());
}

extension_sql!(
    r#"
CREATE FUNCTION safe_upsert_stats_reset(target regclass DEFAULT NULL) RETURNS void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'safe_upsert_stats_reset_wrapper';
COMMENT ON FUNCTION safe_upsert_stats_reset(regclass) IS
  'Zero the counters of one table, or of every table of the current database.';
REVOKE ALL ON FUNCTION safe_upsert_stats_reset(regclass) FROM PUBLIC;

CREATE FUNCTION safe_upsert_stats_rows()
RETURNS TABLE(relid oid, inserted bigint, updated bigint, stale bigint, duplicate bigint, tie bigint,
              skipped_by_trigger bigint, unique_violations bigint, errors bigint,
              last_conflict_at timestamptz, stats_reset timestamptz, deleted bigint, absent bigint,
              delete_stale bigint, delete_duplicate bigint, delete_skipped_by_trigger bigint)
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'safe_upsert_stats_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_stats_rows() IS 'Internal to the view safe_upsert_stats.';

CREATE FUNCTION safe_upsert_conflict_rows()
RETURNS TABLE(id bigint, occurred_at timestamptz, relid oid, kind text, key jsonb, stored_version jsonb,
              incoming_version jsonb, incoming_row jsonb, pid integer, userid oid, operation text,
              tombstone boolean)
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'safe_upsert_conflict_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_conflict_rows() IS 'Internal to the view safe_upsert_conflicts.';

CREATE FUNCTION safe_upsert_info_row()
RETURNS TABLE(tables_tracked bigint, max_tables integer, tables_evicted bigint, conflict_log_size integer,
              conflicts_logged bigint, stats_reset timestamptz, shared_memory_bytes bigint,
              plan_cache_entries integer, plan_cache_size integer, track boolean, save boolean,
              notify_events_queued bigint, notify_events_pending bigint, notify_events_dropped bigint,
              notifications_sent bigint, last_notification_at timestamptz, notify_workers integer,
              conflicts_skipped bigint, tombstones bigint)
LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'safe_upsert_info_row_wrapper';
COMMENT ON FUNCTION safe_upsert_info_row() IS 'Internal to the view safe_upsert_info.';

CREATE VIEW safe_upsert_stats AS
  SELECT s.relid, n.nspname AS schemaname, c.relname,
         s.inserted, s.updated, s.stale, s.duplicate, s.tie, s.skipped_by_trigger,
         s.unique_violations, s.errors, s.last_conflict_at, s.stats_reset,
         s.deleted, s.absent, s.delete_stale, s.delete_duplicate, s.delete_skipped_by_trigger
  FROM safe_upsert_stats_rows() s
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.relid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace;
COMMENT ON VIEW safe_upsert_stats IS 'Outcomes of safe_upsert and safe_delete per table of the current database, counted at commit.';

CREATE VIEW safe_upsert_conflicts AS
  SELECT l.id, l.occurred_at, l.relid, n.nspname AS schemaname, c.relname, l.kind, l.key,
         l.stored_version, l.incoming_version, l.incoming_row, l.pid,
         pg_catalog.pg_get_userbyid(l.userid) AS usename, l.operation, l.tombstone
  FROM safe_upsert_conflict_rows() l
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) l.relid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  ORDER BY l.id;
CREATE VIEW safe_upsert_info AS SELECT * FROM safe_upsert_info_row();
COMMENT ON VIEW safe_upsert_info IS 'Capacity and use of pg_safeupsert''s shared memory, its notification pipeline, and this backend''s plan cache.';

GRANT SELECT ON safe_upsert_stats, safe_upsert_conflicts, safe_upsert_info TO PUBLIC;

COMMENT ON VIEW safe_upsert_conflicts IS 'Recent committed conflicts on tables of the current database that the role may SELECT, oldest first.';
"#,
    name = "stats_views",
);
