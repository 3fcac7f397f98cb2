//! Turns a JSON value into the text that a column type's input function reads, following
//! `jsonb_populate_record`: json and jsonb columns take the value's JSON text (a JSON string
//! stays a string), other columns a scalar's text, an array column a JSON array as an array
//! literal, anything else a container's JSON text. Pure, unit-tested with plain `#[test]`s.

use serde_json::Value;

/// How a column takes JSON values, by its type (or its domain's base type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Json,
    Array,
    Other,
}

/// The input text for `value`, or `None` for JSON null.
pub fn input_text(value: &Value, kind: ColumnKind) -> Option<String> {
    match (value, kind) {
        (Value::Null, _) => None,
        (other, ColumnKind::Json) => Some(other.to_string()),
        (Value::String(s), _) => Some(s.clone()),
        (Value::Array(items), ColumnKind::Array) => Some(array_literal(items)),
        (other, _) => Some(other.to_string()),
    }
}

/// `[1, "a b", null, [2]]` becomes `{"1","a b",NULL,{"2"}}`: every element quoted, so that
/// commas, braces, quotes and the word NULL inside strings survive.
fn array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&array_literal(inner)),
            Value::String(s) => quote_element(&mut out, s),
            other => quote_element(&mut out, &other.to_string()),
        }
    }
    out.push('}');
    out
}

fn quote_element(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_give_their_text() {
        assert_eq!(input_text(&json!("2024-09-24"), ColumnKind::Other).as_deref(), Some("2024-09-24"));
        assert_eq!(input_text(&json!(true), ColumnKind::Other).as_deref(), Some("true"));
        assert_eq!(input_text(&json!(null), ColumnKind::Array), None);
        assert_eq!(input_text(&json!(null), ColumnKind::Json), None);
    }

    #[test]
    fn json_columns_keep_json_types() {
        assert_eq!(input_text(&json!("123"), ColumnKind::Json).as_deref(), Some(r#""123""#));
        assert_eq!(input_text(&json!(123), ColumnKind::Json).as_deref(), Some("123"));
        assert_eq!(input_text(&json!({"a": [1]}), ColumnKind::Json).as_deref(), Some(r#"{"a":[1]}"#));
    }

    #[test]
    fn numbers_keep_every_digit() {
        let v: Value = serde_json::from_str("123456789012345678901234567890.000000001").unwrap();
        assert_eq!(input_text(&v, ColumnKind::Other).as_deref(), Some("123456789012345678901234567890.000000001"));
    }

    #[test]
    fn arrays_for_array_columns_become_literals() {
        let v = json!([1, "a, \"b\"\\", null, "NULL", [2, 3], {"k": 1}]);
        assert_eq!(
            input_text(&v, ColumnKind::Array).as_deref(),
            Some(r#"{"1","a, \"b\"\\",NULL,"NULL",{"2","3"},"{\"k\":1}"}"#)
        );
    }

    #[test]
    fn containers_for_other_columns_give_json_text() {
        assert_eq!(input_text(&json!([1, 2]), ColumnKind::Other).as_deref(), Some("[1,2]"));
        assert_eq!(input_text(&json!({"a": [1]}), ColumnKind::Other).as_deref(), Some(r#"{"a":[1]}"#));
    }
}
