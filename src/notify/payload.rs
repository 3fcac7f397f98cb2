//! NOTIFY payloads: JSON, always under PostgreSQL's 8000-byte limit. The minimal payload names
//! only the database, table, kind, count and log ids, since LISTEN needs no privilege; the full
//! one adds key and versions for a single conflict. Pure, unit-tested with plain `#[test]`s.

use serde_json::{json, Map, Value};

/// NOTIFY refuses payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7999;

/// What the full payload may add about a single conflict, as JSON texts from the log.
pub struct Detail<'a> {
    pub key: &'a str,
    pub stored_version: Option<&'a str>,
    pub incoming_version: &'a str,
}

pub struct Notice<'a> {
    pub database: &'a str,
    pub table: &'a str,
    pub kind: &'a str,
    /// the call that met the conflict: "upsert" or "delete"
    pub op: &'a str,
    pub count: u64,
    /// ids in safe_upsert_conflicts; None when the log is off
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    pub detail: Option<Detail<'a>>,
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl Notice<'_> {
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        m.insert("database".into(), json!(self.database));
        m.insert("table".into(), json!(self.table));
        m.insert("kind".into(), json!(self.kind));
        m.insert("op".into(), json!(self.op));
        m.insert("count".into(), json!(self.count));
        m.insert("first_id".into(), json!(self.first_id));
        m.insert("last_id".into(), json!(self.last_id));
        let minimal = Value::Object(m.clone()).to_string();
        let Some(d) = &self.detail else { return minimal };
        m.insert("key".into(), parsed(d.key));
        m.insert("stored_version".into(), d.stored_version.map_or(Value::Null, parsed));
        m.insert("incoming_version".into(), parsed(d.incoming_version));
        let full = Value::Object(m).to_string();
        if full.len() <= MAX_PAYLOAD { full } else { minimal }
    }
}

/// Tells listeners that events were dropped, so that they resync from the views.
pub fn overflow(database: &str, dropped: u64) -> String {
    json!({"database": database, "kind": "overflow", "dropped": dropped}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(detail: Option<Detail<'_>>) -> String {
        Notice { database: "app", table: "public.t", kind: "stale", op: "delete", count: 1, first_id: Some(7), last_id: Some(7), detail }.to_json()
    }

    #[test]
    fn minimal_carries_no_row_data() {
        assert_eq!(
            notice(None),
            r#"{"count":1,"database":"app","first_id":7,"kind":"stale","last_id":7,"op":"delete","table":"public.t"}"#
        );
    }

    #[test]
    fn full_adds_key_and_versions() {
        let d = Detail { key: r#"{"id":2}"#, stored_version: Some("5"), incoming_version: "4" };
        let v: Value = serde_json::from_str(&notice(Some(d))).unwrap();
        assert_eq!(v["key"], json!({"id": 2}));
        assert_eq!(v["stored_version"], json!(5));
        assert_eq!(v["incoming_version"], json!(4));
    }

    #[test]
    fn full_falls_back_to_minimal_when_too_long() {
        let long = format!("\"{}\"", "x".repeat(9000));
        let d = Detail { key: &long, stored_version: None, incoming_version: "1" };
        let text = notice(Some(d));
        assert!(text.len() <= MAX_PAYLOAD);
        assert!(!text.contains("key"));
    }

    #[test]
    fn overflow_says_how_many() {
        assert_eq!(overflow("app", 12), r#"{"database":"app","dropped":12,"kind":"overflow"}"#);
    }
}
