//! The stream manager's state, sans-IO: which streams are opening or open
//! at this node, who waits for each, which call below feeds it, which calls
//! from the parent it serves, and when each must be looked at next.
//!
//! Every input is a method taking `now`; what to do comes out as
//! [`Command`]s ([`StreamTable::drain`]) and the next instant to call
//! [`StreamTable::poll`] as [`StreamTable::next_wake`]. The manager
//! (`streams/mod.rs`) runs sockets, the node and the hubs' media; this
//! type decides, and its tests run in virtual time.
//!
//! * **Single flight.** One slot per [`StreamKey`]: the first waiter of a
//!   live channel makes it [`Command::Open`]; everyone who comes while it
//!   opens waits on that one opening, and everyone after joins the open
//!   hub.
//! * **Leaving mid-open.** A viewer or parent that goes away while the
//!   stream opens is only taken off the list: a live opening goes on (the
//!   next viewer will want it, and the hub then lingers like any other); a
//!   playback session belongs to its one viewer, so the call below is hung
//!   up at once.
//! * **Deadlines in one heap.** Openings time out, and open hubs end by
//!   [`lifecycle::decide`] (silence, linger, unreadable source, opener
//!   never came). Each slot has one live deadline; a superseded heap entry
//!   is skipped when it comes up, and the heap is rebuilt when stale
//!   entries outnumber live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use policy::Subject;
use topology::GbId;

use super::lifecycle::{self, HubFacts, HubTimers, Verdict};
use super::{OpenError, StreamKey};
use crate::node::{CallFailure, CallId, CallKind};

/// Who waits for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Waiter {
    /// An HTTP viewer (a number the manager chose).
    Viewer(u64),
    /// A call from the parent.
    Parent(CallId),
}

/// What a waiter asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The live video of a channel (shared).
    Live(GbId),
    /// A new playback session (never shared).
    Playback {
        /// The channel.
        channel: GbId,
        /// The session number, unused so far ([`StreamTable::session_free`]).
        session: u64,
        /// Start of the range, Unix seconds.
        start: u64,
        /// End of the range, Unix seconds.
        end: u64,
    },
}

/// Identifies one opening: reports about an opening that has since been
/// given up carry a stale one.
pub type OpenId = u64;

/// A hub as the table sees it.
pub trait HubView: Clone {
    /// The hub's facts at `now`, or `None` once it has ended.
    fn facts(&self, now: Instant) -> Option<HubFacts>;
}

/// What the manager must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<H> {
    /// Open `key` below: make a receiver and place a call of `kind`, then
    /// report [`StreamTable::placed`] and [`StreamTable::opened`] (or
    /// [`StreamTable::open_failed`]).
    Open {
        /// Which opening.
        open: OpenId,
        /// The stream.
        key: StreamKey,
        /// Live or playback.
        kind: CallKind,
        /// The department the call is for (the first waiter's).
        on_behalf_of: Option<Subject>,
    },
    /// The waiter's stream is open: here is its hub.
    Ready {
        /// Who.
        waiter: Waiter,
        /// The hub to join.
        hub: H,
    },
    /// The waiter's stream could not be opened.
    Refuse {
        /// Who.
        waiter: Waiter,
        /// Why.
        error: OpenError,
    },
    /// Hang up this call below.
    Hangup(CallId),
    /// The hub is gone from the table: end it with `why` (if it has not
    /// ended already) and release what feeds it.
    Close {
        /// The stream it carried.
        key: StreamKey,
        /// The hub.
        hub: H,
        /// Why it ends (`None`: it ended by itself).
        why: Option<String>,
    },
    /// A hub made for an opening that was given up meanwhile (its call
    /// was hung up then): end it.
    Discard(H),
}

enum Phase<H> {
    Opening {
        waiters: Vec<Waiter>,
        call: Option<CallId>,
    },
    Open {
        hub: H,
        call: CallId,
    },
}

struct Slot<H> {
    open: OpenId,
    phase: Phase<H>,
    /// The slot's one live deadline (heap entries for other instants are
    /// stale).
    wake: Option<Instant>,
}

/// A call from the parent: what it waits for, and the call below that
/// feeds it (where its INFO goes).
#[derive(Debug, Clone, Copy, Default)]
struct ParentCall {
    below: Option<CallId>,
}

/// The stream manager's state (see the module documentation).
pub struct StreamTable<H> {
    timers: HubTimers,
    max_streams: usize,
    slots: HashMap<StreamKey, Slot<H>>,
    by_open: HashMap<OpenId, StreamKey>,
    calls: HashMap<CallId, StreamKey>,
    waiting: HashMap<Waiter, StreamKey>,
    parents: HashMap<CallId, ParentCall>,
    sessions: HashMap<u64, StreamKey>,
    heap: BinaryHeap<Reverse<(Instant, OpenId)>>,
    next_open: OpenId,
    out: Vec<Command<H>>,
}

impl<H: HubView> StreamTable<H> {
    /// An empty table: live hubs live by `timers` (playback sessions close
    /// as soon as their viewer leaves), at most `max_streams` opening or
    /// open at once.
    pub fn new(timers: HubTimers, max_streams: usize) -> Self {
        StreamTable {
            timers,
            max_streams,
            slots: HashMap::new(),
            by_open: HashMap::new(),
            calls: HashMap::new(),
            waiting: HashMap::new(),
            parents: HashMap::new(),
            sessions: HashMap::new(),
            heap: BinaryHeap::new(),
            next_open: 1,
            out: Vec::new(),
        }
    }

    /// What to do, in order, since the last drain.
    pub fn drain(&mut self) -> Vec<Command<H>> {
        std::mem::take(&mut self.out)
    }

    /// Streams opening or open.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No stream is opening or open.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The soonest instant [`Self::poll`] has something to do (perhaps a
    /// stale one, which costs one empty poll).
    pub fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// True when no open session has this number.
    pub fn session_free(&self, session: u64) -> bool {
        !self.sessions.contains_key(&session)
    }

    /// The channel an open playback session replays.
    pub fn session_channel(&self, session: u64) -> Option<GbId> {
        self.sessions.get(&session).map(StreamKey::channel)
    }

    /// The call below that feeds a playback session, once placed.
    pub fn session_call(&self, session: u64) -> Option<CallId> {
        self.sessions.get(&session).and_then(|k| self.call_of(k))
    }

    /// The call below feeding a parent's call, once its stream is open.
    pub fn parent_below(&self, parent: CallId) -> Option<CallId> {
        self.parents.get(&parent).and_then(|p| p.below)
    }

    /// The hub a call below feeds, if open.
    pub fn hub_of_call(&self, call: CallId) -> Option<&H> {
        match &self.slots.get(self.calls.get(&call)?)?.phase {
            Phase::Open { hub, .. } => Some(hub),
            Phase::Opening { .. } => None,
        }
    }

    /// The open hubs, with their keys and calls below.
    pub fn open_hubs(&self) -> impl Iterator<Item = (&StreamKey, CallId, &H)> {
        self.slots.iter().filter_map(|(k, s)| match &s.phase {
            Phase::Open { hub, call } => Some((k, *call, hub)),
            Phase::Opening { .. } => None,
        })
    }

    /// The hub of `key`, if open.
    pub fn open_hub(&self, key: &StreamKey) -> Option<&H> {
        match &self.slots.get(key)?.phase {
            Phase::Open { hub, .. } => Some(hub),
            Phase::Opening { .. } => None,
        }
    }

    fn call_of(&self, key: &StreamKey) -> Option<CallId> {
        match self.slots.get(key)?.phase {
            Phase::Open { call, .. } => Some(call),
            Phase::Opening { call, .. } => call,
        }
    }

    // ---------------------------------------------------------- waiters

    /// `waiter` wants a stream. A parent's call must have been
    /// [`Self::invited`] first.
    pub fn join(
        &mut self,
        waiter: Waiter,
        want: Want,
        on_behalf_of: Option<Subject>,
        now: Instant,
    ) {
        let (key, kind) = match want {
            Want::Live(c) => (StreamKey::Live(c), CallKind::Live),
            Want::Playback {
                channel,
                session,
                start,
                end,
            } => (
                StreamKey::Playback(channel, session),
                CallKind::Playback { start, end },
            ),
        };
        if let Some(slot) = self.slots.get_mut(&key) {
            match &mut slot.phase {
                Phase::Opening { waiters, .. } => {
                    waiters.push(waiter);
                    self.waiting.insert(waiter, key);
                    return;
                }
                Phase::Open { hub, .. } if hub.facts(now).is_some() => {
                    let hub = hub.clone();
                    self.ready(waiter, &key, hub);
                    return;
                }
                // Ended by itself and not yet noticed: clear it away and
                // open anew.
                Phase::Open { .. } => self.remove(&key, None, true),
            }
        }
        if self.slots.len() >= self.max_streams {
            self.out.push(Command::Refuse {
                waiter,
                error: OpenError::TooManyStreams(self.max_streams),
            });
            return;
        }
        let open = self.next_open;
        self.next_open += 1;
        let wake = now + self.timers.open_timeout;
        self.slots.insert(
            key,
            Slot {
                open,
                phase: Phase::Opening {
                    waiters: vec![waiter],
                    call: None,
                },
                wake: Some(wake),
            },
        );
        self.heap.push(Reverse((wake, open)));
        self.by_open.insert(open, key);
        self.waiting.insert(waiter, key);
        if let StreamKey::Playback(_, s) = key {
            self.sessions.insert(s, key);
        }
        self.out.push(Command::Open {
            open,
            key,
            kind,
            on_behalf_of,
        });
    }

    /// `waiter` no longer waits (a viewer left, a parent hung up). Nothing
    /// if it was not waiting.
    pub fn leave(&mut self, waiter: Waiter) {
        let Some(key) = self.waiting.remove(&waiter) else {
            return;
        };
        let Some(Slot {
            phase: Phase::Opening { waiters, .. },
            ..
        }) = self.slots.get_mut(&key)
        else {
            return;
        };
        waiters.retain(|w| *w != waiter);
        if waiters.is_empty() && matches!(key, StreamKey::Playback(..)) {
            // Nobody else can ever watch this session.
            self.remove(&key, None, true);
        }
    }

    /// The parent placed call `call`; it will [`Self::join`] as
    /// [`Waiter::Parent`].
    pub fn invited(&mut self, call: CallId) {
        self.parents.insert(call, ParentCall::default());
    }

    fn ready(&mut self, waiter: Waiter, key: &StreamKey, hub: H) {
        if let Waiter::Parent(call) = waiter {
            let below = self.call_of(key);
            if let Some(p) = self.parents.get_mut(&call) {
                p.below = below;
            }
        }
        self.out.push(Command::Ready { waiter, hub });
    }

    // ---------------------------------------------------------- opening

    /// Opening `open` placed `call` below.
    pub fn placed(&mut self, open: OpenId, call: CallId) {
        let key = self.by_open.get(&open).copied();
        match key.and_then(|k| self.slots.get_mut(&k).map(|s| (k, s))) {
            Some((
                key,
                Slot {
                    phase:
                        Phase::Opening {
                            call: slot_call, ..
                        },
                    ..
                },
            )) if slot_call.is_none() => {
                *slot_call = Some(call);
                self.calls.insert(call, key);
            }
            // Given up meanwhile (timed out, or its only viewer left).
            _ => self.out.push(Command::Hangup(call)),
        }
    }

    /// Opening `open` failed before its call was answered.
    pub fn open_failed(&mut self, open: OpenId, error: OpenError) {
        if let Some(key) = self.opening(open) {
            self.fail(&key, &error, true);
        }
    }

    /// Opening `open`'s call `call` was answered and its hub made.
    pub fn opened(&mut self, open: OpenId, call: CallId, hub: H, now: Instant) {
        let Some(key) = self.opening(open) else {
            // Given up meanwhile; its call was hung up then.
            self.out.push(Command::Discard(hub));
            return;
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let Phase::Opening { waiters, .. } = &mut slot.phase else {
            return;
        };
        let waiters = std::mem::take(waiters);
        slot.phase = Phase::Open {
            hub: hub.clone(),
            call,
        };
        self.calls.insert(call, key);
        for w in waiters {
            self.waiting.remove(&w);
            self.ready(w, &key, hub.clone());
        }
        self.review(&key, now);
    }

    fn opening(&self, open: OpenId) -> Option<StreamKey> {
        let key = self.by_open.get(&open)?;
        match self.slots.get(key)?.phase {
            Phase::Opening { .. } => Some(*key),
            Phase::Open { .. } => None,
        }
    }

    // ----------------------------------------------------- calls' events

    /// A call (below or from the parent) failed before its answer.
    pub fn call_failed(&mut self, call: CallId, reason: CallFailure) {
        if let Some(key) = self.calls.get(&call).copied() {
            self.fail(&key, &OpenError::Failed(reason), false);
        } else {
            self.parent_gone(call);
        }
    }

    /// A call ended: a BYE below (its hub ends with `why`) or from the
    /// parent (it stops waiting).
    pub fn call_ended(&mut self, call: CallId, why: &str) {
        match self.calls.get(&call).copied() {
            Some(key) => match self.slots.get(&key).map(|s| &s.phase) {
                Some(Phase::Open { .. }) => self.remove(&key, Some(why.to_string()), false),
                Some(Phase::Opening { .. }) => {
                    self.fail(&key, &OpenError::EndedWhileOpening, false)
                }
                None => {}
            },
            None => self.parent_gone(call),
        }
    }

    /// The parent's call `call` is over (ended, refused, or its service
    /// stopped): forget it, and its wait if it still waited.
    pub fn forget_parent(&mut self, call: CallId) {
        self.parent_gone(call);
    }

    fn parent_gone(&mut self, call: CallId) {
        if self.parents.remove(&call).is_some() {
            self.leave(Waiter::Parent(call));
        }
    }

    // -------------------------------------------------------- deadlines

    /// What a hub depends on changed (a viewer came or went, a pause, a
    /// fault, its end): look at it now.
    pub fn touch(&mut self, key: &StreamKey, now: Instant) {
        if matches!(
            self.slots.get(key).map(|s| &s.phase),
            Some(Phase::Open { .. })
        ) {
            self.review(key, now);
        }
    }

    /// Act on every deadline due by `now`.
    pub fn poll(&mut self, now: Instant) {
        while let Some(&Reverse((at, open))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(key) = self.by_open.get(&open).copied() else {
                continue;
            };
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            if slot.wake != Some(at) {
                continue; // superseded
            }
            match slot.phase {
                Phase::Opening { .. } => {
                    let e = OpenError::NoAnswer(self.timers.open_timeout);
                    self.fail(&key, &e, true);
                }
                Phase::Open { .. } => self.review(&key, now),
            }
        }
    }

    fn review(&mut self, key: &StreamKey, now: Instant) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Phase::Open { hub, .. } = &slot.phase else {
            return;
        };
        let Some(facts) = hub.facts(now) else {
            self.remove(key, None, true);
            return;
        };
        let timers = match key {
            StreamKey::Live(_) => self.timers,
            // A playback session belongs to one viewer: close when it leaves.
            StreamKey::Playback(..) => HubTimers {
                linger: Duration::ZERO,
                ..self.timers
            },
        };
        match lifecycle::decide(&facts, &timers) {
            Verdict::End(why) => self.remove(key, Some(why.to_string()), true),
            Verdict::WakeIn(wake) => {
                let wake = wake.map(|d| now + d);
                if slot.wake != wake {
                    slot.wake = wake;
                    if let Some(at) = wake {
                        self.heap.push(Reverse((at, slot.open)));
                    }
                    self.compact();
                }
            }
        }
    }

    /// Rebuild the heap from the live deadlines once stale entries
    /// outnumber them: a busy hub's viewers coming and going push entries
    /// faster than their instants pass.
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.slots.len() + 64 {
            return;
        }
        self.heap = self
            .slots
            .values()
            .filter_map(|s| s.wake.map(|at| Reverse((at, s.open))))
            .collect();
    }

    // ---------------------------------------------------------- removal

    /// An opening failed: its waiters are told, its call (if `hang_up`)
    /// hung up, its slot freed.
    fn fail(&mut self, key: &StreamKey, error: &OpenError, hang_up: bool) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if let Phase::Opening { waiters, .. } = &mut slot.phase {
            for waiter in std::mem::take(waiters) {
                self.waiting.remove(&waiter);
                self.out.push(Command::Refuse {
                    waiter,
                    error: error.clone(),
                });
            }
        }
        self.remove(key, None, hang_up);
    }

    /// Free `key`'s slot: hang up its call below (unless it ended there)
    /// and close its hub (with `why`, unless it ended by itself).
    fn remove(&mut self, key: &StreamKey, why: Option<String>, hang_up: bool) {
        let Some(slot) = self.slots.remove(key) else {
            return;
        };
        self.by_open.remove(&slot.open);
        if let StreamKey::Playback(_, s) = key {
            self.sessions.remove(s);
        }
        let call = match slot.phase {
            Phase::Opening { waiters, call } => {
                for w in waiters {
                    self.waiting.remove(&w);
                }
                call
            }
            Phase::Open { hub, call } => {
                self.out.push(Command::Close {
                    key: *key,
                    hub,
                    why,
                });
                Some(call)
            }
        };
        if let Some(call) = call {
            self.calls.remove(&call);
            if hang_up {
                self.out.push(Command::Hangup(call));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const TIMERS: HubTimers = HubTimers {
        media_timeout: Duration::from_secs(10),
        linger: Duration::from_secs(30),
        open_timeout: Duration::from_secs(5),
    };

    /// A hub in virtual time: the facts a real one would report.
    #[derive(Clone, Debug)]
    struct FakeHub(Arc<Mutex<FakeState>>);

    #[derive(Debug)]
    struct FakeState {
        id: u32,
        born: Instant,
        viewers: usize,
        ever_joined: bool,
        idle_since: Instant,
        last_frame: Instant,
        ended: bool,
    }

    impl PartialEq for FakeHub {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.0, &other.0)
        }
    }
    impl Eq for FakeHub {}

    impl FakeHub {
        fn new(id: u32, now: Instant) -> Self {
            FakeHub(Arc::new(Mutex::new(FakeState {
                id,
                born: now,
                viewers: 0,
                ever_joined: false,
                idle_since: now,
                last_frame: now,
                ended: false,
            })))
        }
        fn id(&self) -> u32 {
            self.0.lock().unwrap().id
        }
        fn join(&self) {
            let mut s = self.0.lock().unwrap();
            s.viewers += 1;
            s.ever_joined = true;
        }
        fn leave(&self, now: Instant) {
            let mut s = self.0.lock().unwrap();
            s.viewers -= 1;
            if s.viewers == 0 {
                s.idle_since = now;
            }
        }
        fn frame(&self, now: Instant) {
            self.0.lock().unwrap().last_frame = now;
        }
        fn end(&self) {
            self.0.lock().unwrap().ended = true;
        }
    }

    impl HubView for FakeHub {
        fn facts(&self, now: Instant) -> Option<HubFacts> {
            let s = self.0.lock().unwrap();
            (!s.ended).then(|| HubFacts {
                age: now - s.born,
                silent_for: now - s.last_frame,
                idle_for: (s.viewers == 0 && s.ever_joined).then(|| now - s.idle_since),
                never_joined: !s.ever_joined,
                probed: false,
                viewers: s.viewers,
                paused: false,
                unreadable: None,
                fault: None,
            })
        }
    }

    const CAM: &str = "34020000001320000001";
    const CAM2: &str = "34020000001320000002";

    fn cam(s: &str) -> GbId {
        s.parse().unwrap()
    }

    /// A table driven in virtual time, with a camera whose media flows
    /// every 40 ms while `feeding`.
    struct Sim {
        t: StreamTable<FakeHub>,
        now: Instant,
        hubs: u32,
        next_call: CallId,
        log: Vec<Command<FakeHub>>,
    }

    impl Sim {
        fn new(max_streams: usize) -> Sim {
            Sim {
                t: StreamTable::new(TIMERS, max_streams),
                now: Instant::now(),
                hubs: 0,
                next_call: 100,
                log: Vec::new(),
            }
        }
        fn out(&mut self) -> Vec<Command<FakeHub>> {
            let out = self.t.drain();
            self.log.extend(out.iter().cloned());
            out
        }
        fn join(&mut self, w: Waiter, want: Want) -> Vec<Command<FakeHub>> {
            self.t.join(w, want, None, self.now);
            self.out()
        }
        fn live(&mut self, w: u64) -> Vec<Command<FakeHub>> {
            self.join(Waiter::Viewer(w), Want::Live(cam(CAM)))
        }
        /// Place the call of the one `Open` in `cmds`; its id and call.
        fn place(&mut self, cmds: &[Command<FakeHub>]) -> (OpenId, CallId) {
            let opens: Vec<OpenId> = cmds
                .iter()
                .filter_map(|c| match c {
                    Command::Open { open, .. } => Some(*open),
                    _ => None,
                })
                .collect();
            assert_eq!(opens.len(), 1, "one opening: {cmds:?}");
            let call = self.next_call;
            self.next_call += 1;
            self.t.placed(opens[0], call);
            (opens[0], call)
        }
        /// Viewer `w` opens the camera's live stream, answered at once:
        /// its hub and the opening's id and call.
        fn open_live(&mut self, w: u64) -> (FakeHub, (OpenId, CallId)) {
            let first = self.live(w);
            let placed = self.place(&first);
            let (hub, _) = self.answer(placed);
            (hub, placed)
        }
        fn answer(&mut self, (open, call): (OpenId, CallId)) -> (FakeHub, Vec<Command<FakeHub>>) {
            self.hubs += 1;
            let hub = FakeHub::new(self.hubs, self.now);
            self.t.opened(open, call, hub.clone(), self.now);
            (hub, self.out())
        }
        /// Advance virtual time to `to`, waking at every deadline the
        /// table asks for and feeding `hub` a frame every 40 ms if given.
        fn run_until(&mut self, to: Instant, feed: Option<&FakeHub>) -> Vec<Command<FakeHub>> {
            let mut out = Vec::new();
            loop {
                let frame = feed.map(|_| self.now + Duration::from_millis(40));
                let wake = [self.t.next_wake(), frame]
                    .into_iter()
                    .flatten()
                    .filter(|w| *w <= to)
                    .min();
                let Some(at) = wake else { break };
                self.now = self.now.max(at);
                if let Some(h) = feed {
                    if Some(at) == frame {
                        h.frame(self.now);
                    }
                }
                self.t.poll(self.now);
                out.extend(self.out());
            }
            self.now = to;
            out
        }
        fn after(&self, d: Duration) -> Instant {
            self.now + d
        }
    }

    fn readies(cmds: &[Command<FakeHub>]) -> Vec<Waiter> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Ready { waiter, .. } => Some(*waiter),
                _ => None,
            })
            .collect()
    }

    fn count<H>(cmds: &[Command<H>], f: impl Fn(&Command<H>) -> bool) -> usize {
        cmds.iter().filter(|c| f(c)).count()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn concurrent_joins_share_one_opening() {
        let mut s = Sim::new(10);
        let first = s.live(1);
        for w in 2..=50 {
            assert!(s.live(w).is_empty(), "waiter {w} waits on the same opening");
        }
        let placed = s.place(&first);
        let (hub, out) = s.answer(placed);
        let mut ready = readies(&out);
        ready.sort_by_key(|w| match w {
            Waiter::Viewer(n) => *n,
            Waiter::Parent(c) => *c,
        });
        assert_eq!(ready, (1..=50).map(Waiter::Viewer).collect::<Vec<_>>());
        // Later viewers join the open hub at once, with no new opening.
        let later = s.live(51);
        assert_eq!(
            later,
            vec![Command::Ready {
                waiter: Waiter::Viewer(51),
                hub
            }]
        );
        assert_eq!(count(&s.log, |c| matches!(c, Command::Open { .. })), 1);
        assert_eq!(s.t.len(), 1);
    }

    #[test]
    fn a_viewer_leaving_mid_open_does_not_cancel_a_live_opening() {
        let mut s = Sim::new(10);
        let first = s.live(1);
        s.live(2);
        s.t.leave(Waiter::Viewer(1));
        assert!(s.out().is_empty(), "another still waits: nothing hung up");
        let placed = s.place(&first);
        let (_, out) = s.answer(placed);
        assert_eq!(readies(&out), vec![Waiter::Viewer(2)]);
    }

    #[test]
    fn an_opening_everyone_left_completes_then_closes_unjoined() {
        // The next click finds it open; if none comes, the hub nobody
        // joined closes after twice the opening time, hanging up once.
        let mut s = Sim::new(10);
        let first = s.live(7);
        s.t.leave(Waiter::Viewer(7));
        let placed = s.place(&first);
        let (hub, out) = s.answer(placed);
        assert!(readies(&out).is_empty());
        let out = s.run_until(s.after(TIMERS.open_timeout * 3), Some(&hub));
        let hangups = count(&out, |c| *c == Command::Hangup(placed.1));
        assert_eq!(hangups, 1, "{out:?}");
        assert!(out.iter().any(|c| matches!(
            c,
            Command::Close { why: Some(w), .. } if w.contains("nobody joined")
        )));
        assert!(s.t.is_empty());
    }

    #[test]
    fn the_only_viewer_leaving_a_playback_mid_open_hangs_up_below() {
        let mut s = Sim::new(10);
        let want = Want::Playback {
            channel: cam(CAM),
            session: 9,
            start: 1,
            end: 2,
        };
        let first = s.join(Waiter::Viewer(1), want);
        let placed = s.place(&first);
        assert_eq!(s.t.session_call(9), Some(placed.1));
        assert_eq!(s.t.session_channel(9), Some(cam(CAM)));
        s.t.leave(Waiter::Viewer(1));
        assert_eq!(s.out(), vec![Command::Hangup(placed.1)]);
        assert!(s.t.session_free(9));
        // Its answer, arriving late, ends the hub it made.
        let (hub, out) = s.answer(placed);
        assert_eq!(out, vec![Command::Discard(hub)]);
        // Left before the call was even placed: the call is hung up once placed.
        let first = s.join(
            Waiter::Viewer(2),
            Want::Playback {
                channel: cam(CAM),
                session: 10,
                start: 1,
                end: 2,
            },
        );
        s.t.leave(Waiter::Viewer(2));
        let (_, call) = s.place(&first);
        assert_eq!(s.out(), vec![Command::Hangup(call)]);
        assert!(s.t.is_empty());
    }

    #[test]
    fn a_parent_bye_racing_its_join_leaves_the_stream_to_the_others() {
        let mut s = Sim::new(10);
        s.t.invited(500);
        let first = s.join(Waiter::Parent(500), Want::Live(cam(CAM)));
        s.live(1);
        let placed = s.place(&first);
        let below = placed.1;
        // The parent hangs up while the stream below is still opening.
        s.t.call_ended(500, "BYE");
        assert!(s.out().is_empty(), "the opening goes on for the viewer");
        let (hub, out) = s.answer(placed);
        assert_eq!(readies(&out), vec![Waiter::Viewer(1)]);
        assert_eq!(s.t.parent_below(500), None);
        hub.join();
        // A second parent call that gets its hub and hangs up before joining
        // it: the hub lives on with the viewer, then lingers after it.
        s.t.invited(501);
        let out = s.join(Waiter::Parent(501), Want::Live(cam(CAM)));
        assert_eq!(readies(&out), vec![Waiter::Parent(501)]);
        assert_eq!(s.t.parent_below(501), Some(below));
        s.t.call_ended(501, "BYE");
        assert!(s.out().is_empty());
        assert!(s.run_until(s.after(secs(20)), Some(&hub)).is_empty());
        hub.leave(s.now);
        s.t.touch(&StreamKey::Live(cam(CAM)), s.now);
        let left = s.now;
        let out = s.run_until(left + secs(60), Some(&hub));
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Command::Hangup(_) | Command::Close { .. }))
                .count(),
            2,
            "{out:?}"
        );
        assert!(out.contains(&Command::Hangup(below)));
        assert!(s.t.is_empty());
        // It closed at the linger after the viewer left, not before.
        assert!(s.log.iter().any(|c| matches!(
            c,
            Command::Close { why: Some(w), .. } if w == &lifecycle::HubEnd::NoViewers(TIMERS.linger).to_string()
        )));
    }

    #[test]
    fn a_parent_invite_failing_before_its_join_is_forgotten() {
        let mut s = Sim::new(10);
        s.t.invited(600);
        s.t.call_failed(600, CallFailure::Timeout);
        assert_eq!(s.t.parent_below(600), None);
        assert!(s.out().is_empty());
    }

    #[test]
    fn linger_keeps_an_idle_stream_for_its_time_and_a_returning_viewer_keeps_it() {
        let mut s = Sim::new(10);
        let key = StreamKey::Live(cam(CAM));
        let (hub, placed) = s.open_live(1);
        hub.join();
        s.t.touch(&key, s.now);
        s.run_until(s.after(secs(5)), Some(&hub));
        hub.leave(s.now);
        s.t.touch(&key, s.now);
        // Back after 20 s of the 30 s linger: still the same hub.
        assert!(s.run_until(s.after(secs(20)), Some(&hub)).is_empty());
        assert_eq!(readies(&s.live(2)), vec![Waiter::Viewer(2)]);
        hub.join();
        s.t.touch(&key, s.now);
        let watched = s.run_until(s.after(secs(100)), Some(&hub));
        assert!(watched.is_empty(), "watched: stays");
        hub.leave(s.now);
        s.t.touch(&key, s.now);
        // Not a millisecond before the linger, and exactly at it.
        let just_before = TIMERS.linger - Duration::from_millis(1);
        assert!(s.run_until(s.after(just_before), Some(&hub)).is_empty());
        let out = s.run_until(s.after(Duration::from_millis(1)), Some(&hub));
        assert_eq!(count(&out, |c| *c == Command::Hangup(placed.1)), 1);
        assert_eq!(count(&out, |c| matches!(c, Command::Close { .. })), 1);
        assert!(s.t.is_empty());
    }

    #[test]
    fn silence_from_below_ends_the_stream_at_the_media_timeout() {
        let mut s = Sim::new(10);
        let first = s.live(1);
        let placed = s.place(&first);
        let call = placed.1;
        let (hub, _) = s.answer(placed);
        hub.join();
        s.t.touch(&StreamKey::Live(cam(CAM)), s.now);
        assert!(s.run_until(s.after(secs(60)), Some(&hub)).is_empty());
        let silent_from = s.now;
        let out = s.run_until(
            silent_from + TIMERS.media_timeout - Duration::from_millis(1),
            None,
        );
        assert!(out.is_empty());
        let out = s.run_until(silent_from + TIMERS.media_timeout, None);
        assert!(out.contains(&Command::Hangup(call)));
        assert!(out.iter().any(|c| matches!(
            c,
            Command::Close { why: Some(w), .. } if w.starts_with("no media")
        )));
    }

    #[test]
    fn an_unanswered_opening_refuses_its_waiters_and_hangs_up_at_the_open_timeout() {
        let mut s = Sim::new(10);
        let first = s.live(1);
        s.live(2);
        let placed = s.place(&first);
        let call = placed.1;
        let out = s.run_until(s.after(TIMERS.open_timeout), None);
        let refused = count(
            &out,
            |c| matches!(c, Command::Refuse { error: OpenError::NoAnswer(d), .. } if *d == TIMERS.open_timeout),
        );
        assert_eq!(refused, 2);
        assert!(out.contains(&Command::Hangup(call)));
        // The answer that comes after all: its hub is ended at once.
        let (hub, out) = s.answer(placed);
        assert_eq!(out, vec![Command::Discard(hub)]);
        // And the next viewer opens anew.
        let again = s.live(3);
        assert_eq!(count(&again, |c| matches!(c, Command::Open { .. })), 1);
    }

    #[test]
    fn a_failed_call_or_bye_below_reaches_every_waiter_and_frees_the_slot() {
        let mut s = Sim::new(10);
        let first = s.live(1);
        s.live(2);
        let (_, call) = s.place(&first);
        s.t.call_failed(call, CallFailure::Timeout);
        let out = s.out();
        assert_eq!(
            count(&out, |c| matches!(
                c,
                Command::Refuse {
                    error: OpenError::Failed(_),
                    ..
                }
            )),
            2
        );
        assert_eq!(
            count(&out, |c| matches!(c, Command::Hangup(_))),
            0,
            "it failed below: nothing to hang up"
        );
        assert!(s.t.is_empty());
        // Open, then a BYE from below: the hub closes with its reason, no
        // BYE back.
        let (hub, placed) = s.open_live(3);
        s.t.call_ended(placed.1, "the camera went away");
        assert_eq!(
            s.out(),
            vec![Command::Close {
                key: StreamKey::Live(cam(CAM)),
                hub,
                why: Some("the camera went away".into())
            }]
        );
    }

    #[test]
    fn a_hub_that_ended_by_itself_is_replaced_by_the_next_join() {
        let mut s = Sim::new(10);
        let (hub, placed) = s.open_live(1);
        hub.end();
        let out = s.live(2);
        assert!(out.contains(&Command::Hangup(placed.1)));
        assert!(out.contains(&Command::Close {
            key: StreamKey::Live(cam(CAM)),
            hub: hub.clone(),
            why: None
        }));
        assert_eq!(count(&out, |c| matches!(c, Command::Open { .. })), 1);
        // Noticed by a touch instead: the same clean-up, once.
        let mut s = Sim::new(10);
        let (hub, _) = s.open_live(1);
        hub.end();
        s.t.touch(&StreamKey::Live(cam(CAM)), s.now);
        s.t.touch(&StreamKey::Live(cam(CAM)), s.now);
        assert_eq!(s.out().len(), 2);
        assert_eq!(hub.id(), 1);
    }

    #[test]
    fn the_stream_limit_counts_openings_and_frees_on_close() {
        let mut s = Sim::new(1);
        let first = s.live(1);
        let out = s.join(Waiter::Viewer(2), Want::Live(cam(CAM2)));
        assert_eq!(
            out,
            vec![Command::Refuse {
                waiter: Waiter::Viewer(2),
                error: OpenError::TooManyStreams(1)
            }]
        );
        let (_, call) = s.place(&first);
        s.t.call_failed(call, CallFailure::Timeout);
        s.out();
        let out = s.join(Waiter::Viewer(2), Want::Live(cam(CAM2)));
        assert_eq!(count(&out, |c| matches!(c, Command::Open { .. })), 1);
    }

    #[test]
    fn the_heap_stays_small_however_often_viewers_come_and_go() {
        let mut s = Sim::new(10);
        let (hub, _) = s.open_live(1);
        let key = StreamKey::Live(cam(CAM));
        for i in 0..10_000u64 {
            s.now += Duration::from_millis(1);
            hub.frame(s.now);
            if i % 2 == 0 {
                hub.join();
            } else {
                hub.leave(s.now);
            }
            s.t.touch(&key, s.now);
        }
        assert!(s.t.heap.len() <= 2 * s.t.len() + 65, "{}", s.t.heap.len());
        // And the live deadline survived the rebuilds.
        let out = s.run_until(s.after(secs(31)), None);
        assert_eq!(count(&out, |c| matches!(c, Command::Close { .. })), 1);
    }

    mod random_histories {
        //! Any interleaving of joins, departures, answers, failures, BYEs
        //! and time: every waiter hears exactly once (unless it left), no
        //! call is hung up twice, no hub is closed twice, and once time runs
        //! out with nobody watching, nothing is left open or placed.
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashSet;

        #[derive(Debug, Clone)]
        enum Op {
            Join { ch: u8, playback: bool },
            Leave { i: u8 },
            Invite { ch: u8 },
            ParentBye { i: u8 },
            Place { i: u8 },
            Answer { i: u8 },
            FailBelow { i: u8 },
            ByeBelow { i: u8 },
            HubEnds { i: u8 },
            HubViewer { i: u8, join: bool },
            Advance { ms: u16, frames: bool },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..3u8, any::<bool>()).prop_map(|(ch, playback)| Op::Join { ch, playback }),
                2 => any::<u8>().prop_map(|i| Op::Leave { i }),
                1 => (0..3u8).prop_map(|ch| Op::Invite { ch }),
                1 => any::<u8>().prop_map(|i| Op::ParentBye { i }),
                3 => any::<u8>().prop_map(|i| Op::Place { i }),
                3 => any::<u8>().prop_map(|i| Op::Answer { i }),
                1 => any::<u8>().prop_map(|i| Op::FailBelow { i }),
                1 => any::<u8>().prop_map(|i| Op::ByeBelow { i }),
                1 => any::<u8>().prop_map(|i| Op::HubEnds { i }),
                2 => (any::<u8>(), any::<bool>()).prop_map(|(i, join)| Op::HubViewer { i, join }),
                3 => (0..20_000u16, any::<bool>()).prop_map(|(ms, frames)| Op::Advance { ms, frames }),
            ]
        }

        #[derive(Default)]
        struct World {
            waiting: Vec<Waiter>,
            heard: HashSet<Waiter>,
            left: HashSet<Waiter>,
            parents: Vec<CallId>,
            /// Openings asked for, with their call once placed.
            opens: Vec<(OpenId, StreamKey, Option<CallId>)>,
            answered: HashSet<OpenId>,
            /// Calls that ended below (failed or BYE): nothing to hang up.
            gone_below: HashSet<CallId>,
            hung_up: HashSet<CallId>,
            hubs: Vec<(FakeHub, StreamKey)>,
            closed: HashSet<u32>,
            next: u64,
        }

        fn pick<T: Copy>(v: &[T], i: u8) -> Option<T> {
            (!v.is_empty()).then(|| v[usize::from(i) % v.len()])
        }

        impl World {
            fn check(&mut self, out: Vec<Command<FakeHub>>) -> Result<(), TestCaseError> {
                for c in out {
                    match c {
                        Command::Open { open, key, .. } => self.opens.push((open, key, None)),
                        Command::Ready { waiter, .. } | Command::Refuse { waiter, .. } => {
                            prop_assert!(
                                !self.left.contains(&waiter),
                                "{waiter:?} heard after leaving"
                            );
                            prop_assert!(self.heard.insert(waiter), "{waiter:?} heard twice");
                            self.waiting.retain(|w| *w != waiter);
                        }
                        Command::Hangup(call) => {
                            prop_assert!(
                                !self.gone_below.contains(&call),
                                "call {call} hung up after it ended below"
                            );
                            prop_assert!(self.hung_up.insert(call), "call {call} hung up twice");
                        }
                        Command::Close { hub, .. } | Command::Discard(hub) => {
                            prop_assert!(
                                self.closed.insert(hub.id()),
                                "hub {} closed twice",
                                hub.id()
                            );
                        }
                    }
                }
                Ok(())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
            #[test]
            fn every_waiter_hears_once_and_nothing_leaks(ops in proptest::collection::vec(op(), 1..120)) {
                let mut t: StreamTable<FakeHub> = StreamTable::new(TIMERS, 4);
                let mut now = Instant::now();
                let mut w = World { next: 1, ..World::default() };
                let chan = |ch: u8| cam(&format!("3402000000132000000{ch}"));
                for op in ops {
                    match op {
                        Op::Join { ch, playback } => {
                            w.next += 1;
                            let waiter = Waiter::Viewer(w.next);
                            let want = if playback {
                                Want::Playback { channel: chan(ch), session: w.next, start: 1, end: 2 }
                            } else {
                                Want::Live(chan(ch))
                            };
                            w.waiting.push(waiter);
                            t.join(waiter, want, None, now);
                        }
                        Op::Leave { i } => {
                            if let Some(waiter) = pick(&w.waiting, i) {
                                w.waiting.retain(|x| *x != waiter);
                                w.left.insert(waiter);
                                t.leave(waiter);
                            }
                        }
                        Op::Invite { ch } => {
                            w.next += 1;
                            let call = 1_000_000 + w.next;
                            t.invited(call);
                            w.parents.push(call);
                            w.waiting.push(Waiter::Parent(call));
                            t.join(Waiter::Parent(call), Want::Live(chan(ch)), None, now);
                        }
                        Op::ParentBye { i } => {
                            if let Some(call) = pick(&w.parents, i) {
                                w.parents.retain(|c| *c != call);
                                if w.waiting.contains(&Waiter::Parent(call)) {
                                    w.waiting.retain(|x| *x != Waiter::Parent(call));
                                    w.left.insert(Waiter::Parent(call));
                                }
                                t.call_ended(call, "BYE");
                            }
                        }
                        Op::Place { i } => {
                            let unplaced: Vec<usize> = (0..w.opens.len()).filter(|k| w.opens[*k].2.is_none()).collect();
                            if let Some(k) = pick(&unplaced, i) {
                                w.next += 1;
                                w.opens[k].2 = Some(w.next);
                                t.placed(w.opens[k].0, w.next);
                            }
                        }
                        Op::Answer { i } => {
                            // Only a call still up can be answered (the
                            // manager drops the answer of one it hung up).
                            let ready: Vec<usize> = (0..w.opens.len())
                                .filter(|k| matches!(w.opens[*k].2, Some(c) if !w.hung_up.contains(&c) && !w.gone_below.contains(&c)))
                                .filter(|k| !w.answered.contains(&w.opens[*k].0))
                                .collect();
                            if let Some(k) = pick(&ready, i) {
                                let (open, key, call) = w.opens[k];
                                w.answered.insert(open);
                                let hub = FakeHub::new(u32::try_from(w.hubs.len()).unwrap(), now);
                                w.hubs.push((hub.clone(), key));
                                t.opened(open, call.unwrap(), hub, now);
                            }
                        }
                        Op::FailBelow { i } => {
                            let failing: Vec<CallId> = w.opens.iter()
                                .filter(|o| !w.answered.contains(&o.0))
                                .filter_map(|o| o.2)
                                .filter(|c| !w.hung_up.contains(c) && !w.gone_below.contains(c))
                                .collect();
                            if let Some(call) = pick(&failing, i) {
                                w.gone_below.insert(call);
                                t.call_failed(call, CallFailure::Timeout);
                            }
                        }
                        Op::ByeBelow { i } => {
                            let up: Vec<CallId> = w.opens.iter()
                                .filter_map(|o| o.2)
                                .filter(|c| !w.hung_up.contains(c) && !w.gone_below.contains(c))
                                .collect();
                            if let Some(call) = pick(&up, i) {
                                w.gone_below.insert(call);
                                t.call_ended(call, "BYE below");
                            }
                        }
                        Op::HubEnds { i } => {
                            if !w.hubs.is_empty() {
                                let (hub, key) = w.hubs[usize::from(i) % w.hubs.len()].clone();
                                hub.end();
                                t.touch(&key, now);
                            }
                        }
                        Op::HubViewer { i, join } => {
                            if !w.hubs.is_empty() {
                                let (hub, key) = w.hubs[usize::from(i) % w.hubs.len()].clone();
                                let viewers = hub.0.lock().unwrap().viewers;
                                if join {
                                    hub.join();
                                } else if viewers > 0 {
                                    hub.leave(now);
                                }
                                t.touch(&key, now);
                            }
                        }
                        Op::Advance { ms, frames } => {
                            now += Duration::from_millis(u64::from(ms));
                            if frames {
                                for (h, _) in &w.hubs {
                                    h.frame(now);
                                }
                            }
                            t.poll(now);
                        }
                    }
                    w.check(t.drain())?;
                }
                // Every parent's call ends, everyone leaves and the sources
                // fall silent: time runs out.
                for call in std::mem::take(&mut w.parents) {
                    if w.waiting.contains(&Waiter::Parent(call)) {
                        w.waiting.retain(|x| *x != Waiter::Parent(call));
                        w.left.insert(Waiter::Parent(call));
                    }
                    t.forget_parent(call);
                }
                for (hub, key) in w.hubs.clone() {
                    while hub.0.lock().unwrap().viewers > 0 {
                        hub.leave(now);
                    }
                    t.touch(&key, now);
                }
                w.check(t.drain())?;
                for _ in 0..10 {
                    now += TIMERS.linger + TIMERS.media_timeout + TIMERS.open_timeout * 2;
                    t.poll(now);
                    w.check(t.drain())?;
                }
                prop_assert!(t.is_empty(), "{} streams left open", t.len());
                prop_assert!(
                    t.parents.is_empty() && t.waiting.is_empty() && t.calls.is_empty()
                        && t.by_open.is_empty() && t.sessions.is_empty(),
                    "bookkeeping left behind"
                );
                prop_assert!(w.waiting.is_empty(), "never heard: {:?}", w.waiting);
                for (open, _, call) in &w.opens {
                    if let Some(c) = call {
                        prop_assert!(w.hung_up.contains(c) || w.gone_below.contains(c), "call {c} of opening {open} left up");
                    }
                }
                for (hub, _) in &w.hubs {
                    prop_assert!(w.closed.contains(&hub.id()), "hub {} never closed", hub.id());
                }
            }
        }
    }
}
