//! casbin itself, running the shipped `model.conf` on the same rules: the
//! reference the compiled index is tested and benchmarked against.
//!
//! Not for the hot path: casbin evaluates the matcher for every rule.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use casbin::function_map::key_match;
use casbin::{CoreApi, DefaultModel, DefaultRoleManager, Enforcer, MemoryAdapter, RoleManager};
use parking_lot::RwLock;

use crate::index::{Policy, Request};
use crate::rules::{format_utc, unix_floor, GroupMember, RuleKind};
use crate::MODEL;

/// A role name every requested channel is linked to for the request, so the
/// channel is a node of the role graph even without ancestors: casbin's role
/// manager only applies `keyMatch` patterns in full to names it holds.
const CHANNEL_ANCHOR: &str = "oracle:channel";

/// casbin's default limit on role hierarchy depth is 10; ours has none.
const MAX_DEPTH: usize = 10_000;

/// Why the oracle could not be built or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// casbin refused the model, a rule or a request.
    #[error("casbin: {0}")]
    Casbin(#[from] casbin::Error),
}

/// A casbin Enforcer loaded with `model.conf` and a policy's rules.
pub struct Oracle {
    enforcer: Enforcer,
}

impl std::fmt::Debug for Oracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oracle").finish_non_exhaustive()
    }
}

/// The policy's rules as casbin rows, grouped by `(section, type)`.
fn rows(policy: &Policy) -> [(&'static str, &'static str, Vec<Vec<String>>); 3] {
    let (mut p, mut g, mut g2) = (Vec::new(), Vec::new(), Vec::new());
    for rule in policy.rules() {
        match &rule.kind {
            RuleKind::Grant(gr) => p.push(vec![
                gr.subject.to_string(),
                gr.object.to_string(),
                gr.action.to_string(),
                gr.effect.to_string(),
                gr.expires.map(|e| e.to_string()).unwrap_or_default(),
            ]),
            RuleKind::Member { member, of } => g.push(vec![member.to_string(), of.to_string()]),
            RuleKind::GroupMember { member, group } => {
                let group = format!("group:{group}");
                match member {
                    GroupMember::Id(id) => {
                        // The channel with this ID, and channels that have it as an ancestor.
                        g2.push(vec![id.as_str().to_owned(), group.clone()]);
                        g2.push(vec![format!("group:{}", id.as_str()), group]);
                    }
                    GroupMember::Prefix(_) => g2.push(vec![member.to_string(), group]),
                }
            }
        }
    }
    // MemoryAdapter refuses a whole batch that repeats a row it holds.
    for rows in [&mut p, &mut g, &mut g2] {
        let mut seen = HashSet::new();
        rows.retain(|r| seen.insert(r.clone()));
    }
    [("p", "p", p), ("g", "g", g), ("g", "g2", g2)]
}

impl Oracle {
    /// Builds an Enforcer from `model.conf` and the policy's rules.
    pub fn new(policy: &Policy) -> Result<Oracle, OracleError> {
        let rows = rows(policy);
        let mut enforcer = futures_executor::block_on(async {
            let model = DefaultModel::from_str(MODEL).await?;
            let mut adapter = MemoryAdapter::default();
            for (sec, ptype, rows) in rows {
                if !rows.is_empty() {
                    casbin::Adapter::add_policies(&mut adapter, sec, ptype, rows).await?;
                }
            }
            Enforcer::new(model, adapter).await
        })?;
        let mut rm = DefaultRoleManager::new(MAX_DEPTH);
        // Set before the links are built: pattern edges are made when a name is added.
        rm.matching_fn(Some(key_match), None);
        enforcer.set_role_manager(Arc::new(RwLock::new(rm)))?;
        Ok(Oracle { enforcer })
    }

    /// casbin's answer to `req` at `now`: true is allow.
    ///
    /// The ancestors are added to the role graph as `<channel> -> group:<id>`
    /// for the duration of the call, hence `&mut self`. `now` must fall in
    /// the years 0–9999 (it is compared as `YYYY-MM-DDTHH:MM:SSZ` text).
    pub fn enforce(&mut self, req: &Request<'_>, now: SystemTime) -> Result<bool, OracleError> {
        let channel = req.channel.as_str();
        let links: Vec<String> = std::iter::once(CHANNEL_ANCHOR.to_owned())
            .chain(
                req.ancestors
                    .iter()
                    .map(|a| format!("group:{}", a.as_str())),
            )
            .collect();
        let rm = self.enforcer.get_role_manager();
        for l in &links {
            rm.write().add_link(channel, l, None);
        }
        let answer = self.enforcer.enforce((
            req.subject.to_string(),
            channel,
            req.action.as_str(),
            format_utc(unix_floor(now)),
        ));
        let mut unlinked = Ok(());
        for l in &links {
            // A repeated ancestor was linked once and is already gone: not an error.
            if let Err(e) = rm.write().delete_link(channel, l, None) {
                unlinked = Err(e);
            }
        }
        let answer = answer?;
        unlinked?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests;
