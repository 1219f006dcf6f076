//! QUIC links between gbgate nodes: the same GB/T 28181 SIP and RTP/PS,
//! carried over one mutually authenticated QUIC connection per link.
//!
//! * **Identity.** Both ends present certificates of the federation CA
//!   (`certs`). The parent accepts a connection only when the URI SAN of
//!   the child's certificate names a child the topology links to it over
//!   QUIC; the child checks the parent by its server name. Every SIP
//!   message from the connection carries that ID in its [`Peer`], which is
//!   what the registry and the policy gate trust.
//! * **SIP** travels on one bidirectional stream the child opens, framed by
//!   Content-Length exactly as over TCP.
//! * **Media**: one unidirectional stream per GOP of each session, opened
//!   by the sender at a keyframe with a [`GroupHeader`], then RTP packets
//!   with RFC 4571 length prefixes. Newer groups get higher send priority,
//!   and a group older than max(1 s, 4 RTT) is reset once a newer one is
//!   out: under congestion a stale GOP gives way and the next keyframe is
//!   not held behind it (the way moq relays groups). BBR, not CUBIC: random
//!   loss on a village link is not congestion. The receiver puts groups back in order ([`Sequencer`]),
//!   waiting a little for the rest of a group before cutting it.
//! * **Life.** Keep-alive every second; a silent path ends the connection
//!   after [`IDLE_TIMEOUT`]. The child redials with back-off and its uplink
//!   re-registers at once ([`Inbound::LinkUp`]). A parent keeps its
//!   stateless-reset secret on disk beside its key, so after a restart it
//!   resets a child's stale connection at the child's next packet instead
//!   of leaving it to time out. QUIC migration keeps a child's connection
//!   (and so its peer and registration) when its address changes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use topology::GbId;

pub use super::groups::{GroupEvent, GroupHeader, MediaIn, Sequencer};
use super::Limits;
use crate::node::Inbound;
use crate::sip::framing::StreamFramer;
use crate::sip::{Peer, Transport};

/// A QUIC path silent this long ends the connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Keep-alive period: well inside [`IDLE_TIMEOUT`] and NAT bindings.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// First wait before redialling the parent; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one dial may take before it counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// SIP messages queued per link before new ones are dropped.
const SIP_QUEUE: usize = 4096;
/// RTP packets queued per media session at the receiver.
const MEDIA_QUEUE: usize = 4096;
/// How often the certificate files are checked for a newer version.
const CERT_POLL: Duration = Duration::from_secs(5);
/// Application error code: the peer is not a node this one links to.
const NOT_A_CHILD: VarInt = VarInt::from_u32(0x101);
/// Stream error code: the group went stale (a newer keyframe is out).
const STALE_GROUP: VarInt = VarInt::from_u32(0x102);

/// What a node needs to run QUIC links.
#[derive(Debug, Clone)]
pub struct QuicSetup {
    /// This node's ID.
    pub node: GbId,
    /// Where children dial in; `None` on a node with no QUIC children.
    pub listen: Option<SocketAddr>,
    /// The address a dialling-only endpoint binds (port 0).
    pub bind_ip: IpAddr,
    /// The federation CA certificate.
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// Children that link to this node over QUIC: the only certificates
    /// accepted.
    pub children: HashSet<GbId>,
    /// The parent to dial, with its QUIC address, when the link up is QUIC.
    pub parent: Option<(GbId, SocketAddr)>,
    /// The runtime the links run on; `None`: the caller's. The node's SIP
    /// loop has a thread of its own, and QUIC links carry media too, which
    /// belongs on the multi-threaded runtime with the hubs.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl QuicSetup {
    /// The setup of node `id` from the topology: `None` when none of its
    /// links uses QUIC.
    pub fn from_topology(topology: &topology::Topology, id: &GbId) -> Option<QuicSetup> {
        let node = topology.node(id)?;
        let children: HashSet<GbId> = topology
            .children_of(id)
            .filter(|c| c.transport == topology::Transport::Quic)
            .map(|c| c.id)
            .collect();
        let parent = match (node.transport, topology.parent_of(id)) {
            (topology::Transport::Quic, Some(p)) => Some((p.id, p.quic?)),
            _ => None,
        };
        if children.is_empty() && parent.is_none() {
            return None;
        }
        let dir = node.certs.clone()?;
        Some(QuicSetup {
            node: *id,
            listen: node.quic.filter(|_| !children.is_empty()),
            bind_ip: node.sip.ip(),
            ca: dir.join(certs::CA_CERT_FILE),
            cert: dir.join(format!("{id}.crt")),
            key: dir.join(format!("{id}.key")),
            children,
            parent,
            runtime: None,
        })
    }
}

/// Why QUIC links could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// A certificate or key file is missing or unusable.
    #[error("QUIC certificates: {0}")]
    Certs(#[from] certs::Error),
    /// The rustls config is not usable for QUIC.
    #[error("QUIC TLS config: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC on {addr}: {source}; is another process using the port?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How long a session waits for the rest of a group once the next group
/// has begun (a retransmission or two at village round trips).
pub const GROUP_GRACE: Duration = Duration::from_millis(400);

/// One media session's inbox; the session is unregistered when dropped.
pub struct MediaInbox {
    rx: mpsc::Receiver<GroupEvent>,
    rtt_ms: Arc<AtomicU64>,
    sequencer: Sequencer,
    ssrc: u32,
    links: QuicLinks,
}

impl MediaInbox {
    /// The next packet or break, in order; `None` when the links stop.
    pub async fn recv(&mut self) -> Option<MediaIn> {
        loop {
            if let Some(m) = self.sequencer.poll() {
                return Some(m);
            }
            // A retransmission takes a round trip or two, more when it is
            // lost again: wait three before cutting a group.
            let rtt = Duration::from_millis(self.rtt_ms.load(Ordering::Relaxed));
            self.sequencer.set_grace((rtt * 3).max(GROUP_GRACE));
            let deadline = self.sequencer.poll_timeout();
            tokio::select! {
                ev = self.rx.recv() => self.sequencer.push(ev?, std::time::Instant::now()),
                _ = sleep_until(deadline) => self.sequencer.handle_timeout(std::time::Instant::now()),
            }
        }
    }
}

async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

impl Drop for MediaInbox {
    fn drop(&mut self) {
        self.links.locked_media().remove(&self.ssrc);
    }
}

struct MediaRoute {
    tx: mpsc::Sender<GroupEvent>,
    /// The sending connection's smoothed RTT, ms, for the grace period.
    rtt_ms: Arc<AtomicU64>,
    /// The connection that first sent to this session: no other may.
    source: Option<usize>,
}

/// A link's SIP queue: the sending side (kept in the link table) and the
/// receiving side (drained by the link's writer).
type SipQueue = (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>);

/// An open link: its connection and the queue of its SIP stream.
struct Link {
    conn: Connection,
    sip: mpsc::Sender<Bytes>,
}

/// The running QUIC links of a node.
#[derive(Clone)]
pub struct QuicLinks {
    inner: Arc<Inner>,
}

struct Inner {
    setup: QuicSetup,
    endpoint: Endpoint,
    client: Mutex<quinn::ClientConfig>,
    links: Mutex<HashMap<SocketAddr, Link>>,
    media: Mutex<HashMap<u32, MediaRoute>>,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
    shutdown: CancellationToken,
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    // A GOP per session in flight, for thousands of sessions per link.
    t.max_concurrent_uni_streams(VarInt::from_u32(8192));
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    // A 2 s GOP at 8 Mbit/s is 2 MB: one group must fit its stream window.
    t.stream_receive_window(VarInt::from_u32(4 << 20));
    t.receive_window(VarInt::from_u32(64 << 20));
    t.send_window(64 << 20);
    // BBR, not loss-based CUBIC: on a village link random loss is not
    // congestion, and CUBIC halves its window at each loss (at 1 % loss and
    // 60 ms RTT it holds about 2 Mbit/s, less than one camera).
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Arc::new(t)
}

fn server_config(setup: &QuicSetup) -> Result<quinn::ServerConfig, QuicError> {
    let tls = certs::server_config(&setup.ca, &setup.cert, &setup.key)?;
    let crypto =
        QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut c = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    c.transport_config(transport_config());
    Ok(c)
}

fn client_config(setup: &QuicSetup) -> Result<quinn::ClientConfig, QuicError> {
    let tls = certs::client_config(&setup.ca, &setup.cert, &setup.key)?;
    let crypto =
        QuicClientConfig::try_from(Arc::new(tls)).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    c.transport_config(transport_config());
    Ok(c)
}

/// The endpoint's stateless-reset key: a secret kept beside the node's
/// certificate (`<id>.reset`, mode 0600, made on first start), so a
/// restarted node resets the connections its last run made, also after its
/// certificate and key were renewed. Connection IDs are plain random
/// ([`UnsignedCids`]): quinn's default signs them with a per-process key
/// and drops a packet whose ID the current process did not sign before it
/// would answer with a reset.
fn endpoint_config(setup: &QuicSetup) -> Result<quinn::EndpointConfig, QuicError> {
    let path = setup.key.with_extension("reset");
    let io = |source| {
        QuicError::Certs(certs::Error::Io {
            path: path.clone(),
            source,
        })
    };
    let secret = match std::fs::read(&path) {
        Ok(s) if s.len() >= 32 => s,
        _ => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let fresh: [u8; 32] = rand::random();
            let tmp = path.with_extension("reset.tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&fresh).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            fresh.to_vec()
        }
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"gbgate QUIC stateless reset v1");
    ctx.update(&secret);
    let reset = ctx.finish();
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    config.cid_generator(|| Box::new(UnsignedCids));
    Ok(config)
}

/// Random 8-byte connection IDs that every run of the node accepts as its
/// own (see [`endpoint_config`]); resets stay rate-limited by quinn.
struct UnsignedCids;

impl quinn::ConnectionIdGenerator for UnsignedCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl QuicLinks {
    /// Load the certificates, bind the endpoint and start accepting
    /// children and dialling the parent, as `setup` says.
    pub fn start(
        setup: QuicSetup,
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Result<QuicLinks, QuicError> {
        let runtime = setup.runtime.clone();
        let _on = runtime.as_ref().map(tokio::runtime::Handle::enter);
        let client = client_config(&setup)?;
        let server = match setup.listen {
            Some(_) => Some(server_config(&setup)?),
            None => None,
        };
        let addr = setup
            .listen
            .unwrap_or_else(|| SocketAddr::new(setup.bind_ip, 0));
        let socket = bind_udp(addr).map_err(|source| QuicError::Bind { addr, source })?;
        let endpoint = Endpoint::new(
            endpoint_config(&setup)?,
            server,
            socket,
            quinn::default_runtime().ok_or_else(|| QuicError::Tls("no async runtime".into()))?,
        )
        .map_err(|source| QuicError::Bind { addr, source })?;
        let links = QuicLinks {
            inner: Arc::new(Inner {
                setup,
                endpoint,
                client: Mutex::new(client),
                links: Mutex::default(),
                media: Mutex::default(),
                inbound,
                limits,
                shutdown,
            }),
        };
        if links.inner.setup.listen.is_some() {
            tokio::spawn(links.clone().accept_loop());
        }
        if let Some((parent, addr)) = links.inner.setup.parent {
            tokio::spawn(links.clone().dial_loop(parent, addr));
        }
        tokio::spawn(links.clone().watch_certs());
        Ok(links)
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.endpoint.local_addr().ok()
    }

    fn locked_links(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Link>> {
        self.inner
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn locked_media(&self) -> std::sync::MutexGuard<'_, HashMap<u32, MediaRoute>> {
        self.inner
            .media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queue one SIP message for the link to `addr`. Without a link the
    /// message is dropped: the transaction layer's timeout reports it.
    pub fn send(&self, addr: SocketAddr, data: Bytes) {
        let tx = self.locked_links().get(&addr).map(|l| l.sip.clone());
        match tx {
            Some(tx) => {
                if tx.try_send(data).is_err() {
                    metrics::counter!("gbgate_quic_send_drops_total").increment(1);
                    tracing::warn!(%addr, "QUIC SIP queue full or closed; message dropped");
                }
            }
            None => {
                metrics::counter!("gbgate_quic_send_drops_total").increment(1);
                tracing::debug!(%addr, "no QUIC link to this peer; message dropped");
            }
        }
    }

    /// This node's certificate, read from its file now.
    pub fn certificate(&self) -> Option<CertificateStatus> {
        let setup = &self.inner.setup;
        let info = certs::inspect(&setup.cert, Some(&setup.ca)).ok()?;
        let days_left = info.days_left(time::OffsetDateTime::now_utc());
        Some(CertificateStatus {
            path: setup.cert.display().to_string(),
            node: info.gb_id.map(|id| id.to_string()),
            not_after: info
                .not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            days_left,
            expires_soon: days_left < EXPIRY_WARNING_DAYS,
        })
    }

    /// Move the endpoint to a new UDP socket on `addr` (the node's address
    /// changed, as after a DHCP renewal or a NAT rebinding). Open
    /// connections migrate to it: the parent sees the same connection from
    /// a new address, so no link or registration is made again.
    pub fn rebind(&self, addr: SocketAddr) -> std::io::Result<()> {
        self.inner.endpoint.rebind(bind_udp(addr)?)
    }

    /// The open links' connections (children's and the parent's).
    pub fn connections(&self) -> Vec<Connection> {
        self.locked_links()
            .values()
            .map(|l| l.conn.clone())
            .collect()
    }

    /// The connection to the parent, when it is up.
    pub fn parent_connection(&self) -> Option<Connection> {
        let (_, addr) = self.inner.setup.parent?;
        self.locked_links().get(&addr).map(|l| l.conn.clone())
    }

    /// Register a media session that will arrive as groups with `ssrc`.
    pub fn expect_media(&self, ssrc: u32) -> MediaInbox {
        let (tx, rx) = mpsc::channel(MEDIA_QUEUE);
        let rtt_ms = Arc::new(AtomicU64::new(0));
        self.locked_media().insert(
            ssrc,
            MediaRoute {
                tx,
                rtt_ms: rtt_ms.clone(),
                source: None,
            },
        );
        MediaInbox {
            rx,
            rtt_ms,
            sequencer: Sequencer::new(GROUP_GRACE),
            ssrc,
            links: self.clone(),
        }
    }

    // ------------------------------------------------------------ accepting

    async fn accept_loop(self) {
        loop {
            let incoming = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                i = self.inner.endpoint.accept() => match i {
                    Some(i) => i,
                    None => return,
                },
            };
            let me = self.clone();
            tokio::spawn(async move {
                let from = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => me.admit(conn).await,
                    Err(e) => {
                        me.refuse(from, None, format!("TLS handshake failed: {e}"))
                            .await
                    }
                }
            });
        }
    }

    async fn refuse(&self, from: SocketAddr, claimed: Option<GbId>, reason: String) {
        metrics::counter!("gbgate_quic_refused_total").increment(1);
        tracing::warn!(%from, claimed = ?claimed.map(|c| c.to_string()), %reason, "QUIC link refused");
        let _ = self
            .inner
            .inbound
            .send(Inbound::LinkRefused {
                from,
                claimed,
                reason,
            })
            .await;
    }

    /// A handshake passed (the CA signed the child's certificate): admit
    /// it only as a child the topology links here over QUIC.
    async fn admit(self, conn: Connection) {
        let from = conn.remote_address();
        let id = match peer_id(&conn) {
            Ok(id) => id,
            Err(reason) => {
                conn.close(NOT_A_CHILD, reason.as_bytes());
                return self.refuse(from, None, reason).await;
            }
        };
        if !self.inner.setup.children.contains(&id) {
            let reason = format!(
                "certificate names {id}, which is not a child linked to {} over QUIC in the topology",
                self.inner.setup.node
            );
            conn.close(NOT_A_CHILD, b"not a child of this node");
            return self.refuse(from, Some(id), reason).await;
        }
        tracing::info!(%from, child = %id, "QUIC link from child up");
        metrics::gauge!("gbgate_quic_links").increment(1.0);
        let peer = Peer {
            transport: Transport::Quic,
            addr: from,
            identity: Some(id),
        };
        tokio::spawn(self.clone().media_loop(conn.clone()));
        // The child opens the SIP stream with its first REGISTER.
        let sip = tokio::select! {
            _ = self.inner.shutdown.cancelled() => return,
            s = conn.accept_bi() => s,
        };
        match sip {
            Ok(streams) => {
                let (queue, replaced) = self.attach(peer, &conn);
                if let Some(old) = replaced {
                    // The child redialled from the same address (it
                    // restarted) before its old connection timed out: that
                    // one and everything on it are gone, and the node hears
                    // so before the new connection's REGISTER.
                    old.close(VarInt::from_u32(0), b"replaced by a new connection");
                    tracing::info!(%from, child = %id, "the child's new QUIC connection replaces its old one");
                    let _ = self.inner.inbound.send(Inbound::Unreachable { peer }).await;
                }
                if self.serve(conn.clone(), peer, streams, queue).await {
                    tracing::info!(%from, child = %id, reason = ?conn.close_reason(), "QUIC link from child down");
                    let _ = self.inner.inbound.send(Inbound::Unreachable { peer }).await;
                }
            }
            Err(e) => tracing::info!(%from, child = %id, error = %e, "QUIC link closed before SIP"),
        }
        metrics::gauge!("gbgate_quic_links").decrement(1.0);
    }

    // ------------------------------------------------------------- dialling

    async fn dial_loop(self, parent: GbId, addr: SocketAddr) {
        let mut backoff = FIRST_BACKOFF;
        let Ok(name) = certs::server_name(&parent) else {
            tracing::error!(%parent, "the parent's ID makes no TLS server name");
            return;
        };
        let name = name.to_str().into_owned();
        let peer = Peer {
            transport: Transport::Quic,
            addr,
            identity: Some(parent),
        };
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let config = self
                .inner
                .client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let started = std::time::Instant::now();
            let attempt = async {
                let conn = self
                    .inner
                    .endpoint
                    .connect_with(config, addr, &name)
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
                let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((conn, send, recv))
            };
            let r = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                r = tokio::time::timeout(DIAL_TIMEOUT, attempt) => r,
            };
            match r {
                Ok(Ok((conn, send, recv))) => {
                    backoff = FIRST_BACKOFF;
                    metrics::counter!("gbgate_quic_dials_total", "result" => "ok").increment(1);
                    tracing::info!(%parent, %addr, took_ms = started.elapsed().as_millis() as u64, "QUIC link to parent up");
                    let (queue, _) = self.attach(peer, &conn);
                    let _ = self.inner.inbound.send(Inbound::LinkUp { peer }).await;
                    tokio::spawn(self.clone().media_loop(conn.clone()));
                    self.serve(conn, peer, (send, recv), queue).await;
                    tracing::warn!(%parent, %addr, "QUIC link to parent down; redialling");
                    let _ = self.inner.inbound.send(Inbound::Unreachable { peer }).await;
                }
                Ok(Err(e)) => {
                    metrics::counter!("gbgate_quic_dials_total", "result" => "failed").increment(1);
                    tracing::warn!(%parent, %addr, error = %e, retry_ms = backoff.as_millis() as u64, "QUIC dial to parent failed");
                }
                Err(_) => {
                    metrics::counter!("gbgate_quic_dials_total", "result" => "timeout")
                        .increment(1);
                    tracing::warn!(%parent, %addr, retry_ms = backoff.as_millis() as u64, "QUIC dial to parent timed out");
                }
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    // -------------------------------------------------------------- serving

    /// Make `conn` the link to `peer`: from now on SIP to the peer is
    /// queued for it. Done before the node hears of the link, so what it
    /// sends in answer finds the link.
    /// Returns the link it replaced: the same peer's older connection.
    fn attach(&self, peer: Peer, conn: &Connection) -> (SipQueue, Option<Connection>) {
        let (tx, rx) = mpsc::channel::<Bytes>(SIP_QUEUE);
        let old = self.locked_links().insert(
            peer.addr,
            Link {
                conn: conn.clone(),
                sip: tx.clone(),
            },
        );
        ((tx, rx), old.map(|l| l.conn))
    }

    /// Carry SIP both ways on the link's stream until the connection ends.
    async fn serve(
        &self,
        conn: Connection,
        peer: Peer,
        (mut send, mut recv): (SendStream, RecvStream),
        (tx, mut rx): SipQueue,
    ) -> bool {
        let writer = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if send.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        let mut framer = StreamFramer::new(self.inner.limits.max_message);
        let mut buf = vec![0u8; 16 * 1024];
        'conn: loop {
            let n = tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                r = recv.read(&mut buf) => match r {
                    Ok(Some(n)) => n,
                    Ok(None) | Err(_) => break,
                },
            };
            framer.push(buf.get(..n).unwrap_or_default());
            loop {
                let inbound = match framer.next_message() {
                    Ok(None) => break,
                    Ok(Some(message)) => Inbound::Message { peer, message },
                    Err(e) if e.is_fatal() => {
                        tracing::warn!(%peer, error = %e, "QUIC SIP stream cannot be framed; closing the link");
                        metrics::counter!("gbgate_sip_parse_errors_total").increment(1);
                        break 'conn;
                    }
                    Err(crate::sip::framing::FrameError::Malformed { raw, error }) => {
                        Inbound::Malformed { peer, raw, error }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "QUIC SIP framing error");
                        continue;
                    }
                };
                if self.inner.inbound.send(inbound).await.is_err() {
                    break 'conn;
                }
            }
        }
        let current = {
            let mut links = self.locked_links();
            let current = links
                .get(&peer.addr)
                .is_some_and(|l| l.sip.same_channel(&tx));
            if current {
                links.remove(&peer.addr);
            }
            current
        };
        writer.abort();
        conn.close(VarInt::from_u32(0), b"bye");
        current
    }

    /// Accept the connection's media groups and hand their packets to the
    /// sessions they belong to.
    async fn media_loop(self, conn: Connection) {
        loop {
            let stream = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                s = conn.accept_uni() => s,
            };
            let Ok(stream) = stream else { return };
            tokio::spawn(self.clone().read_group(conn.clone(), stream));
        }
    }

    async fn read_group(self, conn: Connection, mut stream: RecvStream) {
        let conn_id = conn.stable_id();
        let mut head = [0u8; GroupHeader::LEN];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let Some(h) = GroupHeader::decode(&head) else {
            metrics::counter!("gbgate_quic_media_errors_total").increment(1);
            let _ = stream.stop(STALE_GROUP);
            return;
        };
        let Some((tx, rtt_ms)) = self.route(conn_id, h.ssrc) else {
            let _ = stream.stop(STALE_GROUP);
            return;
        };
        rtt_ms.store(
            u64::try_from(conn.rtt().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut deframer = crate::media::rtp::TcpDeframer::new();
        let mut buf = BytesMut::zeroed(64 * 1024);
        let whole = loop {
            match stream.read(&mut buf).await {
                Ok(Some(n)) => {
                    deframer.push(buf.get(..n).unwrap_or_default());
                    while let Ok(Some(p)) = deframer.next_packet() {
                        metrics::counter!("gbgate_quic_media_packets_total").increment(1);
                        if tx.try_send(GroupEvent::Packet(h.group, p)).is_err() {
                            metrics::counter!("gbgate_quic_media_drops_total").increment(1);
                        }
                    }
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if !whole {
            metrics::counter!("gbgate_quic_groups_cut_total").increment(1);
        }
        let _ = tx.send(GroupEvent::End(h.group, whole)).await;
    }

    /// The queue of session `ssrc`, when it expects media from this
    /// connection (the first connection to send to it).
    fn route(
        &self,
        conn_id: usize,
        ssrc: u32,
    ) -> Option<(mpsc::Sender<GroupEvent>, Arc<AtomicU64>)> {
        let mut media = self.locked_media();
        let route = media.get_mut(&ssrc)?;
        if *route.source.get_or_insert(conn_id) != conn_id {
            metrics::counter!("gbgate_rtp_foreign_packets_total").increment(1);
            return None;
        }
        Some((route.tx.clone(), route.rtt_ms.clone()))
    }

    // ------------------------------------------------------------- rotation

    /// New certificate files are used for new connections; open ones keep
    /// theirs.
    async fn watch_certs(self) {
        let setup = &self.inner.setup;
        let stamp = || {
            (
                modified(&setup.cert),
                modified(&setup.key),
                modified(&setup.ca),
            )
        };
        let mut last = stamp();
        let mut warned = None;
        warn_expiry(setup, &mut warned);
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(CERT_POLL) => {}
            }
            let now = stamp();
            if now == last {
                warn_expiry(setup, &mut warned);
                continue;
            }
            last = now;
            let loaded = client_config(setup).and_then(|c| {
                let s = match setup.listen {
                    Some(_) => Some(server_config(setup)?),
                    None => None,
                };
                Ok((c, s))
            });
            match loaded {
                Ok((client, server)) => {
                    *self
                        .inner
                        .client
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
                    if let Some(s) = server {
                        self.inner.endpoint.set_server_config(Some(s));
                    }
                    metrics::counter!("gbgate_cert_reloads_total").increment(1);
                    tracing::info!(cert = %setup.cert.display(), "new certificate files loaded; new QUIC connections use them");
                }
                Err(e) => {
                    tracing::error!(error = %e, "new certificate files are not usable; the old ones stay in use");
                }
            }
            warn_expiry(setup, &mut warned);
        }
    }
}

/// The GB ID in the peer's certificate.
fn peer_id(conn: &Connection) -> Result<GbId, String> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| "the peer sent no certificate".to_owned())?;
    let chain = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "the peer's identity is not a certificate chain".to_owned())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "the peer sent an empty certificate chain".to_owned())?;
    certs::gb_id_of(leaf).map_err(|e| format!("the peer's certificate names no node: {e}"))
}

/// This node's certificate as the topology API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CertificateStatus {
    /// The certificate file in use for new connections.
    pub path: String,
    /// The node ID its URI SAN names.
    pub node: Option<String>,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whole days until then (negative once expired).
    pub days_left: i64,
    /// True when fewer than [`EXPIRY_WARNING_DAYS`] are left.
    pub expires_soon: bool,
}

/// Days left under which an expiring certificate is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;
/// How often the warning repeats.
const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Days until this node's certificate expires (also the
/// `gbgate_cert_days_left` gauge); `None` when it cannot be read.
pub fn cert_days_left(setup: &QuicSetup) -> Option<i64> {
    let info = certs::inspect(&setup.cert, Some(&setup.ca)).ok()?;
    let days = info.days_left(time::OffsetDateTime::now_utc());
    metrics::gauge!("gbgate_cert_days_left").set(days as f64);
    Some(days)
}

/// Warn about an expiring certificate, at most once per
/// [`EXPIRY_WARNING_EVERY`].
fn warn_expiry(setup: &QuicSetup, last: &mut Option<std::time::Instant>) {
    let Some(days) = cert_days_left(setup) else {
        return;
    };
    let due = last.is_none_or(|t| t.elapsed() >= EXPIRY_WARNING_EVERY);
    if days < EXPIRY_WARNING_DAYS && due {
        *last = Some(std::time::Instant::now());
        tracing::warn!(cert = %setup.cert.display(), days_left = days, "the node certificate expires soon; renew it with `gbgate cert renew`");
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Media groups arrive in bursts; room for a keyframe at link speed.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Send a hub's PS (from `viewer`) to the parent over `conn`: RTP packets
/// with RFC 4571 prefixes, one unidirectional stream per GOP.
pub async fn send_groups(
    viewer: &mut crate::streams::hub::Viewer,
    conn: Connection,
    ssrc: u32,
) -> String {
    use crate::media::rtp::frame_rfc4571;
    use crate::streams::hub::Next;
    use crate::streams::rtp_io::rtp_packets;
    let mut group: u32 = 0;
    let mut current: Option<SendStream> = None;
    // Earlier groups keep sending at lower priority, until they are stale:
    // older than a second or four round trips (retransmissions at village
    // RTTs need a few), with a newer group out. Then they are reset.
    let mut earlier: std::collections::VecDeque<(std::time::Instant, SendStream)> =
        Default::default();
    let mut current_since = std::time::Instant::now();
    let mut seq: u16 = rand::random();
    let mut last_pts = viewer.first_pts().unwrap_or(0);
    let mut out = BytesMut::with_capacity(64 * 1024);
    // The parent stopped the group being sent: nothing until a keyframe.
    let mut skip_to_key = false;
    loop {
        let (chunk, pts, keyframe) = match viewer.next().await {
            Next::Data {
                bytes,
                pts,
                keyframe,
            } => (bytes, pts, keyframe),
            Next::End(reason) => {
                if let Some(mut s) = current.take() {
                    let _ = s.finish();
                }
                return reason.to_string();
            }
        };
        if skip_to_key && !keyframe {
            continue;
        }
        skip_to_key = false;
        if keyframe || current.is_none() {
            let now = std::time::Instant::now();
            if let Some(mut s) = current.take() {
                let _ = s.finish();
                earlier.push_back((current_since, s));
            }
            let stale_after = (conn.rtt() * 4).max(Duration::from_secs(1));
            while earlier
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > stale_after || earlier.len() > 8)
            {
                if let Some((_, mut old)) = earlier.pop_front() {
                    // Already acknowledged in full: the reset is a no-op.
                    let _ = old.reset(STALE_GROUP);
                }
            }
            current_since = now;
            let mut s = match conn.open_uni().await {
                Ok(s) => s,
                Err(e) => return format!("the QUIC link to the parent failed: {e}"),
            };
            // Newest first: a new GOP overtakes what is left of the last.
            let _ = s.set_priority(i32::try_from(group % (1 << 30)).unwrap_or(0));
            if let Err(e) = s.write_all(&GroupHeader { ssrc, group }.encode()).await {
                return format!("sending media to the parent failed: {e}");
            }
            group = group.wrapping_add(1);
            current = Some(s);
        }
        let Some(stream) = current.as_mut() else {
            continue;
        };
        let ts = pts.unwrap_or(last_pts);
        last_pts = ts;
        let packets = rtp_packets(&chunk, ts, ssrc, &mut seq);
        let count = packets.len();
        out.clear();
        for p in packets {
            let raw = p.to_bytes();
            match frame_rfc4571(&raw) {
                Ok(framed) => out.extend_from_slice(&framed),
                Err(e) => return format!("an RTP packet could not be framed: {e}"),
            }
        }
        // One write per frame: quinn batches it into datagrams (GSO).
        match stream.write_all(&out).await {
            Ok(()) => {
                metrics::counter!("gbgate_rtp_packets_sent_total").increment(count as u64);
            }
            Err(quinn::WriteError::Stopped(_)) => {
                // The parent dropped this group as stale: wait for the next.
                current = None;
                skip_to_key = true;
            }
            Err(e) => return format!("sending media to the parent failed: {e}"),
        }
    }
}
