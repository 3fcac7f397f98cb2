//! The comparisons that choose a batch's winners (`dedupe.rs`), made as the table makes them:
//! keys by the conflict index's own operator families and collations, as its uniqueness check
//! compares them; versions by their type's default btree ordering under the column's
//! collation, as the write's `<` compares them. And what the losers are told of their winner:
//! whether its values are the same (binary images, as `*=` says) and its version as
//! `to_jsonb` writes it.

use std::cmp::Ordering;
use std::ffi::CStr;

use pgrx::pg_sys;

use super::batch::Converted;
use super::plan_cache::Plan;

/// access/nbtree.h: a btree operator family's comparison support procedure.
const BTORDER_PROC: i16 = 1;

/// A column's btree comparison procedure, living in the plan's memory context.
struct Comparator {
    /// position in the sent columns
    column: usize,
    proc: *mut pg_sys::FmgrInfo,
    collation: pg_sys::Oid,
    /// the procedure is one of the integer comparisons, made here without a call
    integer: Option<Integer>,
}

/// The by-value integer types whose btree comparison procedure (`btint2cmp`, `btint4cmp`,
/// `btint8cmp`, which ignore collations) is the plain comparison of the values.
#[derive(Clone, Copy)]
enum Integer {
    Int2,
    Int4,
    Int8,
}

impl Comparator {
    fn new(column: usize, proc: *mut pg_sys::FmgrInfo, collation: pg_sys::Oid) -> Comparator {
        // SAFETY: proc was filled in by fmgr_info_cxt.
        let integer = match unsafe { (*proc).fn_oid }.to_u32() {
            pg_sys::F_BTINT2CMP => Some(Integer::Int2),
            pg_sys::F_BTINT4CMP => Some(Integer::Int4),
            pg_sys::F_BTINT8CMP => Some(Integer::Int8),
            _ => None,
        };
        Comparator { column, proc, collation, integer }
    }

    fn compare(&self, a: pg_sys::Datum, b: pg_sys::Datum) -> Ordering {
        // A Datum holds a by-value integer sign-extended (Int16/32/64GetDatum); reading it back
        // at its width is DatumGetInt16/32/64.
        match self.integer {
            Some(Integer::Int2) => (a.value() as i16).cmp(&(b.value() as i16)),
            Some(Integer::Int4) => (a.value() as i32).cmp(&(b.value() as i32)),
            Some(Integer::Int8) => (a.value() as i64).cmp(&(b.value() as i64)),
            None => {
                // SAFETY: proc is a btree comparison procedure of the values' type, which
                // takes two non-NULL values (key and version columns are never NULL) and
                // returns an int4.
                let r = unsafe { pg_sys::FunctionCall2Coll(self.proc, self.collation, a, b) };
                (r.value() as i32).cmp(&0)
            }
        }
    }
}

/// The comparisons of one plan's batches.
pub(super) struct Comparators {
    keys: Vec<Comparator>,
    versions: Vec<Comparator>,
}

impl Comparators {
    /// None when a key or version column travels as text (`Column::text_cast`), whose values
    /// are then not of the column's type, or lacks a comparison procedure: such plans choose
    /// their winners in SQL.
    pub(super) fn new(plan: &Plan, memory: pg_sys::MemoryContext) -> Option<Comparators> {
        let typed = |i: usize| plan.shape.columns[i].text_cast.is_none();
        if !plan.shape.key.iter().all(|k| typed(k.index)) || !plan.shape.versions.iter().all(|v| typed(v.index)) {
            return None;
        }
        let keys = plan.shape.key.iter().map(|k| key_comparator(plan, k.index, memory)).collect::<Option<_>>()?;
        let versions =
            plan.shape.versions.iter().map(|v| version_comparator(plan, v.index, memory)).collect::<Option<_>>()?;
        Some(Comparators { keys, versions })
    }

    /// Rows `a` and `b` (indexes into `rows`) by key.
    pub(super) fn keys(&self, rows: &Converted<'_>, a: usize, b: usize) -> Ordering {
        pgrx::pg_sys::check_for_interrupts!();
        compare_all(&self.keys, |c| (rows.value(c.column, a), rows.value(c.column, b)))
    }

    /// Row `a`'s key against a stored key, given in key column order.
    pub(super) fn key_against(&self, rows: &Converted<'_>, a: usize, stored: &[pg_sys::Datum]) -> Ordering {
        let mut stored = stored.iter();
        compare_all(&self.keys, |c| (rows.value(c.column, a), *stored.next().unwrap_or(&pg_sys::Datum::from(0))))
    }

    /// Rows `a` and `b` by version, left to right over the version columns.
    pub(super) fn versions(&self, rows: &Converted<'_>, a: usize, b: usize) -> Ordering {
        compare_all(&self.versions, |c| (rows.value(c.column, a), rows.value(c.column, b)))
    }
}

fn compare_all(comparators: &[Comparator], mut values: impl FnMut(&Comparator) -> (pg_sys::Datum, pg_sys::Datum)) -> Ordering {
    for c in comparators {
        let (a, b) = values(c);
        match c.compare(a, b) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// The conflict index's comparison for the key column at sent position `column`.
fn key_comparator(plan: &Plan, column: usize, memory: pg_sys::MemoryContext) -> Option<Comparator> {
    let attnum = plan.columns[column].meta.attnum;
    // SAFETY: the caller holds a lock on the table, and the index is its conflict index (the
    // write locks it too); its relcache entry is read before it is closed, the lock kept.
    unsafe {
        let index = pg_sys::index_open(plan.tombstone_table.index, pg_sys::AccessShareLock as i32);
        let rd_index = &*(*index).rd_index;
        let n = rd_index.indnkeyatts.max(0) as usize;
        let at = rd_index.indkey.values.as_slice(n).iter().position(|&a| a == attnum);
        let found = at.map(|i| (*(*index).rd_opfamily.add(i), *(*index).rd_opcintype.add(i), *(*index).rd_indcollation.add(i)));
        pg_sys::index_close(index, pg_sys::NoLock as i32);
        let (family, intype, collation) = found?;
        let proc = pg_sys::get_opfamily_proc(family, intype, intype, BTORDER_PROC);
        Some(Comparator::new(column, function(proc, memory)?, collation))
    }
}

/// The version column's type's default btree comparison, under the column's collation.
fn version_comparator(plan: &Plan, column: usize, memory: pg_sys::MemoryContext) -> Option<Comparator> {
    let meta = &plan.columns[column].meta;
    // SAFETY: the type exists (it is a column's type); the entry lives in the type cache. The
    // column exists: the caller holds a lock on the table.
    unsafe {
        let entry = &*pg_sys::lookup_type_cache(meta.typid, pg_sys::TYPECACHE_CMP_PROC as i32);
        let (mut typid, mut typmod, mut collation) = (pg_sys::InvalidOid, 0, pg_sys::InvalidOid);
        pg_sys::get_atttypetypmodcoll(plan.relid, meta.attnum, &mut typid, &mut typmod, &mut collation);
        Some(Comparator::new(column, function(entry.cmp_proc, memory)?, collation))
    }
}

/// The function's FmgrInfo, allocated in `memory`; None for no function.
fn function(oid: pg_sys::Oid, memory: pg_sys::MemoryContext) -> Option<*mut pg_sys::FmgrInfo> {
    if oid == pg_sys::InvalidOid {
        return None;
    }
    // SAFETY: memory is the plan's context, which outlives every use of the FmgrInfo.
    unsafe {
        let info = pg_sys::MemoryContextAllocZero(memory, size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info_cxt(oid, info, memory);
        Some(info)
    }
}

/// Whether rows `a` and `b` have the same binary image in every sent column, NULLs equal: what
/// the write's `*=` of the stored and incoming rows says. Columns that travel as text compare
/// as values of their type when their texts differ.
pub(super) fn same_values(plan: &Plan, rows: &Converted<'_>, a: usize, b: usize) -> bool {
    (0..plan.columns.len()).all(|c| match (rows.is_null(c, a), rows.is_null(c, b)) {
        (true, true) => true,
        (false, false) => {
            let sent = &plan.sent[c];
            let (x, y) = (rows.value(c, a), rows.value(c, b));
            // SAFETY: both values are of the column's type (or text, for a column that travels
            // as text), made by the conversion.
            unsafe {
                if plan.shape.columns[c].text_cast.is_none() {
                    return super::kept::datum_image_eq(x, y, sent.byval, sent.len as i32);
                }
                if super::kept::datum_image_eq(x, y, false, -1) {
                    return true;
                }
                let typed = |d: pg_sys::Datum| super::input::input_text_datum(plan, c, d);
                super::kept::datum_image_eq(typed(x), typed(y), sent.byval, sent.len as i32)
            }
        }
        _ => false,
    })
}

/// Row `row`'s version as JSON text, as the statements' `to_jsonb(version)` (or
/// `jsonb_build_array` of several) writes it.
pub(super) fn version_json(plan: &Plan, rows: &Converted<'_>, row: usize) -> String {
    let parts: Vec<String> = plan
        .shape
        .versions
        .iter()
        .map(|v| to_jsonb_text(plan.columns[v.index].meta.typid, rows.value(v.index, row)))
        .collect();
    if parts.len() == 1 { parts.into_iter().next().unwrap_or_default() } else { format!("[{}]", parts.join(", ")) }
}

/// `to_jsonb(value)::text` for a non-NULL value of type `typid`: the function itself, told
/// its argument's type through a call expression as the executor would tell it.
fn to_jsonb_text(typid: pg_sys::Oid, value: pg_sys::Datum) -> String {
    // SAFETY: to_jsonb takes any type, learning it from fn_expr; the expression, FmgrInfo and
    // result live in the current memory context until the call ends.
    unsafe {
        let arg = pg_sys::makeNullConst(typid, -1, pg_sys::InvalidOid);
        let args = pg_sys::lappend(std::ptr::null_mut(), arg.cast());
        let to_jsonb = pg_sys::Oid::from(pg_sys::F_TO_JSONB);
        let expr = pg_sys::makeFuncExpr(
            to_jsonb,
            pg_sys::JSONBOID,
            args,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        let mut info: pg_sys::FmgrInfo = std::mem::zeroed();
        pg_sys::fmgr_info(to_jsonb, &mut info);
        info.fn_expr = expr.cast();
        let jsonb = pg_sys::FunctionCall1Coll(&mut info, pg_sys::InvalidOid, value);
        let jsonb = pg_sys::pg_detoast_datum(jsonb.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
        let text = pg_sys::JsonbToCString(std::ptr::null_mut(), &mut (*jsonb).root, 64);
        CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}
