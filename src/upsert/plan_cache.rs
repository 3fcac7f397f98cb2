//! The per-backend plan cache: for each (table, sent columns, version columns, key, on_tie) the
//! prepared write (and, once needed, the statement reading why a row was kept) and the sent
//! columns' input functions. Bounded by
//! `safe_upsert.plan_cache_size`, least recently used out first. Any relcache invalidation of
//! the table (columns, types, indexes, rename) marks its plans stale, so the next call rebuilds
//! from the catalog instead of acting on an old shape.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::rc::Rc;

use pgrx::pg_sys;
use serde_json::Value;

use super::catalog::{self, ColumnMeta, Op, Request, TombstoneTable};
use super::row::Row;
use super::statement::Shape;
use crate::{error, gucs};

/// A sent column, ready to turn JSON text into a Datum.
pub struct InputColumn {
    pub meta: ColumnMeta,
    /// the type's input function, looked up once, living in the plan's memory context
    pub input: *mut pg_sys::FmgrInfo,
    pub ioparam: pg_sys::Oid,
    /// which jsonb scalars it takes without the input function
    pub direct: super::input::Direct,
}

/// The batch statements of a plan, prepared on the first batch call.
pub struct BatchPlan {
    /// the write; None for a delete's plan, whose statements are its tombstones'
    pub upsert: Option<pg_sys::SPIPlanPtr>,
    /// the fallback reading why stored rows were kept (see `kept.rs`), prepared when first needed
    classify: OnceCell<pg_sys::SPIPlanPtr>,
    /// the statements' parameter types: int4[], then one array type per sent column
    argtypes: Vec<pg_sys::Oid>,
    /// per sent column: the arrays' element type
    pub elements: Vec<Element>,
    /// an upsert's comparisons that choose one winner per key in the backend, when its key and
    /// version columns have them; without, the write chooses them itself
    pub(super) winners: Option<super::winners::Comparators>,
}

/// An array's element type, as `construct_md_array` needs it.
#[derive(Clone, Copy)]
pub struct Element {
    pub typid: pg_sys::Oid,
    pub len: i16,
    pub byval: bool,
    pub align: std::ffi::c_char,
}

/// The statements on the tombstones of a table that has them (see `statement/tombstone.rs`),
/// run as the tombstone table's owner.
pub struct TombPlan {
    pub side: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    /// upserts: the claim on the key; deletes: the tombstone
    pub claim: pg_sys::SPIPlanPtr,
    pub unclaim: pg_sys::SPIPlanPtr,
    /// deletes: (the stored row's delete, its classification), run as the caller
    pub delete: Option<(pg_sys::SPIPlanPtr, pg_sys::SPIPlanPtr)>,
    /// batches' statements, prepared on the first batch call
    pub batch: OnceCell<BatchTomb>,
}

/// A batch's statements on the tombstones (see `statement/tombstone.rs`).
pub struct BatchTomb {
    /// upserts: the claims; deletes: the tombstones
    pub claim: pg_sys::SPIPlanPtr,
    pub unclaim: pg_sys::SPIPlanPtr,
    /// deletes: (why tombstones were kept, the stored rows' delete, its classification)
    pub delete: Option<(pg_sys::SPIPlanPtr, pg_sys::SPIPlanPtr, pg_sys::SPIPlanPtr)>,
}

impl TombPlan {
    fn plans(&self) -> Vec<pg_sys::SPIPlanPtr> {
        let mut plans = vec![self.claim, self.unclaim];
        if let Some((a, b)) = self.delete {
            plans.extend([a, b]);
        }
        if let Some(b) = self.batch.get() {
            plans.extend([b.claim, b.unclaim]);
            if let Some((x, y, z)) = b.delete {
                plans.extend([x, y, z]);
            }
        }
        plans
    }
}

pub struct Plan {
    pub relid: pg_sys::Oid,
    /// the tombstones' statements, for a table that has tombstones
    pub tomb: Option<TombPlan>,
    /// what a first delete needs to make the tombstone table
    pub tombstone_table: TombstoneTable,
    pub shape: Shape,
    /// in parameter order
    pub columns: Vec<InputColumn>,
    /// the same, as the kept note compares them (`kept.rs`)
    pub sent: Vec<super::kept::SentAttr>,
    /// the INSERT ... ON CONFLICT; for a partitioned table, the INSERT ... DO NOTHING
    pub upsert: pg_sys::SPIPlanPtr,
    /// for a partitioned table only, the UPDATE that follows a skipped insert
    pub update: Option<pg_sys::SPIPlanPtr>,
    /// the fallback reading why the stored row was kept (see `kept.rs`), prepared when first needed
    classify: OnceCell<pg_sys::SPIPlanPtr>,
    pub batch: OnceCell<BatchPlan>,
    memory: pg_sys::MemoryContext,
    stale: Cell<bool>,
    /// `CLOCK` when last served, from the cache or as the last plan: the cache evicts the
    /// least recently used
    used: Cell<u64>,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: both plans were kept with SPI_keepplan and the context was made for this
        // plan alone; a Plan is dropped only when no call holds it (it is shared through Rc).
        unsafe {
            pg_sys::SPI_freeplan(self.upsert);
            if let Some(update) = self.update {
                pg_sys::SPI_freeplan(update);
            }
            if let Some(&classify) = self.classify.get() {
                pg_sys::SPI_freeplan(classify);
            }
            for plan in self.tomb.as_ref().map(TombPlan::plans).unwrap_or_default() {
                pg_sys::SPI_freeplan(plan);
            }
            if let Some(b) = self.batch.get() {
                if let Some(upsert) = b.upsert {
                    pg_sys::SPI_freeplan(upsert);
                }
                if let Some(&classify) = b.classify.get() {
                    pg_sys::SPI_freeplan(classify);
                }
            }
            pg_sys::MemoryContextDelete(self.memory);
        }
    }
}

pub fn prepare(sql: &str, argtypes: &mut [pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    prepare_with(sql, argtypes, 0)
}

/// `prepare` for statements over arrays of rows: planned for each call's arrays, since a generic
/// plan, blind to their size, picks nested loops that cost far more than planning.
pub fn prepare_custom(sql: &str, argtypes: &mut [pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    prepare_with(sql, argtypes, pg_sys::CURSOR_OPT_CUSTOM_PLAN as i32)
}

/// `prepare` for a statement whose plan its arrays' size cannot change (a function scan feeding
/// an insert, no join): planned once, not for each call.
pub fn prepare_generic(sql: &str, argtypes: &mut [pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    prepare_with(sql, argtypes, pg_sys::CURSOR_OPT_GENERIC_PLAN as i32)
}

fn prepare_with(sql: &str, argtypes: &mut [pg_sys::Oid], options: i32) -> pg_sys::SPIPlanPtr {
    // Names come from the catalog, which holds no NUL; a name that did would be refused here.
    let Ok(sql) = CString::new(sql) else { error::internal("generated SQL holds a NUL byte") };
    // SAFETY: called inside an SPI connection; errors in parse analysis raise ERROR.
    unsafe {
        let plan = pg_sys::SPI_prepare_cursor(sql.as_ptr(), argtypes.len() as i32, argtypes.as_mut_ptr(), options);
        if plan.is_null() {
            error::spi_failed("SPI_prepare", pg_sys::SPI_result);
        }
        let rc = pg_sys::SPI_keepplan(plan);
        if rc != 0 {
            pg_sys::SPI_freeplan(plan);
            error::spi_failed("SPI_keepplan", rc);
        }
        plan
    }
}

impl Plan {
    fn build(req: &Request<'_>) -> Plan {
        let catalog::Described { shape, metas, kept_oid: kept, tombstones, tombstone_table } = catalog::describe(req);
        // SAFETY: computing a hash, no lookup.
        let hash = unsafe { pg_sys::GetSysCacheHashValue(pg_sys::SysCacheIdentifier::PROCOID as i32, kept.into(), 0.into(), 0.into(), 0.into()) };
        KEPT_FUNCTION_HASH.with(|h| h.set(Some(hash)));
        let mut argtypes: Vec<pg_sys::Oid> = metas.iter().map(|m| m.typid).collect();
        // RETURNING cannot read xmax through a partitioned table, which tells inserted from
        // updated: there, insert-or-nothing then update.
        // SAFETY: plain syscache lookup.
        let partitioned = unsafe { pg_sys::get_rel_relkind(req.relid) } as u8 == b'p';
        // What is kept so far is freed if a later step raises an error.
        let mut building = Building::default();
        let write = match (req.op, partitioned) {
            // a delete's plan has no write of its own; its statements are the tombstone's
            (Op::Delete, _) => "SELECT".to_string(),
            (Op::Upsert, true) => shape.insert_sql(),
            (Op::Upsert, false) => shape.upsert_sql(),
        };
        let upsert = building.keep(prepare(&write, &mut argtypes));
        #[cfg(any(test, feature = "pg_test"))]
        if let Some(hook) = BUILD_HOOK.with(|h| h.get()) {
            hook(req.relid);
        }
        let update = (partitioned && req.op == Op::Upsert).then(|| building.keep(prepare(&shape.update_sql(), &mut argtypes)));
        let tomb = tombstones.map(|t| {
            let (claim, delete) = match req.op {
                Op::Upsert => (shape.claim_sql(), None),
                Op::Delete => (
                    shape.tombstone_sql(),
                    Some((
                        building.keep(prepare(&shape.delete_row_sql(), &mut argtypes)),
                        building.keep(prepare(&shape.delete_classify_sql(), &mut argtypes)),
                    )),
                ),
            };
            // prepared as the tombstone table's owner, who alone may use it
            let (claim, unclaim) = crate::tombstones::as_role(t.owner, || {
                (prepare(&claim, &mut argtypes), prepare(&shape.unclaim_sql(), &mut argtypes))
            });
            TombPlan {
                side: t.side,
                owner: t.owner,
                claim: building.keep(claim),
                unclaim: building.keep(unclaim),
                delete,
                batch: OnceCell::new(),
            }
        });
        // SAFETY: a child of CacheMemoryContext, deleted with the plan.
        let memory = unsafe {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::CacheMemoryContext,
                c"pg_safeupsert plan".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            )
        };
        building.memory = memory;
        let sent = metas
            .iter()
            .map(|m| {
                let (mut len, mut byval) = (0i16, false);
                // SAFETY: a plain syscache lookup on an existing type.
                unsafe { pg_sys::get_typlenbyval(m.typid, &mut len, &mut byval) };
                super::kept::SentAttr { attnum: m.attnum, len, byval }
            })
            .collect();
        let columns = metas
            .into_iter()
            .map(|meta| unsafe {
                // SAFETY: the type exists; FmgrInfo is allocated in the plan's context.
                let mut func = pg_sys::InvalidOid;
                let mut ioparam = pg_sys::InvalidOid;
                pg_sys::getTypeInputInfo(meta.typid, &mut func, &mut ioparam);
                let input = pg_sys::MemoryContextAllocZero(memory, size_of::<pg_sys::FmgrInfo>())
                    as *mut pg_sys::FmgrInfo;
                pg_sys::fmgr_info_cxt(func, input, memory);
                let direct = super::input::Direct::of(meta.typid, meta.typmod);
                InputColumn { meta, input, ioparam, direct }
            })
            .collect();
        building.done();
        Plan {
            relid: req.relid,
            tomb,
            tombstone_table,
            columns,
            sent,
            shape,
            upsert,
            update,
            classify: OnceCell::new(),
            batch: OnceCell::new(),
            memory,
            stale: Cell::new(false),
            used: Cell::new(0),
        }
    }
}

/// What a plan under construction owns: freed if the build fails half way, so that an error
/// (a type's input function missing, a statement PostgreSQL refuses) leaks no kept SPI plan.
struct Building {
    plans: Vec<pg_sys::SPIPlanPtr>,
    memory: pg_sys::MemoryContext,
}

impl Default for Building {
    fn default() -> Self {
        Building { plans: Vec::new(), memory: std::ptr::null_mut() }
    }
}

impl Building {
    fn keep(&mut self, plan: pg_sys::SPIPlanPtr) -> pg_sys::SPIPlanPtr {
        self.plans.push(plan);
        plan
    }

    /// The plan is built: what it owns now belongs to it.
    fn done(&mut self) {
        self.plans.clear();
        self.memory = std::ptr::null_mut();
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        // SAFETY: each plan was kept by SPI_keepplan and is owned by nothing else yet; the
        // context was made for this plan alone.
        unsafe {
            for &plan in &self.plans {
                pg_sys::SPI_freeplan(plan);
            }
            if !self.memory.is_null() {
                pg_sys::MemoryContextDelete(self.memory);
            }
        }
    }
}

impl BatchPlan {
    pub(super) fn new(
        upsert: Option<pg_sys::SPIPlanPtr>,
        argtypes: Vec<pg_sys::Oid>,
        elements: Vec<Element>,
        winners: Option<super::winners::Comparators>,
    ) -> BatchPlan {
        BatchPlan { upsert, classify: OnceCell::new(), argtypes, elements, winners }
    }
}

impl Plan {
    /// The statement reading why the stored row was kept, for when the write left no note.
    /// Called inside an SPI connection.
    pub fn classify(&self) -> pg_sys::SPIPlanPtr {
        *self.classify.get_or_init(|| {
            let mut argtypes: Vec<pg_sys::Oid> = self.columns.iter().map(|c| c.meta.typid).collect();
            prepare(&self.shape.classify_sql(), &mut argtypes)
        })
    }

    /// `classify` for a batch group's kept rows.
    pub fn batch_classify(&self, batch: &BatchPlan) -> pg_sys::SPIPlanPtr {
        *batch.classify.get_or_init(|| prepare_custom(&self.shape.batch_classify_sql(), &mut batch.argtypes.clone()))
    }

    /// The plan's own memory context, deleted with it.
    pub fn memory(&self) -> pg_sys::MemoryContext {
        self.memory
    }

    /// A plan of safe_delete's.
    pub fn is_delete(&self) -> bool {
        self.tomb.as_ref().is_some_and(|t| t.delete.is_some())
    }

    /// The batch statements on the tombstones.
    pub fn batch_tomb<'a>(&self, tomb: &'a TombPlan, batch: &BatchPlan) -> &'a BatchTomb {
        tomb.batch.get_or_init(|| {
            let mut argtypes = batch.argtypes.clone();
            let shape = &self.shape;
            let is_delete = tomb.delete.is_some();
            let (claim, unclaim, tomb_classify) = crate::tombstones::as_role(tomb.owner, || {
                let claim = if is_delete { shape.batch_tombstone_sql() } else { shape.batch_claim_sql() };
                (
                    prepare_custom(&claim, &mut argtypes),
                    prepare_custom(&shape.batch_unclaim_sql(), &mut argtypes),
                    is_delete.then(|| prepare_custom(&shape.batch_tombstone_classify_sql(), &mut argtypes)),
                )
            });
            let delete = tomb_classify.map(|c| {
                (c, prepare_custom(&shape.batch_delete_rows_sql(), &mut argtypes), prepare_custom(&shape.batch_delete_classify_sql(), &mut argtypes))
            });
            BatchTomb { claim, unclaim, delete }
        })
    }

    /// `schema.table`, for messages.
    pub fn table(&self) -> &str {
        &self.shape.table
    }

    pub fn is_key(&self, column: usize) -> bool {
        self.shape.key.iter().any(|k| k.index == column)
    }

    pub fn is_version(&self, column: usize) -> bool {
        self.shape.versions.iter().any(|v| v.index == column)
    }

    /// The row's key columns as a JSON object, for messages and the conflict log.
    pub fn key_json(&self, row: &dyn Row) -> Value {
        let pick = |i: usize| {
            let name = &self.columns[i].meta.name;
            (name.clone(), row.field(name))
        };
        Value::Object(self.shape.key.iter().map(|k| pick(k.index)).collect())
    }

    /// The row's version: its value, or an array of them for several version columns.
    pub fn version_json(&self, row: &dyn Row) -> Value {
        let mut values: Vec<Value> = self
            .shape
            .versions
            .iter()
            .map(|v| row.field(&self.columns[v.index].meta.name))
            .collect();
        if values.len() == 1 { values.remove(0) } else { Value::Array(values) }
    }
}

struct Cache {
    plans: HashMap<Vec<u8>, Rc<Plan>>,
}

#[cfg(any(test, feature = "pg_test"))]
thread_local! {
    /// Tests only: runs in the middle of a build, after the first SPI plan is kept, to show what
    /// an invalidation or an error arriving there does.
    pub static BUILD_HOOK: Cell<Option<fn(pg_sys::Oid)>> = const { Cell::new(None) };
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache { plans: HashMap::new() });
    /// Counts the plans served, for `Plan::used`.
    static CLOCK: Cell<u64> = const { Cell::new(0) };
    /// The last plan `get` served, with its key: held here too, so that a plan evicted from the
    /// cache (or never cached, see `BUILDING`) lives until the next plan is served.
    static LAST: RefCell<Option<(Vec<u8>, Rc<Plan>)>> = const { RefCell::new(None) };
    /// Set when an invalidation arrived while the cache was borrowed: treat everything as stale.
    static ALL_STALE: Cell<bool> = const { Cell::new(false) };
    /// The table whose plan is being built, and whether an invalidation for it (or for
    /// everything) arrived meanwhile: then the plan may describe the catalog before that
    /// change, and serves this call only.
    static BUILDING: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    static INVALIDATED_WHILE_BUILDING: Cell<bool> = const { Cell::new(false) };
    /// The syscache hash of `safe_upsert_kept`, whose qualified name every write statement holds.
    static KEPT_FUNCTION_HASH: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The cache key of a request: every input that changes the generated SQL, in bytes: the
/// table's OID, the operation and `on_tie`, then each name list, each name preceded by its
/// length, so that no name, however crafted, makes two requests share a key. One allocation
/// and no formatting, as the lookup runs on every call.
pub fn cache_key(req: &Request<'_>) -> Vec<u8> {
    let conflict_cols = req.conflict_cols.unwrap_or_default();
    let names = req.version_cols.len() + conflict_cols.len() + req.keys.len();
    let bytes = req.version_cols.iter().chain(conflict_cols).map(String::len).sum::<usize>()
        + req.keys.iter().map(|k| k.len()).sum::<usize>();
    let mut key = Vec::with_capacity(9 + 4 * names + bytes);
    key.extend(req.relid.to_u32().to_ne_bytes());
    key.push(req.op as u8);
    key.push(req.on_tie as u8);
    let mut names = |part: u8, names: &mut dyn Iterator<Item = &str>| {
        key.push(part);
        for name in names {
            key.extend((name.len() as u32).to_ne_bytes());
            key.extend(name.as_bytes());
        }
    };
    names(b'v', &mut req.version_cols.iter().map(String::as_str));
    match req.conflict_cols {
        Some(cols) => names(b'c', &mut cols.iter().map(String::as_str)),
        None => names(b'p', &mut std::iter::empty()),
    }
    names(b'k', &mut req.keys.iter().copied());
    key
}

/// The plan for `req`, from the cache or freshly built. The caller must already hold a lock on
/// the table, so that pending invalidations for it have been processed.
pub fn get(req: &Request<'_>) -> Rc<Plan> {
    let key = cache_key(req);
    if ALL_STALE.with(|s| s.replace(false)) {
        clear();
    }
    // The last plan served comes first: a session mostly repeats one call. Its key is compared
    // in full, and a stale plan is never served from here either.
    let now = CLOCK.with(|c| c.replace(c.get() + 1) + 1);
    let last = LAST.with(|l| match &*l.borrow() {
        Some((k, plan)) if *k == key && !plan.stale.get() => Some(plan.clone()),
        _ => None,
    });
    if let Some(plan) = last {
        plan.used.set(now);
        return plan;
    }
    let plan = lookup(req, key.clone());
    plan.used.set(now);
    let old = LAST.with(|l| l.replace(Some((key, plan.clone()))));
    drop(old); // freed outside the borrow
    plan
}

/// The cache's plan for `req`, or a fresh one.
fn lookup(req: &Request<'_>, key: Vec<u8>) -> Rc<Plan> {
    let found = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        match c.plans.get(&key) {
            Some(plan) if !plan.stale.get() => Some(Ok(plan.clone())),
            Some(_) => Some(Err(c.plans.remove(&key))),
            None => None,
        }
    });
    match found {
        Some(Ok(plan)) => return plan,
        Some(Err(old)) => drop(old), // freed outside the borrow
        None => {}
    }
    let plan = Rc::new(build_watched(req));
    if INVALIDATED_WHILE_BUILDING.with(|i| i.replace(false)) {
        // not cached, and stale for `LAST`: the next call builds again from the catalog as it
        // is then
        plan.stale.set(true);
        return plan;
    }
    let evicted = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let capacity = gucs::PLAN_CACHE_SIZE.get().max(1) as usize;
        let mut evicted = Vec::new();
        while c.plans.len() >= capacity {
            let oldest = c.plans.iter().min_by_key(|(_, p)| p.used.get()).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => evicted.extend(c.plans.remove(&k)),
                None => break,
            }
        }
        c.plans.insert(key, plan.clone());
        evicted
    });
    drop(evicted);
    plan
}

/// `Plan::build`, noting any invalidation of the table that arrives meanwhile.
fn build_watched(req: &Request<'_>) -> Plan {
    struct Watch(Option<pg_sys::Oid>);
    impl Drop for Watch {
        fn drop(&mut self) {
            BUILDING.with(|b| b.set(self.0)); // also when the build raises an error
        }
    }
    INVALIDATED_WHILE_BUILDING.with(|i| i.set(false));
    let _watch = Watch(BUILDING.with(|b| b.replace(Some(req.relid))));
    Plan::build(req)
}

/// Number of cached plans in this backend.
pub fn len() -> usize {
    CACHE.with(|c| c.borrow().plans.len())
}

fn clear() {
    let old = CACHE.with(|c| std::mem::take(&mut c.borrow_mut().plans));
    drop(old);
    let last = LAST.with(|l| l.take());
    drop(last);
}

pub(crate) fn mark_stale(relid: pg_sys::Oid) {
    if BUILDING.with(|b| b.get()).is_some_and(|b| relid == pg_sys::InvalidOid || relid == b) {
        INVALIDATED_WHILE_BUILDING.with(|i| i.set(true));
    }
    let hit = |plan: &Plan| relid == pg_sys::InvalidOid || plan.relid == relid || plan.tomb.as_ref().is_some_and(|t| t.side == relid);
    let marked = CACHE.with(|c| match c.try_borrow() {
        Ok(c) => {
            c.plans.values().filter(|plan| hit(plan)).for_each(|plan| plan.stale.set(true));
            true
        }
        Err(_) => false,
    }) && LAST.with(|l| match l.try_borrow() {
        Ok(last) => {
            last.iter().filter(|(_, plan)| hit(plan)).for_each(|(_, plan)| plan.stale.set(true));
            true
        }
        Err(_) => false,
    });
    if !marked {
        ALL_STALE.with(|s| s.set(true));
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    mark_stale(relid);
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_namespace_invalidation(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    // A renamed schema changes the qualified names baked into every statement.
    mark_stale(pg_sys::InvalidOid);
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_function_invalidation(_arg: pg_sys::Datum, _cache: i32, hash: u32) {
    // The extension was dropped and created again, maybe in another schema.
    if hash == 0 || KEPT_FUNCTION_HASH.with(|h| h.get()) == Some(hash) {
        mark_stale(pg_sys::InvalidOid);
    }
}

/// Called from _PG_init in every backend that loads the library.
pub fn register_invalidation_callbacks() {
    // SAFETY: registering callbacks is what _PG_init is for; they only touch our own state.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(on_namespace_invalidation),
            pg_sys::Datum::from(0),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            Some(on_function_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}

/// Tests only: whether this backend has a fresh upsert plan of `relid`, and whether it claims
/// keys on tombstones.
#[cfg(any(test, feature = "pg_test"))]
pub fn cached(relid: pg_sys::Oid) -> Option<bool> {
    CACHE.with(|c| {
        c.borrow()
            .plans
            .values()
            .find(|p| p.relid == relid && !p.stale.get() && !p.is_delete())
            .map(|p| p.tomb.is_some())
    })
}

/// Runs `f`, whose statements over a batch's rows reach the table by key, with hash and merge
/// joins off: planned for each call's arrays, such a statement would otherwise read a whole
/// table of moderate size to join a thousand keys, where a thousand index lookups cost a
/// fraction of it. Set as a function's `SET` clause sets: for the statements of `f` alone,
/// undone after it (or by the rollback of an error).
pub fn with_key_lookups<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: a new GUC nest level, popped below; set_config_option with GUC_ACTION_SAVE keeps
    // the previous values for AtEOXact_GUC to restore, as fmgr does for SET clauses.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for name in [c"enable_hashjoin", c"enable_mergejoin"] {
            pg_sys::set_config_option(
                name.as_ptr(),
                c"off".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        level
    };
    let r = f();
    // SAFETY: pops the level pushed above.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    r
}
