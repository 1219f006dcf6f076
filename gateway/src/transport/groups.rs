//! Media groups on a QUIC link, sans-IO: the header that opens each group's
//! stream, and the [`Sequencer`] that turns groups arriving on parallel
//! streams back into one ordered packet sequence.
//!
//! A sender opens one unidirectional stream per GOP and gives newer groups
//! priority, so at a GOP boundary the next group's first packets can
//! overtake the last ones of the group before (a retransmission, say). The
//! sequencer delivers group N to its end before anything of N+1, but waits
//! for the rest of N at most a grace period (a few round trips) after N+1
//! showed up: then N is cut ([`MediaIn::Discontinuity`]) and delivery goes
//! on with N+1, which starts at a keyframe. What arrives of a group older
//! than the one being delivered is dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

/// First bytes of every media stream: which session and which group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// The session's RTP SSRC (the receiver chose it in its SDP `y=`).
    pub ssrc: u32,
    /// Groups of one session count up from 0.
    pub group: u32,
}

impl GroupHeader {
    const MAGIC: [u8; 4] = *b"GBM1";
    /// Encoded length.
    pub const LEN: usize = 12;

    /// The header as sent.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&Self::MAGIC);
        out[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
        out[8..].copy_from_slice(&self.group.to_be_bytes());
        out
    }

    /// A header from its encoding; `None` when it is not one.
    pub fn decode(b: &[u8; Self::LEN]) -> Option<GroupHeader> {
        if b[..4] != Self::MAGIC {
            return None;
        }
        let mut rest = &b[4..];
        Some(GroupHeader {
            ssrc: rest.get_u32(),
            group: rest.get_u32(),
        })
    }
}

/// What a session's receiver gets, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaIn {
    /// One RTP packet.
    Packet(Bytes),
    /// The group before was cut short: what the receiver holds of an
    /// unfinished frame is to be dropped; the next packet starts a keyframe.
    Discontinuity,
}

/// What a group's stream reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// A packet of group `0`.
    Packet(u32, Bytes),
    /// Group `0` ended: `true` with its whole content (FIN), `false` when
    /// the sender reset it or it failed.
    End(u32, bool),
}

#[derive(Debug, Default)]
struct Pending {
    packets: Vec<Bytes>,
    ended: bool,
}

/// Reorders one session's groups; see the module docs.
#[derive(Debug)]
pub struct Sequencer {
    grace: Duration,
    /// The group being delivered.
    current: Option<u32>,
    /// Newer groups, held until `current` ends or is cut.
    later: BTreeMap<u32, Pending>,
    /// When `current` is cut if it has not ended.
    deadline: Option<Instant>,
    out: std::collections::VecDeque<MediaIn>,
}

impl Sequencer {
    /// A sequencer that waits at most `grace` for a group once a newer one
    /// has begun.
    pub fn new(grace: Duration) -> Sequencer {
        Sequencer {
            grace,
            current: None,
            later: BTreeMap::new(),
            deadline: None,
            out: Default::default(),
        }
    }

    /// Wait `grace` for a group from now on (a deadline already set keeps).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// The group being delivered.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    /// Feed one event at `now`.
    pub fn push(&mut self, event: GroupEvent, now: Instant) {
        let group = match &event {
            GroupEvent::Packet(g, _) | GroupEvent::End(g, _) => *g,
        };
        let current = *self.current.get_or_insert(group);
        if group < current {
            return; // stale: already cut or delivered past
        }
        if group == current {
            match event {
                GroupEvent::Packet(_, p) => self.out.push_back(MediaIn::Packet(p)),
                GroupEvent::End(_, whole) => self.advance(!whole, now),
            }
            return;
        }
        let pending = self.later.entry(group).or_default();
        match event {
            GroupEvent::Packet(_, p) => pending.packets.push(p),
            GroupEvent::End(..) => pending.ended = true,
        }
        if self.deadline.is_none() {
            self.deadline = Some(now + self.grace);
        }
    }

    /// Cut the current group if a newer one has waited `grace`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.advance(true, now);
        }
    }

    /// When [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to deliver.
    pub fn poll(&mut self) -> Option<MediaIn> {
        self.out.pop_front()
    }

    /// The current group is over (`cut`: incomplete): deliver the next
    /// held group, and on through any that already ended.
    fn advance(&mut self, cut: bool, now: Instant) {
        let mut cut = cut;
        self.deadline = None;
        loop {
            let Some((group, pending)) = self.later.pop_first() else {
                // Nothing newer yet: the next group to show up is current.
                self.current = self.current.map(|c| c.wrapping_add(1));
                if cut {
                    self.out.push_back(MediaIn::Discontinuity);
                }
                return;
            };
            if cut {
                self.out.push_back(MediaIn::Discontinuity);
            }
            self.current = Some(group);
            self.out
                .extend(pending.packets.into_iter().map(MediaIn::Packet));
            if !pending.ended {
                if !self.later.is_empty() {
                    self.deadline = Some(now + self.grace);
                }
                return;
            }
            // A group that ended while held ended whole: FIN came.
            cut = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(s: &mut Sequencer) -> Vec<MediaIn> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    fn packets(v: &[u8]) -> Vec<MediaIn> {
        v.iter().map(|n| MediaIn::Packet(p(*n))).collect()
    }

    #[test]
    fn group_headers_round_trip_and_reject_other_bytes() {
        let h = GroupHeader {
            ssrc: 0x0102_0304,
            group: 7,
        };
        assert_eq!(GroupHeader::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(GroupHeader::decode(&bad), None);
    }

    #[test]
    fn a_newer_group_waits_for_the_older_one_to_end() {
        let t = Instant::now();
        let mut s = Sequencer::new(Duration::from_millis(200));
        s.push(GroupEvent::Packet(0, p(1)), t);
        s.push(GroupEvent::Packet(1, p(10)), t);
        s.push(GroupEvent::Packet(1, p(11)), t);
        // The last packet of group 0 was retransmitted and comes late.
        s.push(GroupEvent::Packet(0, p(2)), t + Duration::from_millis(50));
        assert_eq!(drain(&mut s), packets(&[1, 2]));
        s.push(GroupEvent::End(0, true), t + Duration::from_millis(60));
        assert_eq!(drain(&mut s), packets(&[10, 11]));
        assert_eq!(s.current(), Some(1));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_group_that_does_not_end_within_the_grace_is_cut() {
        let t = Instant::now();
        let mut s = Sequencer::new(Duration::from_millis(200));
        s.push(GroupEvent::Packet(0, p(1)), t);
        s.push(GroupEvent::Packet(1, p(10)), t + Duration::from_millis(10));
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_millis(210)));
        s.handle_timeout(t + Duration::from_millis(209));
        assert_eq!(drain(&mut s), packets(&[1]));
        s.handle_timeout(t + Duration::from_millis(210));
        let mut want = vec![MediaIn::Discontinuity];
        want.extend(packets(&[10]));
        assert_eq!(drain(&mut s), want);
        // What comes of group 0 now is stale.
        s.push(GroupEvent::Packet(0, p(2)), t + Duration::from_millis(300));
        s.push(GroupEvent::Packet(1, p(11)), t + Duration::from_millis(300));
        assert_eq!(drain(&mut s), packets(&[11]));
    }

    #[test]
    fn a_reset_group_is_a_discontinuity_and_held_groups_that_ended_flow_on() {
        let t = Instant::now();
        let mut s = Sequencer::new(Duration::from_millis(200));
        s.push(GroupEvent::Packet(0, p(1)), t);
        s.push(GroupEvent::Packet(1, p(10)), t);
        s.push(GroupEvent::End(1, true), t);
        s.push(GroupEvent::Packet(2, p(20)), t);
        s.push(GroupEvent::End(0, false), t); // the sender reset group 0
        let mut want = packets(&[1]);
        want.push(MediaIn::Discontinuity);
        want.extend(packets(&[10, 20]));
        assert_eq!(drain(&mut s), want);
        assert_eq!(s.current(), Some(2));
    }
}
