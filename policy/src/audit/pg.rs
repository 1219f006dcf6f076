//! The PostgreSQL backend: the same schema as SQLite, for a city that runs
//! a database server.

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use super::sqlite::COLUMNS;
use super::{
    chain, status_history_sql, to_i64, to_u64, AuditEntry, AuditError, AuditKind, AuditQuery,
    AuditRecord, AuditStore, ChildHead, Hash, Head, StatusChange,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq          BIGINT PRIMARY KEY,
    at_ms        BIGINT NOT NULL,
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
    duration_ms  BIGINT,
    bytes        BIGINT,
    prev_hash    BYTEA NOT NULL,
    hash         BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_object ON audit_log (object, seq);
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (subject, seq);
CREATE INDEX IF NOT EXISTS audit_log_behalf ON audit_log (on_behalf_of, seq);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_ms, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id   BIGINT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS child_heads (
    child TEXT NOT NULL,
    seq   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (child, seq, hash)
);
CREATE TABLE IF NOT EXISTS status_changes (
    channel TEXT NOT NULL,
    at_ms   BIGINT NOT NULL,
    online  BOOLEAN NOT NULL,
    via     TEXT NOT NULL,
    intact  BOOLEAN
);
-- A store made before the intact probe existed (NULL reads as online).
ALTER TABLE status_changes ADD COLUMN IF NOT EXISTS intact BOOLEAN;
CREATE INDEX IF NOT EXISTS status_changes_channel ON status_changes (channel, at_ms);
CREATE INDEX IF NOT EXISTS status_changes_at ON status_changes (at_ms);
";

/// Advisory lock key held while creating the schema: concurrent
/// `CREATE TABLE IF NOT EXISTS` can otherwise fail on a catalog conflict.
const SCHEMA_LOCK: i64 = 0x6762_6761_7465_0001;

/// An audit log in a PostgreSQL database.
pub struct PgStore {
    client: Client,
    lock_head: Statement,
    insert: Statement,
    set_head: Statement,
}

impl PgStore {
    /// Connects (without TLS: use a unix socket or a trusted network) to
    /// `url`, a `postgres://` URL or a `host=... dbname=...` string, and
    /// creates the schema if absent.
    pub fn connect(url: &str) -> Result<PgStore, AuditError> {
        let config: Config = url.parse()?;
        let mut client = config.connect(NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
        let lock_head =
            client.prepare("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")?;
        // One statement per batch: arrays unnested into rows.
        let insert = client.prepare(&format!(
            "INSERT INTO audit_log ({COLUMNS}) SELECT * FROM unnest(\
             $1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
             $13::int8[], $14::int8[], $15::bytea[], $16::bytea[])"
        ))?;
        let set_head = client.prepare("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")?;
        Ok(PgStore {
            client,
            lock_head,
            insert,
            set_head,
        })
    }

    /// The underlying client (for maintenance and tests).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

fn head_from(seq: i64, hash: &[u8]) -> Result<Head, AuditError> {
    let seq = to_u64(0, "head seq", seq)?;
    let hash = Hash::try_from(hash).map_err(|_| AuditError::Malformed {
        seq,
        what: "head hash length".into(),
    })?;
    Ok(Head { seq, hash })
}

/// Reads a row of [`COLUMNS`].
fn read_record(r: &Row) -> Result<AuditRecord, AuditError> {
    let seq = to_u64(0, "seq", r.try_get(0)?)?;
    let kind: String = r.try_get(3)?;
    let kind = AuditKind::from_name(&kind).ok_or_else(|| AuditError::Malformed {
        seq,
        what: format!("unknown kind {kind:?}"),
    })?;
    let opt = |i: usize, what: &str| -> Result<Option<u64>, AuditError> {
        r.try_get::<_, Option<i64>>(i)?
            .map(|v| to_u64(seq, what, v))
            .transpose()
    };
    let hash = |i: usize, what: &str| -> Result<Hash, AuditError> {
        let b: &[u8] = r.try_get(i)?;
        Hash::try_from(b).map_err(|_| AuditError::Malformed {
            seq,
            what: format!("{what} length {}", b.len()),
        })
    };
    Ok(AuditRecord {
        seq,
        entry: AuditEntry {
            at_ms: to_u64(seq, "at_ms", r.try_get(1)?)?,
            node: r.try_get(2)?,
            kind,
            subject: r.try_get(4)?,
            on_behalf_of: r.try_get(5)?,
            object: r.try_get(6)?,
            action: r.try_get(7)?,
            outcome: r.try_get(8)?,
            rule: r.try_get(9)?,
            reason: r.try_get(10)?,
            session: r.try_get(11)?,
            duration_ms: opt(12, "duration_ms")?,
            bytes: opt(13, "bytes")?,
        },
        prev_hash: hash(14, "prev_hash")?,
        hash: hash(15, "hash")?,
    })
}

impl AuditStore for PgStore {
    fn append(&mut self, entries: &[AuditEntry]) -> Result<Head, AuditError> {
        let mut tx = self.client.transaction()?;
        // Locking the head row serialises appends from every connection:
        // a second writer waits here and then chains after the first.
        let row = tx.query_one(&self.lock_head, &[])?;
        let head = head_from(row.try_get(0)?, row.try_get(1)?)?;
        if entries.is_empty() {
            return Ok(head);
        }
        let (records, new_head) = chain(head, entries)?;
        let n = records.len();
        let mut seq = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let mut dur = Vec::with_capacity(n);
        let mut bytes = Vec::with_capacity(n);
        for r in &records {
            seq.push(to_i64("seq", r.seq)?);
            at.push(to_i64("at_ms", r.entry.at_ms)?);
            dur.push(
                r.entry
                    .duration_ms
                    .map(|v| to_i64("duration_ms", v))
                    .transpose()?,
            );
            bytes.push(r.entry.bytes.map(|v| to_i64("bytes", v)).transpose()?);
        }
        let col = |f: fn(&AuditEntry) -> &str| records.iter().map(|r| f(&r.entry)).collect();
        let opt = |f: fn(&AuditEntry) -> Option<&str>| -> Vec<Option<&str>> {
            records.iter().map(|r| f(&r.entry)).collect()
        };
        let node: Vec<&str> = col(|e| &e.node);
        let kind: Vec<&str> = records.iter().map(|r| r.entry.kind.as_str()).collect();
        let subject: Vec<&str> = col(|e| &e.subject);
        let behalf = opt(|e| e.on_behalf_of.as_deref());
        let object: Vec<&str> = col(|e| &e.object);
        let action: Vec<&str> = col(|e| &e.action);
        let outcome: Vec<&str> = col(|e| &e.outcome);
        let rule = opt(|e| e.rule.as_deref());
        let reason: Vec<&str> = col(|e| &e.reason);
        let session = opt(|e| e.session.as_deref());
        let prev: Vec<&[u8]> = records.iter().map(|r| &r.prev_hash.0[..]).collect();
        let hash: Vec<&[u8]> = records.iter().map(|r| &r.hash.0[..]).collect();
        tx.execute(
            &self.insert,
            &[
                &seq, &at, &node, &kind, &subject, &behalf, &object, &action, &outcome, &rule,
                &reason, &session, &dur, &bytes, &prev, &hash,
            ],
        )?;
        tx.execute(
            &self.set_head,
            &[&to_i64("seq", new_head.seq)?, &&new_head.hash.0[..]],
        )?;
        tx.commit()?;
        Ok(new_head)
    }

    fn head(&mut self) -> Result<Head, AuditError> {
        let row = self
            .client
            .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?;
        head_from(row.try_get(0)?, row.try_get(1)?)
    }

    fn query(&mut self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let mut args: Vec<Box<dyn ToSql + Sync>> =
            vec![Box::new(to_i64("after_seq", q.after_seq)?)];
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1");
        if let Some(o) = &q.object {
            args.push(Box::new(o.clone()));
            sql += &format!(" AND object = ${}", args.len());
        }
        if let Some(s) = &q.subject {
            args.push(Box::new(s.clone()));
            let n = args.len();
            sql += &format!(" AND (subject = ${n} OR on_behalf_of = ${n})");
        }
        if let Some(f) = q.from_ms {
            args.push(Box::new(to_i64("from_ms", f)?));
            sql += &format!(" AND at_ms >= ${}", args.len());
        }
        if let Some(t) = q.to_ms {
            args.push(Box::new(to_i64("to_ms", t)?));
            sql += &format!(" AND at_ms < ${}", args.len());
        }
        args.push(Box::new(i64::from(q.effective_limit())));
        sql += &format!(" ORDER BY seq LIMIT ${}", args.len());
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let rows = self.client.query(&sql, &refs)?;
        rows.iter().map(read_record).collect()
    }

    fn record_child_head(
        &mut self,
        child: &str,
        head: &Head,
        at_ms: u64,
    ) -> Result<(), AuditError> {
        self.client.execute(
            "INSERT INTO child_heads (child, seq, hash, at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[
                &child,
                &to_i64("seq", head.seq)?,
                &&head.hash.0[..],
                &to_i64("at_ms", at_ms)?,
            ],
        )?;
        Ok(())
    }

    fn child_head(&mut self, child: &str) -> Result<Option<ChildHead>, AuditError> {
        let row = self.client.query_opt(
            "SELECT seq, hash, at_ms FROM child_heads WHERE child = $1 \
             ORDER BY seq DESC, at_ms DESC LIMIT 1",
            &[&child],
        )?;
        let Some(row) = row else { return Ok(None) };
        let head = head_from(row.try_get(0)?, row.try_get(1)?)?;
        Ok(Some(ChildHead {
            head,
            at_ms: to_u64(head.seq, "child at_ms", row.try_get(2)?)?,
        }))
    }

    fn record_status(&mut self, changes: &[StatusChange]) -> Result<(), AuditError> {
        let mut tx = self.client.transaction()?;
        let insert = tx.prepare(
            "INSERT INTO status_changes (channel, at_ms, online, via, intact) \
             VALUES ($1, $2, $3, $4, $5)",
        )?;
        for c in changes {
            tx.execute(
                &insert,
                &[
                    &c.channel,
                    &to_i64("at_ms", c.at_ms)?,
                    &c.online,
                    &c.via,
                    &c.intact,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn status_history(
        &mut self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<StatusChange>, AuditError> {
        let sql = status_history_sql("$1", "$2");
        let rows = self
            .client
            .query(&sql, &[&to_i64("from", from_ms)?, &to_i64("to", to_ms)?])?;
        rows.iter()
            .map(|r| {
                Ok(StatusChange {
                    channel: r.try_get(0)?,
                    at_ms: to_u64(0, "status at_ms", r.try_get(1)?)?,
                    online: r.try_get(2)?,
                    via: r.try_get(3)?,
                    intact: r.try_get(4)?,
                })
            })
            .collect()
    }
}
