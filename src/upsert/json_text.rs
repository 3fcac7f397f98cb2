//! Turns a JSON value into the text that a column type's input function reads, following
//! `jsonb_populate_record`: scalars give their text, a JSON array given to an array column
//! becomes an array literal, any other array or object gives its JSON text (which json, jsonb
//! and text columns take as is). Pure, so it is unit-tested with plain `#[test]`s.

use serde_json::Value;

/// The input text for `value`, or `None` for JSON null. `is_array_column` says whether the
/// column's type (or its domain's base type) is an array.
pub fn input_text(value: &Value, is_array_column: bool) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if is_array_column => Some(array_literal(items)),
        other => Some(other.to_string()),
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
        assert_eq!(input_text(&json!("2024-09-24"), false).as_deref(), Some("2024-09-24"));
        assert_eq!(input_text(&json!(true), false).as_deref(), Some("true"));
        assert_eq!(input_text(&json!(null), true), None);
    }

    #[test]
    fn numbers_keep_every_digit() {
        let v: Value = serde_json::from_str("123456789012345678901234567890.000000001").unwrap();
        assert_eq!(input_text(&v, false).as_deref(), Some("123456789012345678901234567890.000000001"));
    }

    #[test]
    fn arrays_for_array_columns_become_literals() {
        let v = json!([1, "a, \"b\"\\", null, "NULL", [2, 3], {"k": 1}]);
        assert_eq!(
            input_text(&v, true).as_deref(),
            Some(r#"{"1","a, \"b\"\\",NULL,"NULL",{"2","3"},"{\"k\":1}"}"#)
        );
    }

    #[test]
    fn containers_for_other_columns_give_json_text() {
        assert_eq!(input_text(&json!([1, 2]), false).as_deref(), Some("[1,2]"));
        assert_eq!(input_text(&json!({"a": [1]}), false).as_deref(), Some(r#"{"a":[1]}"#));
    }
}
