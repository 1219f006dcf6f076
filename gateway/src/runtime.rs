//! The async driver of one node: sockets and timers in, the sans-IO
//! [`Node`] in the middle, transmits out. The HTTP API reads node state
//! through [`NodeHandle`], a request channel into this loop, so state has
//! one owner and needs no locks.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::node::{CallEvent, DeviceQuery, Inbound, Node, Output, QueryAnswer, QueryError, Ticket};
use crate::transport::{Limits, Transports};
use policy::audit::{AuditEntry, AuditWriter, Head};
use topology::GbId;

/// A question or command for the node, run inside its loop; it may leave a
/// waiter for a device query's answer, and its reply.
type Job = Box<dyn FnOnce(&mut Node, &mut JobContext) + Send>;

/// A job's reply to its caller, sent once what the job audited is durable.
type Reply = Box<dyn FnOnce() + Send>;

/// What a job may leave behind in the loop.
struct JobContext {
    waiters: Waiters,
    /// Replies of this round, released after the round's audit batch.
    replies: Vec<Reply>,
}

/// The outcome of a device query, as the HTTP handler receives it.
pub type DeviceAnswer = Result<QueryAnswer, QueryError>;

/// HTTP handlers waiting for device query answers, by ticket.
type Waiters = HashMap<Ticket, oneshot::Sender<DeviceAnswer>>;

/// A cheap, cloneable handle to ask a running node about its state.
#[derive(Clone)]
pub struct NodeHandle {
    jobs: mpsc::Sender<Job>,
}

/// The node's loop has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct Stopped;

impl NodeHandle {
    /// Run `f` against the node's state and return its result.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        self.command(move |node, _| f(node)).await
    }

    /// Run `f` on the node (it may change state, e.g. place a call) with
    /// the current time, and return its result. What `f` makes the node
    /// send goes out at once.
    pub async fn command<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, Instant) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |node, cx| {
            let r = f(node, Instant::now());
            // A decision's answer leaves only once its audit record is
            // written (see `Running::flush`).
            cx.replies.push(Box::new(move || {
                let _ = tx.send(r);
            }));
        });
        self.jobs.send(job).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Ask device or channel `id` `query` through the cascade and wait for
    /// its answer (or the node's verdict: not found, busy, timed out).
    pub async fn ask_device(&self, id: GbId, query: DeviceQuery) -> Result<DeviceAnswer, Stopped> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |node, cx| {
            let ticket = node.ask_device(id, query, Instant::now());
            // Registered before the loop drains answers, so even one known
            // at once finds its waiter.
            cx.waiters.insert(ticket, tx);
        });
        self.jobs.send(job).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// A node bound to its sockets, ready to run.
pub struct Running {
    node: Node,
    transports: Transports,
    inbound: mpsc::Receiver<Inbound>,
    jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
    /// The sockets stop only after the graceful stop (unregistering needs them).
    transport_stop: CancellationToken,
    /// Where call events go (the media plane); dropped when nobody listens.
    call_events: Option<mpsc::UnboundedSender<CallEvent>>,
    /// HTTP handlers waiting for device query answers, and job replies.
    cx: JobContext,
    /// Replies held until the audit batch before them is committed.
    held_replies: std::collections::VecDeque<(u64, Reply)>,
    /// Where audit records go; `None` when the node keeps no audit.
    audit: Option<AuditWriter>,
    /// Audit batches handed to the writer, numbered from 1.
    audit_sent: u64,
    /// Batches the writer acknowledged, in order: the log's head after the
    /// commit, or `None` when the batch failed.
    audit_acks: mpsc::UnboundedReceiver<(u64, Option<Head>)>,
    audit_ack_tx: mpsc::UnboundedSender<(u64, Option<Head>)>,
    /// Transmits held until the audit batch before them is committed, so
    /// no answer leaves before the record of its decision is durable.
    held: std::collections::VecDeque<(u64, crate::sip::Transmit)>,
    audit_done: u64,
}

impl Running {
    /// Bind the node's SIP sockets. Returns the runner and a state handle.
    pub async fn bind(
        node: Node,
        quic: Option<crate::transport::QuicSetup>,
        shutdown: CancellationToken,
    ) -> Result<(Running, NodeHandle), crate::transport::BindError> {
        let (in_tx, in_rx) = mpsc::channel(16 * 1024);
        let limits = Limits {
            max_message: node.settings().max_message_size,
            max_connections: node.settings().max_tcp_connections,
        };
        let transport_stop = CancellationToken::new();
        let transports = Transports::bind(
            node.identity().addr,
            quic,
            in_tx,
            limits,
            transport_stop.clone(),
        )
        .await?;
        let (job_tx, job_rx) = mpsc::channel(64);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        Ok((
            Running {
                node,
                transports,
                inbound: in_rx,
                jobs: job_rx,
                shutdown,
                transport_stop,
                call_events: None,
                cx: JobContext {
                    waiters: HashMap::new(),
                    replies: Vec::new(),
                },
                held_replies: std::collections::VecDeque::new(),
                audit: None,
                audit_sent: 0,
                audit_acks: ack_rx,
                audit_ack_tx: ack_tx,
                held: std::collections::VecDeque::new(),
                audit_done: 0,
            },
            NodeHandle { jobs: job_tx },
        ))
    }

    /// Send call events (INVITEs from the parent, answers from below) to
    /// the media plane.
    pub fn set_call_events(&mut self, tx: mpsc::UnboundedSender<CallEvent>) {
        self.call_events = Some(tx);
    }

    /// The node's QUIC links (for the media plane), when it has any.
    pub fn quic_links(&self) -> Option<crate::transport::QuicLinks> {
        self.transports.quic().cloned()
    }

    /// Write this node's audit records and availability history through
    /// `writer`.
    pub fn set_audit(&mut self, writer: AuditWriter) {
        self.audit = Some(writer);
        self.node.keep_status_history(true);
    }

    /// Record channel status changes. Nothing waits for them: they are
    /// history, not a decision a client was told about.
    fn record_status(&mut self, changes: Vec<policy::audit::StatusChange>) {
        let Some(writer) = &self.audit else {
            return;
        };
        let n = changes.len() as u64;
        writer.record_status(
            changes,
            Box::new(move |r| match r {
                Ok(()) => metrics::counter!("gbgate_status_changes_recorded_total").increment(n),
                Err(e) => {
                    tracing::warn!(error = %e, changes = n, "status changes not recorded: the availability report will miss them");
                }
            }),
        );
    }

    fn flush(&mut self, out: &mut Vec<crate::sip::Transmit>) {
        // Audit records first: the transmits of this round answer the
        // requests they record, so they wait for the batch's commit.
        let mut batch: Vec<AuditEntry> = Vec::new();
        let mut child_heads = Vec::new();
        let mut status = Vec::new();
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Audit(e) => batch.push(e),
                Output::ChildHead { child, head, at_ms } => child_heads.push((child, head, at_ms)),
                Output::Status(c) => status.push(c),
            }
        }
        if !batch.is_empty() {
            self.submit_audit(batch);
        }
        if !status.is_empty() {
            self.record_status(status);
        }
        for (child, head, at_ms) in child_heads {
            self.record_child_head(child, head, at_ms);
        }
        self.node.drain_transmits(out);
        let waiting = self.audit_done < self.audit_sent;
        if waiting {
            for t in out.drain(..) {
                self.held.push_back((self.audit_sent, t));
            }
        } else {
            self.transports.send_all(out.drain(..));
        }
        for r in std::mem::take(&mut self.cx.replies) {
            if waiting {
                self.held_replies.push_back((self.audit_sent, r));
            } else {
                r();
            }
        }
        while let Some(ev) = self.node.poll_call_event() {
            if let Some(tx) = &self.call_events {
                let _ = tx.send(ev);
            }
        }
        while let Some(a) = self.node.poll_query_answer() {
            // A handler gone (client hung up) just drops the answer.
            if let Some(tx) = self.cx.waiters.remove(&a.ticket) {
                let _ = tx.send(a.result);
            }
        }
    }

    fn submit_audit(&mut self, batch: Vec<AuditEntry>) {
        let Some(writer) = &self.audit else {
            return;
        };
        let n = batch.len() as u64;
        self.audit_sent += 1;
        let seq = self.audit_sent;
        let ack = self.audit_ack_tx.clone();
        writer.submit(
            batch,
            Box::new(move |r| {
                let head = match r {
                    Ok(head) => {
                        metrics::counter!("gbgate_audit_records_total").increment(n);
                        Some(head)
                    }
                    Err(e) => {
                        metrics::counter!("gbgate_audit_failures_total").increment(1);
                        tracing::error!(error = %e, records = n, "AUDIT WRITE FAILED: new sessions are refused until the audit store works again");
                        None
                    }
                };
                let _ = ack.send((seq, head));
            }),
        );
    }

    /// Record that `child` reported `head` (a change: the node sends each
    /// head once). Nothing waits for it: the child's own log is the record
    /// that matters, and the next change is recorded anyway.
    fn record_child_head(&mut self, child: GbId, head: Head, at_ms: u64) {
        let Some(writer) = &self.audit else {
            return;
        };
        writer.record_child_head(
            child.to_string(),
            head,
            at_ms,
            Box::new(move |r| match r {
                Ok(()) => metrics::counter!("gbgate_audit_child_heads_total").increment(1),
                Err(e) => {
                    metrics::counter!("gbgate_audit_failures_total").increment(1);
                    tracing::error!(error = %e, %child, %head, "cannot record a child's audit head");
                }
            }),
        );
    }

    /// A batch was committed (with the log's head after it) or failed
    /// (`None`): release what waited for it; a new head goes up with the
    /// next keepalives.
    fn on_audit_ack(&mut self, seq: u64, head: Option<Head>) {
        self.audit_done = self.audit_done.max(seq);
        self.node.set_audit_healthy(head.is_some());
        if let Some(head) = head {
            self.node.set_audit_head(head);
        }
        while self
            .held
            .front()
            .is_some_and(|(s, _)| *s <= self.audit_done)
        {
            if let Some((_, t)) = self.held.pop_front() {
                self.transports.send(t);
            }
        }
        while self
            .held_replies
            .front()
            .is_some_and(|(s, _)| *s <= self.audit_done)
        {
            if let Some((_, r)) = self.held_replies.pop_front() {
                r();
            }
        }
    }

    /// Run until `shutdown` fires, then unregister from the parent (waiting
    /// at most `grace`) and return.
    pub async fn run(mut self, grace: std::time::Duration) {
        let mut out = Vec::new();
        self.node.handle_timeout(Instant::now());
        self.flush(&mut out);
        loop {
            let wake = self
                .node
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(1));
            let turn = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                m = self.inbound.recv() => {
                    let Some(m) = m else { break };
                    let now = Instant::now();
                    self.node.set_backlog(self.inbound.len());
                    self.node.handle_inbound(m, now);
                    let mut messages = 1;
                    // Drain what else is queued, in a bounded batch so timers
                    // (retransmissions, keepalives) still run under load.
                    for _ in 0..256 {
                        let Ok(m) = self.inbound.try_recv() else { break };
                        self.node.handle_inbound(m, now);
                        messages += 1;
                    }
                    (now, LoopTurn::Messages(messages))
                }
                j = self.jobs.recv() => {
                    let now = Instant::now();
                    if let Some(job) = j { job(&mut self.node, &mut self.cx); }
                    (now, LoopTurn::Job)
                }
                Some((seq, head)) = self.audit_acks.recv() => {
                    let now = Instant::now();
                    self.on_audit_ack(seq, head);
                    (now, LoopTurn::AuditAck)
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.node.handle_timeout(now);
                    (now, LoopTurn::Timers)
                }
            };
            self.flush(&mut out);
            slow_turn(turn.0, turn.1);
        }
        // Stopping: what still waits for the audit goes out as it is.
        self.audit_done = self.audit_sent;
        for (_, t) in std::mem::take(&mut self.held) {
            self.transports.send(t);
        }
        for (_, r) in std::mem::take(&mut self.held_replies) {
            r();
        }
        self.node.shutdown(Instant::now());
        self.flush(&mut out);
        let deadline = Instant::now() + grace;
        while !self.node.is_shut_down() && Instant::now() < deadline {
            let wake = self.node.poll_timeout().unwrap_or(deadline).min(deadline);
            tokio::select! {
                m = self.inbound.recv() => match m {
                    Some(m) => self.node.handle_inbound(m, Instant::now()),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => self.node.handle_timeout(Instant::now()),
            }
            self.flush(&mut out);
        }
        // Let the writer tasks put the last bytes on the wire.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.transport_stop.cancel();
    }
}

/// What one turn of the node loop did.
#[derive(Clone, Copy)]
enum LoopTurn {
    /// Handled this many inbound messages.
    Messages(usize),
    /// Ran a job from the HTTP side.
    Job,
    /// Released what waited for the audit.
    AuditAck,
    /// Ran the node's timers.
    Timers,
}

/// A turn of the node loop longer than this holds up every message
/// behind it: it is logged and counted, so a pause under load is seen
/// with what caused it.
const SLOW_TURN: std::time::Duration = std::time::Duration::from_millis(20);

fn slow_turn(started: Instant, turn: LoopTurn) {
    let took = started.elapsed();
    if took >= SLOW_TURN {
        metrics::counter!("gbgate_node_loop_slow_turns_total").increment(1);
        let (what, messages) = match turn {
            LoopTurn::Messages(n) => ("messages", n),
            LoopTurn::Job => ("an HTTP job", 0),
            LoopTurn::AuditAck => ("an audit acknowledgement", 0),
            LoopTurn::Timers => ("timers", 0),
        };
        tracing::warn!(
            ms = took.as_millis() as u64,
            what,
            messages,
            "a turn of the node loop was slow"
        );
    }
}
