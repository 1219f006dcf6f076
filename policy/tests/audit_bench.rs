//! Audit throughput through `AuditWriter` on SQLite and PostgreSQL.
//!
//! `cargo test --release -p policy --test audit_bench -- --ignored --nocapture --test-threads=1`
//!
//! Submits 100k realistic entries one per submission (as a node audits one
//! decision at a time), at most 4096 unacknowledged, then 2000 with each
//! submission waiting for the previous one's commit, and prints records/s,
//! transactions used and acknowledgement latency, after checking that every
//! submission was acknowledged and the chain verifies clean.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use policy::audit::{
    AuditEntry, AuditError, AuditKind, AuditQuery, AuditRecord, AuditStore, AuditWriter, ChildHead,
    Head, PgStore, SqliteStore, StatusChange,
};

#[allow(dead_code)]
#[path = "../src/audit/test_pg.rs"]
mod test_pg;

/// Records and most unacknowledged submissions: a loaded city node, then
/// one caller waiting for each commit (what batching saves).
const RUNS: [(u64, u64); 2] = [(100_000, 4096), (2_000, 1)];

/// Counts the transactions (appends) a store is asked for.
struct Counting {
    inner: Box<dyn AuditStore>,
    appends: Arc<AtomicU64>,
}

impl AuditStore for Counting {
    fn append(&mut self, entries: &[AuditEntry]) -> Result<Head, AuditError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
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

/// A decision, session start or session stop, as a city node writes them.
fn entry(i: u64) -> AuditEntry {
    let kind = [
        AuditKind::Decision,
        AuditKind::SessionStart,
        AuditKind::SessionStop,
    ][(i % 3) as usize];
    AuditEntry {
        at_ms: policy::audit::now_ms(),
        node: "34020000002000000001".into(),
        kind,
        subject: format!("node:3402010000200000{:04}", i % 1000),
        on_behalf_of: (i % 2 == 0).then(|| "dept:police".into()),
        object: format!("3402000000132{:07}", i % 50_000),
        action: "play".into(),
        outcome: if kind == AuditKind::SessionStop {
            "ok"
        } else {
            "allow"
        }
        .into(),
        rule: (kind == AuditKind::Decision)
            .then(|| "p, dept:police, 34020000001320*, play, allow".into()),
        reason: "matched rule".into(),
        session: Some(format!("{i:016x}@34020000002000000001")),
        duration_ms: (kind == AuditKind::SessionStop).then_some(63_000),
        bytes: (kind == AuditKind::SessionStop).then_some(32_000_000),
    }
}

fn bench(label: &str, open: impl Fn() -> Box<dyn AuditStore>) {
    for (records, in_flight) in RUNS {
        run(label, records, in_flight, open(), open());
    }
}

fn run(
    label: &str,
    records: u64,
    max_in_flight: u64,
    store: Box<dyn AuditStore>,
    mut reader: Box<dyn AuditStore>,
) {
    let base = reader.head().expect("head").seq;
    let appends = Arc::new(AtomicU64::new(0));
    let w = AuditWriter::spawn(Box::new(Counting {
        inner: store,
        appends: appends.clone(),
    }))
    .expect("spawn writer");
    let (tx, rx) = mpsc::channel::<Result<(u64, Duration), String>>();
    let mut latencies = Vec::with_capacity(records as usize);
    let mut max_seq = 0;
    let mut take = |r: Result<(u64, Duration), String>| match r {
        Ok((seq, lat)) => {
            max_seq = max_seq.max(seq);
            latencies.push(lat);
        }
        Err(e) => panic!("{label}: submission refused: {e}"),
    };
    let start = Instant::now();
    let mut in_flight = 0;
    for i in 0..records {
        let tx = tx.clone();
        let t = Instant::now();
        w.submit(
            vec![entry(i)],
            Box::new(move |r| {
                let _ = tx.send(r.map(|h| (h.seq, t.elapsed())).map_err(|e| e.to_string()));
            }),
        );
        in_flight += 1;
        while in_flight >= max_in_flight {
            take(rx.recv().expect("ack"));
            in_flight -= 1;
        }
    }
    while in_flight > 0 {
        take(rx.recv().expect("ack"));
        in_flight -= 1;
    }
    let elapsed = start.elapsed();
    drop(w);

    assert_eq!(
        latencies.len() as u64,
        records,
        "{label}: every submission acknowledged"
    );
    assert_eq!(max_seq, base + records, "{label}: head after the last ack");
    let vstart = Instant::now();
    let report = reader.verify().expect("verify");
    let vtime = vstart.elapsed();
    assert!(report.is_clean(), "{label}: {report:?}");
    assert_eq!(report.checked, base + records);

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let tx_count = appends.load(Ordering::Relaxed);
    println!(
        "audit {label}, {max_in_flight} in flight: {records} records in {:.2} s = {:.0} records/s; \
         {tx_count} transactions \
         (mean {:.0} records each); ack latency p50 {:.1} ms, p99 {:.1} ms; \
         verify {:.0} records/s",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        records as f64 / tx_count as f64,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        report.checked as f64 / vtime.as_secs_f64(),
    );
}

#[test]
#[ignore]
fn audit_throughput_sqlite() {
    // On the disk the node would use (target/), not a tmpfs.
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe.ancestors().nth(3).expect("target dir");
    let dir = tempfile::tempdir_in(target).expect("temp dir");
    let path = dir.path().join("audit.db");
    bench("sqlite (WAL, synchronous=NORMAL)", || {
        Box::new(SqliteStore::open(&path).expect("open"))
    });
}

#[test]
#[ignore]
fn audit_throughput_postgres() {
    let url = test_pg::fresh_db();
    bench("postgres (unix socket, synchronous_commit=on)", || {
        Box::new(PgStore::connect(&url).expect("connect"))
    });
}
