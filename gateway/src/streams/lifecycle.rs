//! When a hub ends, sans-IO: the facts about a hub at `now` in, either the
//! reason it ends now or the next instant anything could change that out.
//! The stream table ([`super::table`]) keeps that instant in its deadline
//! heap and looks again then, or sooner when the hub says a viewer came or
//! went or its state changed: an idle hub costs one wake-up per media
//! timeout or linger, not four a second.
//!
//! The rules, first match wins:
//! 1. the source's PS could not be read and the fault is one that does not
//!    heal ([`super::gives_up_on`]): end, naming the fault;
//! 2. no media for the media timeout (not while paused): end;
//! 3. no viewers for the linger (once someone had joined): end;
//! 4. opened for the intact probe, which has looked, and nobody joined:
//!    end (a probe costs one keyframe, not a linger);
//! 5. nobody ever joined within twice the open timeout (the opener's
//!    request was cancelled): end.

use std::time::Duration;

use super::hub::{JoinError, PsCause};
use super::{gives_up_on, UNREADABLE_GRACE};

/// What a hub looks like at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFacts {
    /// How long since the hub was opened.
    pub age: Duration,
    /// How long since the last frame (or since opening, before any).
    pub silent_for: Duration,
    /// How long it has had no viewers, once someone had joined.
    pub idle_for: Option<Duration>,
    /// Nobody has joined yet.
    pub never_joined: bool,
    /// The intact probe that opened it has looked.
    pub probed: bool,
    /// Viewers now.
    pub viewers: usize,
    /// Playback paused: silence is expected.
    pub paused: bool,
    /// A fault in the source's PS and how long ago it was noted, while no
    /// frame came.
    pub unreadable: Option<(PsCause, Duration)>,
    /// Any fault noted in the source's PS, frames or not: what a silence is
    /// blamed on.
    pub fault: Option<PsCause>,
}

/// The timers a hub lives by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubTimers {
    /// No media this long ends it.
    pub media_timeout: Duration,
    /// No viewers this long ends it.
    pub linger: Duration,
    /// How long its opener may take to join (twice this ends it).
    pub open_timeout: Duration,
}

/// Why a hub ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubEnd {
    /// The source's PS cannot be read.
    #[error("{0}")]
    Unreadable(JoinError),
    /// No media for the media timeout.
    #[error("no media from the source for {0:?}")]
    Silent(Duration),
    /// No viewers for the linger.
    #[error("no viewers for {0:?}")]
    NoViewers(Duration),
    /// The opener never came.
    #[error("nobody joined the stream it was opened for")]
    NeverJoined,
    /// The intact probe has looked and nobody else came.
    #[error("the intact probe is done")]
    Probed,
}

/// What to do about a hub next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// End the hub now.
    End(HubEnd),
    /// Nothing to do before `now + 0` (`None`: until a viewer or state
    /// change).
    WakeIn(Option<Duration>),
}

/// The verdict for a hub with `facts` under `timers`.
pub fn decide(facts: &HubFacts, timers: &HubTimers) -> Verdict {
    let mut wake: Option<Duration> = None;
    let mut soonest = |d: Duration| wake = Some(wake.map_or(d, |w| w.min(d)));
    if let Some((cause, since)) = &facts.unreadable {
        if !facts.paused {
            if gives_up_on(cause, *since) {
                return Verdict::End(HubEnd::Unreadable(JoinError::Unreadable(cause.clone())));
            }
            soonest(UNREADABLE_GRACE.saturating_sub(*since));
        }
    }
    if !facts.paused {
        if facts.silent_for >= timers.media_timeout {
            return Verdict::End(match &facts.fault {
                // Packets may well be arriving: say why none became media.
                Some(cause) => HubEnd::Unreadable(JoinError::Unreadable(cause.clone())),
                None => HubEnd::Silent(timers.media_timeout),
            });
        }
        soonest(timers.media_timeout - facts.silent_for);
    }
    if let Some(idle) = facts.idle_for {
        if idle >= timers.linger {
            return Verdict::End(HubEnd::NoViewers(timers.linger));
        }
        soonest(timers.linger - idle);
    }
    if facts.never_joined && facts.viewers == 0 && facts.probed {
        return Verdict::End(HubEnd::Probed);
    }
    if facts.never_joined && facts.viewers == 0 {
        let limit = timers.open_timeout * 2;
        if facts.age > limit {
            return Verdict::End(HubEnd::NeverJoined);
        }
        soonest(limit - facts.age + Duration::from_millis(1));
    }
    Verdict::WakeIn(wake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ps::PsFault;

    const T: HubTimers = HubTimers {
        media_timeout: Duration::from_secs(10),
        linger: Duration::from_secs(30),
        open_timeout: Duration::from_secs(5),
    };

    fn playing() -> HubFacts {
        HubFacts {
            age: Duration::from_secs(60),
            silent_for: Duration::from_millis(40),
            idle_for: None,
            never_joined: false,
            probed: false,
            viewers: 3,
            paused: false,
            unreadable: None,
            fault: None,
        }
    }

    /// Step a hub through virtual time: each step the facts at `now` and
    /// when the table would look again.
    fn run(mut facts_at: impl FnMut(Duration) -> HubFacts) -> (Duration, HubEnd) {
        let mut now = Duration::ZERO;
        for _ in 0..1000 {
            match decide(&facts_at(now), &T) {
                Verdict::End(e) => return (now, e),
                Verdict::WakeIn(Some(d)) => now += d,
                Verdict::WakeIn(None) => panic!("would sleep for ever at {now:?}"),
            }
        }
        panic!("no end in 1000 wake-ups");
    }

    #[test]
    fn a_watched_stream_with_media_sleeps_until_its_silence_deadline() {
        assert_eq!(
            decide(&playing(), &T),
            Verdict::WakeIn(Some(Duration::from_millis(9960)))
        );
    }

    #[test]
    fn the_last_viewer_leaving_ends_the_stream_after_the_linger() {
        // Media keeps flowing; the last viewer left at t = 5 s.
        let (at, why) = run(|now| HubFacts {
            idle_for: now.checked_sub(Duration::from_secs(5)),
            viewers: if now < Duration::from_secs(5) { 1 } else { 0 },
            ..playing()
        });
        assert_eq!(why, HubEnd::NoViewers(T.linger));
        assert_eq!(at, Duration::from_secs(35));
    }

    #[test]
    fn silence_ends_the_stream_at_the_media_timeout_but_not_while_paused() {
        // The last frame came at t = 2 s.
        let silent = |now: Duration| HubFacts {
            silent_for: now.saturating_sub(Duration::from_secs(2)),
            ..playing()
        };
        let (at, why) = run(silent);
        assert_eq!(
            (at, why),
            (Duration::from_secs(12), HubEnd::Silent(T.media_timeout))
        );
        let paused = HubFacts {
            paused: true,
            silent_for: Duration::from_secs(600),
            ..playing()
        };
        assert_eq!(decide(&paused, &T), Verdict::WakeIn(None));
    }

    #[test]
    fn an_opener_that_never_joins_ends_the_stream_after_twice_the_open_timeout() {
        let (at, why) = run(|now| HubFacts {
            age: now,
            silent_for: Duration::ZERO,
            never_joined: true,
            viewers: 0,
            ..playing()
        });
        assert_eq!(why, HubEnd::NeverJoined);
        assert!(at > T.open_timeout * 2 && at < T.open_timeout * 2 + Duration::from_millis(5));
    }

    #[test]
    fn a_stream_the_probe_opened_ends_once_it_looked_unless_someone_joined() {
        let opened = HubFacts {
            age: Duration::from_secs(1),
            never_joined: true,
            viewers: 0,
            ..playing()
        };
        assert!(matches!(decide(&opened, &T), Verdict::WakeIn(Some(_))));
        let looked = HubFacts {
            probed: true,
            ..opened.clone()
        };
        assert_eq!(decide(&looked, &T), Verdict::End(HubEnd::Probed));
        // A viewer came meanwhile: it lives like any other.
        let watched = HubFacts {
            never_joined: false,
            viewers: 1,
            ..looked
        };
        assert!(matches!(decide(&watched, &T), Verdict::WakeIn(_)));
    }

    #[test]
    fn a_fault_that_may_heal_gets_its_grace_and_one_that_cannot_ends_at_once() {
        let flags: PsCause = PsFault::MissingPesFlags { stream_id: 0xE0 }.into();
        let (at, why) = run(|now| HubFacts {
            silent_for: now,
            unreadable: Some((flags.clone(), now)),
            ..playing()
        });
        assert_eq!(at, UNREADABLE_GRACE);
        assert_eq!(why, HubEnd::Unreadable(JoinError::Unreadable(flags)));
        let none: PsCause = PsFault::NoElementaryStream { packs: 50 }.into();
        let f = HubFacts {
            unreadable: Some((none.clone(), Duration::ZERO)),
            ..playing()
        };
        assert_eq!(
            decide(&f, &T),
            Verdict::End(HubEnd::Unreadable(JoinError::Unreadable(none)))
        );
    }
}
