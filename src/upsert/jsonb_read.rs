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
    // SAFETY: the caller's contract makes `datum` a jsonb, detoasted here.
    unsafe { container_value(&mut (*detoast(datum)).root, MAX_DEPTH) }
}

/// The jsonb datum, detoasted (in the current memory context, if it was toasted).
///
/// # Safety
/// `datum` is a non-NULL jsonb datum.
pub unsafe fn detoast(datum: pg_sys::Datum) -> *mut pg_sys::Jsonb {
    // SAFETY: the caller's contract.
    unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb }
}

/// A field of a jsonb object, read in place: its key and value point into the jsonb.
pub struct Field {
    pub key: &'static str,
    /// a scalar, or `jbvBinary` for a nested container
    pub value: pg_sys::JsonbValue,
}

/// The fields of a container (of a detoasted jsonb) that is an object with at least one field,
/// sorted by key as a `serde_json` map sorts them (bytewise), with every key and top-level
/// string checked to be UTF-8 as `to_value` checks them; None for anything else. The `'static`
/// keys and values point into the jsonb: they must not outlive it.
///
/// # Safety
/// `container` is in a detoasted jsonb that lives as long as the fields are used.
pub unsafe fn object_fields(container: *mut pg_sys::JsonbContainer) -> Option<Vec<Field>> {
    // SAFETY: the caller's contract; the iterator walks the top level only (nested containers
    // come back as jbvBinary), and each JsonbValue's union is read as its token or type says.
    unsafe {
        let header = (*container).header;
        let count = (header & pg_sys::JB_CMASK) as usize;
        if header & pg_sys::JB_FOBJECT == 0 || count == 0 {
            return None;
        }
        let mut fields = Vec::with_capacity(count);
        let mut key: &'static str = "";
        each_top_level(container, |token, v| match token {
            pg_sys::JsonbIteratorToken::WJB_KEY => key = text(v),
            pg_sys::JsonbIteratorToken::WJB_VALUE => {
                if v.type_ == pg_sys::jbvType::jbvString {
                    text(v);
                }
                fields.push(Field { key, value: *v });
            }
            _ => {}
        });
        fields.sort_unstable_by(|a, b| a.key.cmp(b.key));
        Some(fields)
    }
}

/// Walks a container's top level, nested containers coming back as `jbvBinary`: each token
/// up to `WJB_DONE`, with its value.
///
/// # Safety
/// `container` is in a live, detoasted jsonb.
unsafe fn each_top_level(container: *mut pg_sys::JsonbContainer, mut visit: impl FnMut(pg_sys::JsonbIteratorToken::Type, &pg_sys::JsonbValue)) {
    // SAFETY: the caller's contract; the iterator frees itself as it reaches the end.
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(container);
        let mut v = pg_sys::JsonbValue::default();
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut v, true) {
                pg_sys::JsonbIteratorToken::WJB_DONE => break,
                token => visit(token, &v),
            }
        }
    }
}

/// A key's or string's text, in place; not UTF-8 is the documented error.
unsafe fn text(v: &pg_sys::JsonbValue) -> &'static str {
    // SAFETY: a jbvString's `val` points to `len` bytes inside the jsonb, which the caller keeps.
    unsafe {
        let s = v.val.string;
        let bytes = std::slice::from_raw_parts(s.val as *const u8, s.len.max(0) as usize);
        std::str::from_utf8(bytes).unwrap_or_else(|_| error::not_utf8())
    }
}

/// The elements of a detoasted jsonb that holds an array (not a scalar), each a scalar or
/// `jbvBinary` for a nested container, pointing into the jsonb; None for anything else.
///
/// # Safety
/// `jsonb` is a detoasted jsonb that lives as long as the elements are used.
pub unsafe fn array_elements(jsonb: *mut pg_sys::Jsonb) -> Option<Vec<pg_sys::JsonbValue>> {
    // SAFETY: the caller's contract; the iterator walks the top level only, as in
    // `object_fields`.
    unsafe {
        let header = (*jsonb).root.header;
        if header & pg_sys::JB_FARRAY == 0 || header & pg_sys::JB_FSCALAR != 0 {
            return None;
        }
        let mut elements = Vec::with_capacity((header & pg_sys::JB_CMASK) as usize);
        each_top_level(&mut (*jsonb).root, |token, v| {
            if token == pg_sys::JsonbIteratorToken::WJB_ELEM {
                elements.push(*v);
            }
        });
        Some(elements)
    }
}

/// The value of a field read by `object_fields` or an element read by `array_elements`,
/// nested at most `max` levels deep.
///
/// # Safety
/// The jsonb the value points into is alive.
pub unsafe fn field_value(v: &pg_sys::JsonbValue, max: usize) -> Result<Value, TooDeep> {
    // SAFETY: the caller's contract; a jbvBinary holds a container inside the jsonb.
    unsafe {
        if v.type_ == pg_sys::jbvType::jbvBinary {
            container_value(v.val.binary.data, max)
        } else {
            Ok(scalar(v))
        }
    }
}

/// The value of a jsonb container, nested at most `max` levels deep.
///
/// # Safety
/// `root` points to a container inside a live, detoasted jsonb.
pub unsafe fn container_value(root: *mut pg_sys::JsonbContainer, max: usize) -> Result<Value, TooDeep> {
    // SAFETY: the caller's contract; the iterator walks the container, and each JsonbValue's
    // union is read only as the variant its token or type says.
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(root);
        let mut v = pg_sys::JsonbValue::default();
        // Open containers, innermost last; an object's pending key waits beside it.
        let mut open: Vec<(Value, Option<String>)> = Vec::new();
        let mut raw_scalar = false;
        loop {
            pgrx::pg_sys::check_for_interrupts!();
            let token = pg_sys::JsonbIteratorNext(&mut it, &mut v, false);
            let done = match token {
                pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY | pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT if open.len() >= max => {
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
                let owned = std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned();
                // freed at once: a batch reads a million of them
                pg_sys::pfree(text.cast());
                // numeric_out writes plain digits, which JSON reads; anything else (NaN, Infinity,
                // which jsonb never holds) stays text for the column's input function to judge.
                match owned.parse::<Number>() {
                    Ok(n) => Value::Number(n),
                    Err(_) => Value::String(owned),
                }
            }
            _ => Value::Null,
        }
    }
}

/// A scalar's JSON text, as `scalar`'s value prints it, without making the value; None for a
/// nested container or a string longer than `max_string` bytes (which the log cuts).
///
/// # Safety
/// As for `field_value`.
pub unsafe fn scalar_json(v: &pg_sys::JsonbValue, max_string: usize) -> Option<String> {
    // SAFETY: the caller's contract; the union is read as the variant `type_` names.
    unsafe {
        match v.type_ {
            pg_sys::jbvType::jbvString => {
                let s = text(v);
                (s.len() <= max_string).then(|| serde_json::to_string(s).ok()).flatten()
            }
            pg_sys::jbvType::jbvBool => Some(v.val.boolean.to_string()),
            pg_sys::jbvType::jbvNull => Some("null".into()),
            pg_sys::jbvType::jbvNumeric => Some(scalar(v).to_string()),
            _ => None,
        }
    }
}

/// A string's or key's text, copied.
unsafe fn string(v: &pg_sys::JsonbValue) -> String {
    // SAFETY: the caller's contract: a jbvString inside a live jsonb.
    unsafe { text(v) }.to_owned()
}
