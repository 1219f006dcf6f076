//! The same suite on SQLite and on a throwaway PostgreSQL cluster, then
//! writer tests (batching, refusal) and a kill -9 durability test.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::*;

/// A database both a store and a tamperer can open.
trait Backend {
    /// A new connection to this backend's database.
    fn open(&self) -> Box<dyn AuditStore>;
    /// A connection whose writes fail, as on a full disk or a database that
    /// went read-only.
    fn open_failing(&self) -> Box<dyn AuditStore>;
    /// Runs SQL directly, as someone editing the database would.
    fn exec(&self, sql: &str);
    /// A literal for `bytes` in this dialect.
    fn blob(&self, bytes: &[u8]) -> String;
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        Sqlite { _dir: dir, path }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn AuditStore> {
        open(&format!("sqlite:{}", self.path.display())).unwrap()
    }
    fn open_failing(&self) -> Box<dyn AuditStore> {
        let mut s = SqliteStore::open(&self.path).unwrap();
        s.connection()
            .pragma_update(None, "query_only", true)
            .unwrap();
        Box::new(s)
    }
    fn exec(&self, sql: &str) {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
    fn blob(&self, bytes: &[u8]) -> String {
        format!("X'{}'", hex(bytes))
    }
}

struct Pg {
    url: String,
}

impl Pg {
    fn new() -> Pg {
        Pg {
            url: test_pg::fresh_db(),
        }
    }
}

impl Backend for Pg {
    fn open(&self) -> Box<dyn AuditStore> {
        open(&self.url).unwrap()
    }
    fn open_failing(&self) -> Box<dyn AuditStore> {
        let mut s = PgStore::connect(&self.url).unwrap();
        s.client()
            .batch_execute("SET default_transaction_read_only = on")
            .unwrap();
        Box::new(s)
    }
    fn exec(&self, sql: &str) {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .unwrap();
    }
    fn blob(&self, bytes: &[u8]) -> String {
        format!("'\\x{}'::bytea", hex(bytes))
    }
}

const T0: u64 = 1_700_000_000_000;

/// A realistic entry, varied by `i`; `reason` is unique (`n=<i>`).
fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        at_ms: T0 + i * 1000,
        node: "34020000002000000001".into(),
        kind: AuditKind::ALL[(i % 6) as usize],
        subject: if i % 2 == 0 {
            "node:34020100002000000001".into()
        } else {
            "dept:police".into()
        },
        on_behalf_of: (i % 3 == 0).then(|| "dept:traffic".into()),
        object: format!("340200000013200000{:02}", i % 4),
        action: "play".into(),
        outcome: if i % 5 == 0 { "deny" } else { "allow" }.into(),
        rule: (i % 2 == 0).then(|| format!("p, dept:police, 3402*, play #{i}")),
        reason: format!("n={i}"),
        session: Some(format!("call-{i}@34020000002000000001")),
        duration_ms: (i % 6 == 2).then_some(i * 10),
        bytes: (i % 6 == 2).then_some(i * 1_000_000),
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<AuditEntry> {
    range.map(entry).collect()
}

fn all_records(s: &mut dyn AuditStore) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    loop {
        let page = s
            .query(&AuditQuery {
                after_seq: out.last().map_or(0, |r: &AuditRecord| r.seq),
                limit: 7,
                ..AuditQuery::default()
            })
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn append_query_paging(b: &dyn Backend) {
    let mut s = b.open();
    assert_eq!(s.head().unwrap(), Head::default());
    assert_eq!(s.append(&[]).unwrap(), Head::default());
    let h1 = s.append(&entries(0..10)).unwrap();
    assert_eq!(h1.seq, 10);
    let h2 = s.append(&entries(10..25)).unwrap();
    assert_eq!(h2.seq, 25);
    assert_eq!(s.head().unwrap(), h2);

    let all = all_records(&mut *s);
    assert_eq!(all.len(), 25);
    let mut prev = Hash::ZERO;
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.entry, entry(i as u64));
        assert_eq!(r.prev_hash, prev);
        assert!(r.hash_matches());
        prev = r.hash;
    }
    assert_eq!(all[9].hash, h1.hash);
    assert_eq!(prev, h2.hash);

    // By channel, paged two at a time.
    let chan = "34020000001320000001".to_string();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = s
            .query(&AuditQuery {
                object: Some(chan.clone()),
                after_seq: after,
                limit: 2,
                ..AuditQuery::default()
            })
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.seq;
        seqs.extend(page.iter().map(|r| r.seq));
    }
    let want: Vec<u64> = (0..25u64).filter(|i| i % 4 == 1).map(|i| i + 1).collect();
    assert_eq!(seqs, want);

    // A subject matches as subject or as on_behalf_of.
    let got: Vec<u64> = s
        .query(&AuditQuery {
            subject: Some("dept:traffic".into()),
            ..AuditQuery::default()
        })
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    let want: Vec<u64> = (0..25u64).filter(|i| i % 3 == 0).map(|i| i + 1).collect();
    assert_eq!(got, want);

    // Time range [from, to), combined with a subject.
    let got: Vec<u64> = s
        .query(&AuditQuery {
            subject: Some("dept:police".into()),
            from_ms: Some(T0 + 5_000),
            to_ms: Some(T0 + 15_000),
            ..AuditQuery::default()
        })
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    let want: Vec<u64> = (5..15u64).filter(|i| i % 2 == 1).map(|i| i + 1).collect();
    assert_eq!(got, want);

    let r = s.verify().unwrap();
    assert_eq!(r.problem, None);
    assert_eq!(r.checked, 25);
    assert_eq!(r.head, h2);
}

fn reopen_resumes_chain(b: &dyn Backend) {
    let h = b.open().append(&entries(0..5)).unwrap();
    let mut s = b.open();
    assert_eq!(s.head().unwrap(), h);
    let h2 = s.append(&entries(5..8)).unwrap();
    assert_eq!(h2.seq, 8);
    let r = b.open().verify().unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!((r.checked, r.head), (8, h2));
}

fn refuses_numbers_beyond_i64(b: &dyn Backend) {
    let mut s = b.open();
    s.append(&entries(0..2)).unwrap();
    let mut bad = entries(2..4);
    bad[1].bytes = Some(u64::MAX);
    assert!(matches!(s.append(&bad), Err(AuditError::Invalid(_))));
    // Nothing of the refused batch was written.
    assert_eq!(s.head().unwrap().seq, 2);
    assert_eq!(all_records(&mut *s).len(), 2);
}

fn detects_edited_field(b: &dyn Backend) {
    b.open().append(&entries(0..10)).unwrap();
    b.exec("UPDATE audit_log SET outcome = 'allow' WHERE seq = 6");
    let r = b.open().verify().unwrap();
    assert_eq!(r.problem, Some(Tamper::Edited { seq: 6 }));
    assert_eq!(r.checked, 5);
}

fn detects_edited_number(b: &dyn Backend) {
    b.open().append(&entries(0..10)).unwrap();
    // Record 9 (i = 8) is a stop with bytes.
    b.exec("UPDATE audit_log SET bytes = bytes - 1 WHERE seq = 9");
    assert_eq!(
        b.open().verify().unwrap().problem,
        Some(Tamper::Edited { seq: 9 })
    );
}

fn detects_malformed_hash(b: &dyn Backend) {
    b.open().append(&entries(0..10)).unwrap();
    b.exec(&format!(
        "UPDATE audit_log SET hash = {} WHERE seq = 4",
        b.blob(&[1, 2, 3])
    ));
    assert_eq!(
        b.open().verify().unwrap().problem,
        Some(Tamper::Malformed { seq: 4 })
    );
}

fn detects_inserted_row(b: &dyn Backend) {
    let mut s = b.open();
    s.append(&entries(0..10)).unwrap();
    let before = all_records(&mut *s);
    // Make room at seq 5 (two steps: seq is unique at every row), then
    // insert a record whose own hash is correct and links to record 4.
    b.exec("UPDATE audit_log SET seq = -(seq + 1) WHERE seq >= 5");
    b.exec("UPDATE audit_log SET seq = -seq WHERE seq < 0");
    let forged = AuditEntry {
        on_behalf_of: None,
        rule: None,
        session: None,
        duration_ms: None,
        bytes: None,
        reason: "forged".into(),
        ..entry(100)
    };
    let prev = before[3].hash;
    let hash = record_hash(5, &prev, &forged);
    b.exec(&format!(
        "INSERT INTO audit_log (seq, at_ms, node, kind, subject, object, action, outcome, reason, prev_hash, hash) \
         VALUES (5, {}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', {}, {})",
        forged.at_ms,
        forged.node,
        forged.kind.as_str(),
        forged.subject,
        forged.object,
        forged.action,
        forged.outcome,
        forged.reason,
        b.blob(&prev.0),
        b.blob(&hash.0)
    ));
    let mut s = b.open();
    assert_eq!(all_records(&mut *s)[4].entry, forged);
    // The forged record itself checks out; the one after it (the old 5)
    // no longer links to it.
    let r = s.verify().unwrap();
    assert_eq!(r.problem, Some(Tamper::Inserted { seq: 6 }));
    assert_eq!(r.checked, 5);
}

fn detects_deleted_middle_row(b: &dyn Backend) {
    b.open().append(&entries(0..10)).unwrap();
    b.exec("DELETE FROM audit_log WHERE seq = 4");
    let r = b.open().verify().unwrap();
    assert_eq!(r.problem, Some(Tamper::Gap { after: 3, next: 5 }));
    assert_eq!(r.checked, 3);
}

fn detects_deleted_first_row(b: &dyn Backend) {
    b.open().append(&entries(0..10)).unwrap();
    b.exec("DELETE FROM audit_log WHERE seq = 1");
    assert_eq!(
        b.open().verify().unwrap().problem,
        Some(Tamper::Gap { after: 0, next: 2 })
    );
}

fn detects_cut_tail_by_head_row(b: &dyn Backend) {
    b.open().append(&entries(0..10)).unwrap();
    b.exec("DELETE FROM audit_log WHERE seq > 8");
    assert_eq!(
        b.open().verify().unwrap().problem,
        Some(Tamper::HeadMismatch { head: 10, last: 8 })
    );
}

fn against_parent_detects_truncation(b: &dyn Backend) {
    let mut s = b.open();
    s.append(&entries(0..5)).unwrap();
    let reported_early = s.head().unwrap();
    let reported = s.append(&entries(5..10)).unwrap();
    let keep = all_records(&mut *s)[7].hash;
    drop(s);
    assert!(b.open().verify_against(&reported).unwrap().is_clean());
    // A careful truncation also rewinds the head row: verify alone passes.
    b.exec("DELETE FROM audit_log WHERE seq > 8");
    b.exec(&format!(
        "UPDATE audit_head SET seq = 8, hash = {} WHERE id = 1",
        b.blob(&keep.0)
    ));
    let mut s = b.open();
    assert!(s.verify().unwrap().is_clean());
    assert_eq!(
        s.verify_against(&reported).unwrap().problem,
        Some(Tamper::Missing { seq: 10 })
    );
    // What the parent saw earlier is intact.
    assert!(s.verify_against(&reported_early).unwrap().is_clean());
}

fn against_parent_detects_rewritten_chain(b: &dyn Backend) {
    let mut s = b.open();
    s.append(&entries(0..10)).unwrap();
    let reported = s.head().unwrap();
    let early = Head {
        seq: 2,
        hash: all_records(&mut *s)[1].hash,
    };
    // Change record 3 and recompute every hash after it, head row too.
    let mut prev = early.hash;
    for mut r in all_records(&mut *s).into_iter().skip(2) {
        if r.seq == 3 {
            r.entry.outcome = "allow".into();
            r.entry.reason = "nothing to see".into();
        }
        let hash = record_hash(r.seq, &prev, &r.entry);
        b.exec(&format!(
            "UPDATE audit_log SET outcome = '{}', reason = '{}', prev_hash = {}, hash = {} WHERE seq = {}",
            r.entry.outcome,
            r.entry.reason,
            b.blob(&prev.0),
            b.blob(&hash.0),
            r.seq
        ));
        prev = hash;
    }
    b.exec(&format!(
        "UPDATE audit_head SET hash = {} WHERE id = 1",
        b.blob(&prev.0)
    ));
    drop(s);
    let mut s = b.open();
    assert!(
        s.verify().unwrap().is_clean(),
        "a recomputed chain verifies alone"
    );
    assert_eq!(
        s.verify_against(&reported).unwrap().problem,
        Some(Tamper::Rewritten { seq: 10 })
    );
    assert!(s.verify_against(&early).unwrap().is_clean());
}

fn child_heads(b: &dyn Backend) {
    let mut s = b.open();
    let h = |seq: u64, byte: u8| Head {
        seq,
        hash: Hash([byte; 32]),
    };
    assert_eq!(s.child_head("34020100002000000001").unwrap(), None);
    s.record_child_head("34020100002000000001", &h(5, 1), T0)
        .unwrap();
    s.record_child_head("34020100002000000001", &h(9, 2), T0 + 60_000)
        .unwrap();
    // Reported again with the next keepalive: the first time is kept.
    s.record_child_head("34020100002000000001", &h(9, 2), T0 + 120_000)
        .unwrap();
    s.record_child_head("34020100002000000002", &h(3, 3), T0)
        .unwrap();
    assert_eq!(
        b.open().child_head("34020100002000000001").unwrap(),
        Some(ChildHead {
            head: h(9, 2),
            at_ms: T0 + 60_000
        })
    );
    assert_eq!(
        s.child_head("34020100002000000002").unwrap(),
        Some(ChildHead {
            head: h(3, 3),
            at_ms: T0
        })
    );
}

fn two_writers_do_not_fork(b: &dyn Backend) {
    let handles: Vec<_> = (0..2u64)
        .map(|w| {
            let mut s = b.open();
            thread::spawn(move || {
                for k in 0..100u64 {
                    let base = w * 1000 + k * 5;
                    s.append(&entries(base..base + 5)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = b.open().verify().unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.checked, 1000);
}

fn writer_appends_beside_a_reader(b: &dyn Backend) {
    let w = AuditWriter::spawn(b.open()).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..200u64 {
        let tx = tx.clone();
        w.submit(
            entries(i * 3..i * 3 + 3),
            Box::new(move |r| tx.send(r.map(|h| h.seq)).unwrap()),
        );
    }
    // A second connection reads while the writer writes.
    let mut reader = b.open();
    let mut max = 0;
    for _ in 0..200 {
        let seq = rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
        max = max.max(seq);
        assert!(reader.verify().unwrap().is_clean());
    }
    assert_eq!(max, 600);
    let chan = reader
        .query(&AuditQuery {
            object: Some("34020000001320000003".into()),
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(chan.len(), 150);
}

fn writer_refuses_after_store_failure(b: &dyn Backend) {
    let w = AuditWriter::spawn(b.open_failing()).unwrap();
    let (tx, rx) = mpsc::channel();
    w.submit(entries(0..3), Box::new(move |r| tx.send(r).unwrap()));
    let r = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(matches!(r, Err(AuditError::Unavailable(_))), "{r:?}");
    assert!(w.failure().is_some());
    // Later submissions are refused at once, on the caller's thread.
    let called = Arc::new(Mutex::new(None));
    let c = called.clone();
    w.submit(
        entries(3..4),
        Box::new(move |r| *c.lock().unwrap() = Some(r)),
    );
    let got = called.lock().unwrap().take();
    assert!(
        matches!(got, Some(Err(AuditError::Unavailable(_)))),
        "{got:?}"
    );
    let (tx, rx) = mpsc::channel();
    w.record_child_head(
        "34020100002000000001".into(),
        Head::default(),
        T0,
        Box::new(move |r| tx.send(r).unwrap()),
    );
    assert!(matches!(
        rx.recv().unwrap(),
        Err(AuditError::Unavailable(_))
    ));
    drop(w);
    assert_eq!(b.open().head().unwrap(), Head::default());
}

fn writer_records_child_heads_in_order(b: &dyn Backend) {
    let w = AuditWriter::spawn(b.open()).unwrap();
    let (tx, rx) = mpsc::channel();
    let head = Head {
        seq: 42,
        hash: Hash([7; 32]),
    };
    let t = tx.clone();
    w.submit(entries(0..2), Box::new(move |r| t.send(r.is_ok()).unwrap()));
    w.record_child_head(
        "34020100002000000001".into(),
        head,
        T0,
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    );
    assert!(rx.recv().unwrap());
    assert!(rx.recv().unwrap());
    drop(w);
    let mut s = b.open();
    assert_eq!(
        s.child_head("34020100002000000001")
            .unwrap()
            .map(|c| c.head),
        Some(head)
    );
    assert_eq!(s.head().unwrap().seq, 2);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Sqlite::new()) })*
        }
        mod pg {
            $(#[test] fn $name() { super::$name(&super::Pg::new()) })*
        }
    };
}

fn status_history_gives_the_state_at_the_window_and_its_changes(b: &dyn Backend) {
    let mut s = b.open();
    let change = |at_ms, channel: &str, online| StatusChange {
        at_ms,
        channel: channel.into(),
        online,
        via: "35010200002000000001".into(),
        intact: Some(online),
    };
    let lost = |at_ms, channel: &str| StatusChange {
        intact: Some(false),
        ..change(at_ms, channel, true)
    };
    s.record_status(&[
        change(1_000, "A", true),
        change(2_000, "A", false),
        change(3_000, "B", true),
        change(5_000, "A", true),
        lost(7_000, "B"),
        change(9_000, "B", false),
        change(12_000, "A", false),
    ])
    .unwrap();
    // Window [4000, 10000): A's last change before it (OFF at 2000) and
    // its ON at 5000; B's ON at 3000, its video lost at 7000 and its OFF
    // at 9000. A's OFF at 12000 is after the window.
    let got: Vec<(String, u64, bool, bool)> = s
        .status_history(4_000, 10_000)
        .unwrap()
        .into_iter()
        .map(|c| (c.channel.clone(), c.at_ms, c.online, c.is_intact()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("A".into(), 2_000, false, false),
            ("A".into(), 5_000, true, true),
            ("B".into(), 3_000, true, true),
            ("B".into(), 7_000, true, false),
            ("B".into(), 9_000, false, false),
        ]
    );
    assert!(s.status_history(0, 500).unwrap().is_empty());
    // The writer thread records them too.
    let w = AuditWriter::spawn(b.open()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    w.record_status(
        vec![change(20_000, "C", true)],
        Box::new(move |r| tx.send(r).unwrap()),
    );
    rx.recv().unwrap().unwrap();
    drop(w);
    let later = s.status_history(20_000, 20_001).unwrap();
    assert!(
        later.iter().any(|c| c.channel == "C" && c.online),
        "{later:?}"
    );
    // A and B are there too, with their last change before the window.
    assert_eq!(later.len(), 3);
}

suite!(
    status_history_gives_the_state_at_the_window_and_its_changes,
    append_query_paging,
    reopen_resumes_chain,
    refuses_numbers_beyond_i64,
    detects_edited_field,
    detects_edited_number,
    detects_malformed_hash,
    detects_inserted_row,
    detects_deleted_middle_row,
    detects_deleted_first_row,
    detects_cut_tail_by_head_row,
    against_parent_detects_truncation,
    against_parent_detects_rewritten_chain,
    child_heads,
    two_writers_do_not_fork,
    writer_appends_beside_a_reader,
    writer_refuses_after_store_failure,
    writer_records_child_heads_in_order,
);

#[test]
fn hash_hex_round_trip() {
    let h = record_hash(1, &Hash::ZERO, &entry(0));
    let s = h.to_string();
    assert_eq!(s.len(), 64);
    assert_eq!(s.parse::<Hash>().unwrap(), h);
    assert_eq!(s.to_uppercase().parse::<Hash>().unwrap(), h);
    assert!("00".parse::<Hash>().is_err());
    assert!("g".repeat(64).parse::<Hash>().is_err());
    assert_eq!(Hash::ZERO.to_string(), "0".repeat(64));
}

#[test]
fn head_text_round_trip() {
    let h = Head {
        seq: 42,
        hash: record_hash(1, &Hash::ZERO, &entry(0)),
    };
    let s = h.to_string();
    assert_eq!(s, format!("42:{}", h.hash));
    assert_eq!(s.parse::<Head>().unwrap(), h);
    assert_eq!(format!(" {s}\n").parse::<Head>().unwrap(), h);
    assert_eq!(
        Head::default().to_string().parse::<Head>().unwrap(),
        Head::default()
    );
    for bad in [
        "",
        "42",
        ":",
        &format!(":{}", h.hash),
        &format!("-1:{}", h.hash),
        &format!("+1:{}", h.hash),
        &format!("x:{}", h.hash),
        &format!("99999999999999999999:{}", h.hash),
        "42:00",
        &format!("42:{}:1", h.hash),
    ] {
        assert_eq!(bad.parse::<Head>(), Err(ParseHeadError), "{bad:?}");
    }
}

#[test]
fn encoding_is_unambiguous() {
    // Moving bytes between adjacent fields changes the hash.
    let mut a = entry(1);
    a.action = "pl".into();
    a.outcome = "ayallow".into();
    let mut b = entry(1);
    b.action = "play".into();
    b.outcome = "allow".into();
    assert_ne!(
        record_hash(1, &Hash::ZERO, &a),
        record_hash(1, &Hash::ZERO, &b)
    );
    // An absent option differs from an empty one.
    let mut c = entry(1);
    c.rule = None;
    let mut d = entry(1);
    d.rule = Some(String::new());
    assert_ne!(
        record_hash(1, &Hash::ZERO, &c),
        record_hash(1, &Hash::ZERO, &d)
    );
    // Seq and prev_hash are covered.
    let e = entry(1);
    assert_ne!(
        record_hash(1, &Hash::ZERO, &e),
        record_hash(2, &Hash::ZERO, &e)
    );
    assert_ne!(
        record_hash(1, &Hash::ZERO, &e),
        record_hash(1, &Hash([1; 32]), &e)
    );
}

#[test]
fn open_picks_backend_by_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    for url in [
        path.display().to_string(),
        format!("sqlite:{}", path.display()),
        format!("sqlite://{}", path.display()),
    ] {
        let mut s = open(&url).unwrap();
        s.append(&entries(0..1)).unwrap();
    }
    assert_eq!(SqliteStore::open(&path).unwrap().head().unwrap().seq, 3);
    // A postgres URL goes to PostgreSQL: nothing listens on this socket.
    let err = open("host=/nonexistent-gbgate port=1 user=x dbname=y").err();
    assert!(matches!(err, Some(AuditError::Postgres(_))), "{err:?}");
    let err = open("postgres://x@%2Fnonexistent-gbgate:1/y").err();
    assert!(matches!(err, Some(AuditError::Postgres(_))), "{err:?}");
}

/// A SQLite store that counts transactions and can hold the first one until
/// the test opens the gate.
struct Gated {
    inner: SqliteStore,
    appends: Arc<Mutex<u32>>,
    entered: mpsc::Sender<()>,
    gate: Option<mpsc::Receiver<()>>,
}

impl AuditStore for Gated {
    fn append(&mut self, entries: &[AuditEntry]) -> Result<Head, AuditError> {
        *self.appends.lock().unwrap() += 1;
        let _ = self.entered.send(());
        if let Some(gate) = self.gate.take() {
            gate.recv().unwrap();
        }
        self.inner.append(entries)
    }
    fn head(&mut self) -> Result<Head, AuditError> {
        self.inner.head()
    }
    fn query(&mut self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.query(q)
    }
    fn record_child_head(&mut self, c: &str, h: &Head, at: u64) -> Result<(), AuditError> {
        self.inner.record_child_head(c, h, at)
    }
    fn child_head(&mut self, c: &str) -> Result<Option<ChildHead>, AuditError> {
        self.inner.child_head(c)
    }
    fn record_status(&mut self, changes: &[StatusChange]) -> Result<(), AuditError> {
        self.inner.record_status(changes)
    }
    fn status_history(&mut self, from: u64, to: u64) -> Result<Vec<StatusChange>, AuditError> {
        self.inner.status_history(from, to)
    }
}

struct GatedParts {
    store: Box<dyn AuditStore>,
    appends: Arc<Mutex<u32>>,
    entered: mpsc::Receiver<()>,
    open_gate: mpsc::Sender<()>,
}

fn gated(b: &Sqlite) -> GatedParts {
    let appends = Arc::new(Mutex::new(0));
    let (entered_tx, entered) = mpsc::channel();
    let (open_gate, gate) = mpsc::channel();
    GatedParts {
        store: Box::new(Gated {
            inner: SqliteStore::open(&b.path).unwrap(),
            appends: appends.clone(),
            entered: entered_tx,
            gate: Some(gate),
        }),
        appends,
        entered,
        open_gate,
    }
}

#[test]
fn writer_batches_queued_submissions() {
    let b = Sqlite::new();
    let g = gated(&b);
    let w = AuditWriter::spawn(g.store).unwrap();
    let (tx, rx) = mpsc::channel();
    let submit = |i: u64| {
        let tx = tx.clone();
        w.submit(
            entries(i * 2..i * 2 + 2),
            Box::new(move |r| tx.send((i, r.unwrap().seq)).unwrap()),
        );
    };
    submit(0);
    // The first transaction is held open while 999 more are queued.
    g.entered.recv().unwrap();
    for i in 1..1000 {
        submit(i);
    }
    g.open_gate.send(()).unwrap();
    let mut acked = Vec::new();
    for _ in 0..1000 {
        acked.push(rx.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    // Submission i's entries are seqs 2i+1 and 2i+2; its head covers them.
    for (i, seq) in &acked {
        assert!(*seq >= i * 2 + 2, "submission {i} acked at {seq}");
    }
    assert_eq!(acked.iter().map(|a| a.1).max(), Some(2000));
    // 1000 submissions, 2 transactions: the first alone, then the rest.
    assert_eq!(*g.appends.lock().unwrap(), 2);
    drop(w);
    let r = b.open().verify().unwrap();
    assert!(r.is_clean());
    assert_eq!(r.checked, 2000);
}

#[test]
fn writer_refuses_when_queue_is_full() {
    let b = Sqlite::new();
    let g = gated(&b);
    let w = AuditWriter::with_capacity(g.store, 2).unwrap();
    let (tx, rx) = mpsc::channel();
    let submit = |i: u64| {
        let tx = tx.clone();
        w.submit(
            entries(i..i + 1),
            Box::new(move |r| tx.send((i, r.map(|h| h.seq))).unwrap()),
        );
    };
    submit(0);
    g.entered.recv().unwrap();
    submit(1);
    submit(2);
    // The queue holds 2: the fourth is refused at once.
    submit(3);
    let (i, r) = rx.try_recv().unwrap();
    assert_eq!(i, 3);
    assert!(matches!(r, Err(AuditError::Unavailable(_))), "{r:?}");
    assert!(w.failure().is_none(), "a full queue is not a failed store");
    g.open_gate.send(()).unwrap();
    let mut ok: Vec<u64> = (0..3)
        .map(|_| {
            let (i, r) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            r.unwrap();
            i
        })
        .collect();
    ok.sort();
    assert_eq!(ok, vec![0, 1, 2]);
    // Room again.
    submit(4);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap().1.unwrap(),
        4
    );
}

#[test]
fn writer_refuses_invalid_entry_alone() {
    let b = Sqlite::new();
    let w = AuditWriter::spawn(b.open()).unwrap();
    let mut bad = entry(0);
    bad.at_ms = u64::MAX;
    let called = Arc::new(Mutex::new(None));
    let c = called.clone();
    w.submit(vec![bad], Box::new(move |r| *c.lock().unwrap() = Some(r)));
    let got = called.lock().unwrap().take();
    assert!(matches!(got, Some(Err(AuditError::Invalid(_)))), "{got:?}");
    let (tx, rx) = mpsc::channel();
    w.submit(
        entries(0..1),
        Box::new(move |r| tx.send(r.map(|h| h.seq)).unwrap()),
    );
    assert_eq!(rx.recv().unwrap().unwrap(), 1);
    assert!(w.failure().is_none());
}

const CHILD_ENV: &str = "GBGATE_AUDIT_DURABILITY_DB";
const CHILD_TEST: &str = "audit::tests::writer_acks_survive_kill_9";

/// In the child: append through a writer as fast as it acknowledges,
/// printing `ack <i> <seq>` once entry `i` is committed, until killed (or
/// 60 s pass).
fn durability_child(path: &std::ffi::OsStr) -> ! {
    use std::io::Write;
    let w = AuditWriter::spawn(Box::new(SqliteStore::open(path).unwrap())).unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let start = std::time::Instant::now();
    let mut in_flight = 0;
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(60) {
        let tx = tx.clone();
        let n = i;
        w.submit(
            vec![entry(n)],
            Box::new(move |r| {
                if let Ok(h) = r {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {n} {}", h.seq).unwrap();
                    out.flush().unwrap();
                }
                let _ = tx.send(());
            }),
        );
        i += 1;
        in_flight += 1;
        while in_flight >= 256 {
            rx.recv().unwrap();
            in_flight -= 1;
        }
    }
    std::process::exit(0)
}

#[test]
fn writer_acks_survive_kill_9() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    if let Some(path) = std::env::var_os(CHILD_ENV) {
        durability_child(&path);
    }
    let b = Sqlite::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &b.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut parse = |line: &str| {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (i, seq) = rest.split_once(' ').unwrap();
            acked.push((i.parse().unwrap(), seq.parse().unwrap()));
        }
    };
    // Kill it in full flow, once a few thousand entries are acknowledged.
    let mut seen = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += usize::from(line.starts_with("ack "));
        parse(&line);
        if seen >= 3000 {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended by itself: {status}"
    );
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines {
        parse(&line.unwrap());
    }
    assert!(acked.len() >= 3000);

    let mut s = b.open();
    let r = s.verify().unwrap();
    assert!(r.is_clean(), "{r:?}");
    let stored: HashSet<String> = all_records_fast(&mut *s)
        .into_iter()
        .map(|r| r.entry.reason)
        .collect();
    let max_seq = acked.iter().map(|a| a.1).max().unwrap();
    assert!(
        r.head.seq >= max_seq,
        "head {} < acked {max_seq}",
        r.head.seq
    );
    for (i, _) in &acked {
        assert!(stored.contains(&format!("n={i}")), "acked entry {i} lost");
    }
    eprintln!(
        "kill -9 after {} acknowledged entries: {} records on disk, chain clean",
        acked.len(),
        r.checked
    );
}

fn all_records_fast(s: &mut dyn AuditStore) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    loop {
        let page = s
            .query(&AuditQuery {
                after_seq: out.last().map_or(0, |r| r.seq),
                limit: 10_000,
                ..AuditQuery::default()
            })
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

#[test]
fn a_sqlite_store_from_before_the_intact_probe_gains_its_column() {
    let b = Sqlite::new();
    let old = rusqlite::Connection::open(&b.path).unwrap();
    old.execute_batch(
        "CREATE TABLE status_changes (channel TEXT NOT NULL, at_ms INTEGER NOT NULL, \
         online INTEGER NOT NULL, via TEXT NOT NULL); \
         INSERT INTO status_changes VALUES ('A', 1000, 1, 'V'), ('B', 1000, 0, 'V');",
    )
    .unwrap();
    drop(old);
    let mut s = b.open();
    let got: Vec<(String, bool, Option<bool>, bool)> = s
        .status_history(0, 2_000)
        .unwrap()
        .into_iter()
        .map(|c| (c.channel.clone(), c.online, c.intact, c.is_intact()))
        .collect();
    // Old rows read as intact when online.
    assert_eq!(
        got,
        vec![
            ("A".into(), true, None, true),
            ("B".into(), false, None, false)
        ]
    );
}
