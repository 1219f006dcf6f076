//! Alarms and mobile positions from below, sans-IO: each is taken (a device
//! gets its `Response/Alarm`), kept in a bounded log for the console, and
//! passed up to every registered uplink that may see the device (decided
//! and audited per uplink, `catalog`: what a parent may list, it may hear
//! the alarms of). Every tier does the same, so an alarm at a village
//! reaches the city, and a county that does not share a camera keeps its
//! alarms to itself.

use std::collections::VecDeque;
use std::time::Instant;

use policy::{Action, Subject};
use topology::GbId;

use super::sharing::epoch_ms;
use super::subscriptions::SubscriptionKind;
use super::{Node, Token};
use crate::gb::manscdp::{Ack, Alarm, Manscdp, MobilePosition};
use crate::uplink::Uplink;

/// Events the log keeps; older ones make room.
const MAX_EVENTS: usize = 10_000;

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEventKind {
    /// An alarm.
    Alarm(Alarm),
    /// A mobile camera's position.
    Position(MobilePosition),
}

/// One alarm or position this node heard.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    /// Its number in this node's log (increasing; for `after=` paging).
    pub seq: u64,
    /// When this node heard it, Unix milliseconds.
    pub at_ms: u64,
    /// The device or channel it is about.
    pub device_id: String,
    /// The registrant it came through.
    pub via: GbId,
    /// The alarm or position.
    pub kind: DeviceEventKind,
}

/// The node's recent alarms and positions.
#[derive(Debug, Default)]
pub(super) struct EventLog {
    next: u64,
    events: VecDeque<DeviceEvent>,
}

impl EventLog {
    fn push(&mut self, at_ms: u64, device_id: String, via: GbId, kind: DeviceEventKind) {
        self.next += 1;
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(DeviceEvent {
            seq: self.next,
            at_ms,
            device_id,
            via,
            kind,
        });
    }
}

impl Node {
    /// An alarm from `sender` (a device, or a child node passing one up).
    pub(super) fn on_alarm(&mut self, sender: GbId, alarm: Alarm, now: Instant) {
        metrics::counter!("gbgate_alarms_received_total").increment(1);
        tracing::info!(%sender, device = %alarm.device_id, priority = ?alarm.priority, method = ?alarm.method, "alarm");
        let ack = Manscdp::AlarmResponse(Ack {
            sn: alarm.sn,
            device_id: alarm.device_id.clone(),
            result: "OK".into(),
        });
        self.send_to_registrant(sender, &ack, Token::Query(sender), now);
        let at_ms = epoch_ms(self.wall(now));
        let device = alarm.device_id.clone();
        self.events.push(
            at_ms,
            device.clone(),
            sender,
            DeviceEventKind::Alarm(alarm.clone()),
        );
        self.pass_up(&device, SubscriptionKind::Alarm, now, |sn| {
            Manscdp::AlarmNotify(Alarm {
                sn,
                ..alarm.clone()
            })
        });
    }

    /// A position from `sender`.
    pub(super) fn on_position(&mut self, sender: GbId, position: MobilePosition, now: Instant) {
        let at_ms = epoch_ms(self.wall(now));
        let device = position.device_id.clone();
        self.events.push(
            at_ms,
            device.clone(),
            sender,
            DeviceEventKind::Position(position.clone()),
        );
        self.pass_up(&device, SubscriptionKind::Position, now, |sn| {
            Manscdp::MobilePosition(MobilePosition {
                sn,
                ..position.clone()
            })
        });
    }

    /// Sends `make(our SN)` to each registered uplink that may see `device`:
    /// in its `kind` subscription's dialog if it holds one, else as a MESSAGE.
    fn pass_up(
        &mut self,
        device: &str,
        kind: SubscriptionKind,
        now: Instant,
        make: impl Fn(u32) -> Manscdp,
    ) {
        let uplinks: Vec<(GbId, crate::gb::charset::Charset)> = self
            .uplinks
            .iter()
            .filter(|u| u.is_registered())
            .map(|u| (u.parent(), Uplink::charset(u)))
            .collect();
        for (parent, charset) in uplinks {
            if !self.parent_may(parent, device, Action::Catalog, now) {
                continue;
            }
            let sn = self.next_sn();
            let body = make(sn).to_body(charset);
            if !self.notify_parent(parent, kind, body.clone(), now) {
                self.enqueue_parent(parent, vec![body], now);
            }
        }
    }

    /// Alarms and positions after `after` (a `seq`), oldest first, at most
    /// `limit`, that `who` may see (`None`: everything).
    pub fn device_events(
        &self,
        who: Option<&Subject>,
        after: u64,
        limit: usize,
        now: Instant,
    ) -> Vec<DeviceEvent> {
        let wall = self.wall(now);
        self.events
            .events
            .iter()
            .filter(|e| e.seq > after)
            .filter(|e| match (who, GbId::parse(&e.device_id)) {
                (None, _) => true,
                (Some(s), Ok(id)) => self.gate.shows(s, &id, &self.ancestors(&id), wall),
                (Some(_), Err(_)) => false,
            })
            .take(limit)
            .cloned()
            .collect()
    }
}
