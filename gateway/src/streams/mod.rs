//! The stream manager: opens streams on demand, one upstream call per
//! channel however many viewers and parents watch it, and closes them when
//! nobody does.
//!
//! What to do is decided by [`table::StreamTable`], sans-IO and tested in
//! virtual time: single-flight opening, viewers and parents leaving
//! mid-open, openings that time out, and when each hub ends
//! ([`lifecycle::decide`]: silence, linger, an unreadable source) from one
//! deadline heap. This module is its I/O: one driver loop
//! ([`StreamManager::run_events`]) feeds it the node's call events, the
//! hubs whose facts changed, and its own deadlines, and carries out its
//! commands (place or hang up a call, hand a hub to a waiter, end a hub).
//! Media endpoints come from [`media_links::MediaLinks`]; the media itself
//! flows through [`hub::Hub`]s, never through the table.
//!
//! Calls from the parent are one more waiter (and then viewer) of a hub,
//! in PS, sent as RTP to where the parent's SDP says.

pub mod fanout;
pub mod hub;
pub mod lifecycle;
pub mod media_links;
pub mod rtp_io;
pub mod table;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use policy::Subject;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use topology::GbId;

use crate::media::picture::{check_keyframe, Picture, Undecodable};
use crate::media::ps::PsFault;
use crate::media::sdp::{Direction, GbSdp, MediaKind, SessionKind};
use crate::node::{CallError, CallEvent, CallFailure, CallId, CallKind};
use crate::runtime::NodeHandle;
use crate::sip::header::Reason;
use hub::{Format, Hub, HubState, JoinError, PsCause, Viewer};
use rtp_io::{LinkMode, SendTarget};
use table::{Command, StreamTable, Waiter, Want};

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

/// Why the intact probe found no decodable video, or could not look.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// A picture came, but its keyframe cannot start a decoder.
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    /// The source refused the stream, or no picture came.
    #[error(transparent)]
    NoVideo(OpenError),
    /// This node or the device could not try now (at a limit, busy,
    /// stopping): it says nothing of the camera's video.
    #[error("not looked at: {0}")]
    NotTried(OpenError),
}

impl From<OpenError> for ProbeError {
    fn from(e: OpenError) -> Self {
        let busy = |status: u16| matches!(status, 486 | 503 | 600);
        match &e {
            OpenError::Refused(_)
            | OpenError::TooManyStreams(_)
            | OpenError::NoSocket(_)
            | OpenError::Stopped(_) => ProbeError::NotTried(e),
            OpenError::Failed(CallFailure::Refused { status, .. }) if busy(*status) => {
                ProbeError::NotTried(e)
            }
            _ => ProbeError::NoVideo(e),
        }
    }
}

/// The reason a playback hub ends with when its source reports the end.
const END_OF_RECORDING: &str = "end of the recording";

/// How long a stream whose source's PS could not be read waits for a first
/// frame after the fault before it ends. Far below any sane media timeout:
/// every tier above runs its own silence deadline, started no later than
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// Live video of a channel: shared by everyone.
    Live(GbId),
    /// One playback session: never shared.
    Playback(GbId, u64),
}

impl StreamKey {
    /// The channel it carries.
    pub fn channel(&self) -> GbId {
        match self {
            StreamKey::Live(c) | StreamKey::Playback(c, _) => *c,
        }
    }
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
    /// Viewers refused because the stream was at its viewer limit.
    #[serde(default)]
    pub viewers_refused: u64,
}

/// A hub as the table holds it: the hub, and the token that stops the
/// task feeding it from below.
#[derive(Clone)]
struct OpenHub {
    hub: Arc<Hub>,
    stop: CancellationToken,
}

impl table::HubView for OpenHub {
    fn facts(&self, now: Instant) -> Option<lifecycle::HubFacts> {
        self.hub.facts(now)
    }
}

type Answer = oneshot::Sender<Result<OpenHub, OpenError>>;

/// The media plane of one node: the I/O around a [`StreamTable`].
pub struct StreamManager {
    node: NodeHandle,
    settings: StreamSettings,
    table: Mutex<StreamTable<OpenHub>>,
    /// Wakes the driver loop when the table's next deadline may be sooner.
    rearm: tokio::sync::Notify,
    /// Hubs whose facts changed, for the driver loop to look at.
    changed: mpsc::UnboundedSender<StreamKey>,
    changed_rx: Mutex<Option<mpsc::UnboundedReceiver<StreamKey>>>,
    /// Who waits for a stream, and where its hub (or refusal) goes.
    waiters: Mutex<HashMap<Waiter, Answer>>,
    /// Calls below waiting for their answer, and where it goes.
    answers: Mutex<HashMap<CallId, oneshot::Sender<GbSdp>>>,
    /// Calls from the parent being served, and what stops their task.
    serving: Mutex<HashMap<CallId, CancellationToken>>,
    /// When each playback session was last controlled (rate limit).
    last_control: Mutex<HashMap<u64, Instant>>,
    next_viewer: AtomicU64,
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

/// Takes a waiter off the table if it goes away before its answer (a
/// viewer's request dropped mid-open).
struct LeaveOnDrop<'a> {
    streams: &'a Arc<StreamManager>,
    waiter: Waiter,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        if locked(&self.streams.waiters).remove(&self.waiter).is_some() {
            let w = self.waiter;
            self.streams.apply(|t, _| t.leave(w));
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
        let timers = lifecycle::HubTimers {
            media_timeout: settings.media_timeout,
            linger: settings.linger,
            open_timeout: settings.open_timeout,
        };
        let (changed, changed_rx) = mpsc::unbounded_channel();
        Arc::new(StreamManager {
            node,
            table: Mutex::new(StreamTable::new(timers, settings.max_streams)),
            settings,
            rearm: tokio::sync::Notify::new(),
            changed,
            changed_rx: Mutex::new(Some(changed_rx)),
            waiters: Mutex::default(),
            answers: Mutex::default(),
            serving: Mutex::default(),
            last_control: Mutex::default(),
            next_viewer: AtomicU64::new(1),
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

    /// Streams opening or open now.
    pub fn open_streams(&self) -> usize {
        locked(&self.table).len()
    }

    /// The streams open now, for the API.
    pub fn list(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = locked(&self.table)
            .open_hubs()
            .map(|(_, call, open)| {
                let h = &open.hub;
                StreamInfo {
                    stream: h.name.clone(),
                    call,
                    viewers: h.viewers(),
                    state: match h.state() {
                        HubState::Opening => "opening".into(),
                        HubState::Playing => "playing".into(),
                        HubState::Ended(r) => format!("ended: {r}"),
                    },
                    frames_in: h.stats.frames_in.load(Ordering::Relaxed),
                    bytes_in: h.stats.bytes_in.load(Ordering::Relaxed),
                    viewer_skips: h.stats.viewer_skips.load(Ordering::Relaxed),
                    viewers_refused: h.stats.refused.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        out
    }

    /// Drive the table until the node stops: the node's call events, the
    /// hubs whose facts changed, and the table's deadlines.
    pub async fn run_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<CallEvent>) {
        let Some(mut changed) = locked(&self.changed_rx).take() else {
            tracing::error!("the stream manager's events are already being run");
            return;
        };
        loop {
            let next = locked(&self.table).next_wake();
            let deadline = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                Some(key) = changed.recv() => self.apply(|t, now| t.touch(&key, now)),
                _ = deadline => self.apply(|t, now| t.poll(now)),
                _ = self.rearm.notified() => {}
            }
        }
    }

    /// Feed the table one input and carry out what it says.
    fn apply<R>(
        self: &Arc<Self>,
        input: impl FnOnce(&mut StreamTable<OpenHub>, Instant) -> R,
    ) -> R {
        let (r, commands) = {
            let mut t = locked(&self.table);
            let r = input(&mut t, Instant::now());
            (r, t.drain())
        };
        self.execute(commands);
        self.rearm.notify_one();
        r
    }

    fn execute(self: &Arc<Self>, commands: Vec<Command<OpenHub>>) {
        for c in commands {
            match c {
                Command::Open {
                    open,
                    key,
                    kind,
                    on_behalf_of,
                } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.open_below(open, key, kind, on_behalf_of).await {
                            me.apply(|t, _| t.open_failed(open, e));
                        }
                    });
                }
                Command::Ready { waiter, hub } => {
                    if let Some(tx) = locked(&self.waiters).remove(&waiter) {
                        let _ = tx.send(Ok(hub));
                    }
                }
                Command::Refuse { waiter, error } => {
                    if let Some(tx) = locked(&self.waiters).remove(&waiter) {
                        let _ = tx.send(Err(error));
                    }
                }
                Command::Hangup(call) => {
                    locked(&self.answers).remove(&call);
                    self.hangup(call);
                }
                Command::Close { key, hub, why } => {
                    if let Some(why) = why {
                        hub.hub.end(&why);
                    }
                    hub.stop.cancel();
                    if let StreamKey::Playback(_, session) = key {
                        locked(&self.last_control).remove(&session);
                    }
                    metrics::gauge!("gbgate_streams_open").decrement(1.0);
                }
                Command::Discard(hub) => {
                    hub.hub.end("the stream was given up while opening");
                    hub.stop.cancel();
                    metrics::gauge!("gbgate_streams_open").decrement(1.0);
                }
            }
        }
    }

    fn on_event(self: &Arc<Self>, ev: CallEvent) {
        match ev {
            CallEvent::Answered { call, answer } => {
                let delivered = locked(&self.answers)
                    .remove(&call)
                    .is_some_and(|tx| tx.send(answer).is_ok());
                if !delivered {
                    // Given up meanwhile (timed out, its viewer left).
                    self.hangup(call);
                }
            }
            CallEvent::Failed { call, reason } => {
                locked(&self.answers).remove(&call);
                self.apply(|t, _| t.call_failed(call, reason));
                self.stop_serving(call);
            }
            CallEvent::Ended { call, reason, said } => {
                locked(&self.answers).remove(&call);
                // A tier below could not read the source's PS: noted
                // before the end, so this hub's viewers and parents are
                // told the cause, not that the stream ended.
                let cause = said
                    .as_ref()
                    .and_then(|r| r.text.as_deref())
                    .and_then(PsCause::from_reason_text);
                if let Some(cause) = cause {
                    if let Some(open) = locked(&self.table).hub_of_call(call) {
                        open.hub.note_fault(cause);
                    }
                }
                self.apply(|t, _| t.call_ended(call, &reason));
                self.stop_serving(call);
            }
            CallEvent::MediaEnded { call } => {
                // The hub's end brings the table to hang up and close.
                let hub = locked(&self.table).hub_of_call(call).map(|o| o.hub.clone());
                if let Some(hub) = hub {
                    hub.end(END_OF_RECORDING);
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
                locked(&self.serving).insert(call, stop.clone());
                self.apply(|t, _| t.invited(call));
                let me = self.clone();
                tokio::spawn(async move {
                    me.clone()
                        .serve_parent(call, channel, kind, offer, on_behalf_of, stop)
                        .await;
                    locked(&me.serving).remove(&call);
                    // Refused or served to its end: nothing more for it.
                    me.apply(|t, _| t.forget_parent(call));
                });
            }
            CallEvent::Info { call, body } => {
                let below = locked(&self.table).parent_below(call);
                if let Some(below) = below {
                    self.forward_control(below, body);
                }
            }
        }
    }

    /// A parent's call ended: its task stops, and if it still waited for
    /// its stream, its wait ends too.
    fn stop_serving(&self, call: CallId) {
        if let Some(stop) = locked(&self.serving).remove(&call) {
            stop.cancel();
        }
        locked(&self.waiters).remove(&Waiter::Parent(call));
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

    /// Wait for the stream `want` names (given the table, so a new
    /// playback session's number is chosen under its lock), as `waiter`.
    /// Returns the hub and what was asked for.
    async fn wait_for(
        self: &Arc<Self>,
        waiter: Waiter,
        want: impl FnOnce(&StreamTable<OpenHub>) -> Want,
        on_behalf_of: Option<Subject>,
    ) -> Result<(OpenHub, Want), OpenError> {
        let (tx, rx) = oneshot::channel();
        locked(&self.waiters).insert(waiter, tx);
        let _leave = LeaveOnDrop {
            streams: self,
            waiter,
        };
        let wanted = self.apply(|t, now| {
            let want = want(t);
            t.join(waiter, want.clone(), on_behalf_of, now);
            want
        });
        let hub = rx
            .await
            .map_err(|_| OpenError::Stopped("the request was withdrawn".into()))??;
        Ok((hub, wanted))
    }

    fn new_viewer(&self) -> Waiter {
        Waiter::Viewer(self.next_viewer.fetch_add(1, Ordering::Relaxed))
    }

    /// Join the live stream of `channel` as a viewer of `format`.
    /// `on_behalf_of` names the department the INVITE below is for if this
    /// viewer opens it (later viewers share the stream).
    pub async fn watch_live(
        self: &Arc<Self>,
        channel: GbId,
        format: Format,
        on_behalf_of: Option<Subject>,
    ) -> Result<Viewer, OpenError> {
        let mut last = None;
        for _ in 0..2 {
            let (open, _) = self
                .wait_for(
                    self.new_viewer(),
                    |_| Want::Live(channel),
                    on_behalf_of.clone(),
                )
                .await?;
            let hub = &open.hub;
            match hub.join(format, self.settings.open_timeout).await {
                Ok(v) => return Ok(v),
                // A working stream whose linger ran out just as we came:
                // the next join finds it ended and opens it again. One
                // that never delivered media failed.
                Err(JoinError::Ended(r)) if hub.stats.frames_in.load(Ordering::Relaxed) > 0 => {
                    last = Some(JoinError::Ended(r));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or(JoinError::Ended("the stream ended".into()))
            .into())
    }

    /// Look at the live video of `channel` for the intact probe: whether
    /// its keyframe can start a decoder. A stream open already is looked
    /// at as it is; otherwise one is opened (shared with any viewer who
    /// comes meanwhile) and, once looked at, ends at once unless someone
    /// joined it.
    pub async fn probe_live(self: &Arc<Self>, channel: GbId) -> Result<Picture, ProbeError> {
        let key = StreamKey::Live(channel);
        let open = locked(&self.table).open_hub(&key).map(|o| o.hub.clone());
        if let Some(hub) = open {
            if let Some(k) = hub.keyframe() {
                return Ok(check_keyframe(&k)?);
            }
        }
        let (open, _) = self
            .wait_for(self.new_viewer(), |_| Want::Live(channel), None)
            .await?;
        let hub = open.hub;
        let seen = hub.wait_for_picture(self.settings.open_timeout).await;
        let verdict = match seen {
            Ok(()) => match hub.keyframe() {
                Some(k) => check_keyframe(&k).map_err(ProbeError::from),
                // Its GOP was dropped as too long: no viewer could start.
                None => Err(Undecodable::NotKeyframe.into()),
            },
            Err(e) => Err(OpenError::from(e).into()),
        };
        hub.set_probed();
        verdict
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
        wanted: Option<u64>,
    ) -> Result<(u64, Viewer), OpenError> {
        let (open, session) = self
            .open_playback(self.new_viewer(), channel, start, end, on_behalf_of, wanted)
            .await?;
        let viewer = open.hub.join(format, self.settings.open_timeout).await?;
        Ok((session, viewer))
    }

    /// Open a new playback session for `waiter` (a hub never shared).
    async fn open_playback(
        self: &Arc<Self>,
        waiter: Waiter,
        channel: GbId,
        start: u64,
        end: u64,
        on_behalf_of: Option<Subject>,
        wanted: Option<u64>,
    ) -> Result<(OpenHub, u64), OpenError> {
        let choose = |t: &StreamTable<OpenHub>| {
            // Random, so one viewer cannot guess another's session to
            // control it; a number the viewer picked (at random, for a
            // player that cannot read our header) if it is free.
            let picked = wanted.filter(|s| (1..1u64 << 53).contains(s) && t.session_free(*s));
            let session = picked.unwrap_or_else(|| loop {
                let s: u64 = rand::random::<u64>() >> 11; // exact as a JSON number
                if s != 0 && t.session_free(s) {
                    break s;
                }
            });
            Want::Playback {
                channel,
                session,
                start,
                end,
            }
        };
        let (open, want) = self.wait_for(waiter, choose, on_behalf_of).await?;
        let Want::Playback { session, .. } = want else {
            unreachable!("a playback session was asked for");
        };
        Ok((open, session))
    }

    /// The channel a playback session replays, if the session is open.
    pub fn playback_channel(&self, session: u64) -> Option<GbId> {
        locked(&self.table).session_channel(session)
    }

    /// Send MANSRTSP (PLAY/PAUSE/Scale/Range) to the source of a playback
    /// session. At most one command per [`MIN_CONTROL_INTERVAL`] per
    /// session: each is an INFO transaction, and a client hammering it must
    /// not use up the node's transaction budget.
    pub fn control_playback(&self, session: u64, body: Bytes) -> ControlOutcome {
        let Some(call) = locked(&self.table).session_call(session) else {
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
        let hub = locked(&self.table).hub_of_call(call).map(|o| o.hub.clone());
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

    /// Carry out [`Command::Open`]: a receiver, the call below, and once it
    /// is answered the hub and the task feeding it. An error is the
    /// opening's failure; an opening the table gave up meanwhile ends
    /// quietly (the table hung its call up).
    async fn open_below(
        self: &Arc<Self>,
        open: table::OpenId,
        key: StreamKey,
        kind: CallKind,
        on_behalf_of: Option<Subject>,
    ) -> Result<(), OpenError> {
        let channel = key.channel();
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
        let (call, commands) = self
            .node
            .command(move |n, now| {
                let call = n.place_call(channel, kind, &offer, on_behalf_of.as_ref(), now)?;
                // Both inside the node's loop, so the answer (or failure)
                // cannot overtake them.
                locked(&me.answers).insert(call, tx);
                let mut t = locked(&me.table);
                t.placed(open, call);
                Ok::<_, CallError>((call, t.drain()))
            })
            .await
            .map_err(|e| OpenError::Stopped(e.to_string()))??;
        self.execute(commands);
        // No answer: the call failed, or the table gave the opening up
        // (its deadline, or its only viewer left) and hung it up.
        let Ok(answer) = rx.await else {
            return Ok(());
        };
        let Ok(peer_ip) = answer.conn_addr.parse::<IpAddr>() else {
            return Err(OpenError::BadAddress(answer.conn_addr));
        };
        let changed = self.changed.clone();
        let hub = Hub::watched(
            key.to_string(),
            self.settings.max_viewers,
            Box::new(move || {
                let _ = changed.send(key);
            }),
        );
        metrics::gauge!("gbgate_streams_open").increment(1.0);
        let stop = CancellationToken::new();
        let peer = SocketAddr::new(peer_ip, answer.media_port);
        let expected = answer.ssrc.or(Some(ssrc));
        {
            let hub = hub.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let why = rtp_io::receive(hub.clone(), socket, peer, expected, stop).await;
                hub.end(&why);
            });
        }
        tracing::info!(stream = %hub.name, call, "stream open");
        self.apply(|t, now| t.opened(open, call, OpenHub { hub, stop }, now));
        Ok(())
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
        let waiter = Waiter::Parent(call);
        let opened = match &kind {
            CallKind::Live => self
                .wait_for(waiter, |_| Want::Live(channel), on_behalf_of)
                .await
                .map(|(open, _)| open),
            CallKind::Playback { start, end } => self
                .open_playback(waiter, channel, *start, *end, on_behalf_of, None)
                .await
                .map(|(open, _)| open),
        };
        if stop.is_cancelled() {
            return; // CANCELled or hung up while opening
        }
        let hub = match opened {
            Ok(open) => open.hub,
            Err(e) => {
                let status = match e.status() {
                    404 => 404,
                    503 => 486,
                    _ => 480,
                };
                return refuse(status, e.to_string()).await;
            }
        };
        // The answer and its ACK take a round trip before the join.
        let hold = hub.hold();
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
        let joined = hub.join(Format::Ps, self.settings.open_timeout).await;
        drop(hold);
        let viewer = match joined {
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
