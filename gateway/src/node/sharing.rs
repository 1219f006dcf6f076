//! Sharing at the node's boundary: requests that cross the node pass the
//! [`Gate`]; each decision becomes an audit record on the node's output
//! queue ([`Node::poll_output`]), beside its transmits and call events; the
//! catalog each parent sees is filtered by what the policy shares with it;
//! a new policy is pushed up as ADD/DEL and ends the calls it revokes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use policy::audit::{AuditEntry, AuditKind, Head};
use policy::{Action, Policy, Subject};
use topology::GbId;

use super::Node;
use crate::catalog::event;
use crate::catalog::tree::{Branch, TreeQuery};
use crate::gate::{node_subject, Ask, Gate, Verdict};
use crate::gb::manscdp::CatalogItem;

/// What leaves the node besides SIP transmits, call events and query
/// answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// A record for the audit store: a decision, a session's start or end,
    /// a policy change.
    Audit(AuditEntry),
    /// A child node reported a new audit head with its keepalive: record it
    /// ([`policy::audit::AuditStore::record_child_head`]), so `gbgate audit
    /// verify --against-parent` can tell if the child rewrites its history.
    /// Only changes leave: the same head again is not repeated.
    ChildHead {
        /// The child node.
        child: GbId,
        /// The head it reported.
        head: Head,
        /// When it reported it (ms since the Unix epoch).
        at_ms: u64,
    },
    /// A channel went ON or OFF in this node's catalog: the availability
    /// history (only while [`Node::keep_status_history`] is on).
    Status(policy::audit::StatusChange),
}

/// Milliseconds since the Unix epoch, as the audit stores time.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How far up the catalog tree ancestors are collected.
const MAX_DEPTH: usize = 16;

impl Node {
    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The gate in force.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Wall-clock time at `now`, from the clock reading taken when the
    /// node was made, so virtual time in tests moves it too.
    pub fn wall(&self, now: Instant) -> SystemTime {
        let (base_instant, base_wall) = self.wall_base;
        base_wall + now.saturating_duration_since(base_instant)
    }

    /// `id`'s ancestors in the catalog tree (its device, business group,
    /// virtual organisation…), nearest first, up to this node.
    pub fn ancestors(&self, id: &GbId) -> Vec<GbId> {
        let mut out = Vec::new();
        let mut at = self.catalog.parent_of(id.as_str());
        while let Some(p) = at {
            let Ok(pid) = GbId::parse(p) else { break };
            if pid == self.identity.id || out.len() >= MAX_DEPTH || out.contains(&pid) {
                break;
            }
            out.push(pid);
            at = self.catalog.parent_of(p);
        }
        out
    }

    /// Whether the audit store took the last records. While it does not,
    /// sessions are refused: nothing is served unaudited.
    pub fn set_audit_healthy(&mut self, ok: bool) {
        if self.audit_healthy != ok {
            tracing::warn!(audit_ok = ok, "audit store state changed");
        }
        self.audit_healthy = ok;
    }

    /// This node's latest committed audit head (from the audit writer):
    /// every uplink's later keepalives carry it, so each parent records it.
    pub fn set_audit_head(&mut self, head: Head) {
        self.audit_head = Some(head);
        for u in &mut self.uplinks {
            u.set_audit_head(head);
        }
    }

    /// For each of `channels`, the departments of the policy in force that
    /// may see it (`dept:<name>`); without a policy, everyone: `all`.
    pub fn departments_seeing(&self, channels: &[String], now: Instant) -> Vec<Vec<String>> {
        let Some(policy) = self.gate.policy() else {
            return channels.iter().map(|_| vec!["all".to_owned()]).collect();
        };
        let depts: Vec<&Subject> = policy
            .subjects()
            .iter()
            .filter(|s| matches!(s, Subject::Dept(_)))
            .collect();
        let wall = self.wall(now);
        channels
            .iter()
            .map(|c| match GbId::parse(c) {
                Ok(id) => {
                    let ancestors = self.ancestors(&id);
                    depts
                        .iter()
                        .filter(|d| self.gate.shows(d, &id, &ancestors, wall))
                        .map(|d| d.to_string())
                        .collect()
                }
                Err(_) => Vec::new(),
            })
            .collect()
    }

    /// Record every channel's ON/OFF/VLOST changes as [`Output::Status`] (the
    /// runtime turns it on when it has a store to write them to).
    pub fn keep_status_history(&mut self, on: bool) {
        self.status_history = on;
    }

    /// The status changes in `events` (catalog change events) as
    /// [`Output::Status`], for channels (131, and IPCs listing no channel
    /// of their own).
    pub(super) fn record_status(&mut self, events: &[CatalogItem], now: Instant) {
        if !self.status_history {
            return;
        }
        let at_ms = epoch_ms(self.wall(now));
        for item in events {
            let Ok(id) = GbId::parse(&item.device_id) else {
                continue;
            };
            if !self.catalog.is_channel(id) {
                continue;
            }
            let (online, intact) = match item.event.as_deref() {
                Some(event::ON) => (true, true),
                Some(event::VLOST | event::DEFECT) => (true, false),
                Some(event::ADD | event::UPDATE) => {
                    let on = item.status.as_deref() == Some("ON");
                    (on, on && !self.catalog.video_lost(id))
                }
                Some(_) => (false, false),
                None => continue,
            };
            let via = self
                .catalog
                .source_of(id.as_str())
                .map(|s| s.to_string())
                .unwrap_or_default();
            self.outputs
                .push_back(Output::Status(policy::audit::StatusChange {
                    at_ms,
                    channel: id.to_string(),
                    online,
                    via,
                    intact: Some(intact),
                }));
        }
    }

    /// The audit head this node reports to its parents, once known.
    pub fn audit_head(&self) -> Option<Head> {
        self.audit_head
    }

    /// The last audit head `child` reported here, if any.
    pub fn child_head(&self, child: &GbId) -> Option<Head> {
        self.child_heads.get(child).copied()
    }

    /// Seed what `child` last reported (e.g. from the audit store at
    /// start), so a head that goes backwards across a restart of this
    /// node is still noticed. Emits nothing.
    pub fn remember_child_head(&mut self, child: GbId, head: Head) {
        self.child_heads.insert(child, head);
    }

    /// A keepalive from registrant `sender` (from its bound address)
    /// carried `head`. Child nodes' heads are recorded when they change; a
    /// head that goes backwards (a lower seq, or the same seq with another
    /// hash) means the child's history was cut or rewritten: it is logged
    /// as an error, counted, and recorded all the same.
    pub(super) fn on_child_head(&mut self, sender: GbId, head: Head, now: Instant) {
        let is_child = self
            .registry
            .get(&sender)
            .is_some_and(|r| r.kind == crate::registry::RegistrantKind::ChildNode);
        if !is_child {
            tracing::debug!(%sender, "an audit head from a registrant that is not a child node; ignored");
            return;
        }
        let last = self.child_heads.get(&sender).copied();
        if last == Some(head) {
            return;
        }
        if let Some(last) = last {
            if head.seq < last.seq || (head.seq == last.seq && head.hash != last.hash) {
                metrics::counter!("gbgate_audit_child_head_regressions_total").increment(1);
                tracing::error!(
                    child = %sender,
                    recorded = %last,
                    reported = %head,
                    "AUDIT HEAD WENT BACKWARDS: the child's audit history was cut or rewritten; check it with `gbgate audit verify --against-parent`"
                );
            }
        }
        self.child_heads.insert(sender, head);
        let at_ms = epoch_ms(self.wall(now));
        self.outputs.push_back(Output::ChildHead {
            child: sender,
            head,
            at_ms,
        });
    }

    /// The one decision call: decide `ask` and audit the decision.
    pub fn authorize(&mut self, ask: &Ask, now: Instant) -> Verdict {
        let wall = self.wall(now);
        let mut verdict = self.gate.decide(ask, &self.ancestors(&ask.channel), wall);
        if verdict.allowed && !self.audit_healthy && ask.action != Action::Catalog {
            verdict = Verdict {
                allowed: false,
                rule: None,
                reason: "the audit store is unavailable: no session is opened unaudited".into(),
            };
        }
        metrics::counter!(
            "gbgate_gate_decisions_total",
            "action" => ask.action.as_str(),
            "outcome" => if verdict.allowed { "allow" } else { "deny" }
        )
        .increment(1);
        if !verdict.allowed {
            tracing::info!(who = %ask.who, channel = %ask.channel, action = %ask.action, reason = %verdict.reason, "refused by the sharing policy");
        }
        self.audit_decision(ask, &verdict, wall);
        verdict
    }

    /// Record `verdict` on `ask` (only while a policy is in force: without
    /// one there is nothing decided to audit).
    pub(super) fn audit_decision(&mut self, ask: &Ask, verdict: &Verdict, at: SystemTime) {
        if !self.gate.enforcing() {
            return;
        }
        let entry = AuditEntry {
            at_ms: epoch_ms(at),
            node: self.identity.id.to_string(),
            kind: AuditKind::Decision,
            subject: ask.who.to_string(),
            on_behalf_of: ask.on_behalf_of.as_ref().map(ToString::to_string),
            object: ask.channel.to_string(),
            action: ask.action.to_string(),
            outcome: if verdict.allowed { "allow" } else { "deny" }.into(),
            rule: verdict.rule.clone(),
            reason: verdict.reason.clone(),
            session: None,
            duration_ms: None,
            bytes: None,
        };
        self.outputs.push_back(Output::Audit(entry));
    }

    /// True when `parent` may do `action` on `id` (a device or channel
    /// ID; the node itself is always visible to its parents). Audited.
    pub(super) fn parent_may(
        &mut self,
        parent: GbId,
        id: &str,
        action: Action,
        now: Instant,
    ) -> bool {
        let Ok(channel) = GbId::parse(id) else {
            return true; // not an ID: answered as unknown below
        };
        if channel == self.identity.id || !self.gate.enforcing() {
            return true;
        }
        let ask = Ask {
            who: node_subject(parent),
            on_behalf_of: None,
            channel,
            action,
        };
        self.authorize(&ask, now).allowed
    }

    /// One audit record for a whole catalog answer to `parent`: what was
    /// shared out of what exists.
    pub(super) fn audit_catalog_answer(
        &mut self,
        parent: GbId,
        shared: usize,
        total: usize,
        now: Instant,
    ) {
        let at = self.wall(now);
        let node = self.identity.id.to_string();
        self.audit(AuditEntry {
            at_ms: epoch_ms(at),
            node,
            kind: AuditKind::Decision,
            subject: node_subject(parent).to_string(),
            on_behalf_of: None,
            object: "catalog".into(),
            action: Action::Catalog.to_string(),
            outcome: "allow".into(),
            rule: None,
            reason: format!("catalog answered with {shared} of {total} entries"),
            session: None,
            duration_ms: None,
            bytes: None,
        });
    }

    /// Decide `ask` again for a session already open: nothing is audited
    /// while it stays allowed; a refusal is audited as the session's end.
    pub fn recheck(&mut self, ask: &Ask, now: Instant) -> Verdict {
        let wall = self.wall(now);
        let verdict = self.gate.decide(ask, &self.ancestors(&ask.channel), wall);
        if !verdict.allowed {
            let ended = Verdict {
                allowed: false,
                rule: verdict.rule.clone(),
                reason: format!("session ended: {}", verdict.reason),
            };
            self.audit_decision(ask, &ended, wall);
        }
        verdict
    }

    /// A page of the channels (video sources) `who` may see, by ID after
    /// `after`, and the ID to continue from. `who` is the deciding subject
    /// and the person (audited once per page); `None` sees everything.
    pub fn visible_channels(
        &mut self,
        who: Option<(Subject, Subject)>,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> (Vec<crate::catalog::Entry>, Option<String>) {
        let wall = self.wall(now);
        let mut ids: Vec<String> = Vec::new();
        let mut more = false;
        for gid in self.catalog.ids_after(after) {
            // What people watch: channels (an IPC lists its own under it).
            if gid.type_code() != topology::type_code::CAMERA {
                continue;
            }
            let shown = match &who {
                None => true,
                Some((subject, _)) => self.gate.shows(subject, &gid, &self.ancestors(&gid), wall),
            };
            if !shown {
                continue;
            }
            if ids.len() == limit {
                more = true;
                break;
            }
            ids.push(gid.to_string());
        }
        let next = if more { ids.last().cloned() } else { None };
        if let Some((subject, person)) = who {
            let node = self.identity.id.to_string();
            self.audit(AuditEntry {
                at_ms: epoch_ms(wall),
                node,
                kind: AuditKind::Decision,
                subject: subject.to_string(),
                on_behalf_of: Some(person.to_string()),
                object: "catalog".into(),
                action: Action::Catalog.to_string(),
                outcome: "allow".into(),
                rule: None,
                reason: format!(
                    "listed {} channels after {}",
                    ids.len(),
                    after.unwrap_or("the start")
                ),
                session: None,
                duration_ms: None,
                bytes: None,
            });
        }
        let entries = ids.iter().filter_map(|id| self.catalog.get(id)).collect();
        (entries, next)
    }

    /// A level of the catalog tree, or search hits, counting and listing
    /// only the cameras `who` may see (`None` sees everything). Audited
    /// once per call, as a page of the channel list is.
    pub fn tree(
        &mut self,
        who: Option<(Subject, Subject)>,
        query: &TreeQuery,
        now: Instant,
    ) -> Vec<Branch> {
        let wall = self.wall(now);
        let visible = |id: GbId| match &who {
            None => true,
            Some((subject, _)) => self.gate.shows(subject, &id, &self.ancestors(&id), wall),
        };
        let branches = match query {
            TreeQuery::Region(prefix) => self.catalog.region_children(prefix, visible),
            TreeQuery::Children(parent) => self.catalog.children_of(*parent, visible),
            TreeQuery::Search { text, limit } => self.catalog.search(text, *limit, visible),
        };
        if let Some((subject, person)) = who {
            self.audit(AuditEntry {
                at_ms: epoch_ms(wall),
                node: self.identity.id.to_string(),
                kind: AuditKind::Decision,
                subject: subject.to_string(),
                on_behalf_of: Some(person.to_string()),
                object: "catalog".into(),
                action: Action::Catalog.to_string(),
                outcome: "allow".into(),
                rule: None,
                reason: format!("tree {query}: {} branches", branches.len()),
                session: None,
                duration_ms: None,
                bytes: None,
            });
        }
        branches
    }

    /// Record a refused link attempt (audited whether or not a policy is
    /// in force: who tried to join the federation is always worth keeping).
    pub(super) fn link_refused(
        &mut self,
        from: std::net::SocketAddr,
        claimed: Option<GbId>,
        reason: String,
    ) {
        let entry = AuditEntry {
            at_ms: policy::audit::now_ms(),
            node: self.identity.id.to_string(),
            kind: policy::audit::AuditKind::Decision,
            subject: match claimed {
                Some(id) => node_subject(id).to_string(),
                None => format!("peer:{from}"),
            },
            on_behalf_of: None,
            object: self.identity.id.to_string(),
            action: "link".into(),
            outcome: "deny".into(),
            rule: None,
            reason: format!("QUIC link from {from} refused: {reason}"),
            session: None,
            duration_ms: None,
            bytes: None,
        };
        self.outputs.push_back(Output::Audit(entry));
    }

    /// Queue an audit record made elsewhere (session ends, catalog answers).
    pub fn audit(&mut self, entry: AuditEntry) {
        if self.gate.enforcing() {
            self.outputs.push_back(Output::Audit(entry));
        }
    }

    /// The subset of `items` (entries or change events) that `parent` may
    /// see.
    pub(super) fn shared_with(
        &self,
        parent: GbId,
        items: Vec<CatalogItem>,
        now: Instant,
    ) -> Vec<CatalogItem> {
        if !self.gate.enforcing() {
            return items;
        }
        let who = node_subject(parent);
        let wall = self.wall(now);
        let shown: Vec<CatalogItem> = items
            .into_iter()
            .filter(|i| self.item_shown(&self.gate, &who, &i.device_id, wall))
            .collect();
        self.with_paths(&who, shown, wall)
    }

    /// The IDs of the whole catalog that `parent` may see, in order, with
    /// the ancestors a shared entry needs listed before it (as
    /// [`Self::with_paths`] does for items): what a catalog answer lists.
    pub(super) fn shared_ids(&self, parent: GbId, now: Instant) -> Vec<GbId> {
        let all = self.catalog.ids_after(None);
        if !self.gate.enforcing() {
            return all.collect();
        }
        let who = node_subject(parent);
        let wall = self.wall(now);
        // Ancestors listed for the entries below them (never shown by
        // themselves, so never listed in their own turn).
        let mut listed: std::collections::HashSet<GbId> = std::collections::HashSet::new();
        let mut out = Vec::new();
        for id in all {
            let ancestors = self.ancestors(&id);
            if !self.gate.shows(&who, &id, &ancestors, wall) {
                continue;
            }
            for a in self.hidden_path(&who, &ancestors, wall) {
                if !listed.contains(&a) && self.catalog.contains(a) {
                    listed.insert(a);
                    out.push(a);
                }
            }
            out.push(id);
        }
        out
    }

    /// Of `ancestors` (nearest first, as [`Self::ancestors`] gives them),
    /// those the policy governs but does not show `who` by themselves,
    /// farthest first: the path an entry shown below them needs listed.
    fn hidden_path<'a>(
        &'a self,
        who: &'a Subject,
        ancestors: &'a [GbId],
        wall: SystemTime,
    ) -> impl Iterator<Item = GbId> + 'a {
        ancestors
            .iter()
            .enumerate()
            .rev()
            .filter(move |(k, a)| {
                crate::gate::in_catalog_policy(a)
                    && !self.gate.shows(who, a, &ancestors[k + 1..], wall)
            })
            .map(|(_, a)| *a)
    }

    /// `items` with the governed ancestors they need that the policy does
    /// not share by themselves (an IPC, 132, above its shared channel):
    /// those are listed because something below them is. They come first,
    /// farthest first, with the event of the item that needs them.
    fn with_paths(
        &self,
        who: &Subject,
        items: Vec<CatalogItem>,
        wall: SystemTime,
    ) -> Vec<CatalogItem> {
        let mut present: std::collections::HashSet<String> =
            items.iter().map(|i| i.device_id.clone()).collect();
        let mut extra = Vec::new();
        for i in &items {
            if !matches!(i.event.as_deref(), None | Some(event::ADD)) {
                continue;
            }
            let Ok(id) = GbId::parse(&i.device_id) else {
                continue;
            };
            let ancestors = self.ancestors(&id);
            for a in self.hidden_path(who, &ancestors, wall) {
                if present.contains(a.as_str()) {
                    continue;
                }
                if let Some(mut item) = self.catalog.item(a) {
                    item.event.clone_from(&i.event);
                    present.insert(item.device_id.clone());
                    extra.push(item);
                }
            }
        }
        if extra.is_empty() {
            return items;
        }
        extra.extend(items);
        extra
    }

    fn item_shown(&self, gate: &Gate, who: &Subject, id: &str, wall: SystemTime) -> bool {
        match GbId::parse(id) {
            Ok(gid) => gate.shows(who, &gid, &self.ancestors(&gid), wall),
            // Region codes (2–8 digits) are structure.
            Err(_) => true,
        }
    }

    /// Put `policy` in force (`None`: share everything). Parents are told
    /// what they gained and lost as ADD/DEL, and calls from parents that
    /// the new policy no longer allows end now, with the reason in a BYE
    /// and in the audit.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>, now: Instant) {
        let old = std::mem::replace(&mut self.gate, Gate::new(policy));
        let wall = self.wall(now);
        let rules = self.gate.policy().map_or(0, |p| p.rule_count());
        tracing::info!(rules, "sharing policy in force");
        self.audit(AuditEntry {
            at_ms: epoch_ms(wall),
            node: self.identity.id.to_string(),
            kind: AuditKind::PolicyReload,
            subject: format!("node:{}", self.identity.id),
            on_behalf_of: None,
            object: "policy".into(),
            action: "reload".into(),
            outcome: "ok".into(),
            rule: None,
            reason: format!("{rules} rules in force"),
            session: None,
            duration_ms: None,
            bytes: None,
        });
        self.push_policy_change(&old, wall, wall, now);
        self.policy_seen_at = wall;
        self.revoke_calls(now);
        self.schedule_expiry(now);
    }

    /// A grant or deny of the policy in force expired: parents lose (or
    /// regain) what it covered, and calls it no longer allows end.
    pub(super) fn policy_time_passed(&mut self, now: Instant) {
        let wall = self.wall(now);
        let gate = self.gate.clone();
        tracing::info!("a policy rule expired; re-checking what is shared");
        self.push_policy_change(&gate, self.policy_seen_at, wall, now);
        self.policy_seen_at = wall;
        self.revoke_calls(now);
        self.schedule_expiry(now);
    }

    fn schedule_expiry(&mut self, now: Instant) {
        let wall = self.wall(now);
        self.policy_expiry = self
            .gate
            .policy()
            .and_then(|p| p.next_expiry(wall))
            .and_then(|at| at.duration_since(wall).ok())
            .map(|d| now + d);
    }

    /// Work out what each registered parent saw under `old` at `old_wall`
    /// and sees under the gate in force at `new_wall`, and push the
    /// difference.
    fn push_policy_change(
        &mut self,
        old: &Gate,
        old_wall: SystemTime,
        new_wall: SystemTime,
        now: Instant,
    ) {
        let parents: Vec<GbId> = self
            .uplinks
            .iter()
            .filter(|u| u.takes_changes())
            .map(|u| u.parent())
            .collect();
        for parent in parents {
            let who = node_subject(parent);
            let mut changes = Vec::new();
            for id in self.catalog.ids_after(None) {
                if !crate::gate::in_catalog_policy(&id) {
                    continue;
                }
                let ancestors = self.ancestors(&id);
                let before = old.shows(&who, &id, &ancestors, old_wall);
                let after = self.gate.shows(&who, &id, &ancestors, new_wall);
                if before && !after {
                    changes.push(CatalogItem {
                        device_id: id.to_string(),
                        event: Some(event::DEL.into()),
                        ..CatalogItem::default()
                    });
                } else if after && !before {
                    // Unpacked only when it is news to the parent.
                    if let Some(mut item) = self.catalog.item(id) {
                        item.event = Some(event::ADD.into());
                        changes.push(item);
                    }
                }
            }
            let changes = self.with_paths(&who, changes, new_wall);
            if !changes.is_empty() {
                tracing::info!(%parent, changes = changes.len(), "policy change pushed to the parent");
                self.push_up(parent, changes, true, now);
            }
        }
    }

    /// End every call from a parent that the gate no longer allows.
    fn revoke_calls(&mut self, now: Instant) {
        for (call, parent, channel, playback) in self.incoming_calls() {
            let ask = Ask {
                who: node_subject(parent),
                on_behalf_of: None,
                channel,
                action: if playback {
                    Action::Playback
                } else {
                    Action::Live
                },
            };
            let verdict = self.authorize(&ask, now);
            if verdict.allowed {
                continue;
            }
            let reason = format!("sharing revoked: {}", verdict.reason);
            tracing::info!(call, %channel, %parent, %reason, "ending a call the policy no longer allows");
            self.end_incoming(call, 403, reason, now);
        }
    }
}
