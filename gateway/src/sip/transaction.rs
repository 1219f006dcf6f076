//! RFC 3261 §17 non-INVITE transactions, client and server, as a sans-IO
//! state machine.
//!
//! The layer never reads a clock or touches a socket: callers pass `now`,
//! drain [`TransactionLayer::poll_transmit`] and sleep until
//! [`TransactionLayer::poll_timeout`]. Client transactions carry an opaque
//! token `T` so the owner learns which of its requests a response answers.
//!
//! INVITE transactions (with their ACK rules) arrive with the media plane;
//! the node answers INVITE with 501 until then.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::header::Via;
use super::message::{Method, Request, Response};
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
}

struct ClientTx<T> {
    state: ClientState,
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
}

struct ServerTx {
    state: ServerState,
    peer: Peer,
    last_response: Option<Bytes>,
    deadline: Instant,
    generation: u64,
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
}

/// All open non-INVITE transactions of one SIP endpoint.
pub struct TransactionLayer<T> {
    timers: Timers,
    max_open: usize,
    clients: HashMap<ClientKey, ClientTx<T>>,
    client_ids: HashMap<u64, ClientKey>,
    servers: HashMap<ServerKey, ServerTx>,
    server_ids: HashMap<u64, ServerKey>,
    wheel: BinaryHeap<Reverse<(Instant, TimerRef)>>,
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
            wheel: BinaryHeap::new(),
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

    /// Open client and server transactions.
    pub fn open(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// Total retransmissions sent so far (requests and responses).
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
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
        if let Some(at) = next_retransmit {
            self.schedule(at, TimerRef::Client(id));
        }
        self.schedule(deadline, TimerRef::Client(id));
        self.clients.insert(
            key.clone(),
            ClientTx {
                state: ClientState::Trying,
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

    /// Feed a received response. Returns true when it matched a transaction
    /// (the event, if any, is queued for [`Self::poll_event`]); false for a
    /// stray response, which the caller drops.
    pub fn handle_response(&mut self, response: Response, now: Instant) -> bool {
        let Some(key) = response.top_via().and_then(|v| {
            let branch = v.branch()?.to_owned();
            let method = response.cseq()?.method;
            Some(ClientKey { branch, method })
        }) else {
            return false;
        };
        let Some(tx) = self.clients.get_mut(&key) else {
            return false;
        };
        if response.status < 200 {
            if tx.state == ClientState::Trying {
                tx.state = ClientState::Proceeding;
            }
            return true;
        }
        if tx.state == ClientState::Completed {
            // A retransmitted final response: absorbed.
            return true;
        }
        tx.state = ClientState::Completed;
        tx.next_retransmit = None;
        let linger = if tx.peer.transport.is_reliable() {
            Duration::ZERO
        } else {
            self.timers.t4
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

    /// Feed a received request (other than ACK). Retransmissions are absorbed
    /// here and answered with the last response sent.
    pub fn handle_request(
        &mut self,
        request: &Request,
        peer: Peer,
        now: Instant,
    ) -> Result<Incoming, TransactionError> {
        let key = server_key(request)?;
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
        if self.servers.len() >= self.max_open {
            return Err(TransactionError::TooMany(self.max_open));
        }
        let id = self.next_id;
        self.next_id += 1;
        // A transaction whose user never answers still ends, after Timer J's span.
        let deadline = now + self.timers.transaction_timeout();
        self.schedule(deadline, TimerRef::Server(id));
        self.servers.insert(
            key.clone(),
            ServerTx {
                state: ServerState::Trying,
                peer,
                last_response: None,
                deadline,
                generation: id,
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
        let data = response.to_bytes();
        self.transmits.push_back(Transmit {
            peer: tx.peer,
            data: data.clone(),
        });
        tx.last_response = Some(data);
        if response.status < 200 {
            tx.state = ServerState::Proceeding;
            return Ok(());
        }
        if tx.state != ServerState::Completed {
            tx.state = ServerState::Completed;
            let j = if tx.peer.transport.is_reliable() {
                Duration::ZERO
            } else {
                timers.transaction_timeout()
            };
            tx.deadline = now + j;
            let id = tx.generation;
            self.schedule(now + j, TimerRef::Server(id));
        }
        Ok(())
    }

    /// The transport could not reach `peer` (TCP connect refused, write
    /// failed): every client transaction toward it fails now instead of
    /// waiting for Timer F, as RFC 3261 §17.1.4 asks.
    pub fn fail_peer(&mut self, peer: Peer) {
        let failed: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.peer == peer && tx.state != ClientState::Completed)
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
            if tx.state != ClientState::Completed {
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
            if now >= at && tx.state != ClientState::Completed {
                self.transmits.push_back(Transmit {
                    peer: tx.peer,
                    data: tx.request.clone(),
                });
                self.retransmissions += 1;
                tx.interval = match tx.state {
                    ClientState::Trying => (tx.interval * 2).min(self.timers.t2),
                    _ => self.timers.t2,
                };
                let next = now + tx.interval;
                tx.next_retransmit = Some(next);
                self.wheel.push(Reverse((next, TimerRef::Client(id))));
            }
        }
    }

    fn server_timer(&mut self, id: u64, now: Instant) {
        let Some(key) = self.server_ids.get(&id).cloned() else {
            return;
        };
        let done = self.servers.get(&key).is_none_or(|tx| now >= tx.deadline);
        if done {
            self.servers.remove(&key);
            self.server_ids.remove(&id);
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
        self.wheel.peek().map(|Reverse((at, _))| *at)
    }
}

fn server_key(request: &Request) -> Result<ServerKey, TransactionError> {
    let via: Via = request.top_via().ok_or(TransactionError::NoBranch)?;
    let branch = via
        .branch()
        .map(str::to_owned)
        .ok_or(TransactionError::NoBranch)?;
    let sent_by = match via.port {
        Some(p) => format!("{}:{}", via.host, p),
        None => via.host.clone(),
    };
    // CANCEL and ACK would match INVITE transactions; both arrive with the media plane.
    Ok(ServerKey {
        branch,
        sent_by,
        method: request.method.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::new_branch;
    use crate::sip::Transport;

    fn peer(t: Transport) -> Peer {
        Peer {
            transport: t,
            addr: "127.0.0.1:5060".parse().unwrap(),
        }
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
        // Duplicate final response: matched, no second event.
        assert!(l.handle_response(resp, t0 + Duration::from_millis(20)));
        assert!(l.poll_event().is_none());
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
        let other = Peer {
            transport: Transport::Tcp,
            addr: "127.0.0.1:5999".parse().unwrap(),
        };
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
    fn request_without_branch_is_refused() {
        let mut l = TransactionLayer::new(Timers::default(), 2);
        let mut r = request("x");
        r.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070");
        assert_eq!(
            l.send_request(r, peer(Transport::Udp), 1, Instant::now()),
            Err(TransactionError::NoBranch)
        );
    }
}
