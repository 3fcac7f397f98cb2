//! Reads a jsonb argument straight from its binary form into a `serde_json::Value`, instead of
//! printing it as text and parsing that text again. Numbers keep every digit: they come as
//! `numeric_out` writes them, as `jsonb_out` would.

use pgrx::pg_sys;
use serde_json::{Map, Number, Value};

use crate::error;

/// How deep a row's JSON may nest. Values are handled by recursive code (serde's printing, cloning
/// and dropping) after they are read, whose stack use grows with the depth: this bound keeps it
/// far below any stack PostgreSQL runs with, whatever `max_stack_depth` allows the parser.
pub const MAX_DEPTH: usize = 2000;

/// A document nested deeper than `MAX_DEPTH`, with the outermost object key it was under.
pub struct TooDeep {
    pub key: Option<String>,
}

/// The value of a (possibly toasted) jsonb datum.
///
/// # Safety
/// `datum` is a non-NULL jsonb datum.
pub unsafe fn to_value(datum: pg_sys::Datum) -> Result<Value, TooDeep> {
    // SAFETY: the caller's contract makes `datum` a jsonb, detoasted here; the iterator walks
    // it, and each JsonbValue's union is read only as the variant its token or type says.
    unsafe {
        let jsonb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
        let mut it = pg_sys::JsonbIteratorInit(&mut (*jsonb).root);
        let mut v = pg_sys::JsonbValue::default();
        // Open containers, innermost last; an object's pending key waits beside it.
        let mut open: Vec<(Value, Option<String>)> = Vec::new();
        let mut raw_scalar = false;
        loop {
            pgrx::pg_sys::check_for_interrupts!();
            let token = pg_sys::JsonbIteratorNext(&mut it, &mut v, false);
            let done = match token {
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY | pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT if open.len() >= MAX_DEPTH => {
                    let key = open.iter().find_map(|(c, key)| if c.is_object() { key.clone() } else { None });
                    return Err(TooDeep { key });
                }
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY => {
                    raw_scalar = v.val.array.rawScalar;
                    open.push((Value::Array(Vec::with_capacity(v.val.array.nElems.max(0) as usize)), None));
                    None
                }
                pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT => {
                    open.push((Value::Object(Map::new()), None));
                    None
                }
                pg_sys::JsonbIteratorToken::WJB_KEY => {
                    if let Some((_, key)) = open.last_mut() {
                        *key = Some(string(&v));
                    }
                    None
                }
                pg_sys::JsonbIteratorToken::WJB_VALUE | pg_sys::JsonbIteratorToken::WJB_ELEM => Some(scalar(&v)),
                pg_sys::JsonbIteratorToken::WJB_END_ARRAY | pg_sys::JsonbIteratorToken::WJB_END_OBJECT => {
                    let Some((mut closed, _)) = open.pop() else { error::internal("malformed jsonb: a container closed twice") };
                    if raw_scalar && open.is_empty() {
                        if let Value::Array(items) = &mut closed {
                            closed = items.pop().unwrap_or(Value::Null);
                        }
                    }
                    Some(closed)
                }
                _ => return Ok(Value::Null), // WJB_DONE: only after the outermost container, never reached
            };
            if let Some(value) = done {
                match open.last_mut() {
                    None => return Ok(value),
                    Some((Value::Array(items), _)) => items.push(value),
                    Some((Value::Object(map), key)) => match key.take() {
                        Some(key) => {
                            map.insert(key, value);
                        }
                        None => error::internal("malformed jsonb: an object's value without its key"),
                    },
                    Some(_) => error::internal("malformed jsonb: a scalar holds a value"),
                }
            }
        }
    }
}

/// A scalar's value.
unsafe fn scalar(v: &pg_sys::JsonbValue) -> Value {
    // SAFETY: the union is read as the variant `type_` names; numeric_out returns a
    // NUL-terminated string.
    unsafe {
        match v.type_ {
            pg_sys::jbvType::jbvString => Value::String(string(v)),
            pg_sys::jbvType::jbvBool => Value::Bool(v.val.boolean),
            pg_sys::jbvType::jbvNumeric => {
                let text = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_NUMERIC_OUT), pg_sys::Datum::from(v.val.numeric));
                let text = std::ffi::CStr::from_ptr(text).to_string_lossy();
                // numeric_out writes plain digits, which JSON reads; anything else (NaN, Infinity,
                // which jsonb never holds) stays text for the column's input function to judge.
                match text.parse::<Number>() {
                    Ok(n) => Value::Number(n),
                    Err(_) => Value::String(text.into_owned()),
                }
            }
            _ => Value::Null,
        }
    }
}

/// A string's or key's text.
unsafe fn string(v: &pg_sys::JsonbValue) -> String {
    // SAFETY: a jbvString's `val` points to `len` bytes inside the jsonb, which outlives this.
    unsafe {
        let s = v.val.string;
        let bytes = std::slice::from_raw_parts(s.val as *const u8, s.len.max(0) as usize);
        String::from_utf8(bytes.to_vec()).unwrap_or_else(|_| error::not_utf8())
    }
}
