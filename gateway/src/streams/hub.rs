//! A hub: the in-memory fan-out point of one live or playback stream.
//!
//! Frames arrive once (demuxed from the source below); each output format
//! that has been asked for is muxed once per frame and the same [`Bytes`]
//! go to every viewer of that format. A GOP cache per format lets a new
//! viewer start on the last keyframe at once. Viewers read from a bounded
//! broadcast ring: one that falls behind loses its place, skips to the next
//! keyframe and, if it keeps falling behind, is dropped. It never slows the
//! others and never makes the hub hold more than the ring.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use crate::media::flv::{FlvMuxer, HevcMode};
use crate::media::frame::{Codec, Frame};
use crate::media::ps::{PsFault, PsMuxer};
use crate::media::ts::{is_join_point, TsMuxer};

/// Muxed chunks kept in each format's ring; a viewer further behind skips.
/// At 25 fps this is about 5 s, and bounds a hub's memory per format.
const RING: usize = 128;
/// Largest raw GOP kept; a source that never sends a keyframe cannot grow it.
const MAX_GOP_BYTES: usize = 16 * 1024 * 1024;
/// A viewer that has to skip this many times within [`LAG_WINDOW`] is dropped.
const MAX_LAGS: u32 = 3;
const LAG_WINDOW: Duration = Duration::from_secs(30);

/// An output format of a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// HTTP-FLV (H.264, H.265 as Enhanced RTMP `hvc1`).
    Flv,
    /// HTTP-FLV with H.265 as the legacy CodecID 12.
    FlvLegacyHevc,
    /// MPEG-TS over HTTP.
    Ts,
    /// MPEG-PS packs, cut into RTP toward a parent.
    Ps,
}

impl Format {
    /// The HTTP Content-Type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Flv | Format::FlvLegacyHevc => "video/x-flv",
            Format::Ts => "video/mp2t",
            Format::Ps => "video/mp2p",
        }
    }
}

/// One muxed frame, shared by every viewer of a format.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The bytes to send.
    pub data: Bytes,
    /// A viewer may start (or resume after a skip) here.
    pub keyframe: bool,
    /// The frame's presentation time, 90 kHz.
    pub pts: u64,
    /// What a viewer resuming here after a skip needs first (FLV: the
    /// current sequence headers, which it may have missed).
    pub resume: Option<Bytes>,
}

/// Why a hub ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubState {
    /// Waiting for the first keyframe from below.
    Opening,
    /// Frames flow.
    Playing,
    /// Over, with the reason viewers are told.
    Ended(Arc<str>),
}

enum Muxer {
    Flv(FlvMuxer),
    Ts(TsMuxer),
    Ps(PsMuxer),
}

impl Muxer {
    fn new(format: Format, video: Option<Codec>, audio: Option<Codec>) -> Muxer {
        match format {
            Format::Flv => Muxer::Flv(FlvMuxer::new(video, audio, HevcMode::Enhanced)),
            Format::FlvLegacyHevc => Muxer::Flv(FlvMuxer::new(video, audio, HevcMode::Legacy)),
            Format::Ts => Muxer::Ts(TsMuxer::new(video, audio)),
            Format::Ps => Muxer::Ps(PsMuxer::new(video, audio)),
        }
    }

    /// The live chunk, and what the GOP cache keeps of it.
    fn mux(&mut self, f: &Frame, start_here: bool) -> Option<(Chunk, Bytes)> {
        match self {
            Muxer::Flv(m) => {
                let out = m.mux(f);
                if out.is_empty() {
                    return None;
                }
                let gop = out.frame_tags();
                let resume = if out.keyframe {
                    m.sequence_headers()
                } else {
                    None
                };
                Some((
                    Chunk {
                        data: out.tags,
                        keyframe: out.keyframe,
                        pts: f.pts,
                        resume,
                    },
                    gop,
                ))
            }
            Muxer::Ts(m) => {
                let data = m.mux(f);
                if data.is_empty() {
                    return None;
                }
                let keyframe = is_join_point(&data);
                Some((
                    Chunk {
                        data: data.clone(),
                        keyframe,
                        pts: f.pts,
                        resume: None,
                    },
                    data,
                ))
            }
            Muxer::Ps(m) => {
                let data = m.mux(f);
                Some((
                    Chunk {
                        data: data.clone(),
                        keyframe: start_here,
                        pts: f.pts,
                        resume: None,
                    },
                    data,
                ))
            }
        }
    }

    /// What a new viewer gets before the cached GOP.
    fn preamble(&self) -> Vec<Bytes> {
        match self {
            Muxer::Flv(m) => {
                let mut v = vec![m.header()];
                v.extend(m.sequence_headers());
                v
            }
            Muxer::Ts(_) | Muxer::Ps(_) => Vec::new(),
        }
    }
}

struct Output {
    muxer: Muxer,
    /// Muxed chunks from the last keyframe on.
    gop: Vec<Chunk>,
    tx: broadcast::Sender<Chunk>,
}

#[derive(Default)]
struct Inner {
    /// Raw frames from the last keyframe on: a format asked for later is
    /// muxed from here, so its first viewer also starts at once.
    gop: Vec<Frame>,
    gop_bytes: usize,
    video: Option<Codec>,
    audio: Option<Codec>,
    outputs: HashMap<Format, Output>,
}

/// Counters of one hub.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Frames received from below.
    pub frames_in: AtomicU64,
    /// Payload bytes received from below.
    pub bytes_in: AtomicU64,
    /// Times a viewer fell behind and skipped to a keyframe.
    pub viewer_skips: AtomicU64,
    /// Viewers refused because the stream was at its viewer limit.
    pub refused: AtomicU64,
}

/// How often a stream at its viewer limit says so in the log.
pub const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The fan-out point of one stream at this node.
pub struct Hub {
    /// What it carries.
    pub name: String,
    inner: Mutex<Inner>,
    state: watch::Sender<HubState>,
    /// Called when what the hub's deadlines depend on changes: the first
    /// viewer joins, the last one leaves, playback pauses or resumes, a
    /// fault in the source's PS is first noted, the hub ends. Cheap and
    /// non-blocking (the manager queues the hub for a look).
    on_change: Box<dyn Fn() + Send + Sync>,
    viewers: AtomicUsize,
    max_viewers: usize,
    /// Viewers refused at the limit since the last line saying so, and
    /// when that line was written (ms since `created`; `u64::MAX`: never):
    /// a crowd at the door writes one line per interval, not one each.
    refused: AtomicU64,
    refused_logged_ms: AtomicU64,
    created: Instant,
    /// Milliseconds since `created` of the last frame, and of the moment the
    /// viewer count last fell to zero (`u64::MAX`: it has viewers).
    last_media_ms: AtomicU64,
    idle_since_ms: AtomicU64,
    /// Callers on their way to join (see [`Hub::hold`]).
    holds: AtomicUsize,
    /// Some viewer has joined at least once.
    joined: std::sync::atomic::AtomicBool,
    /// A paused playback: silence from below is expected, not an end.
    paused: std::sync::atomic::AtomicBool,
    /// The intact probe that opened it has looked: unless someone joins,
    /// it ends now instead of after a linger.
    probed: std::sync::atomic::AtomicBool,
    /// The first reason the source's PS could not be demuxed (here or,
    /// as a BYE's Reason said, at a tier below), and when it was noted
    /// (milliseconds since `created`).
    fault: std::sync::OnceLock<(PsCause, u64)>,
    /// Counters.
    pub stats: HubStats,
    /// Writers of its HTTP viewers, one per format ([`super::fanout`]).
    pub(crate) writers: super::fanout::Writers,
}

/// Why a viewer could not join.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// The hub ended (or never started).
    #[error("the stream ended: {0}")]
    Ended(Arc<str>),
    /// The hub has as many viewers as it may.
    #[error("the stream has its maximum of {0} viewers")]
    Full(usize),
    /// No keyframe arrived in time.
    #[error("no picture from the source within {0:?}")]
    NoPicture(Duration),
    /// No frame at all came, and the source's PS could not be demuxed:
    /// the first fault found.
    #[error("{UNREADABLE}{0}")]
    Unreadable(PsCause),
}

/// How [`JoinError::Unreadable`] begins: the one wording viewers at every
/// tier see, which is also how a BYE's Reason text names a PS fault
/// ([`PsCause::from_reason_text`]).
pub const UNREADABLE: &str = "the source's PS could not be read: ";

/// Why the source's PS could not be demuxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsCause {
    /// This node's demuxer found it.
    Here(PsFault),
    /// A tier below found it and said so in its BYE: the cause as written
    /// there (a typed [`PsFault`] does not survive the wire).
    Below(Arc<str>),
}

impl PsCause {
    /// The cause a BYE's Reason `text` names, if it is a PS fault: the text
    /// is the viewer's message, [`UNREADABLE`] and the cause.
    pub fn from_reason_text(text: &str) -> Option<PsCause> {
        let cause = text.strip_prefix(UNREADABLE)?.trim();
        (!cause.is_empty()).then(|| PsCause::Below(cause.into()))
    }

    /// The fault found here, if it was found here.
    pub fn fault(&self) -> Option<PsFault> {
        match self {
            PsCause::Here(f) => Some(*f),
            PsCause::Below(_) => None,
        }
    }
}

impl From<PsFault> for PsCause {
    fn from(f: PsFault) -> Self {
        PsCause::Here(f)
    }
}

impl std::fmt::Display for PsCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PsCause::Here(fault) => fault.fmt(f),
            PsCause::Below(text) => f.write_str(text),
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave Inner half-updated in a
    // way that matters more than losing the stream; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A new hub, in [`HubState::Opening`].
    pub fn new(name: String, max_viewers: usize) -> Arc<Hub> {
        Hub::watched(name, max_viewers, Box::new(|| {}))
    }

    /// A new hub that calls `on_change` whenever what decides its end
    /// changes (see [`Self::facts`]).
    pub fn watched(
        name: String,
        max_viewers: usize,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Arc<Hub> {
        let (state, _) = watch::channel(HubState::Opening);
        Arc::new(Hub {
            name,
            inner: Mutex::new(Inner::default()),
            state,
            on_change,
            viewers: AtomicUsize::new(0),
            max_viewers,
            refused: AtomicU64::new(0),
            refused_logged_ms: AtomicU64::new(u64::MAX),
            created: Instant::now(),
            last_media_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            holds: AtomicUsize::new(0),
            paused: std::sync::atomic::AtomicBool::new(false),
            probed: std::sync::atomic::AtomicBool::new(false),
            joined: std::sync::atomic::AtomicBool::new(false),
            fault: std::sync::OnceLock::new(),
            stats: HubStats::default(),
            writers: Default::default(),
        })
    }

    /// Count a viewer refused at the limit; say so in the log at most
    /// every [`REFUSAL_LOG_INTERVAL`], with how many were refused since.
    fn refuse_viewer(&self) {
        metrics::counter!("gbgate_viewers_refused_total", "reason" => "stream_full").increment(1);
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::AcqRel);
        let now = self.ms(Instant::now());
        let last = self.refused_logged_ms.load(Ordering::Acquire);
        let interval = u64::try_from(REFUSAL_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == u64::MAX || now.saturating_sub(last) >= interval;
        if due
            && self
                .refused_logged_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let refused = self.refused.swap(0, Ordering::AcqRel);
            tracing::warn!(
                stream = %self.name,
                limit = self.max_viewers,
                refused,
                "viewers refused: the stream is at its viewer limit (max_viewers_per_stream)"
            );
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.created).as_millis()).unwrap_or(u64::MAX)
    }

    /// What decides when the hub ends, at `now`; `None` once it has ended.
    pub fn facts(&self, now: Instant) -> Option<super::lifecycle::HubFacts> {
        if matches!(*self.state.borrow(), HubState::Ended(_)) {
            return None;
        }
        let unreadable = self.unreadable_for(now);
        Some(super::lifecycle::HubFacts {
            age: now.saturating_duration_since(self.created),
            silent_for: self.silent_for(now),
            idle_for: self.idle_for(now),
            never_joined: !self.ever_joined(),
            probed: self.probed.load(Ordering::Acquire),
            viewers: self.viewers(),
            paused: self.paused(),
            fault: unreadable.as_ref().map(|(cause, _)| cause.clone()),
            unreadable,
        })
    }

    /// The hub's state now.
    pub fn state(&self) -> HubState {
        self.state.borrow().clone()
    }

    /// Watch the hub's state.
    pub fn subscribe_state(&self) -> watch::Receiver<HubState> {
        self.state.subscribe()
    }

    /// Viewers now (HTTP viewers and parents alike).
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Acquire)
    }

    /// Mark a playback paused (or resumed). Resuming restarts the silence
    /// clock, since the source needs a moment to send again.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            self.last_media_ms
                .store(self.ms(Instant::now()), Ordering::Release);
        }
        (self.on_change)();
    }

    /// True once any viewer has joined.
    pub fn ever_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// The intact probe has looked at this hub (see [`Self::keyframe`]).
    pub fn set_probed(&self) {
        if !self.probed.swap(true, Ordering::AcqRel) {
            (self.on_change)();
        }
    }

    /// The keyframe that starts the cached GOP, while there is one: what
    /// a viewer joining now would decode from.
    pub fn keyframe(&self) -> Option<Frame> {
        lock(&self.inner)
            .gop
            .first()
            .filter(|f| f.codec.is_video() && f.keyframe)
            .cloned()
    }

    /// Note why the source's PS could not be demuxed; only the first
    /// cause is kept. Returns true if this was the first.
    pub fn note_fault(&self, cause: impl Into<PsCause>) -> bool {
        let at = self.ms(Instant::now());
        let first = self.fault.set((cause.into(), at)).is_ok();
        if first {
            // The hub may now end sooner than its silence deadline.
            (self.on_change)();
        }
        first
    }

    /// The first cause noted, while no frame has come from below: why the
    /// stream has no picture. `None` once any frame came (the fault did
    /// not stop the stream) or without a fault.
    pub fn unreadable(&self) -> Option<PsCause> {
        self.unreadable_for(Instant::now()).map(|(c, _)| c)
    }

    /// [`Self::unreadable`], with how long ago (at `now`) it was noted.
    pub fn unreadable_for(&self, now: Instant) -> Option<(PsCause, Duration)> {
        if self.stats.frames_in.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let (cause, at) = self.fault.get()?;
        let since = Duration::from_millis(self.ms(now).saturating_sub(*at));
        Some((cause.clone(), since))
    }

    /// True while a playback is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// How long media has been silent, at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        Duration::from_millis(
            self.ms(now)
                .saturating_sub(self.last_media_ms.load(Ordering::Acquire)),
        )
    }

    /// How long the hub has had no viewers (`None` while it has some, and
    /// before its first viewer joined: the opener is on its way).
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.viewers() > 0
            || self.holds.load(Ordering::Acquire) > 0
            || !self.joined.load(Ordering::Acquire)
        {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.ms(now).saturating_sub(since)))
    }

    /// Wakes whenever the hub muxes a chunk of `format`, or ends (then
    /// `Closed`): what a writer serving many viewers of that format waits
    /// on before reading each with [`Viewer::try_next`]. `None` before any
    /// viewer asked for the format.
    pub fn chunk_signal(&self, format: Format) -> Option<broadcast::Receiver<Chunk>> {
        lock(&self.inner)
            .outputs
            .get(&format)
            .map(|o| o.tx.subscribe())
    }

    /// Keep the hub from ending as idle while a caller that found it is on
    /// its way to [`join`](Hub::join) (a parent's INVITE waits for its ACK
    /// first): without it a hub whose linger runs out meanwhile ends under
    /// the newcomer. When the last hold goes without a viewer, the linger
    /// starts again.
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.holds.fetch_add(1, Ordering::AcqRel);
        Hold { hub: self.clone() }
    }

    /// End the hub: every viewer's stream finishes with `reason`.
    pub fn end(&self, reason: &str) {
        let first = self.state.send_if_modified(|s| {
            if matches!(s, HubState::Ended(_)) {
                return false;
            }
            *s = HubState::Ended(reason.into());
            true
        });
        if first {
            tracing::info!(stream = %self.name, %reason, "stream ended");
            // Dropping the senders ends every viewer's receiver.
            let mut inner = lock(&self.inner);
            inner.outputs.clear();
            inner.gop.clear();
            inner.gop_bytes = 0;
            drop(inner);
            (self.on_change)();
        }
    }

    /// Feed one frame from below.
    pub fn push(&self, frame: Frame) {
        let now = Instant::now();
        self.last_media_ms.store(self.ms(now), Ordering::Release);
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        if matches!(*self.state.borrow(), HubState::Ended(_)) {
            return;
        }
        let mut inner = lock(&self.inner);
        let video = frame.codec.is_video();
        if video {
            inner.video.get_or_insert(frame.codec);
        } else {
            inner.audio.get_or_insert(frame.codec);
        }
        // A viewer may start at a video keyframe, or anywhere in an
        // audio-only stream.
        let start_here = if video {
            frame.keyframe
        } else {
            inner.video.is_none()
        };
        if start_here {
            inner.gop.clear();
            inner.gop_bytes = 0;
        } else if inner.gop.is_empty() {
            return; // nothing to decode from until the first keyframe
        }
        if inner.gop_bytes + frame.data.len() > MAX_GOP_BYTES {
            // A GOP this long is a broken source; wait for the next keyframe.
            inner.gop.clear();
            inner.gop_bytes = 0;
            return;
        }
        inner.gop_bytes += frame.data.len();
        for out in inner.outputs.values_mut() {
            if let Some((chunk, gop_bytes)) = out.muxer.mux(&frame, start_here) {
                if chunk.keyframe {
                    out.gop.clear();
                }
                if chunk.keyframe || !out.gop.is_empty() {
                    out.gop.push(Chunk {
                        data: gop_bytes,
                        ..chunk.clone()
                    });
                }
                let _ = out.tx.send(chunk);
            }
        }
        inner.gop.push(frame);
        drop(inner);
        if start_here {
            self.state.send_if_modified(|s| {
                if *s == HubState::Opening {
                    *s = HubState::Playing;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Join as a viewer of `format`: waits (at most `wait`) for the first
    /// keyframe, then returns the viewer, which yields the preamble, the
    /// cached GOP and then live chunks. If no frame came and the source's
    /// PS could not be demuxed, the error is [`JoinError::Unreadable`].
    pub async fn join(
        self: &Arc<Self>,
        format: Format,
        wait: Duration,
    ) -> Result<Viewer, JoinError> {
        self.wait_for_picture(wait).await?;
        self.join_now(format)
    }

    /// Waits (at most `wait`) for the first keyframe without joining. If
    /// none came and the source's PS could not be demuxed, the error is
    /// [`JoinError::Unreadable`].
    pub async fn wait_for_picture(&self, wait: Duration) -> Result<(), JoinError> {
        let mut state = self.state.subscribe();
        let ready = tokio::time::timeout(wait, async {
            loop {
                match &*state.borrow_and_update() {
                    HubState::Playing => return Ok(()),
                    HubState::Ended(r) => return Err(JoinError::Ended(r.clone())),
                    HubState::Opening => {}
                }
                if state.changed().await.is_err() {
                    return Err(JoinError::Ended("the stream closed".into()));
                }
            }
        })
        .await
        .map_err(|_| JoinError::NoPicture(wait))
        .and_then(|r| r);
        match ready {
            Ok(()) => Ok(()),
            // Why the stream ended without a picture, not only that it did.
            Err(e @ (JoinError::NoPicture(_) | JoinError::Ended(_))) => {
                Err(self.unreadable().map_or(e, JoinError::Unreadable))
            }
            Err(e) => Err(e),
        }
    }

    fn join_now(self: &Arc<Self>, format: Format) -> Result<Viewer, JoinError> {
        let prev = self.viewers.fetch_add(1, Ordering::AcqRel);
        self.joined.store(true, Ordering::Release);
        if prev == 0 {
            (self.on_change)();
        }
        let guard = ViewerGuard { hub: self.clone() };
        if prev >= self.max_viewers {
            self.refuse_viewer();
            return Err(JoinError::Full(self.max_viewers));
        }
        let mut inner = lock(&self.inner);
        if let HubState::Ended(r) = &*self.state.borrow() {
            return Err(JoinError::Ended(r.clone()));
        }
        let Inner {
            gop,
            video,
            audio,
            outputs,
            ..
        } = &mut *inner;
        let out = outputs.entry(format).or_insert_with(|| {
            // First viewer of this format: mux the cached raw GOP for it.
            let mut muxer = Muxer::new(format, *video, *audio);
            let mut cached = Vec::new();
            for (i, f) in gop.iter().enumerate() {
                if let Some((chunk, gop_bytes)) = muxer.mux(f, i == 0) {
                    if chunk.keyframe {
                        cached.clear();
                    }
                    cached.push(Chunk {
                        data: gop_bytes,
                        ..chunk
                    });
                }
            }
            Output {
                muxer,
                gop: cached,
                tx: broadcast::channel(RING).0,
            }
        });
        let mut start: Vec<(Bytes, Option<u64>, bool)> = out
            .muxer
            .preamble()
            .into_iter()
            .map(|b| (b, None, false))
            .collect();
        start.extend(
            out.gop
                .iter()
                .map(|c| (c.data.clone(), Some(c.pts), c.keyframe)),
        );
        let first_pts = out.gop.first().map(|c| c.pts);
        let rx = out.tx.subscribe();
        drop(inner);
        metrics::gauge!("gbgate_viewers").increment(1.0);
        Ok(Viewer {
            start: start.into(),
            first_pts,
            rx,
            skipping: false,
            lags: Vec::new(),
            hub: self.clone(),
            _guard: guard,
        })
    }
}

/// Keeps the hub's viewer count right however a viewer goes away.
struct ViewerGuard {
    hub: Arc<Hub>,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        let hub = &self.hub;
        if hub.viewers.fetch_sub(1, Ordering::AcqRel) == 1 {
            hub.idle_since_ms
                .store(hub.ms(Instant::now()), Ordering::Release);
            (hub.on_change)();
        }
    }
}

/// A caller on its way to join: see [`Hub::hold`].
pub struct Hold {
    hub: Arc<Hub>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let hub = &self.hub;
        if hub.holds.fetch_sub(1, Ordering::AcqRel) == 1 && hub.viewers() == 0 {
            hub.idle_since_ms
                .store(hub.ms(Instant::now()), Ordering::Release);
            (hub.on_change)();
        }
    }
}

/// What a viewer learns next.
#[derive(Debug)]
pub enum Next {
    /// Bytes to send.
    Data {
        /// The bytes, in the viewer's format.
        bytes: Bytes,
        /// The pts of the frame they end, if a frame.
        pts: Option<u64>,
        /// They start a keyframe (a GOP): where a sender may begin a new
        /// group after dropping what is stale.
        keyframe: bool,
    },
    /// The stream is over.
    End(Arc<str>),
}

/// One viewer of one format of a hub.
pub struct Viewer {
    start: std::collections::VecDeque<(Bytes, Option<u64>, bool)>,
    first_pts: Option<u64>,
    rx: broadcast::Receiver<Chunk>,
    skipping: bool,
    lags: Vec<Instant>,
    hub: Arc<Hub>,
    _guard: ViewerGuard,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        metrics::gauge!("gbgate_viewers").decrement(1.0);
    }
}

impl Viewer {
    /// The hub this viewer watches.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The pts of the first cached frame handed to this viewer.
    pub fn first_pts(&self) -> Option<u64> {
        self.first_pts
    }

    /// The next bytes for this viewer. A viewer that fell behind the ring
    /// skips to the next keyframe; one that keeps falling behind ends.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(n) = self.start.pop_front().map(Self::data) {
                return n;
            }
            let got = self.rx.recv().await;
            if let Some(n) = self.take(got) {
                return n;
            }
        }
    }

    /// [`next`](Viewer::next) without waiting: `None` when nothing is ready
    /// yet. For a writer that serves many viewers from one task.
    pub fn try_next(&mut self) -> Option<Next> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            if let Some(n) = self.start.pop_front().map(Self::data) {
                return Some(n);
            }
            let got = match self.rx.try_recv() {
                Ok(c) => Ok(c),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if let Some(n) = self.take(got) {
                return Some(n);
            }
        }
    }

    /// The viewer's connection fell behind (its writer holds too much for
    /// it): skip to the next keyframe, as when it falls behind the ring.
    /// `Some(reason)` when that happened too often and it must end.
    pub fn fell_behind(&mut self, missed: u64) -> Option<Arc<str>> {
        let now = Instant::now();
        self.lags.retain(|t| now.duration_since(*t) < LAG_WINDOW);
        self.lags.push(now);
        self.hub.stats.viewer_skips.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("gbgate_viewer_skips_total").increment(1);
        tracing::debug!(stream = %self.hub.name, missed, "slow viewer skips to the next keyframe");
        if self.lags.len() as u32 >= MAX_LAGS {
            return Some("viewer too slow: fell behind the stream repeatedly".into());
        }
        self.skipping = true;
        self.start.clear();
        None
    }

    fn data((bytes, pts, keyframe): (Bytes, Option<u64>, bool)) -> Next {
        Next::Data {
            bytes,
            pts,
            keyframe,
        }
    }

    /// What one receive from the ring means for this viewer; `None`: wait
    /// for the next.
    fn take(&mut self, got: Result<Chunk, broadcast::error::RecvError>) -> Option<Next> {
        match got {
            Ok(chunk) => {
                if self.skipping {
                    if !chunk.keyframe {
                        return None;
                    }
                    self.skipping = false;
                    if let Some(r) = chunk.resume {
                        self.start.push_back((chunk.data, Some(chunk.pts), false));
                        return Some(Next::Data {
                            bytes: r,
                            pts: None,
                            keyframe: true,
                        });
                    }
                }
                Some(Next::Data {
                    bytes: chunk.data,
                    pts: Some(chunk.pts),
                    keyframe: chunk.keyframe,
                })
            }
            Err(broadcast::error::RecvError::Lagged(n)) => self.fell_behind(n).map(Next::End),
            Err(broadcast::error::RecvError::Closed) => {
                let reason = match self.hub.state() {
                    HubState::Ended(r) => r,
                    _ => "the stream closed".into(),
                };
                Some(Next::End(reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pts: u64, keyframe: bool) -> Frame {
        let data = if keyframe {
            // SPS, PPS, IDR
            Bytes::from_static(&[
                0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xDA, 0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80, 0, 0,
                0, 1, 0x65, 0x88, 0x84, 0x00,
            ])
        } else {
            Bytes::from_static(&[0, 0, 0, 1, 0x41, 0x9A, 0x02, 0x03])
        };
        Frame {
            codec: Codec::H264,
            pts,
            dts: pts,
            keyframe,
            data,
        }
    }

    async fn take(v: &mut Viewer, n: usize) -> Vec<Next> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                tokio::time::timeout(Duration::from_secs(1), v.next())
                    .await
                    .unwrap(),
            );
        }
        out
    }

    #[tokio::test]
    async fn late_viewer_starts_at_the_last_keyframe() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, false)); // before any keyframe: dropped
        for i in 0..10u64 {
            hub.push(frame(i * 3600, i % 5 == 0));
        }
        assert_eq!(hub.state(), HubState::Playing);
        let mut v = hub.join(Format::Ps, Duration::from_secs(1)).await.unwrap();
        // GOP: frames 5..9 (5 chunks), first is the keyframe.
        assert_eq!(v.first_pts(), Some(5 * 3600));
        let got = take(&mut v, 5).await;
        assert!(got.iter().all(|n| matches!(n, Next::Data { .. })));
        hub.push(frame(10 * 3600, true));
        match v.next().await {
            Next::Data { pts: Some(pts), .. } => assert_eq!(pts, 36_000),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn each_format_is_muxed_once_and_shared() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, true));
        let mut a = hub.join(Format::Ts, Duration::from_secs(1)).await.unwrap();
        let mut b = hub.join(Format::Ts, Duration::from_secs(1)).await.unwrap();
        take(&mut a, 1).await;
        take(&mut b, 1).await;
        hub.push(frame(3600, false));
        let (Next::Data { bytes: x, .. }, Next::Data { bytes: y, .. }) =
            (a.next().await, b.next().await)
        else {
            panic!("no data");
        };
        assert_eq!(x.as_ptr(), y.as_ptr(), "the same buffer, not a copy");
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_to_a_keyframe_then_is_dropped() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, true));
        let mut slow = hub.join(Format::Ps, Duration::from_secs(1)).await.unwrap();
        let mut fast = hub.join(Format::Ps, Duration::from_secs(1)).await.unwrap();
        take(&mut slow, 1).await;
        take(&mut fast, 1).await;
        let mut pts = 0;
        for round in 0..MAX_LAGS {
            for i in 0..(RING as u64 + 10) {
                pts += 3600;
                hub.push(frame(pts, i == RING as u64 + 5));
                // The fast viewer keeps up.
                assert!(matches!(fast.next().await, Next::Data { .. }));
            }
            match slow.next().await {
                Next::Data { pts: Some(p), .. } if round + 1 < MAX_LAGS => {
                    // Resumed at the keyframe, not somewhere mid-GOP.
                    assert_eq!(p, pts - 4 * 3600);
                    // Drain the rest.
                    for _ in 0..4 {
                        slow.next().await;
                    }
                }
                Next::End(r) if round + 1 == MAX_LAGS => assert!(r.contains("too slow")),
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            hub.stats.viewer_skips.load(Ordering::Relaxed),
            u64::from(MAX_LAGS)
        );
    }

    #[tokio::test]
    async fn ending_the_hub_ends_viewers_with_the_reason_and_counts_leave() {
        let hub = Hub::new("t".into(), 1);
        hub.push(frame(0, true));
        let mut v = hub.join(Format::Flv, Duration::from_secs(1)).await.unwrap();
        assert_eq!(hub.viewers(), 1);
        for _ in 0..3 {
            assert!(matches!(
                hub.join(Format::Flv, Duration::from_secs(1)).await,
                Err(JoinError::Full(1))
            ));
        }
        assert_eq!(hub.viewers(), 1);
        // Counted each time; logged once for the interval (the count of
        // refusals since the line restarts then).
        assert_eq!(hub.stats.refused.load(Ordering::Relaxed), 3);
        assert_eq!(hub.refused.load(Ordering::Relaxed), 2);
        assert_ne!(hub.refused_logged_ms.load(Ordering::Relaxed), u64::MAX);
        hub.end("device stopped sending");
        // Preamble and GOP first, then the end.
        loop {
            match v.next().await {
                Next::Data { .. } => continue,
                Next::End(r) => {
                    assert_eq!(&*r, "device stopped sending");
                    break;
                }
            }
        }
        drop(v);
        assert_eq!(hub.viewers(), 0);
        assert!(hub.idle_for(Instant::now()).is_some());
    }

    #[tokio::test]
    async fn a_hold_keeps_an_idle_hub_from_ending_until_it_goes() {
        let hub = Hub::new("t".into(), 10);
        hub.push(frame(0, true));
        drop(hub.join(Format::Flv, Duration::from_secs(1)).await.unwrap());
        assert!(hub.idle_for(Instant::now()).is_some());
        let hold = hub.hold();
        assert_eq!(hub.idle_for(Instant::now()), None, "a caller is on its way");
        let v = hub.join(Format::Flv, Duration::from_secs(1)).await.unwrap();
        drop(hold);
        assert_eq!(hub.idle_for(Instant::now()), None, "it joined");
        drop(v);
        let hold = hub.hold();
        assert_eq!(hub.idle_for(Instant::now()), None);
        drop(hold);
        assert!(hub.idle_for(Instant::now()).is_some(), "idle again");
    }

    #[tokio::test]
    async fn join_waits_for_the_first_keyframe_or_times_out() {
        let hub = Hub::new("t".into(), 10);
        let h = hub.clone();
        let waiter = tokio::spawn(async move { h.join(Format::Ps, Duration::from_secs(2)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.push(frame(0, true));
        assert!(waiter.await.unwrap().is_ok());
        let quiet = Hub::new("q".into(), 10);
        assert!(matches!(
            quiet.join(Format::Ps, Duration::from_millis(30)).await,
            Err(JoinError::NoPicture(_))
        ));
    }

    #[tokio::test]
    async fn a_stream_without_frames_says_why_its_ps_could_not_be_read() {
        let flags = PsFault::MissingPesFlags { stream_id: 0xE0 };
        let hub = Hub::new("t".into(), 10);
        assert!(hub.note_fault(flags));
        assert!(!hub.note_fault(PsFault::NoElementaryStream { packs: 50 }));
        let e = hub
            .join(Format::Flv, Duration::from_millis(30))
            .await
            .err()
            .unwrap();
        assert_eq!(e, JoinError::Unreadable(flags.into()));
        assert!(
            e.to_string()
                .starts_with("the source's PS could not be read: missing PES flags"),
            "{e}"
        );
        // Ended without a picture: the cause too.
        hub.end("no media from the source for 3s");
        assert_eq!(
            hub.join(Format::Flv, Duration::from_secs(1)).await.err(),
            Some(JoinError::Unreadable(flags.into()))
        );
        // Once frames decode, a fault seen on the way changes nothing.
        let ok = Hub::new("ok".into(), 10);
        ok.note_fault(flags);
        ok.push(frame(0, false));
        assert_eq!(ok.unreadable(), None);
        assert!(matches!(
            ok.join(Format::Flv, Duration::from_millis(30)).await,
            Err(JoinError::NoPicture(_))
        ));
        ok.push(frame(3600, true));
        assert!(ok
            .join(Format::Flv, Duration::from_millis(30))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_cause_said_below_reads_the_same_at_every_tier() {
        let flags = PsFault::MissingPesFlags { stream_id: 0xE0 };
        let here = JoinError::Unreadable(flags.into()).to_string();
        // What a BYE's Reason text carries up is this node's own wording.
        let below = PsCause::from_reason_text(&here).unwrap();
        assert_eq!(below, PsCause::Below(flags.to_string().into()));
        assert_eq!(below.fault(), None);
        assert_eq!(JoinError::Unreadable(below.clone()).to_string(), here);
        let hub = Hub::new("t".into(), 10);
        assert!(hub.note_fault(below.clone()));
        hub.end(&here);
        assert_eq!(
            hub.join(Format::Flv, Duration::from_secs(1)).await.err(),
            Some(JoinError::Unreadable(below))
        );
        // Other texts are no PS fault.
        assert_eq!(PsCause::from_reason_text("Call completed"), None);
        assert_eq!(PsCause::from_reason_text(UNREADABLE), None);
    }

    #[test]
    fn how_long_a_cause_has_stood_is_known() {
        let hub = Hub::new("t".into(), 10);
        let now = Instant::now();
        assert_eq!(hub.unreadable_for(now), None);
        hub.note_fault(PsFault::NotProgramStream { bytes: 1 });
        let (_, since) = hub.unreadable_for(now + Duration::from_secs(2)).unwrap();
        assert!(since >= Duration::from_millis(1900), "{since:?}");
        hub.push(frame(0, true));
        assert_eq!(hub.unreadable_for(now), None);
    }
}
