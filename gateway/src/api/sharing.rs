//! The HTTP side of the gate: who calls (department bearer tokens, signed
//! play tokens), the department's catalog, play URLs, the viewers open per
//! holder (re-checked when the policy changes or a grant expires), and the
//! admin endpoints for the policy and the audit.
//!
//! Without a policy the node is open, as before policies existed; with one,
//! every endpoint but /healthz, /metrics, /api/openapi.json and the
//! console's pages (which hold no data) needs a token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use policy::{Action, Subject};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use topology::GbId;

use super::auth::{Holder, PlayClaims, PlayKey, Tokens};
use super::AppState;
use crate::gate::reload::SharedStatus;
use crate::gate::{Ask, Verdict};
use crate::runtime::NodeHandle;

/// How long a play URL may be used to start a stream.
pub const PLAY_TOKEN_TTL: Duration = Duration::from_secs(300);

/// How often open viewers are re-checked against the policy (a grant that
/// expires ends its viewers within this).
const RECHECK_EVERY: Duration = Duration::from_millis(500);

/// The sharing configuration of the HTTP API.
#[derive(Clone, Default)]
pub struct Sharing {
    /// Department tokens.
    pub tokens: Arc<Tokens>,
    /// Signs play URLs.
    pub play_key: Option<PlayKey>,
    /// The policy's status; `None`: no policy, the API is open.
    pub policy: Option<SharedStatus>,
    /// The audit store, for the audit endpoint.
    pub audit_url: Option<String>,
    /// Access requests and the grants file (`gbgate run --grants`).
    pub access: Option<Arc<crate::gate::access::Desk>>,
}

impl Sharing {
    /// True when a policy is in force.
    pub fn enforcing(&self) -> bool {
        self.policy.is_some()
    }
}

/// A refusal for a person: status and what to do about it.
pub type Refusal = (StatusCode, String);

/// A refusal with `msg` as its body (one line, newline-terminated).
pub(super) fn refuse(status: StatusCode, msg: impl Into<String>) -> Refusal {
    let mut m = msg.into();
    m.push('\n');
    (status, m)
}

/// Who calls: nobody in particular (no policy), or a token holder.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No policy in force: the API is open.
    Open,
    /// A department token's holder.
    Holder(Holder),
}

impl Caller {
    /// The deciding subject (the department) and the person, for the
    /// node's listings; `None` for an open node, which shows everything.
    pub fn subjects(&self) -> Option<(Subject, Subject)> {
        match self {
            Caller::Holder(h) => Some((h.subject(), h.user_subject())),
            Caller::Open => None,
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Authenticate the caller of `headers`.
pub fn caller(st: &AppState, headers: &HeaderMap) -> Result<Caller, Refusal> {
    if !st.sharing.enforcing() {
        return Ok(Caller::Open);
    }
    let Some(token) = bearer(headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "this node shares video by policy: send `Authorization: Bearer <token>` with your department's token (an admin makes one with `gbgate token new`)",
        ));
    };
    match st.sharing.tokens.authenticate(token) {
        Some(h) => Ok(Caller::Holder(h.clone())),
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the token is not known here; ask your admin for a department token",
        )),
    }
}

/// Authenticate an admin.
pub fn admin(st: &AppState, headers: &HeaderMap) -> Result<Caller, Refusal> {
    match caller(st, headers)? {
        Caller::Holder(h) if !h.admin => Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} of dept:{} is not an admin; this endpoint is for admins",
                h.user, h.dept
            ),
        )),
        c => Ok(c),
    }
}

/// Decide `action` on `channel` for `caller` at the node's one gate.
pub async fn authorize(
    node: &NodeHandle,
    caller: &Caller,
    channel: GbId,
    action: Action,
) -> Result<Verdict, Refusal> {
    let Caller::Holder(h) = caller else {
        return Ok(Verdict {
            allowed: true,
            rule: None,
            reason: "no sharing policy".into(),
        });
    };
    let ask = Ask {
        who: h.subject(),
        on_behalf_of: Some(h.user_subject()),
        channel,
        action,
    };
    let v = node
        .command(move |n, now| n.authorize(&ask, now))
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if v.allowed {
        Ok(v)
    } else {
        Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "dept:{} may not {action} {channel}: {}. Ask for access with POST /api/v1/access-requests or ask your admin",
                h.dept, v.reason
            ),
        ))
    }
}

/// A viewer open through the API, re-checked when the policy changes.
struct Open {
    holder: Holder,
    channel: GbId,
    action: Action,
    stop: CancellationToken,
}

/// The viewers open per holder.
#[derive(Default)]
pub struct Viewers {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

/// Removes its viewer from [`Viewers`] when the response body is dropped.
pub struct ViewerGuard {
    viewers: Arc<Viewers>,
    id: u64,
    /// Fires when the policy no longer allows this viewer.
    pub stop: CancellationToken,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        lock(&self.viewers.open).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Viewers {
    /// Register a viewer of `holder`.
    pub fn open(self: &Arc<Self>, holder: Holder, channel: GbId, action: Action) -> ViewerGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = CancellationToken::new();
        lock(&self.open).insert(
            id,
            Open {
                holder,
                channel,
                action,
                stop: stop.clone(),
            },
        );
        ViewerGuard {
            viewers: self.clone(),
            id,
            stop,
        }
    }

    /// Number open.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check every open viewer against the policy in force; stop those it
    /// no longer allows (the node audits the refusal).
    pub async fn recheck(&self, node: &NodeHandle) {
        let open: Vec<(u64, Ask)> = lock(&self.open)
            .iter()
            .map(|(id, o)| {
                (
                    *id,
                    Ask {
                        who: o.holder.subject(),
                        on_behalf_of: Some(o.holder.user_subject()),
                        channel: o.channel,
                        action: o.action,
                    },
                )
            })
            .collect();
        if open.is_empty() {
            return;
        }
        let Ok(verdicts) = node
            .command(move |n, now| {
                open.into_iter()
                    .map(|(id, ask)| (id, n.recheck(&ask, now)))
                    .collect::<Vec<_>>()
            })
            .await
        else {
            return;
        };
        let map = lock(&self.open);
        for (id, v) in verdicts {
            if let (false, Some(o)) = (v.allowed, map.get(&id)) {
                tracing::info!(user = %o.holder.user, dept = %o.holder.dept, channel = %o.channel, reason = %v.reason, "viewer revoked");
                o.stop.cancel();
            }
        }
    }

    /// Re-check on every policy change and every [`RECHECK_EVERY`] (grants
    /// expire) until `shutdown`.
    pub async fn run(self: Arc<Self>, node: NodeHandle, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RECHECK_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.recheck(&node).await,
            }
        }
    }
}

/// `GET /api/v1/channels?after=&limit=` query.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChannelsParams {
    /// Start after this ID (keyset paging: pass the last ID of the page).
    pub after: Option<String>,
    /// At most this many (default 1000, at most 10,000).
    pub limit: Option<usize>,
}

/// One channel as a department sees it.
#[derive(Debug, Serialize, Deserialize, Clone, utoipa::ToSchema)]
pub struct ChannelView {
    /// 20-digit ID.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// ON or OFF.
    pub status: String,
    /// Parent in the tree.
    pub parent_id: Option<String>,
}

/// `GET /api/v1/channels` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelsPage {
    /// The channels, by ID.
    pub items: Vec<ChannelView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// `GET /api/v1/channels`: the cameras the caller's department may see.
#[utoipa::path(
    get,
    path = "/api/v1/channels",
    tag = "sharing",
    params(ChannelsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cameras the caller's department may see, by ID, keyset-paged", body = ChannelsPage),
        (status = 400, description = "The query string is not understood (e.g. a number that is not one)", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_channels(
    State(st): State<AppState>,
    Query(p): Query<ChannelsParams>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let limit = p.limit.unwrap_or(1000).clamp(1, super::MAX_PAGE);
    let res = st
        .node
        .command(move |n, now| n.visible_channels(who.subjects(), p.after.as_deref(), limit, now))
        .await;
    match res {
        Ok((items, next)) => Json(ChannelsPage {
            items: items
                .into_iter()
                .map(|e| ChannelView {
                    id: e.item.device_id,
                    name: e.item.name,
                    status: e.item.status.unwrap_or_default(),
                    parent_id: e.item.parent_id,
                })
                .collect(),
            next,
        })
        .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Body of `POST /api/v1/streams`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct StreamRequest {
    /// The channel.
    pub channel: String,
    /// live (default), playback or download.
    #[serde(default)]
    pub action: Option<String>,
}

/// `POST /api/v1/streams` answer: where to play.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PlayUrls {
    /// HTTP-FLV path (append `&start=&end=` for playback).
    pub flv: String,
    /// MPEG-TS path.
    pub ts: String,
    /// Unix seconds until which the URLs start a stream.
    pub expires: u64,
    /// Why it was allowed.
    pub reason: String,
}

/// `POST /api/v1/streams {channel, action}`: decide, then hand out play
/// URLs carrying a signed token valid for [`PLAY_TOKEN_TTL`].
#[utoipa::path(
    post,
    path = "/api/v1/streams",
    tag = "sharing",
    request_body = StreamRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Play URLs with a signed play token, valid for 5 minutes to start a stream", body = PlayUrls),
        (status = 400, description = "The channel is not a 20-digit ID, the action is not live, playback or download, or the body is not JSON", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not let the caller's department do this; the body says how to ask for access", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = String, content_type = "text/plain"),
        (status = 422, description = "The JSON lacks a field or has one of the wrong type", body = String, content_type = "text/plain"),
    )
)]
pub async fn post_streams(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<StreamRequest>,
) -> Response {
    let who = match caller(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let channel = match GbId::parse(&req.channel) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("channel: {e}")).into_response(),
    };
    let action: Action = match req.action.as_deref().unwrap_or("live").parse() {
        Ok(a @ (Action::Live | Action::Playback | Action::Download)) => a,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "action is live, playback or download",
            )
            .into_response()
        }
    };
    let verdict = match authorize(&st.node, &who, channel, action).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let expires = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + PLAY_TOKEN_TTL.as_secs();
    let path = if action == Action::Live {
        "live"
    } else {
        "playback"
    };
    let token = match (&who, &st.sharing.play_key) {
        (Caller::Holder(h), Some(key)) => key.sign(&PlayClaims {
            user: h.user.clone(),
            dept: h.dept.clone(),
            channel,
            action,
            expires,
        }),
        _ => String::new(),
    };
    Json(PlayUrls {
        flv: format!("/{path}/{channel}.flv?token={token}"),
        ts: format!("/{path}/{channel}.ts?token={token}"),
        expires,
        reason: verdict.reason,
    })
    .into_response()
}

/// The holder a video request speaks for: its play token (players send no
/// headers) or a bearer token; `None` when no policy is in force.
pub async fn viewer(
    st: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
    channel: GbId,
    action: Action,
) -> Result<Option<Holder>, Refusal> {
    if !st.sharing.enforcing() {
        return Ok(None);
    }
    let holder = match (token, &st.sharing.play_key) {
        (Some(t), Some(key)) => {
            let c = key
                .verify(t, &channel, action, SystemTime::now())
                .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.to_string()))?;
            Holder {
                user: c.user,
                dept: c.dept,
                admin: false,
            }
        }
        _ => match caller(st, headers)? {
            Caller::Holder(h) => h,
            Caller::Open => return Ok(None),
        },
    };
    // Decided again at the door: the policy may have changed since.
    authorize(&st.node, &Caller::Holder(holder.clone()), channel, action).await?;
    Ok(Some(holder))
}

/// `GET /api/v1/policy` (admin): the policy in force and the last refusal.
#[utoipa::path(
    get,
    path = "/api/v1/policy",
    tag = "sharing",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The policy in force: files, generation, rules, the last refused edit", body = crate::gate::reload::PolicyStatus),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 404, description = "No sharing policy on this node", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_policy(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&st, &headers) {
        return r.into_response();
    }
    match &st.sharing.policy {
        Some(s) => Json(lock(s).clone()).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no sharing policy on this node").into_response(),
    }
}

/// `GET /api/v1/audit?channel=&subject=&from=&to=&after=&limit=` query.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this channel (object).
    pub channel: Option<String>,
    /// Only this subject (or on behalf of it).
    pub subject: Option<String>,
    /// From, Unix milliseconds.
    pub from: Option<u64>,
    /// To, Unix milliseconds (exclusive).
    pub to: Option<u64>,
    /// After this sequence number.
    #[serde(default)]
    pub after: u64,
    /// At most this many (default 1000).
    #[serde(default)]
    pub limit: u32,
}

/// One audit record as JSON.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditView {
    /// Sequence number.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// decision, session_start, session_stop, …
    pub kind: String,
    /// Who.
    pub subject: String,
    /// On whose behalf.
    pub on_behalf_of: Option<String>,
    /// What.
    pub object: String,
    /// Action.
    pub action: String,
    /// Outcome.
    pub outcome: String,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Why.
    pub reason: String,
    /// The record's hash (hex).
    pub hash: String,
}

/// `GET /api/v1/audit` (admin).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "sharing",
    params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Audit records with their hashes, by sequence number", body = Vec<AuditView>),
        (status = 400, description = "The query string is not understood (e.g. a number that is not one)", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 404, description = "This node keeps no audit", body = String, content_type = "text/plain"),
        (status = 500, description = "The audit query failed", body = String, content_type = "text/plain"),
        (status = 503, description = "The audit store cannot be read", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_audit(
    State(st): State<AppState>,
    Query(p): Query<AuditParams>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&st, &headers) {
        return r.into_response();
    }
    let Some(url) = st.sharing.audit_url.clone() else {
        return refuse(StatusCode::NOT_FOUND, "this node keeps no audit").into_response();
    };
    // A read connection of its own: the writer thread is never blocked.
    let res = tokio::task::spawn_blocking(move || {
        let mut store = policy::audit::open(&url)?;
        store.query(&policy::audit::AuditQuery {
            object: p.channel,
            subject: p.subject,
            from_ms: p.from,
            to_ms: p.to,
            after_seq: p.after,
            limit: p.limit.min(10_000),
        })
    })
    .await;
    match res {
        Ok(Ok(records)) => Json(
            records
                .into_iter()
                .map(|r| AuditView {
                    seq: r.seq,
                    at_ms: r.entry.at_ms,
                    kind: r.entry.kind.as_str().into(),
                    subject: r.entry.subject,
                    on_behalf_of: r.entry.on_behalf_of,
                    object: r.entry.object,
                    action: r.entry.action,
                    outcome: r.entry.outcome,
                    rule: r.entry.rule,
                    reason: r.entry.reason,
                    hash: r.hash.to_string(),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
