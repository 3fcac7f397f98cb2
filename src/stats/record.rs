//! The owned forms of what shared memory holds, their file encoding, and the trimming of long
//! texts. Pure, unit-tested with plain `#[test]`s.

use super::pending::COUNTERS;
use serde_json::Value;

/// One table's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableRecord {
    pub dbid: u32,
    pub relid: u32,
    pub counts: [u64; COUNTERS],
    /// microseconds since 2000-01-01 (TimestampTz); 0 when there was none
    pub last_conflict_at: i64,
    pub stats_reset: i64,
    pub last_used: u64,
}

/// One row of the conflict log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRecord {
    pub id: u64,
    pub occurred_at: i64,
    pub dbid: u32,
    pub relid: u32,
    pub userid: u32,
    pub pid: i32,
    pub kind: u8,
    pub key: String,
    pub stored_version: Option<String>,
    pub incoming_version: String,
    pub incoming_row: String,
}

/// Everything saved across a clean restart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub next_id: u64,
    pub evicted: u64,
    pub stats_reset: i64,
    pub tables: Vec<TableRecord>,
    pub conflicts: Vec<LogRecord>,
}

const MAGIC: &[u8; 8] = b"PGSUPS01";

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(MAGIC);
        w.u64(self.next_id);
        w.u64(self.evicted);
        w.i64(self.stats_reset);
        w.u64(self.tables.len() as u64);
        for t in &self.tables {
            w.u64(t.dbid as u64);
            w.u64(t.relid as u64);
            t.counts.iter().for_each(|&c| w.u64(c));
            w.i64(t.last_conflict_at);
            w.i64(t.stats_reset);
            w.u64(t.last_used);
        }
        w.u64(self.conflicts.len() as u64);
        for c in &self.conflicts {
            w.u64(c.id);
            w.i64(c.occurred_at);
            w.u64(c.dbid as u64);
            w.u64(c.relid as u64);
            w.u64(c.userid as u64);
            w.i64(c.pid as i64);
            w.u64(c.kind as u64);
            w.str(&c.key);
            w.u64(c.stored_version.is_some() as u64);
            w.str(c.stored_version.as_deref().unwrap_or(""));
            w.str(&c.incoming_version);
            w.str(&c.incoming_row);
        }
        w.0
    }

    /// `None` for a file of another format or a truncated one: it is then ignored.
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let mut s = Snapshot { next_id: r.u64()?, evicted: r.u64()?, stats_reset: r.i64()?, ..Default::default() };
        for _ in 0..r.u64()? {
            let mut t = TableRecord { dbid: r.u64()? as u32, relid: r.u64()? as u32, ..Default::default() };
            for c in t.counts.iter_mut() {
                *c = r.u64()?;
            }
            t.last_conflict_at = r.i64()?;
            t.stats_reset = r.i64()?;
            t.last_used = r.u64()?;
            s.tables.push(t);
        }
        for _ in 0..r.u64()? {
            let mut c = LogRecord {
                id: r.u64()?,
                occurred_at: r.i64()?,
                dbid: r.u64()? as u32,
                relid: r.u64()? as u32,
                userid: r.u64()? as u32,
                pid: r.i64()? as i32,
                kind: r.u64()? as u8,
                key: r.str()?,
                ..Default::default()
            };
            let has_stored = r.u64()? == 1;
            let stored = r.str()?;
            c.stored_version = has_stored.then_some(stored);
            c.incoming_version = r.str()?;
            c.incoming_row = r.str()?;
            s.conflicts.push(c);
        }
        r.0.is_empty().then_some(s)
    }
}

struct Writer(Vec<u8>);
impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// What marks a cut value: the value's first characters, then this, then how much was left out.
pub const CUT_MARKER: &str = "…[cut ";

/// `s` itself if it fits in `max` bytes, else its longest prefix (on a character boundary)
/// that fits together with a marker saying how many bytes were left out.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let room = max.saturating_sub(CUT_MARKER.len() + 12);
    let mut end = room.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARKER}{} bytes]", &s[..end], s.len() - end)
}

/// The row as JSON text of at most `max` bytes: long string values, and long nested arrays and
/// objects (as their JSON text), are cut to `per_value` bytes with a marker; if the row is still
/// too long, the longest values are cut further until it fits.
pub fn cut_row(row: &serde_json::Map<String, Value>, per_value: usize, max: usize) -> String {
    let mut row: Vec<(String, Value)> = row
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if s.len() > per_value => Value::String(cut(s, per_value)),
                Value::Array(_) | Value::Object(_) => {
                    let text = v.to_string();
                    if text.len() > per_value { Value::String(cut(&text, per_value)) } else { v.clone() }
                }
                other => other.clone(),
            };
            (cut(k, per_value), v)
        })
        .collect();
    loop {
        let text = Value::Object(row.iter().cloned().collect()).to_string();
        if text.len() <= max {
            return text;
        }
        // Cut the longest remaining value down to a bare marker, and try again.
        let longest = row
            .iter_mut()
            .filter(|(_, v)| v.to_string().len() > CUT_MARKER.len() + 16)
            .max_by_key(|(_, v)| v.to_string().len());
        match longest {
            Some((_, v)) => *v = Value::String(cut(&v.to_string(), 0)),
            None => return cut(&text, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_round_trips() {
        let s = Snapshot {
            next_id: 42,
            evicted: 3,
            stats_reset: 77,
            tables: vec![TableRecord { dbid: 5, relid: 16384, counts: [1, 2, 3, 4, 5, 6, 7], last_conflict_at: 9, stats_reset: 8, last_used: 11 }],
            conflicts: vec![LogRecord {
                id: 41,
                occurred_at: 12,
                dbid: 5,
                relid: 16384,
                userid: 10,
                pid: 999,
                kind: 2,
                key: r#"{"id":1}"#.into(),
                stored_version: None,
                incoming_version: "3".into(),
                incoming_row: "{…}".into(),
            }],
        };
        assert_eq!(Snapshot::decode(&s.encode()), Some(s.clone()));
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Snapshot::decode(b"something else"), None);
    }

    #[test]
    fn cut_keeps_short_text_and_marks_long_text() {
        assert_eq!(cut("short", 100), "short");
        let long = "é".repeat(100);
        let c = cut(&long, 60);
        assert!(c.len() <= 60, "{c}");
        assert!(c.contains("…[cut ") && c.ends_with(" bytes]"), "{c}");
    }

    #[test]
    fn cut_row_marks_long_values_and_fits() {
        let row = json!({"id": 1, "body": "x".repeat(5000), "tags": (0..500).collect::<Vec<_>>()});
        let text = cut_row(row.as_object().unwrap(), 100, 400);
        assert!(text.len() <= 400, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], 1);
        assert!(v["body"].as_str().unwrap().contains(CUT_MARKER));
        assert!(v["tags"].as_str().unwrap().contains(CUT_MARKER));
        let small = json!({"id": 1, "v": "a"});
        assert_eq!(cut_row(small.as_object().unwrap(), 100, 400), r#"{"id":1,"v":"a"}"#);
    }
}
