//! Our own SUBSCRIBEs to devices registered here (RFC 6665 as GB/T 28181
//! uses it), sans-IO: Catalog, Alarm and MobilePosition, for devices that
//! report changes, alarms or positions only to a subscriber. Each kind the
//! topology names (`subscribe_devices`) is asked of every device once it
//! registers, through the paced newcomer queue (a power cut brings
//! thousands back at once); the subscription is refreshed at two thirds
//! of what the device granted, and tried again after a while if the
//! device was busy or did not answer. A device that refuses a kind (489,
//! 501, 403…) is not asked again until it registers anew. Its NOTIFYs are
//! read as its MESSAGEs are (`Node::handle_message`): alarms and positions
//! go to the event log and up the tree, catalog changes into the catalog.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use topology::GbId;

use super::call::contact_uri;
use super::subscriptions::SubscriptionKind;
use super::{Node, Token};
use crate::gb::manscdp::{Manscdp, Root, SimpleQuery};
use crate::sip::agent::{DialogIds, Target, MANSCDP};
use crate::sip::message::{Method, Request, Response};
use crate::sip::Peer;

/// `Expires` we ask for.
pub(super) const EXPIRES: Duration = Duration::from_secs(3_600);
/// Wait before trying again after a busy answer or none.
const RETRY: Duration = Duration::from_secs(300);

/// Where one of our subscriptions stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// SUBSCRIBE sent, no final answer yet.
    Asking,
    /// Accepted: refresh at this instant.
    Active { refresh_at: Instant },
    /// Busy or unanswered: ask again at this instant.
    Retry { at: Instant },
    /// Refused: not asked again until the device registers anew.
    Refused,
}

/// One subscription of ours to a device.
#[derive(Debug, Clone)]
struct Ours {
    device: GbId,
    kind: SubscriptionKind,
    call_id: String,
    /// Our From, with our tag.
    local: String,
    /// Their To, with their tag once they answered.
    remote: String,
    /// Where in-dialog requests go (their Contact), once known.
    target: Option<String>,
    cseq: u32,
    phase: Phase,
}

/// Our subscriptions to devices, by dialog (Call-ID), and which dialog
/// each device's kind has: a power cut brings back 100,000 devices, and a
/// scan of every subscription per new one would be quadratic.
#[derive(Debug, Default)]
pub(super) struct DeviceSubscriptions {
    by_call: HashMap<String, Ours>,
    by_device: HashMap<(GbId, SubscriptionKind), String>,
}

impl DeviceSubscriptions {
    fn of(&self, device: GbId, kind: SubscriptionKind) -> Option<&Ours> {
        self.by_call.get(self.by_device.get(&(device, kind))?)
    }

    /// Keep `ours`, replacing any earlier subscription of its device and kind.
    fn insert(&mut self, ours: Ours) {
        if let Some(old) = self
            .by_device
            .insert((ours.device, ours.kind), ours.call_id.clone())
        {
            self.by_call.remove(&old);
        }
        self.by_call.insert(ours.call_id.clone(), ours);
    }

    fn remove(&mut self, call_id: &str) -> Option<Ours> {
        let s = self.by_call.remove(call_id)?;
        if self.by_device.get(&(s.device, s.kind)).map(String::as_str) == Some(call_id) {
            self.by_device.remove(&(s.device, s.kind));
        }
        Some(s)
    }

    /// Forget the subscriptions of devices `keep` refuses.
    fn retain_devices(&mut self, mut keep: impl FnMut(GbId) -> bool) {
        self.by_call.retain(|_, s| keep(s.device));
        let by_call = &self.by_call;
        self.by_device.retain(|_, call| by_call.contains_key(call));
    }

    /// Subscriptions held (accepted) now.
    pub(super) fn active(&self) -> usize {
        self.by_call
            .values()
            .filter(|s| matches!(s.phase, Phase::Active { .. }))
            .count()
    }
}

/// The `Event` header GB platforms send for `kind` (WVP's habit, which
/// devices are tested against: `presence` for alarms and positions).
fn event_header(kind: SubscriptionKind) -> &'static str {
    match kind {
        SubscriptionKind::Catalog => "Catalog",
        SubscriptionKind::Alarm | SubscriptionKind::Position => "presence",
    }
}

/// The MANSCDP Query a SUBSCRIBE of `kind` carries. GB/T 28181 makes the
/// alarm filters and the position interval optional: without them a
/// device sends every alarm, and positions every 5 s.
fn query(kind: SubscriptionKind, sn: u32, device: GbId) -> Manscdp {
    match kind {
        SubscriptionKind::Catalog => Manscdp::CatalogQuery(SimpleQuery::new(sn, device.as_str())),
        SubscriptionKind::Alarm | SubscriptionKind::Position => Manscdp::Other {
            root: Root::Query,
            cmd_type: match kind {
                SubscriptionKind::Alarm => "Alarm",
                _ => "MobilePosition",
            }
            .to_owned(),
            sn,
            device_id: device.to_string(),
        },
    }
}

impl Node {
    /// Subscribe to `kind` of `device`, unless a subscription of that kind
    /// is held or under way. `paced`: a newcomer's turn came, and the
    /// SUBSCRIBE holds a place in that queue's window until answered.
    /// False if nothing was sent.
    pub(super) fn subscribe_device(
        &mut self,
        device: GbId,
        kind: SubscriptionKind,
        paced: bool,
        now: Instant,
    ) -> bool {
        if self
            .device_subscriptions
            .of(device, kind)
            .is_some_and(|s| matches!(s.phase, Phase::Asking | Phase::Active { .. }))
        {
            return false;
        }
        let Some(r) = self.registry.get(&device) else {
            return false;
        };
        let (peer, charset) = (r.peer, r.charset);
        let sn = self.next_sn();
        let body = query(kind, sn, device).to_body(charset);
        let cseq = self.next_cseq();
        let target = Target {
            id: device.as_str(),
            host: peer.addr.to_string(),
            transport: peer.transport,
        };
        let mut req = self.agent.request(
            Method::Subscribe,
            &target,
            cseq,
            None,
            Some((MANSCDP, body)),
        );
        add_subscribe_headers(&mut req, kind);
        let ours = Ours {
            device,
            kind,
            call_id: req.call_id().unwrap_or_default().to_owned(),
            local: req.headers.get("From").unwrap_or_default().to_owned(),
            remote: req.headers.get("To").unwrap_or_default().to_owned(),
            target: None,
            cseq,
            phase: Phase::Asking,
        };
        let call_id = ours.call_id.clone();
        let token = Token::DeviceSubscribe(call_id.clone(), paced);
        self.device_subscriptions.insert(ours);
        let sent = self.send(req, peer, token, now);
        if !sent {
            self.device_subscriptions.remove(&call_id);
        }
        sent
    }

    /// A device's answer to our SUBSCRIBE (`None`: no answer). `paced`:
    /// it went through the newcomer queue, whose window it held.
    pub(super) fn on_device_subscribe_answer(
        &mut self,
        call_id: &str,
        answer: Option<&Response>,
        paced: bool,
        now: Instant,
    ) {
        if paced {
            self.newcomers.done();
        }
        let Some(s) = self.device_subscriptions.by_call.get_mut(call_id) else {
            return;
        };
        let status = answer.map(|r| r.status);
        match answer {
            Some(r) if (200..300).contains(&r.status) => {
                let granted = r
                    .headers
                    .get("Expires")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(EXPIRES, Duration::from_secs);
                if granted.is_zero() {
                    s.phase = Phase::Refused;
                } else {
                    s.remote = r.headers.get("To").unwrap_or_default().to_owned();
                    if let Some(t) = contact_uri(r.headers.get("Contact")) {
                        s.target = Some(t);
                    }
                    s.phase = Phase::Active {
                        refresh_at: now + granted * 2 / 3,
                    };
                    tracing::info!(device = %s.device, kind = ?s.kind, expires = granted.as_secs(), "subscribed to a device");
                    metrics::counter!("gbgate_device_subscriptions_total", "result" => "accepted")
                        .increment(1);
                }
            }
            // Busy, or no answer: later. A refresh refused with 481: the
            // device lost it; subscribe anew later.
            None
            | Some(Response {
                status: 408 | 480 | 481 | 486 | 500 | 503,
                ..
            }) => {
                s.phase = Phase::Retry { at: now + RETRY };
                tracing::debug!(device = %s.device, kind = ?s.kind, ?status, "device subscription to be tried again");
            }
            Some(_) => {
                s.phase = Phase::Refused;
                tracing::info!(device = %s.device, kind = ?s.kind, ?status, "the device does not take this subscription");
                metrics::counter!("gbgate_device_subscriptions_total", "result" => "refused")
                    .increment(1);
            }
        }
        if paced {
            self.ask_newcomers(now);
        }
    }

    /// A NOTIFY from `device` (read as its MESSAGE is): one saying our
    /// subscription ended forgets it, to be asked again later.
    pub(super) fn device_notify_state(&mut self, device: GbId, req: &Request, now: Instant) {
        let Some(state) = req.headers.get("Subscription-State") else {
            return;
        };
        if !state.trim().to_ascii_lowercase().starts_with("terminated") {
            return;
        }
        let call_id = req.call_id().unwrap_or_default();
        if let Some(s) = self.device_subscriptions.by_call.get_mut(call_id) {
            if s.device == device {
                tracing::info!(%device, kind = ?s.kind, "the device ended our subscription");
                s.phase = Phase::Retry { at: now + RETRY };
            }
        }
    }

    /// Refresh the subscriptions due, ask again those whose retry is due;
    /// forget those of devices no longer registered (the periodic sweep).
    pub(super) fn sweep_device_subscriptions(&mut self, now: Instant) {
        let registry = &self.registry;
        self.device_subscriptions
            .retain_devices(|d| registry.get(&d).is_some());
        let due: Vec<(String, bool)> = self
            .device_subscriptions
            .by_call
            .values()
            .filter_map(|s| match s.phase {
                Phase::Active { refresh_at } if refresh_at <= now => {
                    Some((s.call_id.clone(), true))
                }
                Phase::Retry { at } if at <= now => Some((s.call_id.clone(), false)),
                _ => None,
            })
            .collect();
        for (call_id, refresh) in due {
            if refresh {
                self.refresh_device_subscription(&call_id, now);
            } else if let Some(s) = self.device_subscriptions.remove(&call_id) {
                self.subscribe_device(s.device, s.kind, false, now);
            }
        }
    }

    fn refresh_device_subscription(&mut self, call_id: &str, now: Instant) {
        let Some((peer, charset)) = self
            .device_subscriptions
            .by_call
            .get(call_id)
            .and_then(|s| self.registry.get(&s.device))
            .map(|r| (r.peer, r.charset))
        else {
            return;
        };
        let sn = self.next_sn();
        let Some(req) = self.device_subscribe_refresh(call_id, peer, sn, charset) else {
            return;
        };
        let token = Token::DeviceSubscribe(call_id.to_owned(), false);
        if !self.send(req, peer, token, now) {
            self.device_subscriptions.remove(call_id);
        }
    }

    /// The in-dialog SUBSCRIBE refreshing `call_id`, carrying the Query
    /// again with SN `sn`: devices that read only what a SUBSCRIBE carries
    /// keep what they send.
    fn device_subscribe_refresh(
        &mut self,
        call_id: &str,
        peer: Peer,
        sn: u32,
        charset: crate::gb::charset::Charset,
    ) -> Option<Request> {
        let s = self.device_subscriptions.by_call.get_mut(call_id)?;
        s.cseq += 1;
        s.phase = Phase::Asking;
        let fallback = format!("sip:{}@{}", s.device, peer.addr);
        let ids = DialogIds {
            target: s.target.as_deref().unwrap_or(&fallback),
            local: &s.local,
            remote: &s.remote,
            call_id: &s.call_id,
            transport: peer.transport,
        };
        let mut req = self.agent.in_dialog(Method::Subscribe, &ids, s.cseq);
        req.headers
            .push("Contact", format!("<{}>", self.agent.contact_uri()));
        add_subscribe_headers(&mut req, s.kind);
        req.headers.push("Content-Type", MANSCDP);
        req.body = query(s.kind, sn, s.device).to_body(charset);
        Some(req)
    }
}

fn add_subscribe_headers(req: &mut Request, kind: SubscriptionKind) {
    req.headers.push("Event", event_header(kind));
    req.headers.push("Expires", EXPIRES.as_secs().to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subscription_per_device_and_kind_found_without_a_scan() {
        let dev: GbId = "34020000001320000001".parse().unwrap();
        let ours = |call: &str, kind| Ours {
            device: dev,
            kind,
            call_id: call.into(),
            local: String::new(),
            remote: String::new(),
            target: None,
            cseq: 1,
            phase: Phase::Asking,
        };
        let mut d = DeviceSubscriptions::default();
        d.insert(ours("a", SubscriptionKind::Alarm));
        d.insert(ours("p", SubscriptionKind::Position));
        // A new one of the same kind replaces the old.
        d.insert(ours("b", SubscriptionKind::Alarm));
        assert_eq!(d.by_call.len(), 2);
        assert_eq!(
            d.of(dev, SubscriptionKind::Alarm)
                .map(|s| s.call_id.as_str()),
            Some("b")
        );
        assert!(d.remove("a").is_none());
        assert!(d.remove("b").is_some());
        assert!(d.of(dev, SubscriptionKind::Alarm).is_none());
        d.retain_devices(|_| false);
        assert!(d.by_call.is_empty() && d.by_device.is_empty());
    }

    #[test]
    fn queries_name_what_is_subscribed_to() {
        let dev: GbId = "34020000001320000001".parse().unwrap();
        for (kind, cmd, event) in [
            (SubscriptionKind::Catalog, "Catalog", "Catalog"),
            (SubscriptionKind::Alarm, "Alarm", "presence"),
            (SubscriptionKind::Position, "MobilePosition", "presence"),
        ] {
            let q = query(kind, 7, dev);
            let xml = q.to_xml();
            assert!(xml.contains(&format!("<CmdType>{cmd}</CmdType>")), "{xml}");
            assert!(xml.starts_with("<Query>"), "{xml}");
            assert!(
                xml.contains("<SN>7</SN>") && xml.contains(dev.as_str()),
                "{xml}"
            );
            assert_eq!(event_header(kind), event);
        }
    }
}
