//! Access requests: how a department gets access it does not have. A
//! department asks (channels or a group, actions, a time window, a reason);
//! an admin approves, maybe narrowing it, or rejects. An approval becomes
//! time-limited `p` lines appended to the grants file, a policy file the
//! node watches like any other: the file stays the one source of truth for
//! who may do what, and the request store only keeps the paperwork.
//!
//! The store is one JSON file rewritten atomically (temp file, fsync,
//! rename, fsync of the directory) on every change. Requests are made by
//! people, so there are few (hundreds a year, not thousands a second), and a
//! file an admin can read, back up and diff beside the policy files is worth
//! more than a query language; a crash leaves the old file or the new one,
//! never a torn one. The store is written before the grants file (the
//! approval is the intent); grant lines carry a marker comment with the
//! request's ID, so writing them again after a crash in between finds the
//! marker and writes nothing twice.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use policy::audit::{AuditEntry, AuditKind};
use policy::{Action, Expiry, ObjectPattern, Policy};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::reload::{self, SharedStatus};
use crate::runtime::NodeHandle;

/// Pending requests a department may have at once.
pub const MAX_PENDING_PER_DEPT: usize = 20;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;
/// Most channels in one request.
pub const MAX_CHANNELS: usize = 100;
/// Longest time window a request may ask for (from now).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);
/// How often approvals whose window has begun are written out.
const ACTIVATE_EVERY: Duration = Duration::from_secs(1);

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for an admin.
    Pending,
    /// Approved: its grant lines are (or, before `from`, will be) in the
    /// grants file.
    Approved,
    /// Rejected, with the admin's reason.
    Rejected,
}

impl RequestState {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
        }
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "pending" => Ok(RequestState::Pending),
            "approved" => Ok(RequestState::Approved),
            "rejected" => Ok(RequestState::Rejected),
            _ => Err(Invalid::BadState { found: s.into() }),
        }
    }
}

/// Body of `POST /api/v1/access-requests`: what a department asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// 20-digit channel IDs (they need not be visible to the department yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Or a group: `group:<name>` (a `g2` group) or `group:<20-digit ID>`
    /// (a catalog group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// live, playback, download, catalog, ptz, talk.
    pub actions: Vec<String>,
    /// Start of the window, `YYYY-MM-DDTHH:MM:SSZ`; default: at approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the window, `YYYY-MM-DDTHH:MM:SSZ`, at most a year ahead.
    pub until: String,
    /// Why the department needs it.
    pub reason: String,
}

/// Body of `POST /api/v1/access-requests/{id}/approve`: optional narrowing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Grant only these of the requested channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Grant only these of the requested actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    /// End earlier than requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// Body of `POST /api/v1/access-requests/{id}/reject`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Why, for the department.
    pub reason: String,
}

/// What an approval grants (the request, maybe narrowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Granted {
    /// Channel IDs or one group, as written in rules.
    pub objects: Vec<String>,
    /// Action names.
    pub actions: Vec<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub until: String,
}

/// One access request as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessRequest {
    /// Its number, unique on this node.
    pub id: u64,
    /// pending, approved or rejected.
    pub state: RequestState,
    /// The department asking (`dept:<name>` in rules).
    pub dept: String,
    /// The person who asked.
    pub user: String,
    /// Channel IDs, or one `group:…`.
    pub objects: Vec<String>,
    /// Action names.
    pub actions: Vec<String>,
    /// Start of the window, if not at approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the window.
    pub until: String,
    /// Why.
    pub reason: String,
    /// When it was asked for.
    pub created_at: String,
    /// The admin who decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// The rejection's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// What an approval grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<Granted>,
    /// When the grant lines were written to the grants file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<String>,
}

/// Why a request, approval or rejection is refused as given (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Neither channels nor a group.
    #[error("name what you ask for: `channels` (20-digit IDs) or `group` (group:<name>)")]
    NoObject,
    /// Both channels and a group.
    #[error("ask for `channels` or a `group`, not both (make two requests)")]
    ChannelsAndGroup,
    /// A channel that is not a 20-digit ID.
    #[error("channel {found:?} is not a 20-digit ID")]
    BadChannel {
        /// What was sent.
        found: String,
    },
    /// Too many channels.
    #[error("{count} channels in one request; at most {MAX_CHANNELS} (ask for a group)")]
    TooManyChannels {
        /// How many were sent.
        count: usize,
    },
    /// A group that is not `group:<name>` or `group:<ID>`.
    #[error("group {found:?} is not group:<name> or group:<20-digit ID>")]
    BadGroup {
        /// What was sent.
        found: String,
    },
    /// A named group no `g2` line defines.
    #[error("{found} is not defined by any g2 line of this node's policy")]
    UnknownGroup {
        /// The group.
        found: String,
    },
    /// No actions.
    #[error("name the actions: live, playback, download, catalog, ptz or talk")]
    NoActions,
    /// An unknown action.
    #[error("action {found:?} is not one of live, playback, download, catalog, ptz, talk")]
    BadAction {
        /// What was sent.
        found: String,
    },
    /// A time not in the rule format.
    #[error("{field} {found:?} is not a UTC time YYYY-MM-DDTHH:MM:SSZ")]
    BadTime {
        /// `from` or `until`.
        field: &'static str,
        /// What was sent.
        found: String,
    },
    /// `until` not in the future.
    #[error("until {until} is not in the future")]
    UntilPast {
        /// The time sent.
        until: String,
    },
    /// `until` too far ahead.
    #[error("until {until} is more than {} days ahead; ask again before it ends", MAX_WINDOW.as_secs() / 86_400)]
    WindowTooLong {
        /// The time sent.
        until: String,
    },
    /// `from` not before `until`.
    #[error("from {from} is not before until {until}")]
    FromAfterUntil {
        /// Start.
        from: String,
        /// End.
        until: String,
    },
    /// An empty reason.
    #[error("give a reason: what the access is for")]
    EmptyReason,
    /// A reason too long.
    #[error("the reason is {len} bytes; at most {MAX_REASON_BYTES}")]
    ReasonTooLong {
        /// Its length.
        len: usize,
    },
    /// An approval that widens the request.
    #[error("an approval may only narrow the request: {what} was not requested")]
    NotRequested {
        /// The channel or action.
        what: String,
    },
    /// An approval that narrows a group to channels.
    #[error("this request is for {group}; it cannot be narrowed to channels")]
    GroupNotNarrowable {
        /// The group.
        group: String,
    },
    /// An approval whose narrowing leaves nothing.
    #[error("the approval leaves no {what} to grant")]
    NothingLeft {
        /// channels or actions.
        what: &'static str,
    },
    /// An approval's `until` later than requested.
    #[error(
        "until {until} is later than the requested {requested}; an approval may only end earlier"
    )]
    UntilLater {
        /// Sent.
        until: String,
        /// Requested.
        requested: String,
    },
    /// A bad `state` filter.
    #[error("state {found:?} is not pending, approved, rejected or all")]
    BadState {
        /// What was sent.
        found: String,
    },
}

/// Why an access-request operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The input is wrong (400).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such request, or not the caller's (404).
    #[error("access request {0} does not exist")]
    NotFound(u64),
    /// Already decided (409).
    #[error("access request {id} is already {state}; only a pending request can be decided")]
    NotPending {
        /// The request.
        id: u64,
        /// Its state.
        state: RequestState,
    },
    /// The department has too many pending requests (429).
    #[error("dept:{dept} already has {MAX_PENDING_PER_DEPT} pending access requests; wait for an admin to decide them")]
    TooManyPending {
        /// The department.
        dept: String,
    },
    /// A file could not be read or written (500).
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store file is not ours or was edited into nonsense.
    #[error("{}: not an access-request store: {message}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What serde said.
        message: String,
    },
    /// The grant lines would not validate with the policy files (500).
    #[error("the grant would make the policy invalid, nothing was written:\n{0}")]
    Policy(String),
    /// The node is shutting down (503).
    #[error("the node is shutting down")]
    Stopped,
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> AccessError + '_ {
    move |source| AccessError::Io {
        file: file.to_owned(),
        source,
    }
}

/// `now` in whole seconds since the Unix epoch.
fn unix_secs(now: SystemTime) -> i64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `now` written as rules write times (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn stamp(now: SystemTime) -> String {
    Expiry::from_unix(unix_secs(now)).map_or_else(String::new, |e| e.to_string())
}

fn parse_time(field: &'static str, s: &str) -> Result<Expiry, Invalid> {
    s.parse().map_err(|_| Invalid::BadTime {
        field,
        found: s.into(),
    })
}

fn parse_actions(list: &[String]) -> Result<Vec<String>, Invalid> {
    let mut set = BTreeSet::new();
    for a in list {
        let action: Action = a
            .trim()
            .parse()
            .map_err(|_| Invalid::BadAction { found: a.clone() })?;
        set.insert(action);
    }
    if set.is_empty() {
        return Err(Invalid::NoActions);
    }
    Ok(set.into_iter().map(|a| a.as_str().to_owned()).collect())
}

fn parse_channels(list: &[String]) -> Result<Vec<String>, Invalid> {
    let mut set = BTreeSet::new();
    for c in list {
        match c.trim().parse::<ObjectPattern>() {
            Ok(ObjectPattern::Exact(id)) => set.insert(id.to_string()),
            _ => return Err(Invalid::BadChannel { found: c.clone() }),
        };
    }
    if set.len() > MAX_CHANNELS {
        return Err(Invalid::TooManyChannels { count: set.len() });
    }
    Ok(set.into_iter().collect())
}

/// Check `req` at `now`; the canonical request (sorted, deduplicated,
/// trimmed) with `dept`, `user` and a placeholder ID. Named groups are
/// checked against the policy in force by the caller ([`named_group`]).
pub fn validate(
    req: &NewRequest,
    dept: &str,
    user: &str,
    now: SystemTime,
) -> Result<AccessRequest, Invalid> {
    let objects = match (&req.channels[..], &req.group) {
        ([], None) => return Err(Invalid::NoObject),
        ([_, ..], Some(_)) => return Err(Invalid::ChannelsAndGroup),
        (list, None) => parse_channels(list)?,
        ([], Some(g)) => match g.trim().parse::<ObjectPattern>() {
            Ok(o @ (ObjectPattern::NamedGroup(_) | ObjectPattern::CatalogGroup(_))) => {
                vec![o.to_string()]
            }
            _ => return Err(Invalid::BadGroup { found: g.clone() }),
        },
    };
    let actions = parse_actions(&req.actions)?;
    let now_s = unix_secs(now);
    let until = parse_time("until", req.until.trim())?;
    if until.unix() <= now_s {
        return Err(Invalid::UntilPast {
            until: until.to_string(),
        });
    }
    let max = i64::try_from(MAX_WINDOW.as_secs()).unwrap_or(i64::MAX);
    if until.unix() - now_s > max {
        return Err(Invalid::WindowTooLong {
            until: until.to_string(),
        });
    }
    let from = match &req.from {
        Some(f) => {
            let f = parse_time("from", f.trim())?;
            if f >= until {
                return Err(Invalid::FromAfterUntil {
                    from: f.to_string(),
                    until: until.to_string(),
                });
            }
            // A start already passed is the same as none.
            (f.unix() > now_s).then(|| f.to_string())
        }
        None => None,
    };
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(Invalid::EmptyReason);
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(Invalid::ReasonTooLong { len: reason.len() });
    }
    Ok(AccessRequest {
        id: 0,
        state: RequestState::Pending,
        dept: dept.into(),
        user: user.into(),
        objects,
        actions,
        from,
        until: until.to_string(),
        reason: reason.into(),
        created_at: stamp(now),
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        granted: None,
        written_at: None,
    })
}

/// The named group `req` asks for, if any (`group:<name>`, not a catalog
/// group), to check against the policy in force.
pub fn named_group(req: &AccessRequest) -> Option<&str> {
    req.objects
        .first()
        .and_then(|o| match o.parse::<ObjectPattern>() {
            Ok(ObjectPattern::NamedGroup(_)) => Some(o.as_str()),
            _ => None,
        })
}

/// Whether `policy` defines the named group `group` (`group:<name>`).
pub fn group_defined(policy: &Policy, group: &str) -> bool {
    let name = group.strip_prefix("group:").unwrap_or(group);
    policy
        .rules()
        .iter()
        .any(|r| matches!(&r.kind, policy::RuleKind::GroupMember { group, .. } if group == name))
}

/// What `approval` grants of `req` at `now`: the request, narrowed.
pub fn narrow(
    req: &AccessRequest,
    approval: &Approval,
    now: SystemTime,
) -> Result<Granted, Invalid> {
    let objects = match &approval.channels {
        None => req.objects.clone(),
        Some(list) => {
            if let Some(g) = req.objects.iter().find(|o| o.starts_with("group:")) {
                return Err(Invalid::GroupNotNarrowable { group: g.clone() });
            }
            let list = parse_channels(list)?;
            if let Some(c) = list.iter().find(|c| !req.objects.contains(c)) {
                return Err(Invalid::NotRequested { what: c.clone() });
            }
            if list.is_empty() {
                return Err(Invalid::NothingLeft { what: "channels" });
            }
            list
        }
    };
    let actions = match &approval.actions {
        None => req.actions.clone(),
        Some(list) if list.is_empty() => return Err(Invalid::NothingLeft { what: "actions" }),
        Some(list) => {
            let list = parse_actions(list)?;
            if let Some(a) = list.iter().find(|a| !req.actions.contains(a)) {
                return Err(Invalid::NotRequested { what: a.clone() });
            }
            list
        }
    };
    let requested = parse_time("until", &req.until)?;
    let until = match &approval.until {
        None => requested,
        Some(u) => {
            let u = parse_time("until", u.trim())?;
            if u > requested {
                return Err(Invalid::UntilLater {
                    until: u.to_string(),
                    requested: requested.to_string(),
                });
            }
            u
        }
    };
    if until.unix() <= unix_secs(now) {
        return Err(Invalid::UntilPast {
            until: until.to_string(),
        });
    }
    if let Some(from) = &req.from {
        let from = parse_time("from", from)?;
        if from >= until {
            return Err(Invalid::FromAfterUntil {
                from: from.to_string(),
                until: until.to_string(),
            });
        }
    }
    Ok(Granted {
        objects,
        actions,
        until: until.to_string(),
    })
}

/// The marker comment that starts an approved request's lines.
fn marker(id: u64) -> String {
    format!("# access request {id} approved ")
}

/// The lines an approval appends to the grants file: a comment naming the
/// request, who approved it, when and why, then one time-limited `p` line
/// per object and action.
pub fn grant_lines(req: &AccessRequest, granted: &Granted) -> String {
    let one_line: String = req
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = format!(
        "{}by {} at {}: {}\n",
        marker(req.id),
        req.decided_by.as_deref().unwrap_or("?"),
        req.decided_at.as_deref().unwrap_or("?"),
        one_line
    );
    for o in &granted.objects {
        for a in &granted.actions {
            out.push_str(&format!(
                "p, dept:{}, {o}, {a}, allow, {}\n",
                req.dept, granted.until
            ));
        }
    }
    out
}

/// Write `text` to `path` atomically: a temp file beside it, fsync, rename
/// over it, fsync the directory.
fn write_atomic(path: &Path, text: &str) -> Result<(), AccessError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The store file's shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoreFile {
    next_id: u64,
    requests: Vec<AccessRequest>,
}

/// The request store: one JSON file, rewritten atomically on each change.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    data: StoreFile,
}

impl Store {
    /// Open the store at `path`; a missing file is an empty store (created).
    pub fn open(path: &Path) -> Result<Store, AccessError> {
        let data = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| AccessError::Corrupt {
                file: path.to_owned(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile {
                next_id: 1,
                requests: Vec::new(),
            },
            Err(e) => return Err(io_err(path)(e)),
        };
        let store = Store {
            path: path.to_owned(),
            data,
        };
        store.save(&store.data)?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn save(&self, data: &StoreFile) -> Result<(), AccessError> {
        let text = serde_json::to_string_pretty(data).map_err(|e| AccessError::Corrupt {
            file: self.path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&self.path, &(text + "\n"))
    }

    /// Make `data` the store's, on disk first.
    fn commit(&mut self, data: StoreFile) -> Result<(), AccessError> {
        self.save(&data)?;
        self.data = data;
        Ok(())
    }

    /// Store a validated request (from [`validate`]); returns it with its ID.
    pub fn submit(&mut self, mut req: AccessRequest) -> Result<AccessRequest, AccessError> {
        let pending = self
            .data
            .requests
            .iter()
            .filter(|r| r.dept == req.dept && r.state == RequestState::Pending)
            .count();
        if pending >= MAX_PENDING_PER_DEPT {
            return Err(AccessError::TooManyPending { dept: req.dept });
        }
        let mut data = self.data.clone();
        req.id = data.next_id.max(1);
        data.next_id = req.id + 1;
        data.requests.push(req.clone());
        self.commit(data)?;
        Ok(req)
    }

    /// Requests of `dept` (all with `None`) in `state` (any with `None`),
    /// oldest first.
    pub fn list(&self, dept: Option<&str>, state: Option<RequestState>) -> Vec<AccessRequest> {
        self.data
            .requests
            .iter()
            .filter(|r| dept.is_none_or(|d| r.dept == d))
            .filter(|r| state.is_none_or(|s| r.state == s))
            .cloned()
            .collect()
    }

    /// One request.
    pub fn get(&self, id: u64) -> Option<&AccessRequest> {
        self.data.requests.iter().find(|r| r.id == id)
    }

    fn decide(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut AccessRequest) -> Result<(), AccessError>,
    ) -> Result<AccessRequest, AccessError> {
        let mut data = self.data.clone();
        let r = data
            .requests
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(AccessError::NotFound(id))?;
        if r.state != RequestState::Pending {
            return Err(AccessError::NotPending { id, state: r.state });
        }
        f(r)?;
        let out = r.clone();
        self.commit(data)?;
        Ok(out)
    }

    /// Approve request `id` as `by` at `now`, granting `granted`.
    pub fn approve(
        &mut self,
        id: u64,
        by: &str,
        granted: Granted,
        now: SystemTime,
    ) -> Result<AccessRequest, AccessError> {
        self.decide(id, |r| {
            r.state = RequestState::Approved;
            r.decided_by = Some(by.into());
            r.decided_at = Some(stamp(now));
            r.granted = Some(granted);
            Ok(())
        })
    }

    /// Reject request `id` as `by` at `now` for `reason`.
    pub fn reject(
        &mut self,
        id: u64,
        by: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<AccessRequest, AccessError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Invalid::EmptyReason.into());
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(Invalid::ReasonTooLong { len: reason.len() }.into());
        }
        self.decide(id, |r| {
            r.state = RequestState::Rejected;
            r.decided_by = Some(by.into());
            r.decided_at = Some(stamp(now));
            r.decision_reason = Some(reason.into());
            Ok(())
        })
    }

    /// Approved requests whose window has begun at `now` and whose lines
    /// are not written yet.
    pub fn due(&self, now: SystemTime) -> Vec<AccessRequest> {
        let now = unix_secs(now);
        self.data
            .requests
            .iter()
            .filter(|r| r.state == RequestState::Approved && r.written_at.is_none())
            .filter(|r| {
                r.from
                    .as_deref()
                    .and_then(|f| f.parse::<Expiry>().ok())
                    .is_none_or(|f| f.unix() <= now)
            })
            .cloned()
            .collect()
    }

    /// Record that request `id`'s lines are in the grants file.
    pub fn mark_written(&mut self, id: u64, now: SystemTime) -> Result<(), AccessError> {
        let mut data = self.data.clone();
        let r = data
            .requests
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(AccessError::NotFound(id))?;
        r.written_at = Some(stamp(now));
        self.commit(data)
    }
}

/// The grants file and the policy files it is loaded with.
#[derive(Debug, Clone)]
pub struct GrantsFile {
    /// The grants file (one of `policy_files`).
    pub path: PathBuf,
    /// Every policy file of the node, the grants file among them.
    pub policy_files: Vec<PathBuf>,
}

/// What a new grants file says before any approval.
pub const GRANTS_HEADER: &str = "# Grants written by gbgate when an admin approves an access request\n# (POST /api/v1/access-requests/{id}/approve). A policy file like any other:\n# watched, reloaded on edit; lines may be removed by hand to revoke.\n";

impl GrantsFile {
    /// Create the grants file (with [`GRANTS_HEADER`]) if it is missing.
    pub fn ensure(path: &Path) -> Result<(), AccessError> {
        if path.exists() {
            return Ok(());
        }
        write_atomic(path, GRANTS_HEADER)
    }

    /// Check that the policy files with `lines` appended to the grants file
    /// validate; the new grants text.
    pub fn check(&self, lines: &str) -> Result<String, AccessError> {
        let mut current = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        if !current.is_empty() && !current.ends_with('\n') {
            current.push('\n');
        }
        current.push_str(lines);
        let mut texts = Vec::with_capacity(self.policy_files.len());
        for f in &self.policy_files {
            let text = if same_file(f, &self.path) {
                current.clone()
            } else {
                std::fs::read_to_string(f).map_err(io_err(f))?
            };
            texts.push((f.display().to_string(), text));
        }
        Policy::parse(&texts).map_err(|e| AccessError::Policy(e.to_string()))?;
        Ok(current)
    }

    /// Append `req`'s grant lines unless they are there already (a marker
    /// comment per request); true when written now.
    pub fn append(&self, req: &AccessRequest) -> Result<bool, AccessError> {
        let Some(granted) = &req.granted else {
            return Ok(false);
        };
        let current = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        if current.lines().any(|l| l.starts_with(&marker(req.id))) {
            return Ok(false);
        }
        let text = self.check(&grant_lines(req, granted))?;
        write_atomic(&self.path, &text)?;
        Ok(true)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::path::absolute(a).ok() == std::path::absolute(b).ok()
}

/// One step of a request's life, as audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A department asked.
    Requested,
    /// An admin approved.
    Approved,
    /// An admin rejected.
    Rejected,
    /// The grant lines were written and the policy reloaded.
    Granted,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Requested => "pending",
            Step::Approved => "approved",
            Step::Rejected => "rejected",
            Step::Granted => "granted",
        }
    }
}

/// The audit records of `step` of `req`, one per object (so a query by
/// channel finds them), all with the session `access-request:<id>`.
/// `actor` is who acted: (`dept:<d>`, `user:<u>`).
pub fn audit_entries(
    req: &AccessRequest,
    step: Step,
    actor: (&str, &str),
    node: &str,
    at_ms: u64,
) -> Vec<AuditEntry> {
    let (objects, actions, until) = match (&req.granted, step) {
        (Some(g), Step::Approved | Step::Granted) => (&g.objects, &g.actions, &g.until),
        _ => (&req.objects, &req.actions, &req.until),
    };
    let reason = match step {
        Step::Requested => format!(
            "access request {}: {} {} until {}: {}",
            req.id,
            req.dept,
            actions.join(","),
            until,
            req.reason
        ),
        Step::Approved => format!(
            "access request {} approved for dept:{}: {} until {}{}",
            req.id,
            req.dept,
            actions.join(","),
            until,
            req.from
                .as_deref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default()
        ),
        Step::Rejected => format!(
            "access request {} rejected: {}",
            req.id,
            req.decision_reason.as_deref().unwrap_or("")
        ),
        Step::Granted => format!(
            "access request {}: grant lines written for dept:{}, in force until {until}",
            req.id, req.dept
        ),
    };
    objects
        .iter()
        .map(|o| AuditEntry {
            at_ms,
            node: node.into(),
            kind: AuditKind::AccessRequest,
            subject: actor.0.into(),
            on_behalf_of: Some(actor.1.into()),
            object: o.clone(),
            action: actions.join(","),
            outcome: step.as_str().into(),
            rule: None,
            reason: reason.clone(),
            session: Some(format!("access-request:{}", req.id)),
            duration_ms: None,
            bytes: None,
        })
        .collect()
}

/// Queue the records of `step` of `req` for the audit, acted by `actor`
/// (`None`: the node, for the approving admin), and wait until they are
/// written.
async fn audit(
    node: &NodeHandle,
    req: &AccessRequest,
    step: Step,
    actor: Option<(String, String)>,
) -> Result<(), AccessError> {
    let req = req.clone();
    node.command(move |n, now| {
        let id = n.identity().id.to_string();
        let at = n
            .wall(now)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // The node writes grants for the admin who approved them.
        let (subject, person) = actor.unwrap_or_else(|| {
            let by = req.decided_by.as_deref().unwrap_or("unknown");
            (format!("node:{id}"), format!("user:{by}"))
        });
        for e in audit_entries(&req, step, (&subject, &person), &id, at) {
            n.audit(e);
        }
    })
    .await
    .map_err(|_| AccessError::Stopped)
}

/// Who acts on a request: the department (`dept:<d>`) and the person.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The department's name.
    pub dept: String,
    /// The person's name.
    pub user: String,
}

impl Actor {
    fn audited(&self) -> Option<(String, String)> {
        Some((format!("dept:{}", self.dept), format!("user:{}", self.user)))
    }
}

/// The access desk of a node: the store, the grants file and what it takes
/// to put a grant in force (the policy status, for a reload). Every step is
/// audited before its answer is returned.
#[derive(Debug)]
pub struct Desk {
    store: tokio::sync::Mutex<Store>,
    grants: GrantsFile,
    status: SharedStatus,
}

impl Desk {
    /// Open the store at `requests` for the grants file `grants`.
    pub fn open(
        requests: &Path,
        grants: GrantsFile,
        status: SharedStatus,
    ) -> Result<Desk, AccessError> {
        Ok(Desk {
            store: tokio::sync::Mutex::new(Store::open(requests)?),
            grants,
            status,
        })
    }

    /// The grants file.
    pub fn grants(&self) -> &GrantsFile {
        &self.grants
    }

    /// Store `req` (from [`validate`]) for `who` and audit it.
    pub async fn submit(
        &self,
        node: &NodeHandle,
        who: &Actor,
        req: AccessRequest,
    ) -> Result<AccessRequest, AccessError> {
        let stored = self.store.lock().await.submit(req)?;
        audit(node, &stored, Step::Requested, who.audited()).await?;
        Ok(stored)
    }

    /// Requests of `dept` (all with `None`) in `state` (any with `None`).
    pub async fn list(
        &self,
        dept: Option<&str>,
        state: Option<RequestState>,
    ) -> Vec<AccessRequest> {
        self.store.lock().await.list(dept, state)
    }

    /// Request `id`, if `dept` may see it (`None`: any).
    pub async fn get(&self, id: u64, dept: Option<&str>) -> Result<AccessRequest, AccessError> {
        self.store
            .lock()
            .await
            .get(id)
            .filter(|r| dept.is_none_or(|d| r.dept == d))
            .cloned()
            .ok_or(AccessError::NotFound(id))
    }

    /// Approve `id` as `who`: check that the grant validates with the
    /// policy files, store the approval, then (if its window has begun)
    /// write the lines and reload. Returns the request as it is then.
    pub async fn approve(
        &self,
        node: &NodeHandle,
        who: &Actor,
        id: u64,
        approval: &Approval,
        now: SystemTime,
    ) -> Result<AccessRequest, AccessError> {
        let approved = {
            let mut store = self.store.lock().await;
            let req = store.get(id).cloned().ok_or(AccessError::NotFound(id))?;
            if req.state != RequestState::Pending {
                return Err(AccessError::NotPending {
                    id,
                    state: req.state,
                });
            }
            let granted = narrow(&req, approval, now)?;
            let mut preview = req.clone();
            preview.decided_by = Some(who.user.clone());
            preview.decided_at = Some(stamp(now));
            self.grants.check(&grant_lines(&preview, &granted))?;
            store.approve(id, &who.user, granted, now)?
        };
        audit(node, &approved, Step::Approved, who.audited()).await?;
        self.activate(node, now).await?;
        self.get(id, None).await
    }

    /// Reject `id` as `who` for `reason`.
    pub async fn reject(
        &self,
        node: &NodeHandle,
        who: &Actor,
        id: u64,
        reason: &str,
        now: SystemTime,
    ) -> Result<AccessRequest, AccessError> {
        let rejected = self.store.lock().await.reject(id, &who.user, reason, now)?;
        audit(node, &rejected, Step::Rejected, who.audited()).await?;
        Ok(rejected)
    }

    /// Write every approval whose window has begun, reload the policy and
    /// audit each grant; the requests written now.
    pub async fn activate(
        &self,
        node: &NodeHandle,
        now: SystemTime,
    ) -> Result<Vec<AccessRequest>, AccessError> {
        let written = {
            let mut store = self.store.lock().await;
            let mut written = Vec::new();
            for req in store.due(now) {
                self.grants.append(&req)?;
                store.mark_written(req.id, now)?;
                written.extend(store.get(req.id).cloned());
            }
            written
        };
        if written.is_empty() {
            return Ok(written);
        }
        if !reload::reload(&self.grants.policy_files, node, &self.status).await {
            tracing::error!(
                "granted access is written but the policy did not reload; see GET /api/v1/policy"
            );
        }
        for r in &written {
            tracing::info!(id = r.id, dept = %r.dept, "access request granted");
            audit(node, r, Step::Granted, None).await?;
        }
        Ok(written)
    }

    /// Write due approvals every second until `shutdown`: windows that
    /// begin later, approvals stored before a crash.
    pub async fn run(self: Arc<Self>, node: NodeHandle, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(ACTIVATE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.activate(&node, SystemTime::now()).await {
                tracing::error!(error = %e, "cannot write approved access requests; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use policy::{Outcome, Request, Subject};
    use std::time::UNIX_EPOCH;
    use topology::GbId;

    const CH1: &str = "35010201001310000001";
    const CH2: &str = "35010201001310000002";

    /// 2030-01-01T00:00:00Z.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_893_456_000)
    }

    fn ask() -> NewRequest {
        NewRequest {
            channels: vec![CH2.into(), CH1.into(), CH1.into()],
            group: None,
            actions: vec!["playback".into(), "live".into()],
            from: None,
            until: "2030-01-08T00:00:00Z".into(),
            reason: "  flood watch on the river\nsecond line ".into(),
        }
    }

    fn err(req: NewRequest) -> Invalid {
        validate(&req, "traffic", "li", t0()).unwrap_err()
    }

    #[test]
    fn a_request_is_canonical_and_every_mistake_is_named() {
        let r = validate(&ask(), "traffic", "li", t0()).unwrap();
        assert_eq!(r.objects, vec![CH1, CH2], "sorted, deduplicated");
        assert_eq!(r.actions, vec!["live", "playback"]);
        assert_eq!(r.reason, "flood watch on the river\nsecond line");
        assert_eq!(r.created_at, "2030-01-01T00:00:00Z");
        assert_eq!(r.state, RequestState::Pending);

        let g = validate(
            &NewRequest {
                channels: vec![],
                group: Some("group:river".into()),
                ..ask()
            },
            "traffic",
            "li",
            t0(),
        )
        .unwrap();
        assert_eq!(g.objects, vec!["group:river"]);
        assert_eq!(named_group(&g), Some("group:river"));

        assert_eq!(
            err(NewRequest {
                channels: vec![],
                ..ask()
            }),
            Invalid::NoObject
        );
        assert_eq!(
            err(NewRequest {
                group: Some("group:river".into()),
                ..ask()
            }),
            Invalid::ChannelsAndGroup
        );
        for bad in ["3501020100131000000", "3501*", "group:x", "abc"] {
            assert!(
                matches!(
                    err(NewRequest {
                        channels: vec![bad.into()],
                        ..ask()
                    }),
                    Invalid::BadChannel { .. }
                ),
                "{bad}"
            );
        }
        let many = (0..=MAX_CHANNELS)
            .map(|i| format!("350102010013100{i:05}"))
            .collect();
        assert!(matches!(
            err(NewRequest {
                channels: many,
                ..ask()
            }),
            Invalid::TooManyChannels { .. }
        ));
        assert!(matches!(
            err(NewRequest {
                channels: vec![],
                group: Some("group:a b".into()),
                ..ask()
            }),
            Invalid::BadGroup { .. }
        ));
        assert_eq!(
            err(NewRequest {
                actions: vec![],
                ..ask()
            }),
            Invalid::NoActions
        );
        assert!(matches!(
            err(NewRequest {
                actions: vec!["teleport".into()],
                ..ask()
            }),
            Invalid::BadAction { .. }
        ));
        assert!(matches!(
            err(NewRequest {
                actions: vec!["*".into()],
                ..ask()
            }),
            Invalid::BadAction { .. }
        ));
        assert!(matches!(
            err(NewRequest {
                until: "2030-01-08 00:00".into(),
                ..ask()
            }),
            Invalid::BadTime { field: "until", .. }
        ));
        assert!(matches!(
            err(NewRequest {
                until: "2030-01-01T00:00:00Z".into(),
                ..ask()
            }),
            Invalid::UntilPast { .. }
        ));
        assert!(matches!(
            err(NewRequest {
                until: "2031-01-03T00:00:00Z".into(),
                ..ask()
            }),
            Invalid::WindowTooLong { .. }
        ));
        assert!(matches!(
            err(NewRequest {
                from: Some("2030-01-08T00:00:00Z".into()),
                ..ask()
            }),
            Invalid::FromAfterUntil { .. }
        ));
        assert_eq!(
            err(NewRequest {
                reason: " \n ".into(),
                ..ask()
            }),
            Invalid::EmptyReason
        );
        assert!(matches!(
            err(NewRequest {
                reason: "x".repeat(MAX_REASON_BYTES + 1),
                ..ask()
            }),
            Invalid::ReasonTooLong { .. }
        ));
        // A start already past is no start; a later one is kept.
        let past = validate(
            &NewRequest {
                from: Some("2029-12-01T00:00:00Z".into()),
                ..ask()
            },
            "traffic",
            "li",
            t0(),
        )
        .unwrap();
        assert_eq!(past.from, None);
        // Unknown bodies are refused by name (deny_unknown_fields).
        let e = serde_json::from_str::<NewRequest>(
            r#"{"channel":"x","actions":[],"until":"","reason":""}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("channel"), "{e}");
    }

    #[test]
    fn an_approval_only_narrows() {
        let r = validate(&ask(), "traffic", "li", t0()).unwrap();
        let all = narrow(&r, &Approval::default(), t0()).unwrap();
        assert_eq!(
            all,
            Granted {
                objects: vec![CH1.into(), CH2.into()],
                actions: vec!["live".into(), "playback".into()],
                until: "2030-01-08T00:00:00Z".into()
            }
        );
        let some = narrow(
            &r,
            &Approval {
                channels: Some(vec![CH2.into()]),
                actions: Some(vec!["live".into()]),
                until: Some("2030-01-02T00:00:00Z".into()),
            },
            t0(),
        )
        .unwrap();
        assert_eq!(some.objects, vec![CH2]);
        assert_eq!(some.actions, vec!["live"]);
        assert_eq!(some.until, "2030-01-02T00:00:00Z");
        let wider = |a: Approval| narrow(&r, &a, t0()).unwrap_err();
        assert!(matches!(
            wider(Approval {
                channels: Some(vec!["35010201001310000003".into()]),
                ..Approval::default()
            }),
            Invalid::NotRequested { .. }
        ));
        assert!(matches!(
            wider(Approval {
                actions: Some(vec!["ptz".into()]),
                ..Approval::default()
            }),
            Invalid::NotRequested { .. }
        ));
        assert!(matches!(
            wider(Approval {
                actions: Some(vec![]),
                ..Approval::default()
            }),
            Invalid::NothingLeft { what: "actions" }
        ));
        assert!(matches!(
            wider(Approval {
                until: Some("2030-02-01T00:00:00Z".into()),
                ..Approval::default()
            }),
            Invalid::UntilLater { .. }
        ));
        // Approved late: the window has passed.
        let late = t0() + Duration::from_secs(8 * 86_400);
        assert!(matches!(
            narrow(&r, &Approval::default(), late).unwrap_err(),
            Invalid::UntilPast { .. }
        ));
        let g = validate(
            &NewRequest {
                channels: vec![],
                group: Some("group:river".into()),
                ..ask()
            },
            "traffic",
            "li",
            t0(),
        )
        .unwrap();
        assert!(matches!(
            narrow(
                &g,
                &Approval {
                    channels: Some(vec![CH1.into()]),
                    ..Approval::default()
                },
                t0()
            )
            .unwrap_err(),
            Invalid::GroupNotNarrowable { .. }
        ));
    }

    fn decide(p: &Policy, dept: &str, ch: &str, action: Action, at: SystemTime) -> Outcome {
        let subject = Subject::Dept(dept.into());
        let channel = GbId::parse(ch).unwrap();
        p.decide(
            &Request {
                subject: &subject,
                channel: &channel,
                ancestors: &[],
                action,
            },
            at,
        )
        .outcome
    }

    #[test]
    fn grant_lines_parse_and_allow_until_the_expiry_then_deny() {
        let mut r = validate(&ask(), "traffic", "li", t0()).unwrap();
        r.id = 7;
        r.decided_by = Some("ops".into());
        r.decided_at = Some(stamp(t0()));
        let granted = narrow(
            &r,
            &Approval {
                channels: Some(vec![CH1.into()]),
                ..Approval::default()
            },
            t0(),
        )
        .unwrap();
        let lines = grant_lines(&r, &granted);
        assert_eq!(
            lines,
            "# access request 7 approved by ops at 2030-01-01T00:00:00Z: flood watch on the river second line\n\
             p, dept:traffic, 35010201001310000001, live, allow, 2030-01-08T00:00:00Z\n\
             p, dept:traffic, 35010201001310000001, playback, allow, 2030-01-08T00:00:00Z\n"
        );
        let text = format!("{GRANTS_HEADER}{lines}");
        let p = Policy::parse(&[("grants.csv", text.as_str())]).unwrap();
        assert_eq!(p.rule_count(), 2);
        let before = UNIX_EPOCH + Duration::from_secs(1_894_060_799); // 2030-01-07T23:59:59Z
        let after = UNIX_EPOCH + Duration::from_secs(1_894_060_800);
        assert_eq!(
            decide(&p, "traffic", CH1, Action::Live, t0()),
            Outcome::Allow
        );
        assert_eq!(
            decide(&p, "traffic", CH1, Action::Playback, before),
            Outcome::Allow
        );
        assert_eq!(
            decide(&p, "traffic", CH1, Action::Live, after),
            Outcome::Deny
        );
        assert_eq!(
            decide(&p, "traffic", CH2, Action::Live, t0()),
            Outcome::Deny,
            "narrowed away"
        );
        assert_eq!(decide(&p, "traffic", CH1, Action::Ptz, t0()), Outcome::Deny);
        assert_eq!(decide(&p, "police", CH1, Action::Live, t0()), Outcome::Deny);
        assert_eq!(p.next_expiry(t0()), Some(after));
    }

    #[test]
    fn the_store_survives_a_reopen_and_enforces_states_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let path = dir.join("requests.json");
        let mut s = Store::open(&path).unwrap();
        let r = validate(&ask(), "traffic", "li", t0()).unwrap();
        let a = s.submit(r.clone()).unwrap();
        let b = s.submit(r.clone()).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        let granted = narrow(&a, &Approval::default(), t0()).unwrap();
        s.approve(1, "ops", granted.clone(), t0()).unwrap();
        s.reject(2, "ops", "not this week", t0()).unwrap();
        assert!(matches!(
            s.reject(1, "ops", "no", t0()),
            Err(AccessError::NotPending {
                id: 1,
                state: RequestState::Approved
            })
        ));
        assert!(matches!(
            s.reject(3, "ops", "no", t0()),
            Err(AccessError::NotFound(3))
        ));
        assert!(matches!(
            s.reject(2, "ops", " ", t0()),
            Err(AccessError::Invalid(Invalid::EmptyReason))
        ));
        assert_eq!(s.due(t0()).len(), 1);
        s.mark_written(1, t0()).unwrap();
        assert!(s.due(t0()).is_empty());
        drop(s);

        let mut s = Store::open(&path).unwrap();
        let one = s.get(1).unwrap();
        assert_eq!(one.state, RequestState::Approved);
        assert_eq!(one.granted.as_ref(), Some(&granted));
        assert_eq!(one.written_at.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(
            s.get(2).unwrap().decision_reason.as_deref(),
            Some("not this week")
        );
        assert_eq!(
            s.list(Some("traffic"), Some(RequestState::Rejected)).len(),
            1
        );
        assert!(s.list(Some("police"), None).is_empty());
        // Pending per department is bounded; other departments are not held up.
        for _ in 0..MAX_PENDING_PER_DEPT {
            s.submit(r.clone()).unwrap();
        }
        assert!(matches!(
            s.submit(r.clone()),
            Err(AccessError::TooManyPending { .. })
        ));
        let mut police = r.clone();
        police.dept = "police".into();
        assert_eq!(
            s.submit(police).unwrap().id,
            3 + MAX_PENDING_PER_DEPT as u64
        );
        // A window that begins later is due then, not before.
        let mut later = validate(
            &NewRequest {
                from: Some("2030-01-03T00:00:00Z".into()),
                ..ask()
            },
            "fire",
            "zhao",
            t0(),
        )
        .unwrap();
        later = s.submit(later).unwrap();
        let g = narrow(&later, &Approval::default(), t0()).unwrap();
        s.approve(later.id, "ops", g, t0()).unwrap();
        assert!(s.due(t0()).iter().all(|r| r.id != later.id));
        let third = t0() + Duration::from_secs(2 * 86_400);
        assert!(s.due(third).iter().any(|r| r.id == later.id));
        // Garbage is refused, not silently emptied.
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(AccessError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_grants_file_is_appended_once_and_never_made_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let grants = dir.join("grants.csv");
        let base = dir.join("base.csv");
        std::fs::write(&base, "p, dept:police, *, *, allow\n").unwrap();
        GrantsFile::ensure(&grants).unwrap();
        assert_eq!(std::fs::read_to_string(&grants).unwrap(), GRANTS_HEADER);
        let file = GrantsFile {
            path: grants.clone(),
            policy_files: vec![base.clone(), grants.clone()],
        };
        let mut r = validate(&ask(), "traffic", "li", t0()).unwrap();
        r.id = 1;
        r.decided_by = Some("ops".into());
        r.decided_at = Some(stamp(t0()));
        r.granted = Some(narrow(&r, &Approval::default(), t0()).unwrap());
        r.state = RequestState::Approved;
        assert!(file.append(&r).unwrap());
        assert!(!file.append(&r).unwrap(), "the marker says it is there");
        let text = std::fs::read_to_string(&grants).unwrap();
        assert_eq!(text.matches("p, dept:traffic").count(), 4);
        let p = Policy::load(&file.policy_files).unwrap();
        assert_eq!(
            decide(&p, "traffic", CH2, Action::Playback, t0()),
            Outcome::Allow
        );
        // A group no g2 line defines would break every file's reload: refused
        // before anything is written.
        let mut g = r.clone();
        g.id = 2;
        g.objects = vec!["group:nowhere".into()];
        g.granted = Some(narrow(&g, &Approval::default(), t0()).unwrap());
        let e = file.append(&g).unwrap_err();
        assert!(matches!(e, AccessError::Policy(_)), "{e}");
        assert!(e.to_string().contains("group:nowhere"), "{e}");
        assert_eq!(std::fs::read_to_string(&grants).unwrap(), text);
        ensure_keeps(&grants, &text);
    }

    fn ensure_keeps(grants: &Path, text: &str) {
        GrantsFile::ensure(grants).unwrap();
        assert_eq!(std::fs::read_to_string(grants).unwrap(), text);
    }

    #[test]
    fn audit_records_name_the_request_per_object() {
        let mut r = validate(&ask(), "traffic", "li", t0()).unwrap();
        r.id = 9;
        let e = audit_entries(
            &r,
            Step::Requested,
            ("dept:traffic", "user:li"),
            "35010000002000000001",
            5,
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, AuditKind::AccessRequest);
        assert_eq!(e[0].object, CH1);
        assert_eq!(e[0].action, "live,playback");
        assert_eq!(e[0].outcome, "pending");
        assert_eq!(e[0].session.as_deref(), Some("access-request:9"));
        assert!(e[0].reason.contains("flood watch"), "{}", e[0].reason);
    }
}
