//! The SQLite backend: one database file, WAL journal.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{
    chain, status_history_sql, to_i64, to_u64, AuditEntry, AuditError, AuditKind, AuditQuery,
    AuditRecord, AuditStore, ChildHead, Hash, Head, StatusChange,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq          INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    node         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    on_behalf_of TEXT,
    object       TEXT NOT NULL,
    action       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    rule         TEXT,
    reason       TEXT NOT NULL,
    session      TEXT,
    duration_ms  INTEGER,
    bytes        INTEGER,
    prev_hash    BLOB NOT NULL,
    hash         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_object ON audit_log (object, seq);
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (subject, seq);
CREATE INDEX IF NOT EXISTS audit_log_behalf ON audit_log (on_behalf_of, seq);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_ms, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id   INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32)) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS child_heads (
    child TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (child, seq, hash)
);
CREATE TABLE IF NOT EXISTS status_changes (
    channel TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    online  INTEGER NOT NULL,
    via     TEXT NOT NULL,
    intact  INTEGER
);
CREATE INDEX IF NOT EXISTS status_changes_channel ON status_changes (channel, at_ms);
CREATE INDEX IF NOT EXISTS status_changes_at ON status_changes (at_ms);
";

/// Columns of `audit_log` in the order [`read_record`] reads them.
pub(super) const COLUMNS: &str = "seq, at_ms, node, kind, subject, on_behalf_of, object, action, \
     outcome, rule, reason, session, duration_ms, bytes, prev_hash, hash";

/// An audit log in a SQLite file.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if absent) the database at `path`, in WAL mode with
    /// `synchronous=NORMAL`, and creates the schema if absent. The head is
    /// read from the file, so a reopened log continues its chain.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, AuditError> {
        let conn = Connection::open(path)?;
        // Another connection (a reader, or a second process) may hold the
        // write lock briefly; wait instead of failing at once.
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL with synchronous=NORMAL: a commit appends its frames to the
        // -wal file with write(2) before COMMIT returns, and only
        // checkpoints fsync. A killed process (kill -9, panic, OOM) loses
        // nothing committed, since the data is already in the kernel's page
        // cache; only an OS crash or power loss may drop the last
        // transactions, and the file stays consistent even then.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AuditError::Invalid(format!(
                "journal_mode is {mode}, WAL refused"
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        // A store made before the intact probe existed: add its column
        // (NULL there reads as the row's `online`).
        let has_intact: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('status_changes') WHERE name = 'intact'",
            [],
            |r| r.get(0),
        )?;
        if !has_intact {
            conn.execute_batch("ALTER TABLE status_changes ADD COLUMN intact INTEGER")?;
        }
        Ok(SqliteStore { conn })
    }

    /// The underlying connection (for maintenance and tests).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

fn read_head(conn: &Connection) -> Result<Head, AuditError> {
    let (seq, hash): (i64, Vec<u8>) =
        conn.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let seq = to_u64(0, "head seq", seq)?;
    let hash = Hash::try_from(hash.as_slice()).map_err(|_| AuditError::Malformed {
        seq,
        what: "head hash length".into(),
    })?;
    Ok(Head { seq, hash })
}

/// Reads a row of [`COLUMNS`].
fn read_record(r: &Row<'_>) -> Result<AuditRecord, AuditError> {
    let seq = to_u64(0, "seq", r.get(0)?)?;
    let kind: String = r.get(3)?;
    let kind = AuditKind::from_name(&kind).ok_or_else(|| AuditError::Malformed {
        seq,
        what: format!("unknown kind {kind:?}"),
    })?;
    let opt = |i: usize, what: &str| -> Result<Option<u64>, AuditError> {
        r.get::<_, Option<i64>>(i)?
            .map(|v| to_u64(seq, what, v))
            .transpose()
    };
    let hash = |i: usize, what: &str| -> Result<Hash, AuditError> {
        let b: Vec<u8> = r.get(i)?;
        Hash::try_from(b.as_slice()).map_err(|_| AuditError::Malformed {
            seq,
            what: format!("{what} length {}", b.len()),
        })
    };
    Ok(AuditRecord {
        seq,
        entry: AuditEntry {
            at_ms: to_u64(seq, "at_ms", r.get(1)?)?,
            node: r.get(2)?,
            kind,
            subject: r.get(4)?,
            on_behalf_of: r.get(5)?,
            object: r.get(6)?,
            action: r.get(7)?,
            outcome: r.get(8)?,
            rule: r.get(9)?,
            reason: r.get(10)?,
            session: r.get(11)?,
            duration_ms: opt(12, "duration_ms")?,
            bytes: opt(13, "bytes")?,
        },
        prev_hash: hash(14, "prev_hash")?,
        hash: hash(15, "hash")?,
    })
}

impl AuditStore for SqliteStore {
    fn append(&mut self, entries: &[AuditEntry]) -> Result<Head, AuditError> {
        // IMMEDIATE takes the write lock before reading the head, so another
        // connection cannot append between the read and the insert.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = read_head(&tx)?;
        if entries.is_empty() {
            return Ok(head);
        }
        let (records, new_head) = chain(head, entries)?;
        {
            let mut ins = tx.prepare_cached(&format!(
                "INSERT INTO audit_log ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            ))?;
            for r in &records {
                let e = &r.entry;
                ins.execute(params![
                    to_i64("seq", r.seq)?,
                    to_i64("at_ms", e.at_ms)?,
                    e.node,
                    e.kind.as_str(),
                    e.subject,
                    e.on_behalf_of,
                    e.object,
                    e.action,
                    e.outcome,
                    e.rule,
                    e.reason,
                    e.session,
                    e.duration_ms
                        .map(|v| to_i64("duration_ms", v))
                        .transpose()?,
                    e.bytes.map(|v| to_i64("bytes", v)).transpose()?,
                    &r.prev_hash.0[..],
                    &r.hash.0[..],
                ])?;
            }
        }
        tx.execute(
            "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
            params![to_i64("seq", new_head.seq)?, &new_head.hash.0[..]],
        )?;
        tx.commit()?;
        Ok(new_head)
    }

    fn head(&mut self) -> Result<Head, AuditError> {
        read_head(&self.conn)
    }

    fn query(&mut self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1");
        let mut args: Vec<rusqlite::types::Value> = vec![to_i64("after_seq", q.after_seq)?.into()];
        if let Some(o) = &q.object {
            args.push(o.clone().into());
            sql += &format!(" AND object = ?{}", args.len());
        }
        if let Some(s) = &q.subject {
            args.push(s.clone().into());
            let n = args.len();
            sql += &format!(" AND (subject = ?{n} OR on_behalf_of = ?{n})");
        }
        if let Some(f) = q.from_ms {
            args.push(to_i64("from_ms", f)?.into());
            sql += &format!(" AND at_ms >= ?{}", args.len());
        }
        if let Some(t) = q.to_ms {
            args.push(to_i64("to_ms", t)?.into());
            sql += &format!(" AND at_ms < ?{}", args.len());
        }
        args.push(i64::from(q.effective_limit()).into());
        sql += &format!(" ORDER BY seq LIMIT ?{}", args.len());
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(read_record(row)?);
        }
        Ok(out)
    }

    fn record_child_head(
        &mut self,
        child: &str,
        head: &Head,
        at_ms: u64,
    ) -> Result<(), AuditError> {
        self.conn.execute(
            "INSERT INTO child_heads (child, seq, hash, at_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
            params![
                child,
                to_i64("seq", head.seq)?,
                &head.hash.0[..],
                to_i64("at_ms", at_ms)?
            ],
        )?;
        Ok(())
    }

    fn child_head(&mut self, child: &str) -> Result<Option<ChildHead>, AuditError> {
        let row: Option<(i64, Vec<u8>, i64)> = self
            .conn
            .query_row(
                "SELECT seq, hash, at_ms FROM child_heads WHERE child = ?1 \
                 ORDER BY seq DESC, at_ms DESC LIMIT 1",
                params![child],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, hash, at_ms)) = row else {
            return Ok(None);
        };
        let seq = to_u64(0, "child seq", seq)?;
        let hash = Hash::try_from(hash.as_slice()).map_err(|_| AuditError::Malformed {
            seq,
            what: "child hash length".into(),
        })?;
        Ok(Some(ChildHead {
            head: Head { seq, hash },
            at_ms: to_u64(seq, "child at_ms", at_ms)?,
        }))
    }

    fn record_status(&mut self, changes: &[StatusChange]) -> Result<(), AuditError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO status_changes (channel, at_ms, online, via, intact) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for c in changes {
                insert.execute(params![
                    c.channel,
                    to_i64("at_ms", c.at_ms)?,
                    c.online,
                    c.via,
                    c.intact
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn status_history(
        &mut self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<StatusChange>, AuditError> {
        let sql = status_history_sql("?1", "?2");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(params![to_i64("from", from_ms)?, to_i64("to", to_ms)?])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(StatusChange {
                channel: r.get(0)?,
                at_ms: to_u64(0, "status at_ms", r.get(1)?)?,
                online: r.get(2)?,
                via: r.get(3)?,
                intact: r.get(4)?,
            });
        }
        Ok(out)
    }
}
