//! The stream manager: opens streams on demand, one upstream call per
//! channel however many viewers and parents watch it, and closes them when
//! nobody does.
//!
//! * **Single-flight open.** Live hubs live in a moka cache keyed by
//!   channel; `try_get_with` makes concurrent openers of one channel share
//!   one INVITE. The opening itself runs in its own task so a viewer that
//!   hangs up mid-INVITE does not make the next one INVITE again (moka
//!   re-runs an init whose caller was cancelled).
//! * **Linger.** A per-hub watchdog ends a hub that has had no viewers for
//!   `linger`, or no media for `media_timeout`; ending sends BYE below.
//!   It sleeps until the next deadline [`lifecycle::decide`] gives, or until
//!   a viewer comes or goes or playback pauses, rather than polling.
//!   (moka's own expiry fires only when the cache is touched, so an idle
//!   stream would never be closed by it.)
//! * **Calls from the parent** are one more viewer of the hub, in PS,
//!   sent as RTP to where the parent's SDP says.

pub mod hub;
pub mod lifecycle;
pub mod media_links;
pub mod rtp_io;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use policy::Subject;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use topology::GbId;

use crate::media::ps::PsFault;
use crate::media::sdp::{Direction, GbSdp, MediaKind, SessionKind};
use crate::node::{CallError, CallEvent, CallFailure, CallId, CallKind};
use crate::runtime::NodeHandle;
use crate::sip::header::Reason;
use hub::{Format, Hub, HubState, JoinError, PsCause, Viewer};
use rtp_io::{LinkMode, SendTarget};

/// Settings of the media plane.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// This node's 20-digit ID (SDP `o=`, SSRC domain digits).
    pub node_id: GbId,
    /// The address media sockets bind to and SDP advertises.
    pub media_ip: IpAddr,
    /// How this node asks its sources to send (UDP, or TCP passive/active).
    pub receive_mode: LinkMode,
    /// Idle time before a stream without viewers closes.
    pub linger: Duration,
    /// Silence from below after which a stream ends.
    pub media_timeout: Duration,
    /// How long to wait for the INVITE's answer and then the first keyframe.
    pub open_timeout: Duration,
    /// Most hubs at once.
    pub max_streams: usize,
    /// Most viewers per hub.
    pub max_viewers: usize,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The node could not place the call (unknown channel, offline...).
    #[error(transparent)]
    Refused(#[from] CallError),
    /// The source below refused the call, or its answer was unusable.
    #[error("the source did not open the stream: {0}")]
    Failed(#[from] CallFailure),
    /// The source's answer never came within the opening time.
    #[error("the source did not open the stream: no answer within {0:?}")]
    NoAnswer(Duration),
    /// The answer's `c=` address is not an IP address.
    #[error(
        "the source did not open the stream: the answer's c= address {0:?} is not an IP address"
    )]
    BadAddress(String),
    /// This node has its maximum of streams open.
    #[error("this node has its maximum of {0} streams open")]
    TooManyStreams(usize),
    /// No media endpoint could be made.
    #[error(transparent)]
    NoSocket(#[from] media_links::MediaLinkError),
    /// The node or the opening task stopped.
    #[error("the stream could not be opened: {0}")]
    Stopped(String),
    /// The stream ended while it was being opened.
    #[error("the stream ended while opening")]
    EndedWhileOpening,
    /// The stream opened but no picture came.
    #[error("{0}")]
    Join(#[from] JoinError),
}

impl OpenError {
    /// The status an HTTP viewer or a SIP caller gets.
    pub fn status(&self) -> u16 {
        match self {
            OpenError::Refused(CallError::UnknownChannel(_)) => 404,
            OpenError::Refused(CallError::TooMany(_))
            | OpenError::TooManyStreams(_)
            | OpenError::NoSocket(_)
            | OpenError::Join(JoinError::Full(_)) => 503,
            _ => 502,
        }
    }
}

/// The reason a playback hub ends with when its source reports the end.
const END_OF_RECORDING: &str = "end of the recording";

/// How long a stream whose source's PS could not be read waits for a first
/// frame after the fault before it ends. Far below any sane media timeout:
/// every tier above runs its own silence watchdog, started no later than
/// this one, and the BYE naming the cause has to reach them first.
pub const UNREADABLE_GRACE: Duration = Duration::from_secs(1);

/// Whether a stream that has had no frame, with `cause` noted `since` ago,
/// should end now rather than wait for the media timeout.
pub fn gives_up_on(cause: &PsCause, since: Duration) -> bool {
    match cause.fault() {
        // Decided only after ~2 s of input with no audio or video PES in
        // it: nothing readable is coming.
        Some(PsFault::NoElementaryStream { .. } | PsFault::NotProgramStream { .. }) => true,
        // One bad PES header or PSM entry: another stream of the source
        // (or its next PES) may still decode, so give it a moment.
        Some(PsFault::MissingPesFlags { .. } | PsFault::UnknownStreamType { .. }) => {
            since >= UNREADABLE_GRACE
        }
        // Said by a tier below, which has given up already.
        None => true,
    }
}

/// The Reason a BYE up the tree carries when a parent's call ends on
/// `e`: the cause, when it is one the tier above can show its viewers.
fn bye_reason(e: &JoinError) -> Option<Reason> {
    match e {
        // 502: what our own viewers get for it (OpenError::status).
        JoinError::Unreadable(_) => Some(Reason::sip(502, &e.to_string())),
        JoinError::Ended(_) | JoinError::Full(_) | JoinError::NoPicture(_) => None,
    }
}

/// Shortest gap between two control commands of one playback session.
pub const MIN_CONTROL_INTERVAL: Duration = Duration::from_millis(200);

/// What became of a playback control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Sent below as INFO.
    Sent,
    /// No such playback session here.
    NoSession,
    /// The previous command was less than [`MIN_CONTROL_INTERVAL`] ago.
    TooSoon,
}

/// What identifies a hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// Live video of a channel: shared by everyone.
    Live(GbId),
    /// One playback session: never shared.
    Playback(GbId, u64),
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamKey::Live(c) => write!(f, "live/{c}"),
            StreamKey::Playback(c, s) => write!(f, "playback/{c}/{s}"),
        }
    }
}

/// One open stream, as `GET /api/v1/streams` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StreamInfo {
    /// `live/<channel>` or `playback/<channel>/<session>`.
    pub stream: String,
    /// The call below that feeds it.
    #[schema(value_type = u64)]
    pub call: CallId,
    /// Viewers (HTTP and parents).
    pub viewers: usize,
    /// opening, playing, or ended with the reason.
    pub state: String,
    /// Frames received from below.
    pub frames_in: u64,
    /// Elementary-stream bytes received from below.
    pub bytes_in: u64,
    /// Times a slow viewer skipped ahead.
    pub viewer_skips: u64,
}

/// A call taken from the parent and the task serving it.
struct Serving {
    stop: CancellationToken,
    /// The call below that feeds it (for INFO forwarding).
    upstream: Option<CallId>,
}

/// A hub's upstream side: the call below that feeds it.
struct Upstream {
    hub: Arc<Hub>,
}

/// An open playback session: the call below, its hub, the channel.
type PlaybackSession = (CallId, Arc<Hub>, GbId);

/// The media plane of one node.
pub struct StreamManager {
    node: NodeHandle,
    settings: StreamSettings,
    live: moka::future::Cache<GbId, Arc<Hub>>,
    open_hubs: AtomicUsize,
    pending: Mutex<HashMap<CallId, oneshot::Sender<Result<GbSdp, CallFailure>>>>,
    upstream: Mutex<HashMap<CallId, Upstream>>,
    serving: Mutex<HashMap<CallId, Serving>>,
    playbacks: Mutex<HashMap<u64, PlaybackSession>>,
    /// When each playback session was last controlled (rate limit).
    last_control: Mutex<HashMap<u64, Instant>>,
    ssrc_seq: AtomicU16,
    /// Where media comes in and goes out (sockets, QUIC links).
    links: media_links::MediaLinks,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StreamSettings {
    /// The media settings of a node with these settings, at `node_id`, with
    /// media on `media_ip`.
    pub fn from_node(node_id: GbId, media_ip: IpAddr, s: &crate::settings::Settings) -> Self {
        StreamSettings {
            node_id,
            media_ip,
            receive_mode: s.media_transport.into(),
            linger: s.linger,
            media_timeout: s.media_timeout,
            open_timeout: s.invite_timeout,
            max_streams: s.max_streams,
            max_viewers: s.max_viewers_per_stream,
        }
    }
}

impl StreamManager {
    /// A manager driving calls through `node`. Start [`Self::run_events`] with
    /// the receiver of the node's call events.
    pub fn new(
        node: NodeHandle,
        settings: StreamSettings,
        quic: Option<crate::transport::QuicLinks>,
    ) -> Arc<StreamManager> {
        let links = media_links::MediaLinks::new(settings.media_ip, settings.receive_mode, quic);
        Arc::new(StreamManager {
            node,
            // Unbounded: eviction would break single-flight (a second hub,
            // a second INVITE); `max_streams` bounds hubs instead.
            live: moka::future::Cache::builder().build(),
            settings,
            open_hubs: AtomicUsize::new(0),
            pending: Mutex::default(),
            upstream: Mutex::default(),
            serving: Mutex::default(),
            playbacks: Mutex::default(),
            last_control: Mutex::default(),
            links,
            ssrc_seq: AtomicU16::new(0),
        })
    }

    /// Settings in force.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// The node's QUIC links, when it runs any.
    pub fn quic(&self) -> Option<&crate::transport::QuicLinks> {
        self.links.quic()
    }

    /// Hubs open now.
    pub fn open_streams(&self) -> usize {
        self.open_hubs.load(Ordering::Acquire)
    }

    /// The streams open now, for the API.
    pub fn list(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = locked(&self.upstream)
            .iter()
            .map(|(call, up)| {
                let h = &up.hub;
                StreamInfo {
                    stream: h.name.clone(),
                    call: *call,
                    viewers: h.viewers(),
                    state: match h.state() {
                        HubState::Opening => "opening".into(),
                        HubState::Playing => "playing".into(),
                        HubState::Ended(r) => format!("ended: {r}"),
                    },
                    frames_in: h.stats.frames_in.load(Ordering::Relaxed),
                    bytes_in: h.stats.bytes_in.load(Ordering::Relaxed),
                    viewer_skips: h.stats.viewer_skips.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        out
    }

    /// Handle call events from the node until the node stops.
    pub async fn run_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<CallEvent>) {
        while let Some(ev) = events.recv().await {
            self.on_event(ev);
        }
    }

    fn on_event(self: &Arc<Self>, ev: CallEvent) {
        match ev {
            CallEvent::Answered { call, answer } => {
                let delivered = locked(&self.pending)
                    .remove(&call)
                    .is_some_and(|tx| tx.send(Ok(answer)).is_ok());
                if !delivered {
                    // The opener gave up (its viewer left): take it down.
                    self.hangup(call);
                }
            }
            CallEvent::Failed { call, reason } => {
                if let Some(tx) = locked(&self.pending).remove(&call) {
                    let _ = tx.send(Err(reason));
                }
            }
            CallEvent::Ended { call, reason, said } => {
                if let Some(up) = locked(&self.upstream).remove(&call) {
                    // A tier below could not read the source's PS: noted
                    // before the end, so this hub's viewers and parents
                    // are told the cause, not that the stream ended.
                    let cause = said
                        .as_ref()
                        .and_then(|r| r.text.as_deref())
                        .and_then(PsCause::from_reason_text);
                    if let Some(cause) = cause {
                        up.hub.note_fault(cause);
                    }
                    up.hub.end(&reason);
                }
                if let Some(s) = locked(&self.serving).remove(&call) {
                    s.stop.cancel();
                }
            }
            CallEvent::MediaEnded { call } => {
                if let Some(up) = locked(&self.upstream).get(&call) {
                    up.hub.end(END_OF_RECORDING);
                }
            }
            CallEvent::Invited {
                call,
                channel,
                kind,
                offer,
                on_behalf_of,
            } => {
                // Registered before the task starts, so a CANCEL or BYE
                // handled right after finds it.
                let stop = CancellationToken::new();
                locked(&self.serving).insert(
                    call,
                    Serving {
                        stop: stop.clone(),
                        upstream: None,
                    },
                );
                let me = self.clone();
                tokio::spawn(async move {
                    me.clone()
                        .serve_parent(call, channel, kind, offer, on_behalf_of, stop)
                        .await;
                    locked(&me.serving).remove(&call);
                });
            }
            CallEvent::Info { call, body } => {
                let upstream = locked(&self.serving).get(&call).and_then(|s| s.upstream);
                if let Some(up) = upstream {
                    self.forward_control(up, body);
                }
            }
        }
    }

    fn hangup(&self, call: CallId) {
        let node = self.node.clone();
        tokio::spawn(async move {
            let _ = node.command(move |n, now| n.hangup(call, now)).await;
        });
    }

    fn send_info(&self, call: CallId, body: Bytes) {
        let node = self.node.clone();
        tokio::spawn(async move {
            let _ = node
                .command(move |n, now| n.send_info(call, body, now))
                .await;
        });
    }

    // ------------------------------------------------------------- opening

    /// The live hub of `channel`, opening it below if nobody watches it yet.
    /// `on_behalf_of` names the department the INVITE below is for (the
    /// first opener's: later viewers share the stream).
    pub async fn open_live(
        self: &Arc<Self>,
        channel: GbId,
        on_behalf_of: Option<Subject>,
    ) -> Result<Arc<Hub>, OpenError> {
        for _ in 0..3 {
            let me = self.clone();
            let behalf = on_behalf_of.clone();
            let hub = self
                .live
                .try_get_with(channel, async move {
                    // Its own task: a cancelled first caller must not make
                    // the next caller INVITE again.
                    tokio::spawn(async move {
                        me.open_upstream_kind(StreamKey::Live(channel), CallKind::Live, behalf)
                            .await
                    })
                    .await
                    .map_err(|e| OpenError::Stopped(format!("opening task failed: {e}")))?
                })
                .await
                .map_err(|e: Arc<OpenError>| (*e).clone())?;
            if !matches!(hub.state(), HubState::Ended(_)) {
                return Ok(hub);
            }
            // It ended (linger ran out) and the watchdog has not removed it
            // yet: remove it, unless someone already put a new one there.
            self.forget_live(channel, &hub).await;
        }
        Err(OpenError::EndedWhileOpening)
    }

    async fn forget_live(&self, channel: GbId, hub: &Arc<Hub>) {
        self.live
            .entry(channel)
            .and_compute_with(|e| {
                let op = match e {
                    Some(e) if Arc::ptr_eq(e.value(), hub) => moka::ops::compute::Op::Remove,
                    _ => moka::ops::compute::Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Join the live stream of `channel` as a viewer of `format`.
    pub async fn watch_live(
        self: &Arc<Self>,
        channel: GbId,
        format: Format,
        on_behalf_of: Option<Subject>,
    ) -> Result<Viewer, OpenError> {
        let mut last = None;
        for _ in 0..2 {
            let hub = self.open_live(channel, on_behalf_of.clone()).await?;
            match hub.join(format, self.settings.open_timeout).await {
                Ok(v) => return Ok(v),
                // A working stream whose linger ran out just as we came:
                // open it again. One that never delivered media failed.
                Err(JoinError::Ended(r)) if hub.stats.frames_in.load(Ordering::Relaxed) > 0 => {
                    self.forget_live(channel, &hub).await;
                    last = Some(JoinError::Ended(r));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or(JoinError::Ended("the stream ended".into()))
            .into())
    }

    /// Open a playback session of `channel` over `[start, end]` (Unix
    /// seconds) and join it. Returns the session number (for control) and
    /// the viewer.
    pub async fn watch_playback(
        self: &Arc<Self>,
        channel: GbId,
        start: u64,
        end: u64,
        format: Format,
        on_behalf_of: Option<Subject>,
    ) -> Result<(u64, Viewer), OpenError> {
        let (session, hub) = self
            .open_playback(channel, start, end, on_behalf_of)
            .await?;
        let viewer = hub.join(format, self.settings.open_timeout).await?;
        Ok((session, viewer))
    }

    /// Open a playback session's hub (never shared). Returns its session
    /// number and the hub.
    async fn open_playback(
        self: &Arc<Self>,
        channel: GbId,
        start: u64,
        end: u64,
        on_behalf_of: Option<Subject>,
    ) -> Result<(u64, Arc<Hub>), OpenError> {
        // Random, so one viewer cannot guess another's session to control it.
        let session = loop {
            let s: u64 = rand::random::<u64>() >> 11; // exact as a JSON number
            if s != 0 && !locked(&self.playbacks).contains_key(&s) {
                break s;
            }
        };
        let me = self.clone();
        // Its own task: a viewer leaving mid-INVITE must not strand the call.
        let hub = tokio::spawn(async move {
            me.open_upstream_kind(
                StreamKey::Playback(channel, session),
                CallKind::Playback { start, end },
                on_behalf_of,
            )
            .await
        })
        .await
        .map_err(|e| OpenError::Stopped(format!("opening task failed: {e}")))??;
        Ok((session, hub))
    }

    /// The channel a playback session replays, if the session is open.
    pub fn playback_channel(&self, session: u64) -> Option<GbId> {
        locked(&self.playbacks).get(&session).map(|(_, _, ch)| *ch)
    }

    /// Send MANSRTSP (PLAY/PAUSE/Scale/Range) to the source of a playback
    /// session. At most one command per [`MIN_CONTROL_INTERVAL`] per
    /// session: each is an INFO transaction, and a client hammering it must
    /// not use up the node's transaction budget.
    pub fn control_playback(&self, session: u64, body: Bytes) -> ControlOutcome {
        let Some(call) = locked(&self.playbacks).get(&session).map(|(c, _, _)| *c) else {
            return ControlOutcome::NoSession;
        };
        let now = Instant::now();
        {
            let mut last = locked(&self.last_control);
            if last
                .get(&session)
                .is_some_and(|t| now.duration_since(*t) < MIN_CONTROL_INTERVAL)
            {
                return ControlOutcome::TooSoon;
            }
            last.insert(session, now);
        }
        self.forward_control(call, body);
        ControlOutcome::Sent
    }

    /// Pass playback control to the call below, and note a pause on its
    /// hub so the silence that follows does not end the stream.
    fn forward_control(&self, call: CallId, body: Bytes) {
        use crate::gb::mansrtsp::{parse, MansRtspCommand};
        let hub = locked(&self.upstream).get(&call).map(|u| u.hub.clone());
        match (parse(&body), hub) {
            (Ok(m), Some(hub)) => match m.command {
                MansRtspCommand::Pause { .. } => hub.set_paused(true),
                MansRtspCommand::Play { .. } => hub.set_paused(false),
                MansRtspCommand::Teardown => {}
            },
            (Err(e), _) => {
                tracing::warn!(call, error = %e, "MANSRTSP body not understood; forwarded as it is");
            }
            _ => {}
        }
        self.send_info(call, body);
    }

    async fn open_upstream_kind(
        self: &Arc<Self>,
        key: StreamKey,
        kind: CallKind,
        on_behalf_of: Option<Subject>,
    ) -> Result<Arc<Hub>, OpenError> {
        // Reserve the slot now, so concurrent opens cannot overshoot.
        if self.open_hubs.fetch_add(1, Ordering::AcqRel) >= self.settings.max_streams {
            self.open_hubs.fetch_sub(1, Ordering::AcqRel);
            return Err(OpenError::TooManyStreams(self.settings.max_streams));
        }
        let r = self.open_reserved(key, kind, on_behalf_of).await;
        if r.is_err() {
            self.open_hubs.fetch_sub(1, Ordering::AcqRel);
        }
        r
    }

    async fn open_reserved(
        self: &Arc<Self>,
        key: StreamKey,
        kind: CallKind,
        on_behalf_of: Option<Subject>,
    ) -> Result<Arc<Hub>, OpenError> {
        let channel = match &key {
            StreamKey::Live(c) | StreamKey::Playback(c, _) => *c,
        };
        let live = kind == CallKind::Live;
        let seq = self.ssrc_seq.fetch_add(1, Ordering::Relaxed);
        let (ssrc, ssrc_text) =
            crate::media::sdp::ssrc_for(live, self.settings.node_id.domain(), seq);
        // Media from a child on a QUIC link comes on that link.
        let transport = match self.links.quic() {
            Some(_) => self
                .node
                .query(move |n| n.link_toward(channel))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|peer| peer.transport),
            None => None,
        };
        let (mode, socket) = self.links.receiver(transport, ssrc).await?;
        let offer = self.sdp(
            &kind,
            Some(channel),
            socket.port(),
            mode,
            Direction::RecvOnly,
            ssrc,
            ssrc_text,
        );
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        let placed = self
            .node
            .command(move |n, now| {
                let r = n.place_call(channel, kind, &offer, on_behalf_of.as_ref(), now);
                if let Ok(call) = r {
                    // Registered inside the node's loop, so the answer
                    // cannot overtake it.
                    locked(&me.pending).insert(call, tx);
                }
                r
            })
            .await
            .map_err(|e| OpenError::Stopped(e.to_string()))??;
        let answer = match tokio::time::timeout(self.settings.open_timeout, rx).await {
            Ok(Ok(Ok(a))) => a,
            Ok(Ok(Err(reason))) => return Err(OpenError::Failed(reason)),
            Ok(Err(_)) => return Err(OpenError::Stopped("the node stopped".into())),
            Err(_) => {
                locked(&self.pending).remove(&placed);
                self.hangup(placed);
                return Err(OpenError::NoAnswer(self.settings.open_timeout));
            }
        };
        let Ok(peer_ip) = answer.conn_addr.parse::<IpAddr>() else {
            self.hangup(placed);
            return Err(OpenError::BadAddress(answer.conn_addr));
        };
        let hub = Hub::new(key.to_string(), self.settings.max_viewers);
        metrics::gauge!("gbgate_streams_open").increment(1.0);
        let stop = CancellationToken::new();
        let peer = SocketAddr::new(peer_ip, answer.media_port);
        let expected = answer.ssrc.or(Some(ssrc));
        locked(&self.upstream).insert(placed, Upstream { hub: hub.clone() });
        if let StreamKey::Playback(_, session) = key {
            locked(&self.playbacks).insert(session, (placed, hub.clone(), channel));
        }
        {
            let hub = hub.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let why = rtp_io::receive(hub.clone(), socket, peer, expected, stop).await;
                hub.end(&why);
            });
        }
        tokio::spawn(self.clone().watchdog(hub.clone(), key, placed, stop));
        tracing::info!(stream = %hub.name, call = placed, "stream open");
        Ok(hub)
    }

    /// Ends the hub on silence or after the linger, then cleans up: BYE
    /// below, socket closed, cache entry gone.
    async fn watchdog(
        self: Arc<Self>,
        hub: Arc<Hub>,
        key: StreamKey,
        call: CallId,
        stop: CancellationToken,
    ) {
        let linger = match key {
            StreamKey::Live(_) => self.settings.linger,
            // A playback session belongs to one viewer: close when it leaves.
            StreamKey::Playback(..) => Duration::ZERO,
        };
        let timers = lifecycle::HubTimers {
            media_timeout: self.settings.media_timeout,
            linger,
            open_timeout: self.settings.open_timeout,
        };
        let mut state = hub.subscribe_state();
        let opened = Instant::now();
        loop {
            if matches!(hub.state(), HubState::Ended(_)) {
                break;
            }
            let now = Instant::now();
            let facts = lifecycle::HubFacts {
                age: now.duration_since(opened),
                silent_for: hub.silent_for(now),
                idle_for: hub.idle_for(now),
                never_joined: !hub.ever_joined(),
                viewers: hub.viewers(),
                paused: hub.paused(),
                unreadable: hub.unreadable_for(now),
                fault: hub.unreadable(),
            };
            match lifecycle::decide(&facts, &timers) {
                lifecycle::Verdict::End(why) => {
                    hub.end(&why.to_string());
                    break;
                }
                lifecycle::Verdict::WakeIn(wake) => {
                    let sleep = async {
                        match wake {
                            Some(d) => tokio::time::sleep(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = sleep => {}
                        _ = state.changed() => {}
                        _ = hub.deadlines_changed() => {}
                    }
                }
            }
        }
        stop.cancel();
        if locked(&self.upstream).remove(&call).is_some() {
            self.hangup(call);
        }
        match key {
            StreamKey::Live(channel) => self.forget_live(channel, &hub).await,
            StreamKey::Playback(_, session) => {
                locked(&self.playbacks).remove(&session);
                locked(&self.last_control).remove(&session);
            }
        }
        self.open_hubs.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("gbgate_streams_open").decrement(1.0);
    }

    #[allow(clippy::too_many_arguments)]
    fn sdp(
        &self,
        kind: &CallKind,
        channel: Option<GbId>,
        port: u16,
        mode: LinkMode,
        direction: Direction,
        ssrc: u32,
        ssrc_text: String,
    ) -> GbSdp {
        let (transport, setup) = mode.sdp();
        let (session, uri, time) = match kind {
            CallKind::Live => (SessionKind::Play, None, (0, 0)),
            CallKind::Playback { start, end } => (
                SessionKind::Playback,
                channel.map(|c| format!("{c}:0")),
                (*start, *end),
            ),
        };
        GbSdp {
            origin_user: self.settings.node_id.to_string(),
            origin_addr: self.settings.media_ip.to_string(),
            session,
            uri,
            conn_addr: self.settings.media_ip.to_string(),
            time,
            media: MediaKind::Video,
            media_port: port,
            transport,
            payloads: vec![(96, "PS/90000".into())],
            direction,
            setup,
            connection_new: setup.is_some(),
            ssrc: Some(ssrc),
            ssrc_text: Some(ssrc_text),
            f: Some(String::new()),
            download_speed: None,
            file_size: None,
            stream_number: None,
        }
    }

    // ------------------------------------------------------ calls from above

    async fn serve_parent(
        self: Arc<Self>,
        call: CallId,
        channel: GbId,
        kind: CallKind,
        offer: GbSdp,
        on_behalf_of: Option<Subject>,
        stop: CancellationToken,
    ) {
        let refuse = |status: u16, reason: String| {
            let node = self.node.clone();
            async move {
                tracing::warn!(call, %channel, %reason, "cannot serve the parent's INVITE");
                let _ = node
                    .command(move |n, now| n.reject_call(call, status, &reason, now))
                    .await;
            }
        };
        let Ok(peer_ip) = offer.conn_addr.parse::<IpAddr>() else {
            let reason = format!(
                "the offer's c= address {:?} is not an IP address",
                offer.conn_addr
            );
            return refuse(488, reason).await;
        };
        let peer = SocketAddr::new(peer_ip, offer.media_port);
        // Open (or find) the stream below. The 200 goes up as soon as the
        // source below has answered, not after its first keyframe, so each
        // tier's INVITE timeout covers signalling only, not GOP waits.
        let opened = match &kind {
            CallKind::Live => self
                .open_live(channel, on_behalf_of)
                .await
                .map(|h| (h, None)),
            CallKind::Playback { start, end } => self
                .open_playback(channel, *start, *end, on_behalf_of)
                .await
                .map(|(session, h)| {
                    let below = locked(&self.playbacks).get(&session).map(|(c, _, _)| *c);
                    (h, below)
                }),
        };
        let (hub, below) = match opened {
            Ok(x) => x,
            Err(e) => {
                let status = match e.status() {
                    404 => 404,
                    503 => 486,
                    _ => 480,
                };
                return refuse(status, e.to_string()).await;
            }
        };
        if let Some(s) = locked(&self.serving).get_mut(&call) {
            s.upstream = below;
        }
        if stop.is_cancelled() {
            return; // CANCELled while opening
        }
        let mode = LinkMode::answering(offer.transport, offer.setup);
        let socket = match self.links.sender(mode).await {
            Ok(s) => s,
            Err(e) => return refuse(e.sip_status(), e.to_string()).await,
        };
        // GB/T 28181 has the caller choose the SSRC; make one if it did not.
        let (ssrc, ssrc_text) = match (offer.ssrc, offer.ssrc_text.clone()) {
            (Some(s), Some(t)) => (s, t),
            (Some(s), None) => (s, format!("{s:010}")),
            _ => {
                let seq = self.ssrc_seq.fetch_add(1, Ordering::Relaxed);
                crate::media::sdp::ssrc_for(
                    kind == CallKind::Live,
                    self.settings.node_id.domain(),
                    seq,
                )
            }
        };
        let answer = self.sdp(
            &kind,
            None,
            socket.port(),
            mode,
            Direction::SendOnly,
            ssrc,
            ssrc_text,
        );
        let accepted = self
            .node
            .command(move |n, now| n.accept_call(call, &answer, now))
            .await
            .unwrap_or(false);
        if !accepted {
            return; // cancelled or timed out meanwhile
        }
        let viewer = match hub.join(Format::Ps, self.settings.open_timeout).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(call, %channel, reason = %e, "no media for the parent's call");
                let why = bye_reason(&e);
                let _ = self
                    .node
                    .command(move |n, now| n.hangup_with(call, why.as_ref(), now))
                    .await;
                return;
            }
        };
        let why = rtp_io::send(viewer, SendTarget { socket, peer, ssrc }, stop.clone()).await;
        if !stop.is_cancelled() {
            tracing::info!(call, stream = %hub.name, reason = %why, "ending the parent's call");
            let eof = matches!(hub.state(), HubState::Ended(r) if &*r == END_OF_RECORDING);
            let said = hub
                .unreadable()
                .and_then(|c| bye_reason(&JoinError::Unreadable(c)));
            let _ = self
                .node
                .command(move |n, now| {
                    if eof {
                        n.notify_media_ended(call, now);
                    }
                    n.hangup_with(call, said.as_ref(), now)
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_cannot_be_read_ends_before_the_media_timeout() {
        let flags: PsCause = PsFault::MissingPesFlags { stream_id: 0xE0 }.into();
        assert!(!gives_up_on(&flags, Duration::from_millis(900)));
        assert!(gives_up_on(&flags, UNREADABLE_GRACE));
        // Decided after seconds of input already: at once.
        let none: PsCause = PsFault::NoElementaryStream { packs: 50 }.into();
        assert!(gives_up_on(&none, Duration::ZERO));
        assert!(gives_up_on(&PsCause::Below("x".into()), Duration::ZERO));
    }

    #[test]
    fn only_a_ps_fault_goes_up_in_the_bye() {
        let e = JoinError::Unreadable(PsFault::MissingPesFlags { stream_id: 0xE0 }.into());
        let r = bye_reason(&e).unwrap();
        assert_eq!(r.cause, Some(502));
        assert_eq!(r.text, Some(e.to_string()));
        assert_eq!(bye_reason(&JoinError::Ended("x".into())), None);
        assert_eq!(bye_reason(&JoinError::NoPicture(Duration::ZERO)), None);
    }
}
