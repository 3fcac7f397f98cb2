//! The launcher, a worker connected to no database that starts with the server, and the
//! notifiers it starts: one per database that has events queued, which sends them and leaves
//! after a second without work, so that it never holds up DROP DATABASE for long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use super::pace::{Rate, PACE};
use super::payload::{self, Detail, Notice};
use super::queue::{merge, Batch, Queue};
use crate::gucs::{self, Payload};
use crate::stats;
use crate::upsert::catalog;

/// How long a notifier waits for more events before it disconnects.
const LINGER: Duration = Duration::from_secs(1);
/// How often the launcher looks for databases left without a notifier.
const LAUNCHER_NAP: Duration = Duration::from_millis(500);
/// How long the launcher waits before starting a database's notifier again, so that one that
/// keeps failing does not flood the log.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// How long a notifier keeps working while other databases wait for one.
const FAIR_SHARE: Duration = Duration::from_secs(1);
/// Events one notifier transaction sends at most.
const BATCH: usize = 10_000;

pub fn register_launcher() {
    BackgroundWorkerBuilder::new("pg_safeupsert launcher")
        .set_type("pg_safeupsert launcher")
        .set_library("pg_safeupsert")
        .set_function("pg_safeupsert_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

fn my_latch() -> *mut pg_sys::Latch {
    // SAFETY: MyProc is set up for every worker with shared memory access.
    unsafe { &raw mut (*pg_sys::MyProc).procLatch }
}

fn reload_config_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: the documented way for a worker to apply a reload.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

fn queue() -> &'static Queue {
    super::queue().expect("pg_safeupsert is preloaded")
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_safeupsert_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: this only makes the launcher visible in pg_stat_activity.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let q = queue();
    q.register_launcher(my_latch());
    let mut started: Vec<(u32, DynamicBackgroundWorker)> = Vec::new();
    let mut last_start: HashMap<u32, Instant> = HashMap::new();
    loop {
        reload_config_if_asked();
        // Forget notifiers that have stopped; one that never attached frees its request.
        started.retain(|(dbid, w)| match w.pid() {
            Ok(_) => true,
            Err(pgrx::bgworkers::BackgroundWorkerStatus::NotYetStarted) => true,
            Err(_) => {
                q.start_failed(*dbid);
                false
            }
        });
        // Databases that waited longest since their last notifier first.
        let mut orphans = q.orphans();
        orphans.sort_by_key(|dbid| last_start.get(dbid).copied());
        for dbid in orphans {
            if last_start.get(&dbid).is_some_and(|t| t.elapsed() < RESTART_PAUSE) {
                q.start_failed(dbid); // asked again after the pause
                continue;
            }
            last_start.insert(dbid, Instant::now());
            match start_notifier(dbid) {
                Some(w) => started.push((dbid, w)),
                None => q.start_failed(dbid),
            }
        }
        if !BackgroundWorker::wait_latch(Some(LAUNCHER_NAP)) {
            break;
        }
    }
    // Exit code 1 has the postmaster start the launcher again after SIGTERM (it does not at
    // shutdown); queued events wait in shared memory meanwhile.
    // SAFETY: a worker's normal way out; nothing of ours is held here.
    unsafe { pg_sys::proc_exit(1) };
}

fn start_notifier(dbid: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new("pg_safeupsert notifier")
        .set_type("pg_safeupsert notifier")
        .set_library("pg_safeupsert")
        .set_function("pg_safeupsert_notifier_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(dbid)))
        // SAFETY: MyProcPid is set at process start and only read after.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .set_restart_time(None)
        .load_dynamic()
        .ok()
}

static mut CONNECTED: bool = false;

#[pg_guard]
unsafe extern "C-unwind" fn on_notifier_exit(_code: i32, arg: pg_sys::Datum) {
    // A notifier that could not connect (its database was dropped) takes the events with it.
    // SAFETY: MyProcPid and CONNECTED are only written before this exit callback can run, by
    // this single-threaded process.
    let (pid, connected) = unsafe { (pg_sys::MyProcPid, CONNECTED) };
    queue().detach_worker(arg.value() as u32, pid, !connected);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_safeupsert_notifier_main(arg: pg_sys::Datum) {
    let dbid = arg.value() as u32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: registering an exit callback that only touches shared memory we own.
    unsafe { pg_sys::before_shmem_exit(Some(on_notifier_exit), arg) };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(dbid)), None);
    // SAFETY: this process is single-threaded; the exit callback reads it.
    unsafe { CONNECTED = true };
    let q = queue();
    // SAFETY: MyProcPid is set at process start and only read after.
    if !q.attach_worker(dbid, unsafe { pg_sys::MyProcPid }, my_latch()) {
        return;
    }
    let started = Instant::now();
    let mut idle_since = Instant::now();
    let mut rate = Rate::new(Instant::now());
    loop {
        reload_config_if_asked();
        let batch = q.peek(dbid, BATCH);
        if batch.events.is_empty() && batch.dropped == 0 {
            let idle = idle_since.elapsed();
            if idle >= LINGER || !BackgroundWorker::wait_latch(Some(LINGER - idle)) {
                break;
            }
            continue;
        }
        let sent = if gucs::NOTIFY.get() { send(&batch) } else { 0 };
        // SAFETY: reads the clock.
        q.consume(dbid, &batch, unsafe { pg_sys::GetCurrentTimestamp() });
        q.header.sent.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        idle_since = Instant::now();
        if started.elapsed() >= FAIR_SHARE && q.others_waiting(dbid) {
            break; // the launcher starts another for what is left here
        }
        if rate.sent(batch.events.len(), Instant::now()) {
            // Not waiting on the latch meanwhile: writers that queue events do not wake us
            // (SetLatch signals only a process waiting on the latch).
            // SAFETY: a plain sleep, interrupted by signals.
            unsafe { pg_sys::pg_usleep(PACE.as_micros() as _) };
            if BackgroundWorker::sigterm_received() {
                break;
            }
        }
    }
}

/// One notification per (table, kind) in the batch, plus one for overflow; all in one
/// transaction. Returns how many were sent.
fn send(batch: &Batch) -> u64 {
    let channel = gucs::NOTIFY_CHANNEL.get().and_then(|c| c.into_string().ok()).unwrap_or_default();
    let full = gucs::NOTIFY_PAYLOAD.get() == Payload::Full;
    let dropped = batch.dropped;
    let merged = merge(&batch.events);
    // Catalog lookups through the syscache and pg_notify called directly: no SQL to parse and
    // plan for each notification.
    BackgroundWorker::transaction(move || {
        // SAFETY: a syscache lookup inside the transaction; NULL if the database is gone.
        let database = unsafe { catalog::owned(pg_sys::get_database_name(pg_sys::MyDatabaseId)) }.unwrap_or_default();
        // SAFETY: pg_notify takes two text datums; the channel was checked by its GUC hook.
        let notify = |text: String| unsafe {
            pgrx::direct_function_call_as_datum(
                pg_sys::pg_notify,
                &[channel.as_str().into_datum(), text.as_str().into_datum()],
            );
        };
        let mut sent = 0;
        for e in &merged {
            let Some(table) = catalog::syscache_table_name(pg_sys::Oid::from(e.relid)) else { continue }; // dropped since
            // Row data never goes to listeners of a table with row-level security: its policy
            // may hide those rows from them.
            let full = full && !catalog::has_row_security(pg_sys::Oid::from(e.relid));
            let logged = (full && e.count == 1 && e.first_id != 0).then(|| stats::conflict_by_id(e.first_id)).flatten();
            let notice = Notice {
                database: &database,
                table: &table,
                kind: stats::kind_name(e.kind),
                op: stats::operation_name(e.kind),
                count: e.count,
                first_id: (e.first_id != 0).then_some(e.first_id),
                last_id: (e.last_id != 0).then_some(e.last_id),
                detail: logged.as_ref().map(|c| Detail {
                    key: &c.key,
                    stored_version: c.stored_version.as_deref(),
                    incoming_version: &c.incoming_version,
                }),
            };
            notify(notice.to_json());
            sent += 1;
        }
        if dropped > 0 {
            notify(payload::overflow(&database, dropped));
            sent += 1;
        }
        sent
    })
}
