//! SUBSCRIBE from a parent or upper platform (RFC 6665 as GB/T 28181
//! uses it), sans-IO: Catalog, Alarm and MobilePosition subscriptions are
//! accepted with a 200 and an immediate NOTIFY, refreshed in their dialog,
//! ended by `Expires: 0` or by their expiry. While a parent holds a
//! subscription, its events reach it as in-dialog NOTIFYs instead of
//! MESSAGEs: alarms and positions at once, catalog changes through the
//! parent's outbox (paced and retried as the MESSAGEs were).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use topology::GbId;

use super::call::{contact_uri, header_with_tag};
use super::{genuine_parent, user_of, Node, Token};
use crate::gb::manscdp::{self, Manscdp};
use crate::sip::agent::{DialogIds, MANSCDP};
use crate::sip::message::{Method, Request, Response};
use crate::sip::Peer;

/// What a subscription is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionKind {
    /// Catalog changes.
    Catalog,
    /// Alarms.
    Alarm,
    /// Mobile positions.
    Position,
}

impl SubscriptionKind {
    fn of(body: &Manscdp) -> Option<SubscriptionKind> {
        match body.cmd_type() {
            c if c.eq_ignore_ascii_case("Catalog") => Some(SubscriptionKind::Catalog),
            c if c.eq_ignore_ascii_case("Alarm") => Some(SubscriptionKind::Alarm),
            c if c.eq_ignore_ascii_case("MobilePosition") => Some(SubscriptionKind::Position),
            _ => None,
        }
    }
}

/// Longest subscription accepted; a longer `Expires` is cut to it.
const MAX_EXPIRES: u64 = 86_400;
/// Shortest; RFC 6665 lets us raise a shorter one.
const MIN_EXPIRES: u64 = 30;
/// `Expires` when the SUBSCRIBE has none.
const DEFAULT_EXPIRES: u64 = 3_600;

/// One accepted subscription: its dialog and its end.
#[derive(Debug, Clone)]
struct Subscription {
    parent: GbId,
    kind: SubscriptionKind,
    event: String,
    call_id: String,
    /// Our side (their To with our tag).
    local: String,
    /// Their side (their From).
    remote: String,
    target: String,
    peer: Peer,
    cseq: u32,
    until: Instant,
}

/// The subscriptions parents hold here, by dialog (Call-ID).
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    by_call: HashMap<String, Subscription>,
}

impl Subscriptions {
    fn find(&self, parent: GbId, kind: SubscriptionKind, now: Instant) -> Option<&Subscription> {
        self.by_call
            .values()
            .find(|s| s.parent == parent && s.kind == kind && s.until > now)
    }
}

impl Node {
    /// A SUBSCRIBE: from a parent (checked as its MESSAGEs are), to
    /// Catalog, Alarm or MobilePosition; anything else is refused with
    /// what to do.
    pub(super) fn handle_subscribe(&mut self, req: &Request, peer: Peer, now: Instant) {
        let sender = user_of(req.headers.get("From")).and_then(|u| GbId::parse(&u).ok());
        let parent = sender.and_then(|s| self.uplink_to(s).map(|u| (u.parent(), u.peer())));
        let Some((pid, ppeer)) = parent.filter(|(pid, ppeer)| genuine_parent(*pid, *ppeer, peer))
        else {
            // Devices and children do not subscribe to us; the same answer
            // whether the ID is unknown or not ours.
            return self.reply(req, 403, now);
        };
        let expires = req
            .headers
            .get("Expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_EXPIRES);
        let call_id = req.call_id().unwrap_or_default().to_owned();
        if let Some(sub) = self.subscriptions.by_call.get(&call_id).cloned() {
            return self.refresh_subscription(req, sub, expires, now);
        }
        let kind = match manscdp::parse(&req.body) {
            Ok((body, _)) => SubscriptionKind::of(&body),
            Err(_) => None,
        };
        let Some(kind) = kind else {
            let mut r = Response::to_request(req, 489, Some(&crate::sip::header::new_tag()));
            r.reason = "Bad Event".into();
            r.headers.push(
                "Warning",
                "399 gbgate \"subscribe with a MANSCDP Query of CmdType Catalog, Alarm or MobilePosition\"",
            );
            return self.respond(req, r, now);
        };
        if expires == 0 {
            // Fetch-like: nothing to keep.
            return self.reply(req, 200, now);
        }
        let expires = expires.clamp(MIN_EXPIRES, MAX_EXPIRES);
        let tag = crate::sip::header::new_tag();
        let local = header_with_tag(req.headers.get("To").unwrap_or_default(), &tag);
        let mut ok = Response::to_request(req, 200, Some(&tag));
        ok.headers.push("Expires", expires.to_string());
        ok.headers
            .push("Contact", format!("<{}>", self.agent.contact_uri()));
        self.respond(req, ok, now);
        // One subscription per parent and kind: a new one replaces the old.
        self.subscriptions
            .by_call
            .retain(|_, s| !(s.parent == pid && s.kind == kind));
        let sub = Subscription {
            parent: pid,
            kind,
            event: req
                .headers
                .get("Event")
                .unwrap_or("presence")
                .trim()
                .to_owned(),
            call_id: call_id.clone(),
            local,
            remote: req.headers.get("From").unwrap_or_default().to_owned(),
            target: contact_uri(req.headers.get("Contact"))
                .unwrap_or_else(|| format!("sip:{pid}@{}", ppeer.addr)),
            peer,
            cseq: 0,
            until: now + Duration::from_secs(expires),
        };
        tracing::info!(parent = %pid, ?kind, expires, "subscription accepted");
        metrics::counter!("gbgate_subscriptions_accepted_total").increment(1);
        self.subscriptions.by_call.insert(call_id.clone(), sub);
        // RFC 6665 §4.2.1: a NOTIFY at once, with the state.
        self.notify(&call_id, None, None, now);
    }

    fn refresh_subscription(
        &mut self,
        req: &Request,
        sub: Subscription,
        expires: u64,
        now: Instant,
    ) {
        let mut ok = Response::to_request(req, 200, None);
        if expires == 0 {
            ok.headers.push("Expires", "0");
            self.respond(req, ok, now);
            tracing::info!(parent = %sub.parent, kind = ?sub.kind, "subscription ended by the parent");
            self.notify(&sub.call_id, None, Some("terminated"), now);
            self.subscriptions.by_call.remove(&sub.call_id);
            return;
        }
        let expires = expires.clamp(MIN_EXPIRES, MAX_EXPIRES);
        ok.headers.push("Expires", expires.to_string());
        ok.headers
            .push("Contact", format!("<{}>", self.agent.contact_uri()));
        self.respond(req, ok, now);
        if let Some(s) = self.subscriptions.by_call.get_mut(&sub.call_id) {
            s.until = now + Duration::from_secs(expires);
        }
        self.notify(&sub.call_id, None, None, now);
    }

    /// Sends `body` to `parent`'s subscription of `kind`, if any; true if sent.
    pub(super) fn notify_parent(
        &mut self,
        parent: GbId,
        kind: SubscriptionKind,
        body: Bytes,
        now: Instant,
    ) -> bool {
        let Some(call_id) = self
            .subscriptions
            .find(parent, kind, now)
            .map(|s| s.call_id.clone())
        else {
            return false;
        };
        self.notify(&call_id, Some(body), None, now)
    }

    /// The NOTIFY carrying `body` in `parent`'s subscription of `kind`, and
    /// where it goes; `None` without one. The caller sends it (the outbox,
    /// with its own token, for catalog changes).
    pub(super) fn subscription_notify(
        &mut self,
        parent: GbId,
        kind: SubscriptionKind,
        body: Bytes,
        now: Instant,
    ) -> Option<(Request, Peer)> {
        let call_id = self.subscriptions.find(parent, kind, now)?.call_id.clone();
        self.notify_request(&call_id, Some(body), None, now)
    }

    /// The parent answered a NOTIFY of its `kind` subscription with 481:
    /// it no longer has it.
    pub(super) fn subscription_gone(&mut self, parent: GbId, kind: SubscriptionKind) {
        self.subscriptions
            .by_call
            .retain(|_, s| !(s.parent == parent && s.kind == kind));
    }

    /// An in-dialog NOTIFY with `body` if any and the subscription's state:
    /// `ended` (its `Subscription-State`) when it ends, else active with
    /// the seconds left.
    fn notify(
        &mut self,
        call_id: &str,
        body: Option<Bytes>,
        ended: Option<&str>,
        now: Instant,
    ) -> bool {
        let Some((req, peer)) = self.notify_request(call_id, body, ended, now) else {
            return false;
        };
        let token = Token::Notify(call_id.to_owned());
        self.send(req, peer, token, now)
    }

    fn notify_request(
        &mut self,
        call_id: &str,
        body: Option<Bytes>,
        ended: Option<&str>,
        now: Instant,
    ) -> Option<(Request, Peer)> {
        let s = self.subscriptions.by_call.get_mut(call_id)?;
        s.cseq += 1;
        let left = s.until.saturating_duration_since(now).as_secs();
        let state = match ended {
            Some(e) => e.to_owned(),
            None => format!("active;expires={left}"),
        };
        let ids = DialogIds {
            target: &s.target,
            local: &s.local,
            remote: &s.remote,
            call_id: &s.call_id,
            transport: s.peer.transport,
        };
        let mut req = self.agent.in_dialog(Method::Notify, &ids, s.cseq);
        req.headers.push("Event", s.event.clone());
        req.headers.push("Subscription-State", state);
        req.headers
            .push("Contact", format!("<{}>", self.agent.contact_uri()));
        if let Some(b) = body {
            req.headers.push("Content-Type", MANSCDP);
            req.body = b;
        }
        Some((req, s.peer))
    }

    /// The parent's answer to a NOTIFY: a 481 (or no answer) ends the
    /// subscription (RFC 6665 §4.2.2).
    pub(super) fn on_notify_answer(&mut self, call_id: &str, status: Option<u16>) {
        if matches!(status, None | Some(481) | Some(408)) {
            if let Some(s) = self.subscriptions.by_call.remove(call_id) {
                tracing::info!(parent = %s.parent, kind = ?s.kind, ?status, "subscription dropped: the parent does not take its NOTIFYs");
            }
        }
    }

    /// End expired subscriptions, telling each parent (RFC 6665 §4.2.2).
    pub(super) fn sweep_subscriptions(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .subscriptions
            .by_call
            .values()
            .filter(|s| s.until <= now)
            .map(|s| s.call_id.clone())
            .collect();
        for call_id in expired {
            self.notify(&call_id, None, Some("terminated;reason=timeout"), now);
            self.subscriptions.by_call.remove(&call_id);
        }
    }
}
