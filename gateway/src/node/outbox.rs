//! Paced MESSAGEs toward one peer: at most `window` in flight, the rest
//! waiting. Catalog answers are split lazily, a slice at a time, so a
//! 420,000-item answer never sits in memory as 100,000 encoded bodies, nor
//! as 420,000 unpacked items: an answer holds the IDs it lists and reads
//! each slice's items from the catalog when the slice is due.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::gb::catalog::split;
use crate::gb::charset::Charset;
use crate::gb::manscdp::CatalogItem;
use crate::sip::Peer;
use topology::GbId;

/// Items encoded per refill of a pending catalog answer.
const SLICE: usize = 256;

/// What a pending catalog job lists.
enum Listing {
    /// Change events, as they were when they happened.
    Items(Vec<CatalogItem>),
    /// A whole-catalog answer: the IDs, read when due.
    Ids(Vec<GbId>),
}

impl Listing {
    fn len(&self) -> usize {
        match self {
            Listing::Items(v) => v.len(),
            Listing::Ids(v) => v.len(),
        }
    }
}

struct PendingCatalog {
    notify: bool,
    sn: u32,
    device_id: String,
    items: Listing,
    pos: usize,
    budget: usize,
    charset: Charset,
}

enum Job {
    /// A ready body; `answer` marks parts of a catalog answer (superseded
    /// by a newer query), `notify` parts of pushed changes.
    Body {
        body: Bytes,
        answer: bool,
        notify: bool,
        attempt: u8,
    },
    Catalog(PendingCatalog),
}

/// A MESSAGE body the window lets go now.
pub(super) struct Ready {
    /// The MANSCDP body.
    pub(super) body: Bytes,
    /// How often it was sent before.
    pub(super) attempt: u8,
    /// It pushes catalog changes (a Notify), which a parent may refuse.
    pub(super) notify: bool,
}

/// The queue toward one peer.
pub(super) struct Outbox {
    peer: Peer,
    window: usize,
    in_flight: usize,
    jobs: VecDeque<Job>,
    /// The peer said it is busy (503, 480, 408): nothing goes until then.
    paused_until: Option<Instant>,
}

impl Outbox {
    pub(super) fn new(peer: Peer, window: usize) -> Self {
        Outbox {
            peer,
            window: window.max(1),
            in_flight: 0,
            jobs: VecDeque::new(),
            paused_until: None,
        }
    }

    /// Send nothing before `until` (the peer is busy); what it refused is
    /// queued again first with [`Self::retry`].
    pub(super) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    /// When a pause ends, if one holds the queue.
    pub(super) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    pub(super) fn peer(&self) -> Peer {
        self.peer
    }

    /// The peer may have re-registered from a new address.
    pub(super) fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
    }

    pub(super) fn push_body(&mut self, body: Bytes) {
        self.jobs.push_back(Job::Body {
            body,
            answer: false,
            notify: false,
            attempt: 0,
        });
    }

    /// Queue a batch of change events.
    pub(super) fn push_changes(
        &mut self,
        sn: u32,
        device_id: String,
        items: Vec<CatalogItem>,
        budget: usize,
        charset: Charset,
    ) {
        self.push_listing(true, sn, device_id, Listing::Items(items), budget, charset);
    }

    /// Queue a whole catalog answer listing `ids`; each slice's items are
    /// read with the `lookup` given to [`Self::take_ready`] when it is due.
    pub(super) fn push_answer(
        &mut self,
        sn: u32,
        device_id: String,
        ids: Vec<GbId>,
        budget: usize,
        charset: Charset,
    ) {
        self.push_listing(false, sn, device_id, Listing::Ids(ids), budget, charset);
    }

    fn push_listing(
        &mut self,
        notify: bool,
        sn: u32,
        device_id: String,
        items: Listing,
        budget: usize,
        charset: Charset,
    ) {
        if items.len() == 0 {
            // SumNum 0 still needs one (empty) answer.
            let bodies = split(notify, sn, &device_id, 0, &[], budget, charset);
            for body in bodies {
                self.jobs.push_back(Job::Body {
                    body,
                    answer: !notify,
                    notify,
                    attempt: 0,
                });
            }
            return;
        }
        self.jobs.push_back(Job::Catalog(PendingCatalog {
            notify,
            sn,
            device_id,
            items,
            pos: 0,
            budget,
            charset,
        }));
    }

    /// Bodies (with their attempt number) that may be sent now; each must
    /// later be matched by [`Self::done`]. `lookup` reads an answer's item
    /// by ID.
    pub(super) fn take_ready(
        &mut self,
        now: Instant,
        lookup: impl Fn(GbId) -> CatalogItem,
    ) -> Vec<Ready> {
        let mut out = Vec::new();
        if let Some(until) = self.paused_until {
            if now < until {
                return out;
            }
            self.paused_until = None;
        }
        while self.in_flight < self.window {
            let Some(job) = self.jobs.front_mut() else {
                break;
            };
            match job {
                Job::Body { .. } => {
                    if let Some(Job::Body {
                        body,
                        attempt,
                        notify,
                        ..
                    }) = self.jobs.pop_front()
                    {
                        self.in_flight += 1;
                        out.push(Ready {
                            body,
                            attempt,
                            notify,
                        });
                    }
                }
                Job::Catalog(p) => {
                    let end = (p.pos + SLICE).min(p.items.len());
                    let sum = p.items.len() as u32;
                    let read;
                    let slice = match &p.items {
                        Listing::Items(v) => &v[p.pos..end],
                        Listing::Ids(ids) => {
                            read = ids[p.pos..end]
                                .iter()
                                .map(|id| lookup(*id))
                                .collect::<Vec<_>>();
                            &read[..]
                        }
                    };
                    let bodies = split(
                        p.notify,
                        p.sn,
                        &p.device_id,
                        sum,
                        slice,
                        p.budget,
                        p.charset,
                    );
                    p.pos = end;
                    let finished = p.pos >= p.items.len();
                    let (answer, notify) = (!p.notify, p.notify);
                    if finished {
                        self.jobs.pop_front();
                    }
                    // Bodies go ahead of the rest of this answer, in order.
                    for body in bodies.into_iter().rev() {
                        self.jobs.push_front(Job::Body {
                            body,
                            answer,
                            notify,
                            attempt: 0,
                        });
                    }
                }
            }
        }
        out
    }

    /// Change events (items, or bodies) waiting; catalog answers do not
    /// count, so the answer that a resynchronisation asks for cannot itself
    /// trigger another.
    pub(super) fn backlog(&self) -> usize {
        self.jobs
            .iter()
            .map(|j| match j {
                Job::Body { answer: false, .. } => 1,
                Job::Body { answer: true, .. } => 0,
                Job::Catalog(p) if p.notify => p.items.len().saturating_sub(p.pos),
                Job::Catalog(_) => 0,
            })
            .sum()
    }

    /// Drop everything waiting (in-flight messages still finish).
    pub(super) fn clear(&mut self) {
        self.jobs.clear();
    }

    /// Drop catalog answers (not event batches) still waiting, when a newer
    /// query supersedes them. Parts already split are dropped too.
    pub(super) fn drop_catalog_answers(&mut self) {
        self.jobs.retain(|j| match j {
            Job::Catalog(p) => p.notify,
            Job::Body { answer, .. } => !answer,
        });
    }

    /// Send a MESSAGE that went unanswered again, ahead of everything else:
    /// a lost catalog part would leave a permanent hole at the parent.
    pub(super) fn retry(&mut self, body: Bytes, attempt: u8, notify: bool) {
        self.jobs.push_front(Job::Body {
            body,
            answer: false,
            notify,
            attempt: attempt.saturating_add(1),
        });
    }

    /// One in-flight MESSAGE finished (answered or timed out).
    pub(super) fn done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb::manscdp::{parse, Manscdp};
    use crate::sip::Transport;

    fn camera(n: u32) -> CatalogItem {
        CatalogItem {
            device_id: format!("3501020100131{n:07}"),
            name: Some(format!("camera {n}")),
            status: Some("ON".into()),
            ..CatalogItem::default()
        }
    }

    #[test]
    fn window_paces_and_an_answer_reads_its_items_a_slice_at_a_time_in_order() {
        let peer = Peer::plain(Transport::Udp, "127.0.0.1:1".parse().unwrap());
        let mut ob = Outbox::new(peer, 4);
        let ids: Vec<GbId> = (0..1000)
            .map(|n| GbId::parse(&camera(n).device_id).unwrap())
            .collect();
        ob.push_answer(9, "35010201002000000001".into(), ids, 1000, Charset::Gb2312);
        let read = std::cell::Cell::new(0);
        let mut got = Vec::new();
        let now = Instant::now();
        loop {
            let before = read.get();
            let ready = ob.take_ready(now, |id| {
                read.set(read.get() + 1);
                camera(id.serial())
            });
            if ready.is_empty() {
                break;
            }
            assert!(ready.len() <= 4);
            assert!(read.get() - before <= SLICE, "one slice read at a time");
            for r in ready {
                assert!(r.body.len() <= 1000 && !r.notify);
                match parse(&r.body).unwrap().0 {
                    Manscdp::CatalogResponse(l) => {
                        assert_eq!(l.sum_num, 1000);
                        assert_eq!(l.sn, 9);
                        got.extend(l.items.into_iter().map(|i| (i.device_id, i.name)));
                    }
                    other => panic!("unexpected {other:?}"),
                }
                ob.done();
            }
        }
        assert_eq!(got.len(), 1000);
        assert_eq!(read.get(), 1000, "each item read once");
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "parts stay in order"
        );
        assert_eq!(got[7].1.as_deref(), Some("camera 7"));
    }

    #[test]
    fn changes_are_sent_as_they_were() {
        let peer = Peer::plain(Transport::Udp, "127.0.0.1:1".parse().unwrap());
        let mut ob = Outbox::new(peer, 64);
        let items: Vec<CatalogItem> = (0..10).map(camera).collect();
        ob.push_changes(
            3,
            "35010201002000000001".into(),
            items,
            1300,
            Charset::Gb2312,
        );
        assert_eq!(ob.backlog(), 10);
        let now = Instant::now();
        ob.pause(now + std::time::Duration::from_secs(1));
        assert!(ob.take_ready(now, |_| unreachable!()).is_empty(), "paused");
        let later = now + std::time::Duration::from_secs(1);
        let ready = ob.take_ready(later, |_| panic!("changes are not looked up"));
        assert_eq!(ob.paused_until(), None);
        let mut n = 0;
        for r in ready {
            assert!(r.notify);
            match parse(&r.body).unwrap().0 {
                Manscdp::CatalogNotify(l) => n += l.items.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(n, 10);
    }
}
