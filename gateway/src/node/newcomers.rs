//! Questions for registrants that just came (or came back): their Catalog,
//! and a device's DeviceInfo. Paced: a few in flight for the whole node,
//! and none while the node has a backlog of messages to read. After a
//! power cut thousands of devices register at once; their registrations
//! come first, and the questions follow as the load allows instead of
//! adding two transactions per device to the storm.

use std::collections::{HashSet, VecDeque};

use topology::GbId;

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Ask {
    /// Its whole catalog.
    Catalog,
    /// Its name, maker and model.
    DeviceInfo,
    /// A subscription to its catalog changes, alarms or positions.
    Subscribe(super::subscriptions::SubscriptionKind),
}

impl Ask {
    /// The MANSCDP command.
    pub(super) fn cmd(self) -> &'static str {
        match self {
            Ask::Catalog => "Catalog",
            Ask::DeviceInfo => "DeviceInfo",
            Ask::Subscribe(_) => "Subscribe",
        }
    }
}

/// The queue of questions and the window they go out through.
pub(super) struct NewcomerQueries {
    queue: VecDeque<(GbId, Ask)>,
    queued: HashSet<(GbId, Ask)>,
    in_flight: usize,
    window: usize,
}

impl NewcomerQueries {
    /// At most `window` questions in flight.
    pub(super) fn new(window: usize) -> Self {
        NewcomerQueries {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: 0,
            window: window.max(1),
        }
    }

    /// Ask `id` `ask` when its turn comes (once, however often it
    /// registers meanwhile).
    pub(super) fn push(&mut self, id: GbId, ask: Ask) {
        if self.queued.insert((id, ask)) {
            self.queue.push_back((id, ask));
        }
    }

    /// The next question to send, if the window has room and the node is
    /// `quiet` (no backlog); it counts as in flight until [`Self::done`].
    pub(super) fn next(&mut self, quiet: bool) -> Option<(GbId, Ask)> {
        if !quiet || self.in_flight >= self.window {
            return None;
        }
        let next = self.queue.pop_front()?;
        self.queued.remove(&next);
        self.in_flight += 1;
        Some(next)
    }

    /// A question sent by [`Self::next`] was answered, failed or was not
    /// sent after all.
    pub(super) fn done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Questions waiting.
    pub(super) fn waiting(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> GbId {
        GbId::parse(&format!("3501020100132{n:07}")).unwrap()
    }

    #[test]
    fn paced_by_the_window_and_held_while_busy() {
        let mut q = NewcomerQueries::new(2);
        for n in 0..5 {
            q.push(id(n), Ask::Catalog);
            q.push(id(n), Ask::DeviceInfo);
        }
        // Registering again while waiting asks nothing twice.
        q.push(id(0), Ask::Catalog);
        assert_eq!(q.waiting(), 10);
        assert_eq!(q.next(false), None, "held while the node is busy");
        assert_eq!(q.next(true), Some((id(0), Ask::Catalog)));
        assert_eq!(q.next(true), Some((id(0), Ask::DeviceInfo)));
        assert_eq!(q.next(true), None, "window full");
        q.done();
        assert_eq!(q.next(true), Some((id(1), Ask::Catalog)));
        // Asked once it is out of the queue: a new registration asks again.
        q.push(id(0), Ask::Catalog);
        assert_eq!(q.waiting(), 8);
    }
}
