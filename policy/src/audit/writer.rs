//! Appending off the caller's thread, batched.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use super::{check_entry, AuditEntry, AuditError, AuditStore, Head, StatusChange};

/// Called once with the outcome of a submission.
pub type Done = Box<dyn FnOnce(Result<Head, AuditError>) + Send>;

/// Called once with the outcome of recording a child's head.
pub type ChildDone = Box<dyn FnOnce(Result<(), AuditError>) + Send>;

enum Msg {
    Append(Vec<AuditEntry>, Done),
    ChildHead {
        child: String,
        head: Head,
        at_ms: u64,
        done: ChildDone,
    },
    Status(Vec<StatusChange>, ChildDone),
}

/// Submissions the queue holds by default before refusing.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Entries at most in one transaction; more queued entries go in the next.
const MAX_BATCH_ENTRIES: usize = 20_000;

/// A thread that owns an [`AuditStore`] and appends what is submitted to it.
///
/// The thread takes every submission queued while it was busy and appends
/// them in one transaction, so a node submitting thousands of entries a
/// second pays for few commits. Each submission's `done` is called on the
/// writer thread after the commit (keep it short: e.g. send on a channel).
///
/// The queue is bounded. When it is full, or once the store has failed
/// (disk full, database gone), [`submit`](AuditWriter::submit) calls `done`
/// at once with [`AuditError::Unavailable`]: the caller must refuse what it
/// would otherwise serve unaudited. A failed writer stays failed; spawn a
/// new one on a reopened store to recover.
///
/// Reading (query, verify) does not go through this thread: open a second
/// store on the same URL with [`open`](super::open). SQLite in WAL mode and
/// PostgreSQL both let a reader run beside the writer, and a verify walking
/// millions of records through this thread would hold up appends until the
/// queue filled and sessions were refused.
pub struct AuditWriter {
    tx: Option<SyncSender<Msg>>,
    failed: Arc<OnceLock<String>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts the writer thread on `store` with [`DEFAULT_CAPACITY`].
    pub fn spawn(store: Box<dyn AuditStore>) -> Result<AuditWriter, AuditError> {
        AuditWriter::with_capacity(store, DEFAULT_CAPACITY)
    }

    /// Starts the writer thread on `store`, queueing at most `capacity`
    /// submissions.
    pub fn with_capacity(
        store: Box<dyn AuditStore>,
        capacity: usize,
    ) -> Result<AuditWriter, AuditError> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let failed = Arc::new(OnceLock::new());
        let f = failed.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(store, rx, &f))?;
        Ok(AuditWriter {
            tx: Some(tx),
            failed,
            thread: Some(thread),
        })
    }

    /// Queues `entries` for appending (an entry that cannot be stored gets
    /// [`AuditError::Invalid`] at once); `done` gets the log head after the
    /// transaction that stored them (every entry has a seq at or below it),
    /// or the error. Never blocks.
    pub fn submit(&self, entries: Vec<AuditEntry>, done: Done) {
        // A bad entry is refused alone, before it can fail a whole batch.
        if let Err(e) = entries.iter().try_for_each(check_entry) {
            done(Err(e));
            return;
        }
        if let Some(reason) = self.failed.get() {
            done(Err(AuditError::Unavailable(reason.clone())));
            return;
        }
        let Some(tx) = &self.tx else {
            done(Err(AuditError::Unavailable("audit writer stopped".into())));
            return;
        };
        match tx.try_send(Msg::Append(entries, done)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => refuse(msg, "audit queue full"),
            Err(TrySendError::Disconnected(msg)) => refuse(msg, "audit writer stopped"),
        }
    }

    /// Queues recording that `child` reported `head` at `at_ms` (see
    /// [`AuditStore::record_child_head`]). Never blocks.
    pub fn record_child_head(&self, child: String, head: Head, at_ms: u64, done: ChildDone) {
        if let Some(reason) = self.failed.get() {
            done(Err(AuditError::Unavailable(reason.clone())));
            return;
        }
        let Some(tx) = &self.tx else {
            done(Err(AuditError::Unavailable("audit writer stopped".into())));
            return;
        };
        let msg = Msg::ChildHead {
            child,
            head,
            at_ms,
            done,
        };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => refuse(msg, "audit queue full"),
            Err(TrySendError::Disconnected(msg)) => refuse(msg, "audit writer stopped"),
        }
    }

    /// Queues channel status changes for the availability history (see
    /// [`AuditStore::record_status`]). Never blocks.
    pub fn record_status(&self, changes: Vec<StatusChange>, done: ChildDone) {
        if let Some(reason) = self.failed.get() {
            done(Err(AuditError::Unavailable(reason.clone())));
            return;
        }
        let Some(tx) = &self.tx else {
            done(Err(AuditError::Unavailable("audit writer stopped".into())));
            return;
        };
        match tx.try_send(Msg::Status(changes, done)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => refuse(msg, "audit queue full"),
            Err(TrySendError::Disconnected(msg)) => refuse(msg, "audit writer stopped"),
        }
    }

    /// Why the store failed, once it has: every later submission is refused.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }
}

impl Drop for AuditWriter {
    /// Appends what is queued, then stops the thread.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // A panic in a `done` callback ended the thread early; what it
            // left queued was refused when its queue closed.
            let _ = t.join();
        }
    }
}

fn refuse(msg: Msg, reason: &str) {
    match msg {
        Msg::Append(_, done) => done(Err(AuditError::Unavailable(reason.into()))),
        Msg::ChildHead { done, .. } | Msg::Status(_, done) => {
            done(Err(AuditError::Unavailable(reason.into())));
        }
    }
}

fn run(mut store: Box<dyn AuditStore>, rx: Receiver<Msg>, failed: &OnceLock<String>) {
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            if let Some(reason) = failed.get() {
                refuse(msg, reason);
                continue;
            }
            match msg {
                Msg::Append(mut e, done) => {
                    entries.append(&mut e);
                    dones.push(done);
                    if entries.len() >= MAX_BATCH_ENTRIES {
                        flush(&mut *store, &mut entries, &mut dones, failed);
                    }
                }
                Msg::ChildHead {
                    child,
                    head,
                    at_ms,
                    done,
                } => {
                    // Keep submission order: what was queued before goes first.
                    flush(&mut *store, &mut entries, &mut dones, failed);
                    match failed.get() {
                        Some(reason) => done(Err(AuditError::Unavailable(reason.clone()))),
                        None => done(store.record_child_head(&child, &head, at_ms)),
                    }
                }
                Msg::Status(changes, done) => {
                    flush(&mut *store, &mut entries, &mut dones, failed);
                    match failed.get() {
                        Some(reason) => done(Err(AuditError::Unavailable(reason.clone()))),
                        None => done(store.record_status(&changes)),
                    }
                }
            }
        }
        flush(&mut *store, &mut entries, &mut dones, failed);
    }
}

/// Appends the gathered entries in one transaction and answers their
/// submitters.
fn flush(
    store: &mut dyn AuditStore,
    entries: &mut Vec<AuditEntry>,
    dones: &mut Vec<Done>,
    failed: &OnceLock<String>,
) {
    if dones.is_empty() {
        return;
    }
    let result = store.append(entries);
    entries.clear();
    match result {
        Ok(head) => {
            for done in dones.drain(..) {
                done(Ok(head));
            }
        }
        Err(e) => {
            let reason = format!("audit store failed: {e}");
            let _ = failed.set(reason.clone());
            for done in dones.drain(..) {
                done(Err(AuditError::Unavailable(reason.clone())));
            }
        }
    }
}
