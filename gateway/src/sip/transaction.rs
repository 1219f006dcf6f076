//! RFC 3261 §17 transactions, INVITE and non-INVITE, client and server, as
//! a sans-IO state machine.
//!
//! The layer never reads a clock or touches a socket: callers pass `now`,
//! drain [`TransactionLayer::poll_transmit`] and sleep until
//! [`TransactionLayer::poll_timeout`]. Client transactions carry an opaque
//! token `T` so the owner learns which of its requests a response answers.
//!
//! INVITE transactions follow RFC 3261 §17.1.1/§17.2.1 as amended by
//! RFC 6026: a 2xx moves both sides to an "Accepted" state that lasts 64·T1,
//! in which the server retransmits its 2xx until the ACK arrives and the
//! client re-sends its ACK for every retransmitted 2xx. The client builds
//! the ACK for a non-2xx final response itself (same branch); the ACK for a
//! 2xx is the transaction user's (it is a new request within the dialog),
//! handed to [`TransactionLayer::set_ack`] so retransmitted 2xx get it again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::header::{NameAddr, Via};
use super::message::{Headers, Method, Request, Response};
use super::{Peer, Transmit};

/// RFC 3261 timer values. Defaults are the RFC's; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// RTT estimate; first retransmission interval.
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests.
    pub t2: Duration,
    /// How long a message may linger in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer F / J: 64·T1, how long a non-INVITE transaction may last.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Identifies a client transaction: top Via branch plus CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    branch: String,
    method: Method,
}

impl ClientKey {
    /// The client transaction a response belongs to (top Via branch and CSeq method).
    pub fn of_response(response: &Response) -> Option<ClientKey> {
        Some(ClientKey {
            branch: response.top_via()?.branch()?.to_owned(),
            method: response.cseq()?.method,
        })
    }

    /// The client transaction a request we sent started.
    pub fn of_request(request: &Request) -> Option<ClientKey> {
        Some(ClientKey {
            branch: request.top_via()?.branch()?.to_owned(),
            method: request.cseq()?.method,
        })
    }
}

/// Identifies a server transaction (RFC 3261 §17.2.3): branch, sent-by and
/// method, so two peers reusing a branch do not collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: Method,
}

/// What a new incoming request means to the transaction user.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// First copy: the transaction user must handle it and respond.
    New,
    /// A retransmission, already absorbed (the last response, if any, was resent).
    Retransmission,
}

/// Something the transaction user must learn about a client transaction.
#[derive(Debug)]
pub enum ClientEvent<T> {
    /// A final (or provisional, see `provisional`) response arrived.
    Response {
        /// The token given to [`TransactionLayer::send_request`].
        token: T,
        /// The response.
        response: Response,
    },
    /// No final response within Timer F (64·T1).
    Timeout {
        /// The token given to [`TransactionLayer::send_request`].
        token: T,
        /// The method of the request that timed out.
        method: Method,
    },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ClientState {
    Trying,
    Proceeding,
    Completed,
    /// INVITE only: a 2xx arrived (RFC 6026 Timer M running).
    Accepted,
}

struct ClientTx<T> {
    state: ClientState,
    /// The INVITE itself, kept to build the ACK for a non-2xx answer.
    invite: Option<Request>,
    /// The ACK to send again for a retransmitted final response.
    ack: Option<Bytes>,
    peer: Peer,
    request: Bytes,
    token: Option<T>,
    interval: Duration,
    next_retransmit: Option<Instant>,
    deadline: Instant,
    generation: u64,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ServerState {
    Trying,
    Proceeding,
    Completed,
    /// INVITE only: a 2xx was sent; it is retransmitted until the ACK.
    Accepted,
    /// INVITE only: the ACK arrived (non-2xx: Timer I; 2xx: retransmission stops).
    Confirmed,
}

struct ServerTx {
    state: ServerState,
    peer: Peer,
    last_response: Option<Bytes>,
    deadline: Instant,
    generation: u64,
    invite: bool,
    /// Call-ID and CSeq number, to match the ACK of a 2xx (it has its own branch).
    dialog_key: Option<(String, u32)>,
    interval: Duration,
    next_retransmit: Option<Instant>,
}

/// The final answer of a finished non-INVITE server transaction, kept
/// through Timer J to resend when the request comes again. Most answers
/// are rebuilt from the retransmission itself (it carries the same Via,
/// From, To, Call-ID and CSeq) plus what the answer added, so a record
/// holds some tens of bytes, not the whole message: at 10,000 catalog
/// MESSAGEs a second, J's 32 s would otherwise hold 320,000 copies. An
/// answer the request does not rebuild byte for byte is kept whole.
///
/// The common record allocates nothing of its own: the reason is the
/// standard one, our To tag is 16 hex digits kept as a number, and the
/// header lines the answer added (our User-Agent) are shared with the
/// previous record's when equal. A UDP city holding ~100,000 records for
/// Timer J while 420,000 catalog entries arrive otherwise interleaves four
/// small allocations per record with the entries, and the pages they free
/// stay pinned by the entries.
enum Answered {
    Rebuilt {
        status: u16,
        to_tag: Option<Tag>,
        /// Header lines after the ones copied from the request.
        extra: std::sync::Arc<Headers>,
        /// A reason other than the standard one, or a body: rare, so out
        /// of line (the record stays 40 bytes).
        unusual: Option<Box<(String, Bytes)>>,
    },
    Whole(Bytes),
}

/// A To tag: ours are 16 hex digits (`new_tag`), kept as their number.
enum Tag {
    Hex(u64),
    /// Boxed twice: a thin pointer keeps the tag at 16 bytes.
    #[allow(clippy::box_collection, clippy::redundant_allocation)]
    Text(Box<Box<str>>),
}

impl Tag {
    fn new(tag: &str) -> Tag {
        let hex = tag.len() == 16 && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match u64::from_str_radix(tag, 16) {
            Ok(n) if hex => Tag::Hex(n),
            _ => Tag::Text(Box::new(tag.into())),
        }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Tag::Hex(n) => format!("{n:016x}").into(),
            Tag::Text(t) => std::borrow::Cow::Borrowed(&***t),
        }
    }
}

impl Answered {
    fn new(
        request: &Request,
        response: &Response,
        data: &Bytes,
        last_extra: &mut Option<std::sync::Arc<Headers>>,
    ) -> Answered {
        let to_tag: Option<Box<str>> = response
            .headers
            .get("To")
            .and_then(|to| NameAddr::parse(to).ok())
            .and_then(|na| na.tag().map(Box::from));
        // What `Response::to_request` puts first, compared line by line
        // with what the answer has there: equal, and the rest is kept as it
        // is, so the rebuilt answer is the same bytes.
        let template = Response::to_request(request, response.status, to_tag.as_deref()).headers;
        if !response.headers.starts_with(&template) {
            return Answered::Whole(data.clone());
        }
        let standard = crate::sip::message::reason_phrase(response.status);
        let unusual = (response.reason != standard || !response.body.is_empty())
            .then(|| Box::new((response.reason.clone(), response.body.clone())));
        let tail = response.headers.tail_from(template.len());
        let extra = match last_extra.as_ref().filter(|e| ***e == tail) {
            Some(shared) => shared.clone(),
            None => {
                let e = std::sync::Arc::new(tail);
                *last_extra = Some(e.clone());
                e
            }
        };
        Answered::Rebuilt {
            status: response.status,
            to_tag: to_tag.as_deref().map(Tag::new),
            extra,
            unusual,
        }
    }

    fn render(&self, request: &Request) -> Bytes {
        match self {
            Answered::Whole(b) => b.clone(),
            Answered::Rebuilt {
                status,
                to_tag,
                extra,
                unusual,
            } => {
                let tag = to_tag.as_ref().map(Tag::text);
                let mut r = Response::to_request(request, *status, tag.as_deref());
                if let Some(u) = unusual {
                    r.reason.clone_from(&u.0);
                    r.body = u.1.clone();
                }
                r.headers.extend_from(extra);
                r.to_bytes()
            }
        }
    }
}

/// An answered request's record: its answer and where it goes (over
/// UDP, so an address is the whole peer).
struct AnsweredTx {
    answer: Answered,
    to: std::net::SocketAddr,
    /// The keyed hash of its transaction key.
    hash: u64,
    /// When Timer J ends it.
    until: Instant,
}

/// Records per chunk of [`Answers`].
const ANSWER_CHUNK: usize = 1024;

/// Answered UDP transactions waiting out Timer J, in the order they end (J
/// is one span for all, so a queue, not the timer heap), and an index by
/// key hash for the retransmissions they absorb. The queue is chunked:
/// its memory follows the count, where one growing buffer keeps twice the
/// peak (a UDP city takes ~140,000 MESSAGEs within one Timer J).
#[derive(Default)]
struct Answers {
    chunks: VecDeque<Vec<AnsweredTx>>,
    /// Records already ended in the front chunk.
    front_ended: usize,
    /// Sequence number of the oldest record held, and of the next one.
    first: u64,
    next: u64,
    by_hash: HashMap<u64, u64>,
}

impl Answers {
    fn len(&self) -> usize {
        self.by_hash.len()
    }

    fn position(&self, seq: u64) -> Option<(usize, usize)> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()? + self.front_ended;
        Some((i / ANSWER_CHUNK, i % ANSWER_CHUNK))
    }

    fn get(&self, hash: u64) -> Option<&AnsweredTx> {
        let (c, i) = self.position(*self.by_hash.get(&hash)?)?;
        self.chunks.get(c)?.get(i).filter(|r| r.hash == hash)
    }

    fn push(&mut self, record: AnsweredTx) {
        self.by_hash.insert(record.hash, self.next);
        self.next += 1;
        match self.chunks.back_mut() {
            Some(c) if c.len() < ANSWER_CHUNK => c.push(record),
            _ => {
                let mut c = Vec::with_capacity(ANSWER_CHUNK);
                c.push(record);
                self.chunks.push_back(c);
            }
        }
    }

    /// When the oldest record ends.
    fn front_until(&self) -> Option<Instant> {
        self.chunks.front()?.get(self.front_ended).map(|r| r.until)
    }

    /// End the oldest record; true if there was one.
    fn pop_front(&mut self) -> bool {
        let Some(front) = self.chunks.front() else {
            return false;
        };
        let Some(r) = front.get(self.front_ended) else {
            return false;
        };
        if self.by_hash.get(&r.hash) == Some(&self.first) {
            self.by_hash.remove(&r.hash);
        }
        self.first += 1;
        self.front_ended += 1;
        if self.front_ended == ANSWER_CHUNK || self.front_ended == front.len() {
            // A chunk's records end in order: the whole chunk goes.
            self.chunks.pop_front();
            self.front_ended = 0;
        }
        if self.by_hash.capacity() > 4096 && self.by_hash.len() * 4 < self.by_hash.capacity() {
            self.by_hash.shrink_to((self.by_hash.len() * 2).max(4096));
        }
        true
    }
}

/// What an incoming ACK meant.
#[derive(Debug, PartialEq, Eq)]
pub enum AckMatch {
    /// It acknowledged a 2xx: the dialog is confirmed (first copy only).
    Accepted,
    /// It acknowledged a non-2xx final response, or repeated an earlier ACK.
    Absorbed,
    /// No INVITE transaction knows it (late, or never ours).
    Stray,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Client(u64),
    Server(u64),
}

/// Errors the transaction layer reports to its user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransactionError {
    /// A request without a usable top Via cannot start or match a transaction.
    #[error("request has no Via header with a branch parameter; add `Via: SIP/2.0/UDP host;branch=z9hG4bK...`")]
    NoBranch,
    /// A response for which no server transaction exists (already ended, or
    /// never received).
    #[error("no server transaction matches this response (it may have timed out)")]
    NoServerTransaction,
    /// The configured limit on open transactions was reached.
    #[error("too many open transactions ({0}); the peer or this node is overloaded")]
    TooMany(usize),
    /// The transaction already sent its final response.
    #[error("this request was already answered with a final response")]
    AlreadyAnswered,
}

/// All open transactions of one SIP endpoint.
pub struct TransactionLayer<T> {
    timers: Timers,
    max_open: usize,
    clients: HashMap<ClientKey, ClientTx<T>>,
    client_ids: HashMap<u64, ClientKey>,
    servers: HashMap<ServerKey, ServerTx>,
    server_ids: HashMap<u64, ServerKey>,
    /// (Call-ID, CSeq number) of INVITE server transactions → their key.
    invites: HashMap<(String, u32), ServerKey>,
    wheel: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    /// Non-INVITE server transactions that answered over UDP, waiting out
    /// Timer J to absorb retransmissions, by a keyed hash of their key.
    answered: Answers,
    answered_key: std::collections::hash_map::RandomState,
    /// The header lines the last answered record added, shared with the
    /// next one when the same (see `Answered`).
    last_extra: Option<std::sync::Arc<Headers>>,
    /// The same, in the order they end (J is one span for all, so a queue,
    /// not the heap). At the cap the oldest of them makes room: a late
    /// retransmission of its request is then handled again, which beats
    /// refusing new requests with 503.
    evicted: u64,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent<T>>,
    retransmissions: u64,
}

impl<T> TransactionLayer<T> {
    /// A layer with the given timers and at most `max_open` client and
    /// `max_open` server transactions.
    pub fn new(timers: Timers, max_open: usize) -> Self {
        TransactionLayer {
            timers,
            max_open,
            clients: HashMap::new(),
            client_ids: HashMap::new(),
            servers: HashMap::new(),
            server_ids: HashMap::new(),
            invites: HashMap::new(),
            wheel: BinaryHeap::new(),
            answered: Answers::default(),
            answered_key: std::collections::hash_map::RandomState::new(),
            last_extra: None,
            evicted: 0,
            next_id: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            retransmissions: 0,
        }
    }

    /// The timer values in force.
    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Open client and server transactions (answered ones waiting out
    /// Timer J included).
    pub fn open(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len() + self.answered.len())
    }

    fn answered_id(&self, key: &ServerKey) -> u64 {
        use std::hash::BuildHasher as _;
        self.answered_key.hash_one(key)
    }

    /// Total retransmissions sent so far (requests and responses).
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    /// Answered server transactions ended before Timer J to make room for
    /// new requests, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn schedule(&mut self, at: Instant, r: TimerRef) {
        self.wheel.push(Reverse((at, r)));
    }

    /// Start a client transaction for `request` (whose top Via must carry a
    /// branch) and queue its first transmission.
    pub fn send_request(
        &mut self,
        request: Request,
        peer: Peer,
        token: T,
        now: Instant,
    ) -> Result<ClientKey, TransactionError> {
        // Separate budgets: a flood of incoming requests must not stop this
        // node's own REGISTERs and keepalives.
        if self.clients.len() >= self.max_open {
            return Err(TransactionError::TooMany(self.max_open));
        }
        let branch = request
            .top_via()
            .and_then(|v| v.branch().map(str::to_owned))
            .ok_or(TransactionError::NoBranch)?;
        let key = ClientKey {
            branch,
            method: request.method.clone(),
        };
        let data = request.to_bytes();
        let invite = (request.method == Method::Invite).then_some(request);
        self.transmits.push_back(Transmit {
            peer,
            data: data.clone(),
        });
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + self.timers.transaction_timeout();
        let next_retransmit = if peer.transport.is_reliable() {
            None
        } else {
            Some(now + self.timers.t1)
        };
        // One timer at a time: Timer E/A until the deadline (F/B) is
        // nearer, so a transaction answered at once leaves one stale entry
        // in the heap, not two.
        self.schedule(next_retransmit.unwrap_or(deadline), TimerRef::Client(id));
        self.clients.insert(
            key.clone(),
            ClientTx {
                state: ClientState::Trying,
                invite,
                ack: None,
                peer,
                request: data,
                token: Some(token),
                interval: self.timers.t1,
                next_retransmit,
                deadline,
                generation: id,
            },
        );
        self.client_ids.insert(id, key.clone());
        Ok(key)
    }

    /// Whether the client transaction `key` has had a provisional answer and
    /// no final one yet: an INVITE that may now be CANCELled (RFC 3261 §9.1).
    pub fn is_proceeding(&self, key: &ClientKey) -> bool {
        self.clients
            .get(key)
            .is_some_and(|tx| tx.state == ClientState::Proceeding)
    }

    /// Feed a received response. Returns true when it matched a transaction
    /// (the event, if any, is queued for [`Self::poll_event`]); false for a
    /// stray response, which the caller drops.
    pub fn handle_response(&mut self, response: Response, now: Instant) -> bool {
        let Some(key) = ClientKey::of_response(&response) else {
            return false;
        };
        let Some(tx) = self.clients.get_mut(&key) else {
            return false;
        };
        let is_invite = tx.invite.is_some();
        if response.status < 200 {
            if tx.state == ClientState::Trying {
                tx.state = ClientState::Proceeding;
                if is_invite {
                    // §17.1.1.2: a provisional answer stops Timer A; the
                    // callee may take a while (the transaction user CANCELs).
                    tx.next_retransmit = None;
                    tx.deadline = now + self.timers.transaction_timeout();
                    let id = tx.generation;
                    self.wheel
                        .push(Reverse((tx.deadline, TimerRef::Client(id))));
                }
            }
            return true;
        }
        if !is_invite {
            // A non-INVITE transaction ends with its final response. Timer
            // K would only absorb the response's retransmissions, and one
            // that comes later is dropped as stray, which is what absorbing
            // it means; keeping 5 s of state per MESSAGE is not worth that.
            let id = tx.generation;
            if let Some(token) = tx.token.take() {
                self.events
                    .push_back(ClientEvent::Response { token, response });
            }
            self.clients.remove(&key);
            self.client_ids.remove(&id);
            return true;
        }
        if matches!(tx.state, ClientState::Completed | ClientState::Accepted) {
            // A retransmitted final response: absorbed, the ACK sent again.
            if let Some(ack) = &tx.ack {
                self.transmits.push_back(Transmit {
                    peer: tx.peer,
                    data: ack.clone(),
                });
            }
            return true;
        }
        tx.next_retransmit = None;
        let linger = if is_invite && response.is_success() {
            // RFC 6026 Timer M: stay to absorb 2xx retransmissions.
            tx.state = ClientState::Accepted;
            self.timers.transaction_timeout()
        } else {
            tx.state = ClientState::Completed;
            if let Some(invite) = &tx.invite {
                let ack = ack_for_failure(invite, &response).to_bytes();
                self.transmits.push_back(Transmit {
                    peer: tx.peer,
                    data: ack.clone(),
                });
                tx.ack = Some(ack);
            }
            match (tx.peer.transport.is_reliable(), is_invite) {
                (true, _) => Duration::ZERO,
                // Timer D: at least 32 s.
                (false, true) => self
                    .timers
                    .transaction_timeout()
                    .max(Duration::from_secs(32)),
                (false, false) => self.timers.t4,
            }
        };
        tx.deadline = now + linger;
        let id = tx.generation;
        if let Some(token) = tx.token.take() {
            self.events
                .push_back(ClientEvent::Response { token, response });
        }
        self.schedule(now + linger, TimerRef::Client(id));
        true
    }

    /// Record the ACK the transaction user sent for the 2xx of the INVITE
    /// client transaction `key`, so a retransmitted 2xx gets it again.
    pub fn set_ack(&mut self, key: &ClientKey, ack: Bytes) {
        if let Some(tx) = self.clients.get_mut(key) {
            tx.ack = Some(ack);
        }
    }

    /// Feed a received ACK. It ends the retransmission of the INVITE server
    /// transaction's final response: a non-2xx one by branch, a 2xx one by
    /// Call-ID and CSeq number (its ACK is a new transaction).
    pub fn handle_ack(&mut self, ack: &Request, now: Instant) -> AckMatch {
        let by_branch = server_key(ack).ok().map(|mut k| {
            k.method = Method::Invite;
            k
        });
        let key = match by_branch.filter(|k| self.servers.contains_key(k)) {
            Some(k) => Some(k),
            None => ack
                .call_id()
                .zip(ack.cseq())
                .and_then(|(c, q)| self.invites.get(&(c.to_owned(), q.seq)).cloned()),
        };
        let Some(tx) = key.and_then(|k| self.servers.get_mut(&k)) else {
            return AckMatch::Stray;
        };
        let verdict = match tx.state {
            ServerState::Accepted => AckMatch::Accepted,
            _ => AckMatch::Absorbed,
        };
        if matches!(tx.state, ServerState::Completed | ServerState::Accepted) {
            tx.next_retransmit = None;
            if tx.state == ServerState::Completed {
                // Timer I: absorb ACK retransmissions for T4, then end.
                let i = if tx.peer.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                tx.deadline = now + i;
                let id = tx.generation;
                self.wheel.push(Reverse((now + i, TimerRef::Server(id))));
            }
            tx.state = ServerState::Confirmed;
        }
        verdict
    }

    /// True while the INVITE server transaction that `cancel` (a CANCEL with
    /// the INVITE's branch) names has not sent a final response: the
    /// transaction user then answers the INVITE with 487.
    pub fn invite_cancellable(&self, cancel: &Request) -> bool {
        let Ok(mut key) = server_key(cancel) else {
            return false;
        };
        key.method = Method::Invite;
        self.servers
            .get(&key)
            .is_some_and(|tx| matches!(tx.state, ServerState::Trying | ServerState::Proceeding))
    }

    /// Feed a received request (other than ACK). Retransmissions are absorbed
    /// here and answered with the last response sent.
    pub fn handle_request(
        &mut self,
        request: &Request,
        peer: Peer,
        now: Instant,
    ) -> Result<Incoming, TransactionError> {
        let key = server_key(request)?;
        if let Some(done) = self.answered.get(self.answered_id(&key)) {
            self.retransmissions += 1;
            self.transmits.push_back(Transmit {
                peer: Peer::plain(super::Transport::Udp, done.to),
                data: done.answer.render(request),
            });
            return Ok(Incoming::Retransmission);
        }
        if let Some(tx) = self.servers.get(&key) {
            self.retransmissions += 1;
            if let Some(last) = &tx.last_response {
                self.transmits.push_back(Transmit {
                    peer: tx.peer,
                    data: last.clone(),
                });
            }
            return Ok(Incoming::Retransmission);
        }
        while self.servers.len() + self.answered.len() >= self.max_open {
            if !self.answered.pop_front() {
                return Err(TransactionError::TooMany(self.max_open));
            }
            self.evicted += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        // A transaction whose user never answers still ends, after Timer J's span.
        let deadline = now + self.timers.transaction_timeout();
        self.schedule(deadline, TimerRef::Server(id));
        let invite = request.method == Method::Invite;
        let dialog_key = if invite {
            request
                .call_id()
                .zip(request.cseq())
                .map(|(c, q)| (c.to_owned(), q.seq))
        } else {
            None
        };
        if let Some(dk) = &dialog_key {
            self.invites.insert(dk.clone(), key.clone());
        }
        self.servers.insert(
            key.clone(),
            ServerTx {
                state: ServerState::Trying,
                peer,
                last_response: None,
                deadline,
                generation: id,
                invite,
                dialog_key,
                interval: self.timers.t1,
                next_retransmit: None,
            },
        );
        self.server_ids.insert(id, key);
        Ok(Incoming::New)
    }

    /// Send a response within the server transaction of `request`.
    pub fn send_response(
        &mut self,
        request: &Request,
        response: Response,
        now: Instant,
    ) -> Result<(), TransactionError> {
        let key = server_key(request)?;
        let timers = self.timers;
        let tx = self
            .servers
            .get_mut(&key)
            .ok_or(TransactionError::NoServerTransaction)?;
        if !matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
            // One final response per transaction (RFC 3261 §17.2); the
            // layer itself resends it for retransmitted requests.
            return Err(TransactionError::AlreadyAnswered);
        }
        let data = response.to_bytes();
        self.transmits.push_back(Transmit {
            peer: tx.peer,
            data: data.clone(),
        });
        tx.last_response = Some(data.clone());
        if response.status < 200 {
            tx.state = ServerState::Proceeding;
            return Ok(());
        }
        if tx.invite {
            if matches!(tx.state, ServerState::Trying | ServerState::Proceeding) {
                tx.state = if response.is_success() {
                    ServerState::Accepted
                } else {
                    ServerState::Completed
                };
                // Timer G (non-2xx) and the 2xx retransmission of §13.3.1.4
                // run until the ACK, for at most 64·T1 (Timer H / L).
                tx.deadline = now + timers.transaction_timeout();
                let id = tx.generation;
                self.wheel
                    .push(Reverse((tx.deadline, TimerRef::Server(id))));
                if !tx.peer.transport.is_reliable() {
                    tx.interval = timers.t1;
                    tx.next_retransmit = Some(now + timers.t1);
                    self.wheel
                        .push(Reverse((now + timers.t1, TimerRef::Server(id))));
                }
            }
            return Ok(());
        }
        let (id, peer) = (tx.generation, tx.peer);
        // Over TCP Timer J is zero: nothing is retransmitted to absorb.
        self.remove_server(id);
        if !peer.transport.is_reliable() {
            let until = now + timers.transaction_timeout();
            let hash = self.answered_id(&key);
            let answer = Answered::new(request, &response, &data, &mut self.last_extra);
            self.answered.push(AnsweredTx {
                answer,
                to: peer.addr,
                hash,
                until,
            });
        }
        Ok(())
    }

    /// Give back the tables' room once a storm is over: a UDP city that
    /// took 140,000 MESSAGEs in 32 s otherwise keeps tables sized for them
    /// (~60 MB) for good. Only when a quarter is used, and to twice what
    /// is, so a steady load does not grow and shrink them in turn.
    fn shrink_if_drained(&mut self) {
        const FLOOR: usize = 4096;
        let drained = |len: usize, cap: usize| cap > FLOOR && len * 4 < cap;
        if drained(self.wheel.len(), self.wheel.capacity()) {
            self.wheel.shrink_to((self.wheel.len() * 2).max(FLOOR));
        }
    }

    /// End server transaction `id`; false if it had ended already.
    fn remove_server(&mut self, id: u64) -> bool {
        let Some(key) = self.server_ids.remove(&id) else {
            return false;
        };
        if let Some(tx) = self.servers.remove(&key) {
            if let Some(dk) = tx.dialog_key {
                // Only if it is still ours: an INVITE reusing the
                // Call-ID and CSeq on another branch may hold it now.
                if self.invites.get(&dk) == Some(&key) {
                    self.invites.remove(&dk);
                }
            }
        }
        true
    }

    /// The transport could not reach `peer` (TCP connect refused, write
    /// failed): every client transaction toward it fails now instead of
    /// waiting for Timer F, as RFC 3261 §17.1.4 asks.
    pub fn fail_peer(&mut self, peer: Peer) {
        let failed: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(_, tx)| {
                tx.peer == peer && matches!(tx.state, ClientState::Trying | ClientState::Proceeding)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            if let Some(mut tx) = self.clients.remove(&key) {
                self.client_ids.remove(&tx.generation);
                if let Some(token) = tx.token.take() {
                    self.events.push_back(ClientEvent::Timeout {
                        token,
                        method: key.method.clone(),
                    });
                }
            }
        }
    }

    /// Run every timer due at `now`: retransmissions, Timer F timeouts,
    /// and the ends of completed transactions.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.answered.front_until().is_some_and(|at| at <= now) {
            self.answered.pop_front();
        }
        while let Some(Reverse((at, _))) = self.wheel.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, r))) = self.wheel.pop() else {
                break;
            };
            match r {
                TimerRef::Client(id) => self.client_timer(id, now),
                TimerRef::Server(id) => self.server_timer(id, now),
            }
        }
        self.shrink_if_drained();
    }

    fn client_timer(&mut self, id: u64, now: Instant) {
        let Some(key) = self.client_ids.get(&id).cloned() else {
            return;
        };
        let Some(tx) = self.clients.get_mut(&key) else {
            self.client_ids.remove(&id);
            return;
        };
        if now >= tx.deadline {
            if matches!(tx.state, ClientState::Trying | ClientState::Proceeding) {
                if let Some(token) = tx.token.take() {
                    self.events.push_back(ClientEvent::Timeout {
                        token,
                        method: key.method.clone(),
                    });
                }
            }
            self.clients.remove(&key);
            self.client_ids.remove(&id);
            return;
        }
        if let Some(at) = tx.next_retransmit {
            if now >= at && matches!(tx.state, ClientState::Trying | ClientState::Proceeding) {
                self.transmits.push_back(Transmit {
                    peer: tx.peer,
                    data: tx.request.clone(),
                });
                self.retransmissions += 1;
                tx.interval = match (tx.state, tx.invite.is_some()) {
                    // Timer A doubles without the T2 cap.
                    (_, true) => tx.interval * 2,
                    (ClientState::Trying, false) => (tx.interval * 2).min(self.timers.t2),
                    _ => self.timers.t2,
                };
                let next = now + tx.interval;
                tx.next_retransmit = Some(next);
                let at = next.min(tx.deadline);
                self.wheel.push(Reverse((at, TimerRef::Client(id))));
                return;
            }
        }
        // Not due yet (a retransmission time moved): look again at the
        // nearer of it and the deadline.
        let at = tx
            .next_retransmit
            .map_or(tx.deadline, |r| r.min(tx.deadline));
        if at > now {
            self.wheel.push(Reverse((at, TimerRef::Client(id))));
        }
    }

    fn server_timer(&mut self, id: u64, now: Instant) {
        let Some(key) = self.server_ids.get(&id).cloned() else {
            return;
        };
        let done = self.servers.get(&key).is_none_or(|tx| now >= tx.deadline);
        if done {
            self.remove_server(id);
            return;
        }
        let t2 = self.timers.t2;
        if let Some(tx) = self.servers.get_mut(&key) {
            if let (Some(at), Some(last)) = (tx.next_retransmit, &tx.last_response) {
                if now >= at {
                    self.transmits.push_back(Transmit {
                        peer: tx.peer,
                        data: last.clone(),
                    });
                    self.retransmissions += 1;
                    tx.interval = (tx.interval * 2).min(t2);
                    let next = now + tx.interval;
                    tx.next_retransmit = Some(next);
                    self.wheel.push(Reverse((next, TimerRef::Server(id))));
                }
            }
        }
    }

    /// The next message to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Move every queued transmit into `out` (cheaper than repeated polls).
    pub fn drain_transmits(&mut self, out: &mut Vec<Transmit>) {
        out.extend(self.transmits.drain(..));
    }

    /// The next client event (response or timeout) for the transaction user.
    pub fn poll_event(&mut self) -> Option<ClientEvent<T>> {
        self.events.pop_front()
    }

    /// Move every queued client event into `out`, oldest first.
    pub fn drain_events(&mut self, out: &mut Vec<ClientEvent<T>>) {
        out.extend(self.events.drain(..));
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wheel = self.wheel.peek().map(|Reverse((at, _))| *at);
        let completed = self.answered.front_until();
        match (wheel, completed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn server_key(request: &Request) -> Result<ServerKey, TransactionError> {
    let via: Via = request.top_via().ok_or(TransactionError::NoBranch)?;
    let branch = match via.branch() {
        Some(b) => b.to_owned(),
        None => rfc2543_branch(request),
    };
    let sent_by = match via.port {
        Some(p) => format!("{}:{}", via.host, p),
        None => via.host.clone(),
    };
    // ACK and CANCEL share the INVITE's branch but are keyed apart by method;
    // handle_ack and invite_cancellable map them to the INVITE.
    Ok(ServerKey {
        branch,
        sent_by,
        method: request.method.clone(),
    })
}

/// A transaction key for a request whose top Via has no branch (RFC 2543
/// clients, still found in old cameras). RFC 3261 §17.2.3 matches such
/// requests by Request-URI, From tag, Call-ID, CSeq number and top Via
/// (and To tag, which is left out here so that the ACK of a non-2xx and a
/// CANCEL, which carry the same fields, find their INVITE). The method is
/// part of the server key already. Folded into one string, so the rest of
/// the layer keys by it like any branch; the prefix cannot collide with an
/// RFC 3261 branch, which starts with `z9hG4bK`.
fn rfc2543_branch(request: &Request) -> String {
    let h = &request.headers;
    let from_tag = h
        .get("From")
        .and_then(|f| NameAddr::parse(f).ok())
        .and_then(|f| f.tag().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "rfc2543|{}|{}|{}|{}|{}",
        request.uri,
        from_tag,
        h.call_id().unwrap_or_default(),
        request.cseq().map_or(0, |c| c.seq),
        h.get("Via")
            .and_then(|v| crate::sip::header::split_comma_values(v)
                .first()
                .map(|v| v.to_string()))
            .unwrap_or_default()
    )
}

/// The ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3):
/// same Request-URI, top Via, From, Call-ID and CSeq number; To from the
/// response (it carries the callee's tag).
fn ack_for_failure(invite: &Request, response: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(via) = invite.headers.get("Via") {
        ack.headers.push("Via", via);
    }
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(to) = response.headers.get("To").or(invite.headers.get("To")) {
        ack.headers.push("To", to);
    }
    if let Some(q) = invite.cseq() {
        ack.headers.push("CSeq", format!("{} ACK", q.seq));
    }
    ack.headers.push("Max-Forwards", "70");
    ack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::new_branch;
    use crate::sip::Transport;

    fn peer(t: Transport) -> Peer {
        Peer::plain(t, "127.0.0.1:5060".parse().unwrap())
    }

    fn request(branch: &str) -> Request {
        let mut r = Request::new(Method::Message, "sip:34020000001320000001@127.0.0.1:5060");
        r.headers.push(
            "Via",
            format!("SIP/2.0/UDP 127.0.0.1:5070;rport;branch={branch}"),
        );
        r.headers
            .push("From", "<sip:34020000002000000001@3402000000>;tag=a");
        r.headers
            .push("To", "<sip:34020000001320000001@3402000000>");
        r.headers.push("Call-ID", "c1@127.0.0.1");
        r.headers.push("CSeq", "1 MESSAGE");
        r.headers.push("Max-Forwards", "70");
        r
    }

    fn drain(l: &mut TransactionLayer<u32>) -> Vec<Transmit> {
        let mut v = Vec::new();
        l.drain_transmits(&mut v);
        v
    }

    #[test]
    fn client_retransmits_with_doubling_until_t2_then_times_out() {
        let mut l = TransactionLayer::new(Timers::default(), 100);
        let t0 = Instant::now();
        l.send_request(request(&new_branch()), peer(Transport::Udp), 7, t0)
            .unwrap();
        assert_eq!(drain(&mut l).len(), 1);
        // Walk the timer wheel; record when retransmissions happen.
        let mut sends = Vec::new();
        let mut timeout_at = None;
        while let Some(at) = l.poll_timeout() {
            l.handle_timeout(at);
            for _ in drain(&mut l) {
                sends.push(at - t0);
            }
            if let Some(ClientEvent::Timeout { token, .. }) = l.poll_event() {
                assert_eq!(token, 7);
                timeout_at = Some(at - t0);
            }
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(&ms[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(ms.windows(2).all(|w| w[1] - w[0] <= 4000));
        assert_eq!(timeout_at, Some(Duration::from_secs(32)));
        assert_eq!(l.open(), (0, 0));
    }

    #[test]
    fn client_over_tcp_never_retransmits() {
        let mut l = TransactionLayer::new(Timers::default(), 100);
        let t0 = Instant::now();
        l.send_request(request(&new_branch()), peer(Transport::Tcp), 1, t0)
            .unwrap();
        assert_eq!(drain(&mut l).len(), 1);
        l.handle_timeout(t0 + Duration::from_secs(31));
        assert!(drain(&mut l).is_empty());
        assert!(l.poll_event().is_none());
        l.handle_timeout(t0 + Duration::from_secs(32));
        assert!(matches!(l.poll_event(), Some(ClientEvent::Timeout { .. })));
    }

    #[test]
    fn final_response_stops_retransmission_and_duplicates_are_absorbed() {
        let mut l = TransactionLayer::new(Timers::default(), 100);
        let t0 = Instant::now();
        let req = request("z9hG4bKabc");
        l.send_request(req.clone(), peer(Transport::Udp), 3, t0)
            .unwrap();
        drain(&mut l);
        let resp = Response::to_request(&req, 200, Some("t"));
        assert!(l.handle_response(resp.clone(), t0 + Duration::from_millis(10)));
        match l.poll_event() {
            Some(ClientEvent::Response { token, response }) => {
                assert_eq!(token, 3);
                assert_eq!(response.status, 200);
            }
            other => panic!("expected a response event, got {other:?}"),
        }
        // Duplicate final response: the transaction has ended, so it is
        // stray (the caller drops it), and no second event.
        assert!(!l.handle_response(resp, t0 + Duration::from_millis(20)));
        assert!(l.poll_event().is_none());
        assert_eq!(l.open(), (0, 0));
        l.handle_timeout(t0 + Duration::from_secs(2));
        assert!(
            drain(&mut l).is_empty(),
            "no retransmission after a final response"
        );
        l.handle_timeout(t0 + Duration::from_secs(6));
        assert_eq!(l.open(), (0, 0));
    }

    #[test]
    fn provisional_moves_to_t2_interval() {
        let mut l = TransactionLayer::new(Timers::default(), 100);
        let t0 = Instant::now();
        let req = request("z9hG4bKprov");
        l.send_request(req.clone(), peer(Transport::Udp), 3, t0)
            .unwrap();
        drain(&mut l);
        assert!(l.handle_response(Response::to_request(&req, 100, None), t0));
        assert!(l.poll_event().is_none());
        l.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(drain(&mut l).len(), 1);
        l.handle_timeout(t0 + Duration::from_millis(4499));
        assert!(drain(&mut l).is_empty());
        l.handle_timeout(t0 + Duration::from_millis(4500));
        assert_eq!(drain(&mut l).len(), 1);
    }

    #[test]
    fn stray_response_is_not_matched() {
        let mut l: TransactionLayer<u32> = TransactionLayer::new(Timers::default(), 100);
        let req = request("z9hG4bKnone");
        assert!(!l.handle_response(Response::to_request(&req, 200, None), Instant::now()));
        // Same branch, different method: not the same transaction.
        l.send_request(req.clone(), peer(Transport::Udp), 1, Instant::now())
            .unwrap();
        let mut other = req.clone();
        other.method = Method::Register;
        other.headers.set("CSeq", "1 REGISTER");
        assert!(!l.handle_response(Response::to_request(&other, 200, None), Instant::now()));
    }

    #[test]
    fn answered_tags_are_kept_exactly() {
        for t in [
            "0123456789abcdef",
            "00000000000000ff",
            "0123456789ABCDEF",
            "sim",
            "1234567890abcdef0",
        ] {
            assert_eq!(Tag::new(t).text(), t);
        }
        assert!(matches!(Tag::new("00000000000000ff"), Tag::Hex(255)));
        assert!(matches!(Tag::new("0123456789ABCDEF"), Tag::Text(_)));
    }

    #[test]
    fn server_absorbs_retransmissions_and_resends_last_response() {
        let mut l: TransactionLayer<u32> = TransactionLayer::new(Timers::default(), 100);
        let t0 = Instant::now();
        let req = request("z9hG4bKsrv");
        let p = peer(Transport::Udp);
        assert_eq!(l.handle_request(&req, p, t0).unwrap(), Incoming::New);
        assert_eq!(
            l.handle_request(&req, p, t0).unwrap(),
            Incoming::Retransmission
        );
        assert!(
            drain(&mut l).is_empty(),
            "nothing to resend before a response"
        );
        l.send_response(&req, Response::to_request(&req, 200, Some("x")), t0)
            .unwrap();
        assert_eq!(drain(&mut l).len(), 1);
        assert_eq!(
            l.handle_request(&req, p, t0 + Duration::from_secs(1))
                .unwrap(),
            Incoming::Retransmission
        );
        let resent = drain(&mut l);
        assert_eq!(resent.len(), 1);
        assert!(resent[0].data.starts_with(b"SIP/2.0 200"));
        // Timer J (64·T1) ends it; a later copy is new again.
        l.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(l.open(), (0, 0));
        assert_eq!(
            l.handle_request(&req, p, t0 + Duration::from_secs(33))
                .unwrap(),
            Incoming::New
        );
    }

    #[test]
    fn unreachable_peer_fails_its_transactions_at_once() {
        let mut l = TransactionLayer::new(Timers::default(), 10);
        let now = Instant::now();
        l.send_request(request("z9hG4bKa"), peer(Transport::Tcp), 1, now)
            .unwrap();
        let other = Peer::plain(Transport::Tcp, "127.0.0.1:5999".parse().unwrap());
        l.send_request(request("z9hG4bKb"), other, 2, now).unwrap();
        l.fail_peer(peer(Transport::Tcp));
        match l.poll_event() {
            Some(ClientEvent::Timeout { token, .. }) => assert_eq!(token, 1),
            e => panic!("expected a timeout, got {e:?}"),
        }
        assert!(l.poll_event().is_none());
        assert_eq!(l.open(), (1, 0));
    }

    #[test]
    fn limits_on_open_transactions_are_separate_for_clients_and_servers() {
        let mut l = TransactionLayer::new(Timers::default(), 1);
        let now = Instant::now();
        let p = peer(Transport::Udp);
        l.handle_request(&request("z9hG4bK2"), p, now).unwrap();
        assert_eq!(
            l.handle_request(&request("z9hG4bK4"), p, now),
            Err(TransactionError::TooMany(1))
        );
        // A full server side leaves room for our own requests.
        l.send_request(request("z9hG4bK1"), p, 1, now).unwrap();
        assert_eq!(
            l.send_request(request("z9hG4bK3"), p, 3, now),
            Err(TransactionError::TooMany(1))
        );
    }

    #[test]
    fn at_the_cap_the_oldest_answered_transaction_makes_room() {
        let mut l = TransactionLayer::<u32>::new(Timers::default(), 2);
        let mut now = Instant::now();
        let p = peer(Transport::Udp);
        let (a, b) = (request("z9hG4bKa"), request("z9hG4bKb"));
        l.handle_request(&a, p, now).unwrap();
        l.handle_request(&b, p, now).unwrap();
        // Both still being handled: a third request is refused.
        assert_eq!(
            l.handle_request(&request("z9hG4bKc"), p, now),
            Err(TransactionError::TooMany(2))
        );
        l.send_response(&a, Response::to_request(&a, 200, Some("t")), now)
            .unwrap();
        now += Duration::from_millis(1);
        assert_eq!(
            l.handle_request(&request("z9hG4bKc"), p, now),
            Ok(Incoming::New)
        );
        assert_eq!(l.evicted(), 1);
        assert_eq!(l.open(), (0, 2));
        // The evicted one's retransmission is new again; the answered one
        // still within Timer J is absorbed.
        l.send_response(&b, Response::to_request(&b, 200, Some("t")), now)
            .unwrap();
        drain(&mut l);
        assert_eq!(l.handle_request(&b, p, now), Ok(Incoming::Retransmission));
        assert_eq!(drain(&mut l).len(), 1, "its 200 again");
        // Timer J ends the answered ones without the timer heap.
        let j = l.timers().transaction_timeout();
        assert!(l.poll_timeout().unwrap() <= now + j);
        l.handle_timeout(now + j - Duration::from_millis(1));
        assert_eq!(l.open(), (0, 2));
        // b's Timer J, and c's end unanswered (created at the same time).
        l.handle_timeout(now + j);
        assert_eq!(l.open(), (0, 0));
    }

    #[test]
    fn an_answer_is_kept_small_and_resent_byte_for_byte() {
        let mut l = TransactionLayer::<u32>::new(Timers::default(), 8);
        let now = Instant::now();
        let p = peer(Transport::Udp);
        let (a, b) = (request("z9hG4bKa"), request("z9hG4bKb"));
        let mut typical = Response::to_request(&a, 200, Some("t1"));
        typical.headers.push("User-Agent", "gbgate/test");
        // An answer that does not follow the request's headers is kept whole.
        let mut odd = Response::to_request(&b, 403, Some("t2"));
        odd.headers.set("From", "<sip:someone@else>;tag=x");
        odd.reason = "Nope".into();
        for (req, resp) in [(&a, typical), (&b, odd)] {
            let sent = resp.to_bytes();
            l.handle_request(req, p, now).unwrap();
            l.send_response(req, resp, now).unwrap();
            drain(&mut l);
            assert_eq!(l.handle_request(req, p, now), Ok(Incoming::Retransmission));
            let again = drain(&mut l);
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].data, sent, "the same bytes again");
        }
        let kinds: Vec<bool> = [&a, &b]
            .iter()
            .map(|r| {
                let id = l.answered_id(&server_key(r).unwrap());
                matches!(l.answered.get(id).unwrap().answer, Answered::Rebuilt { .. })
            })
            .collect();
        assert_eq!(kinds, [true, false]);
    }

    #[test]
    fn a_record_is_small_and_the_tables_shrink_after_a_storm() {
        // What a UDP city keeps per answered MESSAGE for Timer J.
        assert!(std::mem::size_of::<Answered>() <= 40);
        assert!(std::mem::size_of::<AnsweredTx>() <= 96);
        let mut l = TransactionLayer::<u32>::new(Timers::default(), 1_000_000);
        let mut now = Instant::now();
        let p = peer(Transport::Udp);
        for i in 0..50_000 {
            let r = request(&format!("z9hG4bKstorm{i}"));
            l.handle_request(&r, p, now).unwrap();
            l.send_response(&r, Response::to_request(&r, 200, Some("t")), now)
                .unwrap();
        }
        drain(&mut l);
        // Chunks hold what is held, not twice the peak.
        assert_eq!(l.answered.chunks.len(), 50_000usize.div_ceil(ANSWER_CHUNK));
        assert_eq!(l.answered.len(), 50_000);
        now += Timers::default().transaction_timeout() + Duration::from_millis(1);
        l.handle_timeout(now);
        assert_eq!(l.open(), (0, 0));
        assert!(l.answered.chunks.is_empty());
        assert!(
            l.answered.by_hash.capacity() < 10_000,
            "{}",
            l.answered.by_hash.capacity()
        );
        assert!(l.wheel.capacity() < 10_000);
    }

    proptest::proptest! {
        /// The chunked queue against a plain model: a queue of hashes and
        /// a map from hash to the newest record.
        #[test]
        fn answers_match_a_plain_queue_and_map(
            ops in proptest::collection::vec((0u8..3, 0u64..40), 0..3000)
        ) {
            let mut a = Answers::default();
            let mut queue: VecDeque<u64> = VecDeque::new();
            let mut newest: HashMap<u64, u64> = HashMap::new();
            let t0 = Instant::now();
            let mut n = 0u64;
            for (op, h) in ops {
                match op {
                    0 | 1 => {
                        n += 1;
                        a.push(AnsweredTx {
                            answer: Answered::Whole(Bytes::from(n.to_string())),
                            to: std::net::SocketAddr::from(([127, 0, 0, 1], 5060)),
                            hash: h,
                            until: t0 + Duration::from_millis(n),
                        });
                        queue.push_back(h);
                        newest.insert(h, n);
                    }
                    _ => {
                        let popped = a.pop_front();
                        proptest::prop_assert_eq!(popped, queue.pop_front().is_some());
                        newest.retain(|k, _| queue.contains(k));
                    }
                }
                for h in 0..40u64 {
                    let got = a.get(h).map(|r| match &r.answer {
                        Answered::Whole(b) => b.clone(),
                        Answered::Rebuilt { .. } => Bytes::new(),
                    });
                    let want = newest.get(&h).map(|n| Bytes::from(n.to_string()));
                    proptest::prop_assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn request_without_branch_is_refused() {
        let mut l = TransactionLayer::new(Timers::default(), 2);
        let mut r = request("x");
        r.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070");
        assert_eq!(
            l.send_request(r, peer(Transport::Udp), 1, Instant::now()),
            Err(TransactionError::NoBranch)
        );
    }

    fn invite(branch: &str) -> Request {
        let mut r = request(branch);
        r.method = Method::Invite;
        r.headers.set("CSeq", "20 INVITE");
        r
    }

    fn response_to(req: &Request, status: u16) -> Response {
        Response::to_request(req, status, Some("callee"))
    }

    fn parse_request(t: &Transmit) -> Request {
        match crate::sip::message::Message::parse(&t.data).unwrap() {
            crate::sip::message::Message::Request(r) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn invite_client_doubles_timer_a_without_cap_and_stops_on_provisional() {
        let mut l = TransactionLayer::new(Timers::default(), 10);
        let t0 = Instant::now();
        let inv = invite(&new_branch());
        l.send_request(inv.clone(), peer(Transport::Udp), 1, t0)
            .unwrap();
        drain(&mut l);
        let mut sends = Vec::new();
        for _ in 0..5 {
            let at = l.poll_timeout().unwrap();
            l.handle_timeout(at);
            if !drain(&mut l).is_empty() {
                sends.push((at - t0).as_millis());
            }
        }
        // 0.5, 1.5, 3.5, 7.5, 15.5 s: Timer A doubles past T2 (4 s).
        assert_eq!(sends, vec![500, 1500, 3500, 7500, 15500]);
        let now = t0 + Duration::from_secs(16);
        assert!(l.handle_response(response_to(&inv, 100), now));
        let at = l.poll_timeout().unwrap();
        l.handle_timeout(at.max(now + Duration::from_secs(20)));
        assert!(
            drain(&mut l).is_empty(),
            "no retransmission after 100 Trying"
        );
    }

    #[test]
    fn invite_client_acks_a_failure_itself_and_again_for_its_retransmission() {
        let mut l = TransactionLayer::new(Timers::default(), 10);
        let now = Instant::now();
        let inv = invite("z9hG4bKinv1");
        l.send_request(inv.clone(), peer(Transport::Udp), 9, now)
            .unwrap();
        drain(&mut l);
        let busy = response_to(&inv, 486);
        assert!(l.handle_response(busy.clone(), now));
        let sent = drain(&mut l);
        assert_eq!(sent.len(), 1);
        let ack = parse_request(&sent[0]);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKinv1"));
        assert_eq!(ack.cseq().unwrap().seq, 20);
        assert!(ack.headers.get("To").unwrap().contains("tag=callee"));
        assert!(matches!(
            l.poll_event(),
            Some(ClientEvent::Response { token: 9, .. })
        ));
        // The 486 again: the same ACK again, no second event.
        assert!(l.handle_response(busy, now));
        assert_eq!(drain(&mut l).len(), 1);
        assert!(l.poll_event().is_none());
    }

    #[test]
    fn invite_client_2xx_retransmission_gets_the_users_ack_again() {
        let mut l = TransactionLayer::new(Timers::default(), 10);
        let now = Instant::now();
        let inv = invite("z9hG4bKinv2");
        let key = l
            .send_request(inv.clone(), peer(Transport::Udp), 1, now)
            .unwrap();
        drain(&mut l);
        let ok = response_to(&inv, 200);
        assert!(l.handle_response(ok.clone(), now));
        assert!(drain(&mut l).is_empty(), "the 2xx ACK is the user's");
        assert!(l.poll_event().is_some());
        l.set_ack(&key, Bytes::from_static(b"ACK"));
        assert!(l.handle_response(ok, now + Duration::from_millis(500)));
        let again = drain(&mut l);
        assert_eq!(again.len(), 1);
        assert_eq!(&again[0].data[..], b"ACK");
        assert!(l.poll_event().is_none());
        // Timer M ends it without a timeout event.
        l.handle_timeout(now + Duration::from_secs(40));
        assert!(l.poll_event().is_none());
        assert_eq!(l.open().0, 0);
    }

    #[test]
    fn invite_server_retransmits_2xx_until_the_ack() {
        let mut l = TransactionLayer::<u32>::new(Timers::default(), 10);
        let t0 = Instant::now();
        let inv = invite("z9hG4bKsrv1");
        let p = peer(Transport::Udp);
        assert_eq!(l.handle_request(&inv, p, t0).unwrap(), Incoming::New);
        l.send_response(&inv, response_to(&inv, 100), t0).unwrap();
        l.send_response(&inv, response_to(&inv, 200), t0).unwrap();
        assert_eq!(drain(&mut l).len(), 2);
        let at = l.poll_timeout().unwrap();
        assert_eq!(at - t0, Duration::from_millis(500));
        l.handle_timeout(at);
        assert_eq!(drain(&mut l).len(), 1, "2xx retransmitted at T1");
        // The ACK of a 2xx has its own branch; it matches by Call-ID + CSeq.
        let mut ack = request("z9hG4bKother");
        ack.method = Method::Ack;
        ack.headers.set("CSeq", "20 ACK");
        assert_eq!(l.handle_ack(&ack, at), AckMatch::Accepted);
        assert_eq!(l.handle_ack(&ack, at), AckMatch::Absorbed);
        l.handle_timeout(at + Duration::from_secs(10));
        assert!(drain(&mut l).is_empty(), "no 2xx after the ACK");
        l.handle_timeout(t0 + Duration::from_secs(40));
        assert_eq!(l.open().1, 0);
        assert_eq!(
            l.handle_ack(&ack, t0 + Duration::from_secs(41)),
            AckMatch::Stray
        );
    }

    #[test]
    fn invite_server_failure_is_acked_by_branch_and_cancel_is_recognised() {
        let mut l = TransactionLayer::<u32>::new(Timers::default(), 10);
        let now = Instant::now();
        let inv = invite("z9hG4bKsrv2");
        let p = peer(Transport::Udp);
        l.handle_request(&inv, p, now).unwrap();
        l.send_response(&inv, response_to(&inv, 100), now).unwrap();
        let mut cancel = request("z9hG4bKsrv2");
        cancel.method = Method::Cancel;
        cancel.headers.set("CSeq", "20 CANCEL");
        assert!(l.invite_cancellable(&cancel));
        assert_eq!(l.handle_request(&cancel, p, now).unwrap(), Incoming::New);
        l.send_response(&cancel, response_to(&cancel, 200), now)
            .unwrap();
        l.send_response(&inv, response_to(&inv, 487), now).unwrap();
        assert!(!l.invite_cancellable(&cancel), "answered already");
        drain(&mut l);
        let mut ack = request("z9hG4bKsrv2");
        ack.method = Method::Ack;
        ack.headers.set("CSeq", "20 ACK");
        assert_eq!(l.handle_ack(&ack, now), AckMatch::Absorbed);
        l.handle_timeout(now + Duration::from_secs(2));
        assert!(drain(&mut l).is_empty(), "Timer G stopped by the ACK");
    }

    #[test]
    fn a_second_final_response_is_refused() {
        let mut l = TransactionLayer::<u32>::new(Timers::default(), 10);
        let now = Instant::now();
        let inv = invite("z9hG4bKtwice");
        l.handle_request(&inv, peer(Transport::Udp), now).unwrap();
        l.send_response(&inv, response_to(&inv, 486), now).unwrap();
        assert_eq!(
            l.send_response(&inv, response_to(&inv, 200), now),
            Err(TransactionError::AlreadyAnswered)
        );
        assert_eq!(
            l.send_response(&inv, response_to(&inv, 180), now),
            Err(TransactionError::AlreadyAnswered),
            "no provisional after a final either"
        );
        let msg = request("z9hG4bKmsg");
        l.handle_request(&msg, peer(Transport::Udp), now).unwrap();
        l.send_response(&msg, response_to(&msg, 200), now).unwrap();
        assert!(l.send_response(&msg, response_to(&msg, 500), now).is_err());
        assert_eq!(drain(&mut l).len(), 2);
    }
}
