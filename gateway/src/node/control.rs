//! Device control (PTZ, presets, record, guard, reboot, home position)
//! travelling down the cascade, and the per-camera control lock, sans-IO.
//!
//! Every node on the way decides `ptz` for whoever asks (a department at
//! the API, or the parent, auditing the department it names) and forwards
//! the command to the registrant that owns the ID, with an SN of its own.
//! The lock lives at one place: the gbgate node nearest the camera (the
//! one whose owner registrant is not a gbgate child), because every
//! command to that camera, from any department at any tier, passes there.
//! Holders are subjects (`dept:police`; a parent that names nobody holds
//! it as `node:<id>`). A holder keeps the lock for `ptz_lock` after its
//! last command; a higher `ControlPriority` (a lower number) takes it over;
//! anyone else is told who holds it and for how long, in a
//! `Response/DeviceControl` with `Result` ERROR and the gbgate elements
//! `LockHolder` and `LockSecondsLeft`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use policy::{Action, Subject};
use topology::GbId;

use super::query::{ControlOutcome, Pending, QueryAnswer, Waiter};
use super::{Node, Token, MAX_FORWARDS};
use crate::gate::{node_subject, Ask, Verdict};
use crate::gb::manscdp::{ConfigAnswer, ControlResult, DeviceControl, Manscdp, PresetList};
use crate::settings::DEFAULT_PTZ_PRIORITY;

/// Who holds a camera's control, and until when.
#[derive(Debug, Clone)]
struct Lock {
    holder: String,
    priority: u8,
    until: Instant,
}

impl Lock {
    /// Who holds it and for how long from `now`, in whole seconds rounded up.
    fn held(&self, now: Instant) -> Held {
        let left = self.until.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Held {
            holder: self.holder.clone(),
            seconds_left: u32::try_from(secs).unwrap_or(u32::MAX),
        }
    }
}

/// A lock someone else holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The holder (`dept:police`, `node:<id>`).
    pub holder: String,
    /// How long it still lasts, rounded up to whole seconds.
    pub seconds_left: u32,
}

/// The control locks of the cameras this node is nearest to.
#[derive(Debug, Default)]
pub struct ControlLocks {
    held: HashMap<GbId, Lock>,
}

impl ControlLocks {
    /// Let `holder` (with `priority`, 1 highest) command `camera` now, and
    /// hold its lock for `hold` from now; or say who holds it. The holder
    /// itself always may (and so extends its lock); a higher priority takes
    /// the lock over; an expired lock is free.
    pub fn claim(
        &mut self,
        camera: GbId,
        holder: &str,
        priority: u8,
        hold: Duration,
        now: Instant,
    ) -> Result<(), Held> {
        if let Some(l) = self.held.get(&camera) {
            let free = l.until <= now || l.holder == holder || priority < l.priority;
            if !free {
                return Err(l.held(now));
            }
        }
        self.held.insert(
            camera,
            Lock {
                holder: holder.to_owned(),
                priority,
                until: now + hold,
            },
        );
        Ok(())
    }

    /// The holder of `camera`'s lock and how long it lasts, if held.
    pub fn holder(&self, camera: &GbId, now: Instant) -> Option<Held> {
        Some(self.held.get(camera).filter(|l| l.until > now)?.held(now))
    }

    /// Forget expired locks.
    pub fn sweep(&mut self, now: Instant) {
        self.held.retain(|_, l| l.until > now);
    }

    /// Locks held now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when no lock is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

impl Node {
    /// The `ControlPriority` this node gives `who`'s commands.
    pub(super) fn ptz_priority(&self, who: &Subject) -> u8 {
        self.settings
            .ptz_priority
            .get(&who.to_string())
            .copied()
            .unwrap_or(DEFAULT_PTZ_PRIORITY)
    }

    /// Sends `control` (its SN replaced by ours) to `owner` for `by`,
    /// claiming the camera's lock first when this node is the nearest
    /// gbgate node; `waiter` hears the outcome.
    pub(super) fn route_control(
        &mut self,
        owner: GbId,
        control: DeviceControl,
        by: &Subject,
        waiter: Waiter,
        now: Instant,
    ) {
        let device_id = control.device_id.clone();
        let lock_here = !self.identity.children.contains_key(&owner);
        if lock_here {
            let priority = control.priority.unwrap_or(DEFAULT_PTZ_PRIORITY);
            let camera = GbId::parse(&device_id).ok();
            let claim = camera.map(|c| {
                self.locks
                    .claim(c, &by.to_string(), priority, self.settings.ptz_lock, now)
            });
            if let (Some(camera), Some(Err(held))) = (camera, claim) {
                tracing::info!(%camera, who = %by, holder = %held.holder, left_s = held.seconds_left, "PTZ refused: another holds the control lock");
                metrics::counter!("gbgate_ptz_lock_refusals_total").increment(1);
                let ask = Ask {
                    who: by.clone(),
                    on_behalf_of: None,
                    channel: camera,
                    action: Action::Ptz,
                };
                let verdict = Verdict {
                    allowed: false,
                    rule: None,
                    reason: format!(
                        "control lock held by {} for {} s more",
                        held.holder, held.seconds_left
                    ),
                };
                self.audit_decision(&ask, &verdict, self.wall(now));
                let outcome = ControlOutcome::Locked {
                    holder: held.holder,
                    seconds_left: held.seconds_left,
                };
                return self.deliver(waiter, QueryAnswer::Control { device_id, outcome }, now);
            }
        }
        if self.queries.pending.len() >= MAX_FORWARDS {
            tracing::warn!(
                limit = MAX_FORWARDS,
                "too many device queries pending; refusing"
            );
            let outcome = ControlOutcome::Undelivered(503);
            return self.deliver(waiter, QueryAnswer::Control { device_id, outcome }, now);
        }
        let sn = self.next_sn();
        let done_on_accept = lock_here && control.command.unanswered();
        metrics::counter!("gbgate_device_controls_sent_total").increment(1);
        let msg = Manscdp::DeviceControl(DeviceControl { sn, ..control });
        if !self.send_to_registrant_for(owner, &msg, Token::Control(owner, sn), Some(by), now) {
            let outcome = ControlOutcome::Undelivered(503);
            return self.deliver(waiter, QueryAnswer::Control { device_id, outcome }, now);
        }
        self.queries.pending.insert(
            (owner, sn),
            Pending {
                waiter,
                at: now,
                records: None,
                control: Some((device_id, done_on_accept)),
            },
        );
    }

    /// The SIP answer to a DeviceControl MESSAGE we sent: a refusal ends
    /// the command; a 2xx ends it where no `Response` is to come (a PTZ
    /// command at the lock's node); `None` is a timeout.
    pub(super) fn on_control_answer(
        &mut self,
        owner: GbId,
        sn: u32,
        status: Option<u16>,
        now: Instant,
    ) {
        let key = (owner, sn);
        let Some((device_id, done_on_accept)) = self
            .queries
            .pending
            .get(&key)
            .and_then(|p| p.control.clone())
        else {
            return;
        };
        let outcome = match status {
            Some(200..=299) if done_on_accept => ControlOutcome::Done,
            Some(200..=299) => return,
            Some(s) => {
                tracing::warn!(%owner, status = s, "device control refused");
                ControlOutcome::Undelivered(s)
            }
            None => {
                tracing::warn!(%owner, "device control unanswered");
                ControlOutcome::Undelivered(408)
            }
        };
        if let Some(p) = self.queries.pending.remove(&key) {
            self.deliver(p.waiter, QueryAnswer::Control { device_id, outcome }, now);
        }
    }

    /// A parent's DeviceControl: decided (`ptz`, for the department the
    /// parent names, audited), then routed down. Refused, unknown and
    /// offline IDs all get the same `ERROR`.
    pub(super) fn parent_control(
        &mut self,
        parent: GbId,
        on_behalf_of: Option<Subject>,
        control: DeviceControl,
        now: Instant,
    ) {
        let requester_sn = control.sn;
        let error = |c: &DeviceControl| {
            Manscdp::DeviceControlResponse(ControlResult {
                sn: requester_sn,
                device_id: c.device_id.clone(),
                result: "ERROR".into(),
                ..ControlResult::default()
            })
        };
        let Ok(channel) = GbId::parse(&control.device_id) else {
            return self.answer_requester(parent, &error(&control), now);
        };
        let ask = Ask {
            who: node_subject(parent),
            on_behalf_of: on_behalf_of.clone(),
            channel,
            action: Action::Ptz,
        };
        let owner = self.owner_below(channel.as_str());
        let allowed = self.authorize(&ask, now).allowed;
        let Some(owner) = owner.filter(|_| allowed) else {
            return self.answer_requester(parent, &error(&control), now);
        };
        let by = on_behalf_of.unwrap_or(ask.who);
        let waiter = Waiter::Peer {
            requester: parent,
            sn: requester_sn,
        };
        self.route_control(owner, control, &by, waiter, now);
    }

    /// A parent's PresetQuery or ConfigDownload: decided (`ptz`), then
    /// asked of the owner. What it may not see gets the answer an unknown
    /// ID gets (no presets; a configuration with `Result` ERROR); this
    /// node answers its own configuration itself.
    pub(super) fn parent_ptz_query(&mut self, parent: GbId, query: Manscdp, now: Instant) {
        let (sn, device_id) = (query.sn(), query.device_id().to_owned());
        let own = device_id == self.identity.id.as_str();
        let nothing = match &query {
            Manscdp::ConfigQuery(_) if own => Manscdp::ConfigResponse(self.own_config(sn)),
            Manscdp::ConfigQuery(_) => Manscdp::ConfigResponse(ConfigAnswer {
                sn,
                device_id: device_id.clone(),
                result: "ERROR".into(),
                ..ConfigAnswer::default()
            }),
            _ => Manscdp::PresetQueryResponse(PresetList {
                sn,
                device_id: device_id.clone(),
                items: Vec::new(),
            }),
        };
        let allowed = own || self.parent_may(parent, &device_id, Action::Ptz, now);
        let owner = self.owner_below(&device_id);
        let Some(owner) = owner.filter(|_| allowed) else {
            return self.answer_requester(parent, &nothing, now);
        };
        let waiter = Waiter::Peer {
            requester: parent,
            sn,
        };
        self.forward_to_owner(owner, query, waiter, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam() -> GbId {
        GbId::parse("35010200001320000101").unwrap()
    }

    #[test]
    fn the_holder_keeps_it_others_wait_a_higher_priority_takes_it() {
        let mut locks = ControlLocks::default();
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        assert_eq!(locks.claim(cam(), "dept:traffic", 5, hold, t0), Ok(()));
        // Police at the same priority waits, told who and how long.
        let held = locks
            .claim(
                cam(),
                "dept:police",
                5,
                hold,
                t0 + Duration::from_millis(10_500),
            )
            .unwrap_err();
        assert_eq!(
            held,
            Held {
                holder: "dept:traffic".into(),
                seconds_left: 20
            }
        );
        // Each command of the holder extends its lock.
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(locks.claim(cam(), "dept:traffic", 5, hold, t1), Ok(()));
        assert!(locks
            .claim(cam(), "dept:police", 5, hold, t0 + Duration::from_secs(40))
            .is_err());
        // After the holder's last command plus the hold, it is free.
        assert_eq!(
            locks.claim(cam(), "dept:police", 5, hold, t1 + hold),
            Ok(())
        );
        // A higher priority (lower number) takes it over at once.
        let t2 = t1 + hold + Duration::from_secs(1);
        assert_eq!(locks.claim(cam(), "dept:chief", 1, hold, t2), Ok(()));
        assert_eq!(locks.holder(&cam(), t2).unwrap().holder, "dept:chief");
        // A lower one does not.
        assert!(locks.claim(cam(), "dept:police", 5, hold, t2).is_err());
        locks.sweep(t2 + hold);
        assert!(locks.is_empty());
    }
}
