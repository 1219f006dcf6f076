//! Tamper-evident audit log of decisions and sessions.
//!
//! Every record is appended to one hash chain: record `n` carries the hash of
//! record `n - 1` (`prev_hash`) and its own `hash`, the SHA-256 of the
//! canonical encoding described in [`record_hash`]. Editing, inserting or
//! deleting a record breaks the chain, which [`AuditStore::verify`] finds.
//! Anyone with write access to the database can recompute a whole chain, so a
//! node also reports its [`Head`] to its parent, which records it
//! ([`AuditStore::record_child_head`]); [`AuditStore::verify_against`] then
//! catches a truncated or rewritten history.
//!
//! Two backends share one schema: SQLite ([`SqliteStore`], the default, one
//! file) and PostgreSQL ([`PgStore`]). [`open`] picks one from a URL.
//! [`AuditWriter`] appends off the caller's thread, batching every queued
//! submission into one transaction.
//!
//! # Schema
//!
//! The same tables, columns and indexes on both backends (`BLOB` is `BYTEA`
//! and `INTEGER` is `BIGINT` on PostgreSQL); created when absent:
//!
//! ```sql
//! CREATE TABLE audit_log (
//!     seq          INTEGER PRIMARY KEY,  -- 1, 2, 3 ... no gaps
//!     at_ms        INTEGER NOT NULL,     -- ms since the Unix epoch
//!     node         TEXT NOT NULL,        -- 20-digit id of the writing node
//!     kind         TEXT NOT NULL,        -- AuditKind::as_str
//!     subject      TEXT NOT NULL,
//!     on_behalf_of TEXT,
//!     object       TEXT NOT NULL,        -- channel id or other object
//!     action       TEXT NOT NULL,
//!     outcome      TEXT NOT NULL,
//!     rule         TEXT,
//!     reason       TEXT NOT NULL,
//!     session      TEXT,
//!     duration_ms  INTEGER,
//!     bytes        INTEGER,
//!     prev_hash    BLOB NOT NULL,        -- 32 bytes
//!     hash         BLOB NOT NULL         -- 32 bytes
//! );
//! CREATE INDEX audit_log_object  ON audit_log (object, seq);
//! CREATE INDEX audit_log_subject ON audit_log (subject, seq);
//! CREATE INDEX audit_log_behalf  ON audit_log (on_behalf_of, seq);
//! CREATE INDEX audit_log_at      ON audit_log (at_ms, seq);
//! -- One row (id = 1): the head, updated in the transaction of each append.
//! -- Appends lock it first, so two writers cannot fork the chain.
//! CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
//! -- Heads reported by children with their keepalives.
//! CREATE TABLE child_heads (
//!     child TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, at_ms INTEGER NOT NULL,
//!     PRIMARY KEY (child, seq, hash)
//! );
//! ```
//!
//! Numbers are stored as signed 64-bit integers; values above `i64::MAX` are
//! refused with [`AuditError::Invalid`].

mod pg;
mod sqlite;
mod writer;

#[cfg(test)]
mod test_pg;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use writer::{AuditWriter, ChildDone, Done, DEFAULT_CAPACITY};

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// A policy decision (allow or deny).
    Decision,
    /// A media session started.
    SessionStart,
    /// A media session stopped (with duration and bytes).
    SessionStop,
    /// A request for access (e.g. a catalog or device query).
    AccessRequest,
    /// The policy was (re)loaded.
    PolicyReload,
    /// A child reported its audit head.
    ChildHead,
}

impl AuditKind {
    /// Every kind, in code order.
    pub const ALL: [AuditKind; 6] = [
        AuditKind::Decision,
        AuditKind::SessionStart,
        AuditKind::SessionStop,
        AuditKind::AccessRequest,
        AuditKind::PolicyReload,
        AuditKind::ChildHead,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Decision => "decision",
            AuditKind::SessionStart => "session_start",
            AuditKind::SessionStop => "session_stop",
            AuditKind::AccessRequest => "access_request",
            AuditKind::PolicyReload => "policy_reload",
            AuditKind::ChildHead => "child_head",
        }
    }

    /// The kind stored as `name`, if any.
    pub fn from_name(name: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The byte that stands for this kind in the hashed encoding.
    fn code(self) -> u8 {
        match self {
            AuditKind::Decision => 1,
            AuditKind::SessionStart => 2,
            AuditKind::SessionStop => 3,
            AuditKind::AccessRequest => 4,
            AuditKind::PolicyReload => 5,
            AuditKind::ChildHead => 6,
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened: who did what to what, when, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The 20-digit id of the node writing the entry.
    pub node: String,
    /// What kind of event this is.
    pub kind: AuditKind,
    /// Who acted, e.g. `node:34020000002000000001` or `dept:police`.
    pub subject: String,
    /// On whose behalf the subject acted, when it relays for someone.
    pub on_behalf_of: Option<String>,
    /// What was acted on: a channel id or another object.
    pub object: String,
    /// The action, e.g. `play`, `playback`, `catalog`.
    pub action: String,
    /// The outcome: `allow`, `deny`, `ok`, `error`...
    pub outcome: String,
    /// The rule that decided, if a rule did.
    pub rule: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// The session (e.g. SIP Call-ID) the entry belongs to.
    pub session: Option<String>,
    /// How long the session lasted, for a stop.
    pub duration_ms: Option<u64>,
    /// Bytes relayed, for a stop.
    pub bytes: Option<u64>,
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A SHA-256 hash; shown and parsed as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// All zeros: the `prev_hash` of record 1 and the hash of an empty log.
    pub const ZERO: Hash = Hash([0; 32]);
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a string is not a [`Hash`](struct@Hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 64 hex digits")]
pub struct ParseHashError;

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Hash, ParseHashError> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(ParseHashError);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hi = hex_val(pair[0]).ok_or(ParseHashError)?;
            let lo = hex_val(pair[1]).ok_or(ParseHashError)?;
            *o = (hi << 4) | lo;
        }
        Ok(Hash(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl TryFrom<&[u8]> for Hash {
    type Error = ParseHashError;

    fn try_from(b: &[u8]) -> Result<Hash, ParseHashError> {
        <[u8; 32]>::try_from(b)
            .map(Hash)
            .map_err(|_| ParseHashError)
    }
}

/// The last record of a log: its sequence number and hash. An empty log's
/// head is seq 0 with [`Hash::ZERO`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Sequence number of the last record (0: none).
    pub seq: u64,
    /// Hash of the last record.
    pub hash: Hash,
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// Why a string is not a [`Head`]: `seq:hash`, a decimal sequence number
/// and 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a head is seq:hash (a decimal number, a colon, 64 hex digits)")]
pub struct ParseHeadError;

impl FromStr for Head {
    type Err = ParseHeadError;

    /// Reads what [`Display`](fmt::Display) writes: `seq:hash`.
    fn from_str(s: &str) -> Result<Head, ParseHeadError> {
        let (seq, hash) = s.trim().split_once(':').ok_or(ParseHeadError)?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseHeadError);
        }
        Ok(Head {
            seq: seq.parse().map_err(|_| ParseHeadError)?,
            hash: hash.parse().map_err(|_| ParseHeadError)?,
        })
    }
}

/// A stored entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// What was recorded.
    pub entry: AuditEntry,
    /// Hash of record `seq - 1` ([`Hash::ZERO`] for record 1).
    pub prev_hash: Hash,
    /// [`record_hash`] of this record.
    pub hash: Hash,
}

impl AuditRecord {
    /// Whether `hash` is the hash of this record's contents.
    pub fn hash_matches(&self) -> bool {
        record_hash(self.seq, &self.prev_hash, &self.entry) == self.hash
    }
}

/// The hash of a record: SHA-256 over an encoding in which every value has
/// a fixed width or a length prefix, so no two different records encode to
/// the same bytes:
///
/// - the tag `gbgate-audit-v1` as a string;
/// - `seq` as u64, then the 32 bytes of `prev_hash`;
/// - `at_ms` as u64, `node` as a string, the kind as one byte (1 Decision,
///   2 SessionStart, 3 SessionStop, 4 AccessRequest, 5 PolicyReload,
///   6 ChildHead);
/// - `subject`, `on_behalf_of`, `object`, `action`, `outcome`, `rule`,
///   `reason`, `session`, `duration_ms`, `bytes`, in this order.
///
/// A string is its UTF-8 length as u64 followed by its bytes; an `Option` is
/// one byte 0 (absent) or 1 followed by the value; all integers are
/// big-endian.
pub fn record_hash(seq: u64, prev_hash: &Hash, e: &AuditEntry) -> Hash {
    fn s(h: &mut Sha256, v: &str) {
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    fn os(h: &mut Sha256, v: Option<&str>) {
        match v {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                s(h, v);
            }
        }
    }
    fn on(h: &mut Sha256, v: Option<u64>) {
        match v {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update(v.to_be_bytes());
            }
        }
    }
    let mut h = Sha256::new();
    s(&mut h, "gbgate-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(prev_hash.0);
    h.update(e.at_ms.to_be_bytes());
    s(&mut h, &e.node);
    h.update([e.kind.code()]);
    s(&mut h, &e.subject);
    os(&mut h, e.on_behalf_of.as_deref());
    s(&mut h, &e.object);
    s(&mut h, &e.action);
    s(&mut h, &e.outcome);
    os(&mut h, e.rule.as_deref());
    s(&mut h, &e.reason);
    os(&mut h, e.session.as_deref());
    on(&mut h, e.duration_ms);
    on(&mut h, e.bytes);
    Hash(h.finalize().into())
}

/// Chains `entries` after `head`: the records an append writes, and the new
/// head.
fn chain(head: Head, entries: &[AuditEntry]) -> Result<(Vec<AuditRecord>, Head), AuditError> {
    let mut prev = head;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        check_entry(e)?;
        let seq = prev.seq + 1;
        let hash = record_hash(seq, &prev.hash, e);
        out.push(AuditRecord {
            seq,
            entry: e.clone(),
            prev_hash: prev.hash,
            hash,
        });
        prev = Head { seq, hash };
    }
    Ok((out, prev))
}

/// Refuses numbers the databases cannot hold (signed 64-bit columns).
fn check_entry(e: &AuditEntry) -> Result<(), AuditError> {
    for (name, v) in [
        ("at_ms", Some(e.at_ms)),
        ("duration_ms", e.duration_ms),
        ("bytes", e.bytes),
    ] {
        if v.is_some_and(|v| i64::try_from(v).is_err()) {
            return Err(AuditError::Invalid(format!("{name} above i64::MAX")));
        }
    }
    Ok(())
}

/// Which records [`AuditStore::query`] returns: all filters that are set
/// must match; results are in `seq` order, after `after_seq`, at most
/// `limit`. Page by passing the last returned seq as the next `after_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Records whose object (channel id) is this.
    pub object: Option<String>,
    /// Records whose subject or `on_behalf_of` is this.
    pub subject: Option<String>,
    /// Records at or after this time (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Records before this time (ms since the epoch, exclusive).
    pub to_ms: Option<u64>,
    /// Records with a seq above this one (0: from the start).
    pub after_seq: u64,
    /// At most this many records (0 is taken as 1000).
    pub limit: u32,
}

impl AuditQuery {
    /// The limit used: `limit`, or 1000 when it is 0.
    pub fn effective_limit(&self) -> u32 {
        if self.limit == 0 {
            1000
        } else {
            self.limit
        }
    }
}

/// The first problem [`AuditStore::verify`] or
/// [`AuditStore::verify_against`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// The record's stored hash is not the hash of its contents: a field was
    /// changed after it was written.
    Edited {
        /// The changed record.
        seq: u64,
    },
    /// Sequence numbers jump from `after` to `next`: records were deleted.
    Gap {
        /// The last record before the gap (0: the start of the log).
        after: u64,
        /// The next record present.
        next: u64,
    },
    /// The record's `prev_hash` is not the hash of the record before it: a
    /// record was inserted (or replaced, hash recomputed) before it.
    Inserted {
        /// The first record whose link is broken.
        seq: u64,
    },
    /// A field cannot be read back (wrong hash length, negative number,
    /// unknown kind).
    Malformed {
        /// The unreadable record.
        seq: u64,
    },
    /// The head row says the log ends at `head`, but the last record is
    /// `last`: records were removed from (or added to) the tail.
    HeadMismatch {
        /// Seq in the head row.
        head: u64,
        /// Seq of the last record present.
        last: u64,
    },
    /// The record the expected head names is absent: the tail was cut.
    Missing {
        /// The expected head's seq.
        seq: u64,
    },
    /// The record the expected head names has another hash: history up to
    /// it was rewritten.
    Rewritten {
        /// The expected head's seq.
        seq: u64,
    },
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tamper::Edited { seq } => write!(f, "record {seq} was edited"),
            Tamper::Gap { after, next } => {
                write!(f, "records after {after} up to {next} were deleted")
            }
            Tamper::Inserted { seq } => write!(f, "a record was inserted before {seq}"),
            Tamper::Malformed { seq } => write!(f, "record {seq} is malformed"),
            Tamper::HeadMismatch { head, last } => {
                write!(f, "head row says {head} but the last record is {last}")
            }
            Tamper::Missing { seq } => write!(f, "record {seq} is missing (tail cut)"),
            Tamper::Rewritten { seq } => write!(f, "record {seq} has another hash (rewritten)"),
        }
    }
}

/// What a verification walked and the first problem found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub checked: u64,
    /// The head that verification walked to (last good record).
    pub head: Head,
    /// The first problem, or `None` for a clean chain.
    pub problem: Option<Tamper>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problem.is_none()
    }
}

/// A head reported by a child, as recorded by its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildHead {
    /// The head the child reported.
    pub head: Head,
    /// When it was first reported (ms since the epoch).
    pub at_ms: u64,
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed (disk full, I/O error, locked...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (connection lost, server error...).
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// The audit cannot take entries now (queue full or store failed):
    /// refuse what would go unaudited.
    #[error("audit unavailable: {0}")]
    Unavailable(String),
    /// An entry cannot be stored as it is.
    #[error("invalid audit entry: {0}")]
    Invalid(String),
    /// A stored record cannot be read back.
    #[error("audit record {seq} malformed: {what}")]
    Malformed {
        /// The record.
        seq: u64,
        /// What is wrong.
        what: String,
    },
    /// A file-system operation failed.
    #[error("audit i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A durable, hash-chained audit log.
pub trait AuditStore: Send {
    /// Appends `entries` in one transaction, numbering them after the current
    /// head and chaining their hashes; returns the new head. Nothing is
    /// written if it fails.
    fn append(&mut self, entries: &[AuditEntry]) -> Result<Head, AuditError>;

    /// The current head (seq 0 and [`Hash::ZERO`] when empty).
    fn head(&mut self) -> Result<Head, AuditError>;

    /// Records matching `q`, in seq order.
    fn query(&mut self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError>;

    /// Walks the whole chain page by page (memory does not grow with the
    /// log) and reports the first problem.
    fn verify(&mut self) -> Result<VerifyReport, AuditError> {
        let stored = self.head()?;
        let mut report = VerifyReport {
            checked: 0,
            head: Head::default(),
            problem: None,
        };
        let mut after = 0u64;
        loop {
            let page = match self.query(&AuditQuery {
                after_seq: after,
                limit: VERIFY_PAGE,
                ..AuditQuery::default()
            }) {
                Ok(page) => page,
                Err(AuditError::Malformed { seq, .. }) => {
                    report.problem = Some(Tamper::Malformed { seq });
                    return Ok(report);
                }
                Err(e) => return Err(e),
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                if let Some(problem) = check_link(&report.head, r) {
                    report.problem = Some(problem);
                    return Ok(report);
                }
                report.checked += 1;
                report.head = Head {
                    seq: r.seq,
                    hash: r.hash,
                };
            }
            if report.head.seq >= stored.seq {
                // Later records were appended while walking.
                break;
            }
        }
        if report.head.seq < stored.seq || (report.head.seq == stored.seq && report.head != stored)
        {
            report.problem = Some(Tamper::HeadMismatch {
                head: stored.seq,
                last: report.head.seq,
            });
        }
        Ok(report)
    }

    /// Checks that the record at `expected.seq` exists with `expected.hash`
    /// (as a parent recorded it), then verifies the chain. Catches a cut
    /// tail and a history rewritten with recomputed hashes, which `verify`
    /// alone cannot.
    fn verify_against(&mut self, expected: &Head) -> Result<VerifyReport, AuditError> {
        let report = self.verify()?;
        if report.problem.is_some() || expected.seq == 0 {
            return Ok(report);
        }
        let problem = if expected.seq > report.head.seq {
            Some(Tamper::Missing { seq: expected.seq })
        } else {
            let at = self.query(&AuditQuery {
                after_seq: expected.seq - 1,
                limit: 1,
                ..AuditQuery::default()
            })?;
            match at.first() {
                Some(r) if r.seq == expected.seq && r.hash == expected.hash => None,
                Some(r) if r.seq == expected.seq => Some(Tamper::Rewritten { seq: r.seq }),
                _ => Some(Tamper::Missing { seq: expected.seq }),
            }
        };
        Ok(VerifyReport { problem, ..report })
    }

    /// Records that `child` reported `head` at `at_ms`. Reporting the same
    /// head again keeps the first time.
    fn record_child_head(&mut self, child: &str, head: &Head, at_ms: u64)
        -> Result<(), AuditError>;

    /// The latest (highest seq) head `child` reported, if any.
    fn child_head(&mut self, child: &str) -> Result<Option<ChildHead>, AuditError>;

    /// Appends channel status changes (the availability history) in one
    /// transaction.
    fn record_status(&mut self, changes: &[StatusChange]) -> Result<(), AuditError>;

    /// What availability over `[from_ms, to_ms)` needs: for each channel its
    /// last change before `from_ms` (its state when the window opens) and
    /// every change inside the window, ordered by channel, then time.
    fn status_history(&mut self, from_ms: u64, to_ms: u64)
        -> Result<Vec<StatusChange>, AuditError>;
}

/// A channel went online or offline, or its video was found lost or back,
/// as this node heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The channel's 20-digit ID.
    pub channel: String,
    /// ON, or VLOST/DEFECT (online, video not intact): true; OFF or
    /// removed: false.
    pub online: bool,
    /// The registrant it came through (a device, or the child node).
    pub via: String,
    /// Online with video that decodes (`false` after a VLOST/DEFECT);
    /// `None` in rows from before the intact probe: read as `online`.
    pub intact: Option<bool>,
}

impl StatusChange {
    /// Whether the channel was online with intact video from this change on.
    pub fn is_intact(&self) -> bool {
        self.online && self.intact.unwrap_or(true)
    }
}

/// SQL shared by both backends (placeholders `{from}`/`{to}` replaced):
/// the last change per channel before the window, and the window's own.
fn status_history_sql(from: &str, to: &str) -> String {
    format!(
        "SELECT channel, at_ms, online, via, intact FROM status_changes s \
         WHERE (at_ms >= {from} AND at_ms < {to}) \
            OR at_ms = (SELECT MAX(at_ms) FROM status_changes p \
                        WHERE p.channel = s.channel AND p.at_ms < {from}) \
         ORDER BY channel, at_ms"
    )
}

/// Records per page while verifying.
const VERIFY_PAGE: u32 = 10_000;

/// The problem with record `r` following `prev` (the last good record), if
/// any: a gap, a broken link, or an edited record.
fn check_link(prev: &Head, r: &AuditRecord) -> Option<Tamper> {
    if r.seq != prev.seq + 1 {
        return Some(Tamper::Gap {
            after: prev.seq,
            next: r.seq,
        });
    }
    if r.prev_hash != prev.hash {
        return Some(Tamper::Inserted { seq: r.seq });
    }
    if !r.hash_matches() {
        return Some(Tamper::Edited { seq: r.seq });
    }
    None
}

/// Opens the store `url` names: `postgres://...`, `postgresql://...` or a
/// `host=... dbname=...` string is PostgreSQL; `sqlite:PATH` or any other
/// string is a SQLite file path.
pub fn open(url: &str) -> Result<Box<dyn AuditStore>, AuditError> {
    let u = url.trim();
    if u.starts_with("postgres://") || u.starts_with("postgresql://") || u.starts_with("host=") {
        return Ok(Box::new(PgStore::connect(u)?));
    }
    let path = u
        .strip_prefix("sqlite://")
        .or_else(|| u.strip_prefix("sqlite:"))
        .unwrap_or(u);
    Ok(Box::new(SqliteStore::open(path)?))
}

/// Converts a stored signed integer back, naming the record if negative.
fn to_u64(seq: u64, what: &str, v: i64) -> Result<u64, AuditError> {
    u64::try_from(v).map_err(|_| AuditError::Malformed {
        seq,
        what: format!("negative {what}"),
    })
}

/// Converts a number for a signed 64-bit column.
fn to_i64(what: &str, v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::Invalid(format!("{what} above i64::MAX")))
}
