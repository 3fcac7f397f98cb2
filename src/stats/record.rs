//! The owned forms of what shared memory holds, their file encoding, and the trimming of long
//! texts. Pure, unit-tested with plain `#[test]`s.

use super::pending::{Counter, COUNTERS};
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
    /// the stored version is a tombstone's (a deleted key's), not a stored row's
    pub tombstone: bool,
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

const MAGIC: &[u8; 8] = b"PGSUPS03";

/// The kinds a logged conflict can have.
const KINDS: [u8; 4] = [Counter::Stale as u8, Counter::Tie as u8, Counter::UniqueViolations as u8, Counter::DeleteStale as u8];

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
            w.u64(c.tombstone as u64);
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
                tombstone: r.u64()? == 1,
                key: r.str()?,
                ..Default::default()
            };
            let has_stored = r.u64()? == 1;
            let stored = r.str()?;
            c.stored_version = has_stored.then_some(stored);
            c.incoming_version = r.str()?;
            c.incoming_row = r.str()?;
            // A well-formed file may still hold what no slot can: cut it to fit, and skip a
            // conflict whose id or kind this library never writes.
            c.fit();
            if c.id != 0 && c.id < s.next_id && KINDS.contains(&c.kind) {
                s.conflicts.push(c);
            }
        }
        s.tables.retain(|t| t.relid != 0);
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

/// The most bytes a logged conflict keeps of its key, of each version and of its row: the size
/// of the conflict log's slots in shared memory.
pub const KEY_BYTES: usize = 256;
pub const VERSION_BYTES: usize = 128;
pub const ROW_BYTES: usize = 1024;
/// The most bytes the row keeps of one value before the whole row is fitted.
pub const VALUE_BYTES: usize = 256;

/// What marks a cut value: the value's first characters, then this, then how much was left out.
pub const CUT_MARKER: &str = "…[cut ";
const CUT_END: &str = " bytes]";

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` itself if it fits in `max` bytes, else its longest prefix (on a character boundary)
/// that fits together with a marker saying how many bytes were left out. The result never
/// exceeds `max` bytes; below the marker's own size it is a bare prefix.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    // The count left out has at most as many digits as the whole length.
    let marker = CUT_MARKER.len() + CUT_END.len() + digits(s.len());
    if max < marker {
        return prefix(s, max).to_string();
    }
    let kept = prefix(s, max - marker);
    format!("{kept}{CUT_MARKER}{}{CUT_END}", s.len() - kept.len())
}

/// A JSON string's text for `s`.
fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The row as JSON text of at most `max` bytes: keys and long string values, and long nested
/// arrays and objects (as their JSON text), are cut to `per_value` bytes with a marker; if the
/// row is still too long, the longest values become bare markers until it fits, and if even
/// that is too long, the members that do not fit are left out and counted in a last member
/// `"…": "N more columns"`. Linear in the row's size: each value is printed once.
pub fn cut_row(row: &serde_json::Map<String, Value>, per_value: usize, max: usize) -> String {
    cut_members(row.iter().map(|(k, v)| (k.as_str(), cut_value(v, per_value))), per_value, max)
}

/// A member's value as `cut_row` shows it: as JSON text, a long string or nested array or
/// object cut to `per_value` bytes (and then a JSON string).
pub fn cut_value(v: &Value, per_value: usize) -> String {
    match v {
        Value::String(s) if s.len() > per_value => json_string(&cut(s, per_value)),
        Value::Array(_) | Value::Object(_) => {
            let text = v.to_string();
            if text.len() > per_value { json_string(&cut(&text, per_value)) } else { text }
        }
        other => other.to_string(),
    }
}

/// `cut_row` of the members given as (key, value from `cut_value`), in key order.
pub fn cut_members<'a>(members: impl Iterator<Item = (&'a str, String)>, per_value: usize, max: usize) -> String {
    let mut members: Vec<(String, String)> = members.map(|(k, v)| (json_string(&cut(k, per_value)), v)).collect();
    let size = |m: &(String, String)| m.0.len() + 1 + m.1.len();
    // {} plus members and the commas between them
    let mut total = 2 + members.iter().map(size).sum::<usize>() + members.len().saturating_sub(1);
    if total > max {
        let mut longest: Vec<usize> = (0..members.len()).collect();
        longest.sort_by_key(|&i| std::cmp::Reverse(members[i].1.len()));
        for i in longest {
            if total <= max {
                break;
            }
            let bare = json_string(&format!("{CUT_MARKER}{}{CUT_END}", members[i].1.len()));
            if bare.len() >= members[i].1.len() {
                break; // sorted: no later value is longer than its marker either
            }
            total -= members[i].1.len() - bare.len();
            members[i].1 = bare;
        }
    }
    // The members that fit, in key order; if some do not, a last member says how many.
    let closing = |left_out: usize| format!("\"…\":\"{left_out} more columns\"");
    // room kept for the closing brace, and for the closing member when not all can fit
    let reserve = if total <= max { 1 } else { 1 + closing(members.len()).len() + 1 };
    let mut out = String::with_capacity(total.min(max));
    out.push('{');
    let mut kept = 0;
    for m in &members {
        let sep = usize::from(kept > 0);
        if out.len() + sep + size(m) + reserve > max {
            break;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&m.0);
        out.push(':');
        out.push_str(&m.1);
        kept += 1;
    }
    if kept < members.len() && out.len() + reserve <= max {
        if kept > 0 {
            out.push(',');
        }
        out.push_str(&closing(members.len() - kept));
    }
    out.push('}');
    out
}

impl LogRecord {
    /// Cuts every text to what a log slot holds, so that writing the slot at commit copies
    /// without checks that could fail.
    pub fn fit(&mut self) {
        fn fit(text: &mut String, max: usize) {
            if text.len() > max {
                *text = cut(text, max);
            }
        }
        fit(&mut self.key, KEY_BYTES);
        if let Some(v) = self.stored_version.as_mut() {
            fit(v, VERSION_BYTES);
        }
        fit(&mut self.incoming_version, VERSION_BYTES);
        fit(&mut self.incoming_row, ROW_BYTES);
    }

    /// Whether every text fits its slot (what `fit` leaves).
    #[cfg(test)]
    pub fn fits(&self) -> bool {
        self.key.len() <= KEY_BYTES
            && self.stored_version.as_ref().is_none_or(|v| v.len() <= VERSION_BYTES)
            && self.incoming_version.len() <= VERSION_BYTES
            && self.incoming_row.len() <= ROW_BYTES
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
            tables: vec![TableRecord { dbid: 5, relid: 16384, counts: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], last_conflict_at: 9, stats_reset: 8, last_used: 11 }],
            conflicts: vec![LogRecord {
                id: 41,
                occurred_at: 12,
                dbid: 5,
                relid: 16384,
                userid: 10,
                pid: 999,
                kind: Counter::DeleteStale as u8,
                tombstone: true,
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
    fn a_file_with_oversized_or_unknown_entries_loads_what_fits() {
        let long = |n| "x".repeat(n);
        let s = Snapshot {
            next_id: 10,
            tables: vec![TableRecord { relid: 0, ..Default::default() }, TableRecord { relid: 7, ..Default::default() }],
            conflicts: vec![
                LogRecord { id: 3, kind: Counter::Stale as u8, key: long(20_000), stored_version: Some(long(200_000)), incoming_version: long(200_000), incoming_row: long(5000), ..Default::default() },
                LogRecord { id: 4, kind: 99, ..Default::default() },
                LogRecord { id: 11, kind: Counter::Tie as u8, ..Default::default() },
            ],
            ..Default::default()
        };
        let loaded = Snapshot::decode(&s.encode()).unwrap();
        assert_eq!(loaded.tables.iter().map(|t| t.relid).collect::<Vec<_>>(), [7]);
        assert_eq!(loaded.conflicts.len(), 1);
        assert!(loaded.conflicts[0].fits());
        assert!(loaded.conflicts[0].key.ends_with(" bytes]"));
    }

    #[test]
    fn a_truncated_or_lying_length_is_refused() {
        let mut bytes = Snapshot { next_id: 1, ..Default::default() }.encode();
        // one table claimed, none there
        let n = bytes.len();
        bytes[n - 16..n - 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Snapshot::decode(&bytes), None);
        let mut bytes = Snapshot { next_id: 5, conflicts: vec![LogRecord { id: 1, kind: 2, key: "k".into(), ..Default::default() }], ..Default::default() }.encode();
        // the key's length, far beyond the file: after the header's five numbers and the
        // conflict's eight
        let at = MAGIC.len() + 8 * 5 + 8 * 8;
        bytes[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(Snapshot::decode(&bytes), None);
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
    fn cut_never_exceeds_its_limit_whatever_the_lengths() {
        for len in [1usize, 9, 10, 99, 100, 999, 1000, 20_000, 200_000, 2_000_000] {
            let s = "a".repeat(len);
            for max in [0usize, 1, 5, 16, 17, 18, 20, 128, 256, 1024] {
                let c = cut(&s, max);
                assert!(c.len() <= max || c == s, "len {len} max {max}: {}", c.len());
                if len > max && max >= 24 {
                    let left_out: usize = c.rsplit(CUT_MARKER).next().unwrap().trim_end_matches(" bytes]").parse().unwrap();
                    assert_eq!(left_out + c.find(CUT_MARKER).unwrap(), len, "{c}");
                }
            }
        }
    }

    #[test]
    fn fit_cuts_every_text_to_its_slot() {
        let mut c = LogRecord {
            key: "k".repeat(20_000),
            stored_version: Some("v".repeat(200_000)),
            incoming_version: "é".repeat(100_000),
            incoming_row: "r".repeat(1536),
            ..Default::default()
        };
        assert!(!c.fits());
        c.fit();
        assert!(c.fits(), "{} {} {}", c.key.len(), c.incoming_version.len(), c.incoming_row.len());
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

    #[test]
    fn cut_row_of_a_wide_row_is_valid_json_that_says_what_it_left_out() {
        let row: serde_json::Map<String, Value> =
            (0..1598).map(|i| (format!("column_{i:04}"), Value::String("y".repeat(i % 300)))).collect();
        let text = cut_row(&row, VALUE_BYTES, ROW_BYTES);
        assert!(text.len() <= ROW_BYTES, "{}", text.len());
        let v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        let left_out: usize = v["…"].as_str().unwrap().trim_end_matches(" more columns").parse().unwrap();
        assert_eq!(v.len() - 1 + left_out, 1598);
        // long keys are cut too, and a row of long values only still fits
        let row = json!({"k".repeat(5000): "v".repeat(5000), "x": [[[["deep"]]]]});
        let text = cut_row(row.as_object().unwrap(), VALUE_BYTES, ROW_BYTES);
        assert!(text.len() <= ROW_BYTES);
        serde_json::from_str::<Value>(&text).unwrap();
    }
}
