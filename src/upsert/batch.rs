//! `safe_upsert_many`: a JSON array of rows in a few statements. Rows are grouped by their set
//! of columns; each group is written by one set-based statement, using the group's cached plan,
//! which also tells why it kept stored rows (`kept.rs`).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use pgrx::prelude::*;

use super::catalog;
use super::input::{self, NULL};
use super::plan_cache::{self, prepare_custom, prepare_generic, BatchPlan, Element, Plan};
use super::single::{cell, kept_outcome, run, unseen_stored_row, upsert_row};
use super::statement::OnTie;
use super::tracking::{self, CallState};
use super::outcome::Outcome;
use super::row::JsonbRow;
use super::scratch::Scratch;
use super::winners::{self, Comparators};
use super::{as_object, dedupe, kept, open_table, Args};
use crate::error::{self, fields};
use crate::tombstones::as_role;

/// (1-based position, outcome as the OID of its SQL enum label) per row, in input order.
pub fn call(args: Args, rows: pg_sys::Datum) -> Vec<(i32, pg_sys::Oid)> {
    let state = CallState::default();
    tracking::guard(args.relid, &state, None, || {
        open_table(args.relid);
        state.opened.set(true);
        let on_tie = args.on_tie();
        Spi::connect(|_| {
            let rows = object_rows(args.relid, rows);
            let mut outcomes = Vec::with_capacity(rows.len());
            for positions in groups(&rows) {
                let keys = rows[positions[0]].keys();
                let plan = at_row(positions[0], || plan_cache::get(&args.request(keys, on_tie)));
                *state.plan.borrow_mut() = Some(plan.clone());
                let mut written: Vec<_> = if plan.update.is_some() {
                    // Partitioned: no set-based statement can tell inserts from updates there.
                    positions.iter().map(|&p| (p, at_row(p, || upsert_row(&plan, on_tie, &rows[p])))).map(|(p, (o, v))| (p, o, v)).collect()
                } else {
                    upsert_group(&plan, on_tie, &rows, &positions)
                };
                written.sort_unstable_by_key(|(pos, _, _)| *pos); // conflicts are logged in input order
                for (pos, outcome, stored_version) in written {
                    pgrx::pg_sys::check_for_interrupts!();
                    tracking::record(&plan, outcome, &rows[pos], stored_version);
                    outcomes.push((pos as i32 + 1, outcome.to_oid()));
                }
            }
            outcomes.sort_unstable_by_key(|(ord, _)| *ord);
            outcomes
        })
    })
}

/// The rows of a batch's jsonb argument, read in place: an array of objects with fields, or
/// the error that names the row at fault or says that it is no array.
pub(super) fn object_rows(relid: pg_sys::Oid, rows: pg_sys::Datum) -> Vec<JsonbRow> {
    // SAFETY: a non-NULL jsonb argument, alive until the call ends, which the rows do not outlive.
    let Some(rows) = (unsafe { JsonbRow::read_array(rows, relid) }) else {
        error::rows_not_array(&catalog::table_name(relid))
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            row.unwrap_or_else(|value| {
                at_row(i, || as_object(relid, &value));
                error::internal("a batch row read as no object was one")
            })
        })
        .collect()
}

/// Positions of the rows, grouped by the set of columns they carry, groups in order of first
/// appearance.
pub(super) fn groups(rows: &[JsonbRow]) -> Vec<Vec<usize>> {
    let mut index: HashMap<Vec<&str>, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (pos, row) in rows.iter().enumerate() {
        pgrx::pg_sys::check_for_interrupts!();
        let keys = row.keys();
        let g = *index.entry(keys).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(pos);
    }
    groups
}

/// Runs `f` for the row at `pos` (0-based), noting the row's position for any error it raises,
/// so that a failed batch says which row is at fault (`error::fields`).
pub(super) fn at_row<R>(pos: usize, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            fields::set_row(pos);
            std::panic::resume_unwind(payload)
        }
    }
}

pub(super) fn batch_plan(plan: &Plan) -> &BatchPlan {
    plan.batch.get_or_init(|| {
        let mut elements = Vec::with_capacity(plan.columns.len());
        let mut argtypes = vec![pg_sys::INT4ARRAYOID];
        for (col, sql) in plan.columns.iter().zip(&plan.shape.columns) {
            // A type without an array type (an array, a domain over one) travels as text,
            // cast back by the statement.
            let typid = if sql.text_cast.is_some() { pg_sys::TEXTOID } else { col.meta.typid };
            let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
            // SAFETY: plain syscache lookups on an existing type.
            let array = unsafe {
                pg_sys::get_typlenbyvalalign(typid, &mut len, &mut byval, &mut align);
                pg_sys::get_array_type(typid)
            };
            if array == pg_sys::InvalidOid {
                error::internal(&format!("type {} has no array type", typid.to_u32()));
            }
            elements.push(Element { typid, len, byval, align });
            argtypes.push(array);
        }
        let is_delete = plan.tomb.as_ref().is_some_and(|t| t.delete.is_some());
        let winners = if is_delete { None } else { Comparators::new(plan, plan.memory()) };
        let upsert = (!is_delete).then(|| {
            if winners.is_some() {
                prepare_generic(&plan.shape.batch_winners_sql(), &mut argtypes)
            } else {
                prepare_custom(&plan.shape.batch_upsert_sql(), &mut argtypes)
            }
        });
        BatchPlan::new(upsert, argtypes, elements, winners)
    })
}

/// A group's rows converted once: per sent column, the values and null flags, in the order of
/// `positions`.
pub(super) struct Converted<'a> {
    pub(super) positions: &'a [usize],
    columns: Vec<(Vec<pg_sys::Datum>, Vec<bool>)>,
}

pub(super) fn convert_group<'a>(plan: &Plan, rows: &[JsonbRow], positions: &'a [usize]) -> Converted<'a> {
    let n = positions.len();
    let mut columns = vec![(Vec::with_capacity(n), Vec::with_capacity(n)); plan.columns.len()];
    let as_text: Vec<bool> = plan.shape.columns.iter().map(|c| c.text_cast.is_some()).collect();
    for &pos in positions {
        let (values, nulls) = at_row(pos, || rows[pos].values_as(plan, &as_text));
        for (c, (v, null)) in columns.iter_mut().zip(values.into_iter().zip(nulls)) {
            c.0.push(v);
            c.1.push(null == NULL);
        }
    }
    Converted { positions, columns }
}

impl Converted<'_> {
    /// Column `column`'s value in row `row` (an index into `positions`).
    pub(super) fn value(&self, column: usize, row: usize) -> pg_sys::Datum {
        self.columns[column].0[row]
    }

    pub(super) fn is_null(&self, column: usize, row: usize) -> bool {
        self.columns[column].1[row]
    }
}

/// The batch statements' parameters for the converted rows at `picks` (indexes into
/// `positions`): their 1-based positions, then one array per sent column.
pub(super) fn params(batch: &BatchPlan, rows: &Converted<'_>, picks: &[usize]) -> Vec<pg_sys::Datum> {
    let ords = picks.iter().map(|&i| pg_sys::Datum::from(rows.positions[i] as i32 + 1)).collect();
    let int4 = Element { typid: pg_sys::INT4OID, len: 4, byval: true, align: b'i' as std::ffi::c_char };
    let mut params = vec![array(ords, vec![false; picks.len()], &int4)];
    for ((values, nulls), element) in rows.columns.iter().zip(&batch.elements) {
        let values = picks.iter().map(|&i| values[i]).collect();
        let nulls = picks.iter().map(|&i| nulls[i]).collect();
        params.push(array(values, nulls, element));
    }
    params
}

pub(super) fn array(mut values: Vec<pg_sys::Datum>, mut nulls: Vec<bool>, element: &Element) -> pg_sys::Datum {
    let Element { typid, len, byval, align } = *element;
    let mut dims = [values.len() as i32];
    let mut lbs = [1];
    // SAFETY: values and nulls have dims[0] entries of the element type described by `element`.
    unsafe {
        let a = pg_sys::construct_md_array(
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            typid,
            len as i32,
            byval,
            align,
        );
        pg_sys::Datum::from(a)
    }
}

/// Writes one group; returns (position, outcome, stored or winning version) per row.
fn upsert_group(
    plan: &Plan,
    on_tie: OnTie,
    rows: &[JsonbRow],
    positions: &[usize],
) -> Vec<(usize, Outcome, Option<String>)> {
    let batch = batch_plan(plan);
    let converted = convert_group(plan, rows, positions);
    let mut results = Vec::with_capacity(positions.len());
    let all: Vec<usize> = (0..positions.len()).collect();
    let mut picks = all.clone();
    let mut params = params(batch, &converted, &all);
    let not_null = vec![input::NOT_NULL; params.len()];
    let tomb = plan.tomb.as_ref().map(|tomb| (tomb, plan.batch_tomb(tomb, batch)));
    if let Some((tomb, statements)) = tomb {
        // The keys' claims first, as single calls take them; rows whose key was deleted at
        // their version or later are stale, and not written.
        let n = as_role(tomb.owner, || run(statements.claim, &mut params, &not_null));
        let mut refused = Vec::with_capacity(n as usize);
        // SAFETY: the claim returned n rows of (int, text).
        unsafe {
            for r in 0..n as usize {
                let pos = position(r, rows.len());
                refused.push(pos);
                results.push((pos, Outcome::StaleByTombstone, cell::<String>(r, 2)));
            }
        }
        if !refused.is_empty() {
            refused.sort_unstable();
            picks = all.iter().copied().filter(|&i| refused.binary_search(&positions[i]).is_err()).collect();
            if picks.is_empty() {
                return results;
            }
            params = self::params(batch, &converted, &picks);
        }
    }
    let results = match &batch.winners {
        Some(comparators) => write_winners(plan, on_tie, rows, &converted, batch, comparators, &picks, results),
        None => write_group(plan, on_tie, rows, &converted, batch, &mut params, &not_null, results),
    };
    if let Some((tomb, statements)) = tomb {
        // the same rows as the write
        plan_cache::with_key_lookups(|| as_role(tomb.owner, || run(statements.unclaim, &mut params, &not_null)));
    }
    results
}

/// The set-based write of a group's rows at `picks` (indexes into `converted`), one winner per
/// key chosen here by `comparators`, adding every row's outcome to `results`. Rows that lose
/// to their key's winner are compared with it here, before anything is written.
#[allow(clippy::too_many_arguments)]
fn write_winners(
    plan: &Plan,
    on_tie: OnTie,
    rows: &[JsonbRow],
    converted: &Converted<'_>,
    batch: &BatchPlan,
    comparators: &Comparators,
    picks: &[usize],
    mut results: Vec<(usize, Outcome, Option<String>)>,
) -> Vec<(usize, Outcome, Option<String>)> {
    let picked = dedupe::pick(
        picks.len(),
        &mut |a, b| comparators.keys(converted, picks[a], picks[b]),
        &mut |a, b| comparators.versions(converted, picks[a], picks[b]),
        on_tie == OnTie::Apply,
    );
    let mut losers = picked.losers;
    losers.sort_unstable(); // in input order, as a tie error under on_tie = error names the first
    // what comparing and printing a loser's winner allocates goes at once (Rust values come out)
    let scratch = Scratch::new();
    for (loser, winner) in losers {
        pgrx::pg_sys::check_for_interrupts!();
        let (l, w) = (picks[loser], picks[winner]);
        let pos = converted.positions[l];
        let same_version = comparators.versions(converted, l, w) == std::cmp::Ordering::Equal;
        let same_values = scratch.run(|| winners::same_values(plan, converted, l, w));
        let outcome =
            at_row(pos, || kept_outcome(plan, on_tie, &rows[pos], Some(same_version), Some(same_values), on_tie == OnTie::Apply));
        let version = matches!(outcome, Outcome::Stale | Outcome::Tie).then(|| scratch.run(|| winners::version_json(plan, converted, w)));
        results.push((pos, outcome, version));
    }

    let winners: Vec<usize> = picked.winners.iter().map(|&w| picks[w]).collect();
    let mut params = params(batch, converted, &winners);
    let not_null = vec![input::NOT_NULL; params.len()];
    let Some(upsert) = batch.upsert else { error::internal("a delete's plan has no batch write") };
    let (n, notes) = kept::collect(&plan.sent, || run(upsert, &mut params, &not_null));
    // Returned rows come in the order written, which is the winners' order: each is matched to
    // its winner by key, the next one first. A row whose key a BEFORE trigger changed matches
    // none and is left out, its winner then counting as kept.
    let keys = plan.shape.key.len();
    let mut written: Vec<Option<bool>> = vec![None; winners.len()];
    let mut next = 0;
    for r in 0..n as usize {
        // SAFETY: the write returned n rows of (the key columns, bool).
        let (stored, inserted) = unsafe {
            let table = pg_sys::SPI_tuptable;
            let tuple = *(*table).vals.add(r);
            let mut isnull = false;
            let stored: Vec<pg_sys::Datum> =
                (1..=keys as i32).map(|c| pg_sys::SPI_getbinval(tuple, (*table).tupdesc, c, &mut isnull)).collect();
            (stored, cell::<bool>(r, keys as i32 + 1) == Some(true))
        };
        let at = |w: usize| comparators.key_against(converted, winners[w], &stored);
        let found = if next < winners.len() && at(next) == std::cmp::Ordering::Equal {
            Some(next)
        } else {
            // winners are sorted by key: search them all
            winners.binary_search_by(|&w| comparators.key_against(converted, w, &stored)).ok()
        };
        if let Some(w) = found {
            written[w] = Some(inserted);
            next = w + 1;
        }
    }
    let mut skipped = Vec::new();
    for (w, done) in written.into_iter().enumerate() {
        let pos = converted.positions[winners[w]];
        match done {
            Some(true) => results.push((pos, Outcome::Inserted, None)),
            Some(false) => results.push((pos, Outcome::Updated, None)),
            None => skipped.push(pos),
        }
    }
    kept_winners(plan, on_tie, rows, converted, skipped, notes, results)
}

/// The outcomes of the winners at input positions `skipped` (in the order written), whose
/// stored rows the write kept, from the notes it left or, when they do not match one for one,
/// from a second statement.
fn kept_winners(
    plan: &Plan,
    on_tie: OnTie,
    rows: &[JsonbRow],
    converted: &Converted<'_>,
    skipped: Vec<usize>,
    notes: Vec<kept::Kept>,
    mut results: Vec<(usize, Outcome, Option<String>)>,
) -> Vec<(usize, Outcome, Option<String>)> {
    if skipped.is_empty() {
        return results;
    }
    if notes.len() == skipped.len() {
        for (pos, note) in skipped.into_iter().zip(notes) {
            let outcome = at_row(pos, || kept_outcome(plan, on_tie, &rows[pos], note.same_version, note.same_values, false));
            results.push((pos, outcome, note.stored_version));
        }
        return results;
    }
    if notes.is_empty() {
        // None kept by the versions, which would have left notes: BEFORE triggers skipped them.
        results.extend(skipped.into_iter().map(|pos| (pos, Outcome::SkippedByTrigger, None)));
        return results;
    }
    results.extend(classify_group(plan, on_tie, rows, converted, skipped));
    results
}

/// The set-based write of a group's rows given in `params`, adding their outcomes to `results`.
#[allow(clippy::too_many_arguments)]
fn write_group(
    plan: &Plan,
    on_tie: OnTie,
    rows: &[JsonbRow],
    converted: &Converted<'_>,
    batch: &BatchPlan,
    params: &mut [pg_sys::Datum],
    not_null: &[std::ffi::c_char],
    mut results: Vec<(usize, Outcome, Option<String>)>,
) -> Vec<(usize, Outcome, Option<String>)> {
    // winners whose stored row was kept: (place of their key in key order, position)
    let mut skipped = Vec::new();
    let Some(upsert) = batch.upsert else { error::internal("a delete's plan has no batch write") };
    let (_, notes) = kept::collect(&plan.sent, || run(upsert, params, not_null));
    // SAFETY: the batch statement returned SPI_processed rows of (int, bool, bool, bool, bool,
    // text, bigint).
    unsafe {
        for r in 0..pg_sys::SPI_processed as usize {
            let pos = position(r, rows.len());
            let winner = cell::<bool>(r, 2) == Some(true);
            let outcome = if winner {
                match cell::<bool>(r, 3) {
                    Some(true) => Outcome::Inserted,
                    Some(false) => Outcome::Updated,
                    None => {
                        skipped.push((cell::<i64>(r, 7).unwrap_or(0), pos));
                        continue;
                    }
                }
            } else {
                // Compared with the row that won its key in this batch.
                at_row(pos, || kept_outcome(plan, on_tie, &rows[pos], cell::<bool>(r, 4), cell::<bool>(r, 5), on_tie == OnTie::Apply))
            };
            let version = matches!(outcome, Outcome::Stale | Outcome::Tie).then(|| cell::<String>(r, 6)).flatten();
            results.push((pos, outcome, version));
        }
    }
    // The write kept them in key order, noting why for each.
    skipped.sort_unstable();
    let skipped = skipped.into_iter().map(|(_, pos)| pos).collect();
    kept_winners(plan, on_tie, rows, converted, skipped, notes, results)
}

/// The 0-based input position in column 1 of result row `r`, checked against the batch's size.
///
/// # Safety
/// The last SPI statement returned at least `r + 1` rows whose first column is an int.
pub(super) unsafe fn position(r: usize, rows: usize) -> usize {
    // SAFETY: the caller's contract.
    match unsafe { cell::<i32>(r, 1) } {
        Some(p) if p >= 1 && (p as usize) <= rows => p as usize - 1,
        _ => error::internal("a batch statement returned a row position out of range"),
    }
}

/// Why the stored rows of the skipped winners at `skipped` were kept, read by a second statement:
/// the fallback when the write's notes do not match them one for one.
fn classify_group(
    plan: &Plan,
    on_tie: OnTie,
    rows: &[JsonbRow],
    converted: &Converted<'_>,
    mut skipped: Vec<usize>,
) -> Vec<(usize, Outcome, Option<String>)> {
    let batch = batch_plan(plan);
    skipped.sort_unstable();
    // positions are ascending within a group, so each skipped row's index is found by search
    let picks: Vec<usize> = skipped
        .iter()
        .map(|p| converted.positions.binary_search(p).unwrap_or_else(|_| error::internal("a kept row is not of its group")))
        .collect();
    let mut params = self::params(batch, converted, &picks);
    let not_null = vec![input::NOT_NULL; params.len()];
    let mut results = Vec::with_capacity(skipped.len());
    let mut found = vec![false; skipped.len()];
    let n = run(plan.batch_classify(batch), &mut params, &not_null);
    // SAFETY: classify returned n rows of (int, bool, bool, text, bool).
    unsafe {
        for r in 0..n as usize {
            let pos = position(r, rows.len());
            if cell::<bool>(r, 5) == Some(true) {
                // The versions let the row through, yet it was not written: a trigger said no.
                results.push((pos, Outcome::SkippedByTrigger, None));
            } else {
                let outcome = at_row(pos, || kept_outcome(plan, on_tie, &rows[pos], cell::<bool>(r, 2), cell::<bool>(r, 3), false));
                results.push((pos, outcome, cell::<String>(r, 4)));
            }
            if let Ok(i) = skipped.binary_search(&pos) {
                found[i] = true;
            }
        }
    }
    for (&pos, _) in skipped.iter().zip(found).filter(|(_, f)| !f) {
        results.push((pos, unseen_stored_row(plan), None));
    }
    results
}
