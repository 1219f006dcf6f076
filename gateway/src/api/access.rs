//! The HTTP side of access requests ([`crate::gate::access`]): a
//! department asks, an admin lists, approves (maybe narrowing) or rejects.
//!
//! - `POST /api/v1/access-requests` (a department token):
//!   `{channels | group, actions, until, from?, reason}` → 201 and the request
//! - `GET /api/v1/access-requests?state=pending|approved|rejected|all`:
//!   an admin sees all, a department its own
//! - `GET /api/v1/access-requests/{id}`
//! - `POST /api/v1/access-requests/{id}/approve` (admin):
//!   `{channels?, actions?, until?}`, each only narrowing
//! - `POST /api/v1/access-requests/{id}/reject` (admin): `{reason}`

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Holder;
use super::sharing::{admin, caller, refuse, Caller, Refusal};
use super::AppState;
use crate::gate::access::{
    self, AccessError, AccessRequest, Actor, Approval, Desk, Invalid, NewRequest, Rejection,
    RequestState,
};

/// `GET /api/v1/access-requests` query.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// pending, approved, rejected or all (default).
    pub state: Option<String>,
}

fn status(e: &AccessError) -> StatusCode {
    match e {
        AccessError::Invalid(_) => StatusCode::BAD_REQUEST,
        AccessError::NotFound(_) => StatusCode::NOT_FOUND,
        AccessError::NotPending { .. } => StatusCode::CONFLICT,
        AccessError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
        AccessError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        AccessError::Io { .. } | AccessError::Corrupt { .. } | AccessError::Policy(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn failed(e: &AccessError) -> Response {
    refuse(status(e), e.to_string()).into_response()
}

fn desk(st: &AppState) -> Result<Arc<Desk>, Refusal> {
    st.sharing.access.clone().ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "this node takes no access requests: its admin starts it with `gbgate run --grants FILE`",
        )
    })
}

fn holder(c: Caller) -> Result<Holder, Refusal> {
    match c {
        Caller::Holder(h) => Ok(h),
        Caller::Open => Err(refuse(
            StatusCode::FORBIDDEN,
            "access requests are made with a department token",
        )),
    }
}

fn actor(h: &Holder) -> Actor {
    Actor {
        dept: h.dept.clone(),
        user: h.user.clone(),
    }
}

fn parse_id(id: &str) -> Result<u64, Refusal> {
    id.parse().map_err(|_| {
        refuse(
            StatusCode::NOT_FOUND,
            format!("access request {id:?} does not exist"),
        )
    })
}

/// A JSON body of shape `T`; an empty body is `T::default()` when allowed.
fn body<T: DeserializeOwned + Default>(
    b: &Bytes,
    empty_ok: bool,
    shape: &str,
) -> Result<T, Refusal> {
    if empty_ok && b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the body is not {shape}: {e}"),
        )
    })
}

/// Who calls (`admin`: admins only), the desk, and the caller.
fn setup(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    admin_only: bool,
) -> Result<(Arc<Desk>, Holder), Refusal> {
    let c = if admin_only {
        admin(st, headers)?
    } else {
        caller(st, headers)?
    };
    let h = holder(c)?;
    Ok((desk(st)?, h))
}

/// `POST /api/v1/access-requests`: a department asks for access.
#[utoipa::path(
    post,
    path = "/api/v1/access-requests",
    tag = "access requests",
    request_body = NewRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The request, pending", body = AccessRequest),
        (status = 400, description = "The body is not a valid request: says what is wrong", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "Requests are made with a department token (the node runs without a policy)", body = String, content_type = "text/plain"),
        (status = 404, description = "This node takes no access requests (it runs without `--grants`)", body = String, content_type = "text/plain"),
        (status = 429, description = "The department has too many pending requests", body = String, content_type = "text/plain"),
        (status = 500, description = "The request store or the grants file cannot be written", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
pub async fn post_request(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    b: Bytes,
) -> Response {
    let (desk, h) = match setup(&st, &headers, false) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let new: NewRequest = match body(
        &b,
        false,
        "an access request {channels | group, actions, until, from?, reason}",
    ) {
        Ok(n) => n,
        Err(r) => return r.into_response(),
    };
    let req = match access::validate(&new, &h.dept, &h.user, SystemTime::now()) {
        Ok(r) => r,
        Err(e) => return failed(&e.into()),
    };
    if let Some(group) = access::named_group(&req).map(str::to_owned) {
        let g = group.clone();
        let known = st
            .node
            .query(move |n| {
                n.gate()
                    .policy()
                    .is_some_and(|p| access::group_defined(p, &g))
            })
            .await
            .unwrap_or(false);
        if !known {
            return failed(&Invalid::UnknownGroup { found: group }.into());
        }
    }
    match desk.submit(&st.node, &actor(&h), req).await {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => failed(&e),
    }
}

/// `GET /api/v1/access-requests?state=`: an admin sees all, a department
/// its own.
#[utoipa::path(
    get,
    path = "/api/v1/access-requests",
    tag = "access requests",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Requests: all for an admin, the department's own otherwise", body = Vec<AccessRequest>),
        (status = 400, description = "Unknown state", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "Requests are read with a department token (the node runs without a policy)", body = String, content_type = "text/plain"),
        (status = 404, description = "This node takes no access requests (it runs without `--grants`)", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_requests(
    State(st): State<AppState>,
    Query(p): Query<ListParams>,
    headers: axum::http::HeaderMap,
) -> Response {
    let (desk, h) = match setup(&st, &headers, false) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let state = match p.state.as_deref() {
        None | Some("all" | "") => None,
        Some(s) => match s.parse::<RequestState>() {
            Ok(s) => Some(s),
            Err(e) => return failed(&e.into()),
        },
    };
    let dept = (!h.admin).then_some(h.dept.as_str());
    Json(desk.list(dept, state).await).into_response()
}

/// `GET /api/v1/access-requests/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/access-requests/{id}",
    tag = "access requests",
    params(("id" = u64, Path, description = "The access request's number")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The request", body = AccessRequest),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "Requests are read with a department token (the node runs without a policy)", body = String, content_type = "text/plain"),
        (status = 404, description = "No such request (or another department's); or This node takes no access requests (it runs without `--grants`)", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_request(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let (desk, h) = match setup(&st, &headers, false) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match desk.get(id, (!h.admin).then_some(h.dept.as_str())).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(&e),
    }
}

/// `POST /api/v1/access-requests/{id}/approve` (admin): the approval
/// becomes grant lines in the grants file, in force when this answers
/// (unless its window begins later).
#[utoipa::path(
    post,
    path = "/api/v1/access-requests/{id}/approve",
    tag = "access requests",
    params(("id" = u64, Path, description = "The access request's number")),
    request_body(content = Option<Approval>, description = "Optional narrowing; an empty body approves the request as asked"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The request, approved; its grant is in force (unless its window begins later)", body = AccessRequest),
        (status = 400, description = "The approval widens the request or is not valid: says what is wrong", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 404, description = "No such request; or This node takes no access requests (it runs without `--grants`)", body = String, content_type = "text/plain"),
        (status = 409, description = "The request is no longer pending", body = String, content_type = "text/plain"),
        (status = 500, description = "The request store or the grants file cannot be written", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
pub async fn post_approve(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    b: Bytes,
) -> Response {
    let (desk, h) = match setup(&st, &headers, true) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let (id, approval) = match (
        parse_id(&id),
        body::<Approval>(&b, true, "an approval {channels?, actions?, until?}"),
    ) {
        (Ok(i), Ok(a)) => (i, a),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    match desk
        .approve(&st.node, &actor(&h), id, &approval, SystemTime::now())
        .await
    {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(&e),
    }
}

/// `POST /api/v1/access-requests/{id}/reject` (admin): `{reason}`.
#[utoipa::path(
    post,
    path = "/api/v1/access-requests/{id}/reject",
    tag = "access requests",
    params(("id" = u64, Path, description = "The access request's number")),
    request_body = Rejection,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The request, rejected", body = AccessRequest),
        (status = 400, description = "The body is not a rejection with a reason", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 404, description = "No such request; or This node takes no access requests (it runs without `--grants`)", body = String, content_type = "text/plain"),
        (status = 409, description = "The request is no longer pending", body = String, content_type = "text/plain"),
        (status = 500, description = "The request store or the grants file cannot be written", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
pub async fn post_reject(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    b: Bytes,
) -> Response {
    let (desk, h) = match setup(&st, &headers, true) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let (id, rejection) = match (
        parse_id(&id),
        body::<Rejection>(&b, false, "a rejection {reason}"),
    ) {
        (Ok(i), Ok(r)) => (i, r),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    match desk
        .reject(
            &st.node,
            &actor(&h),
            id,
            &rejection.reason,
            SystemTime::now(),
        )
        .await
    {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(&e),
    }
}
