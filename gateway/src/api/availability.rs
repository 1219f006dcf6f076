//! `GET /api/v1/availability`: the online rate per county, per node below
//! or per department over a window, from the status changes this node
//! recorded (the city's covers the whole tree: its catalog hears every
//! channel's ON and OFF pushed up, no camera is polled).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::sharing::{admin, refuse};
use super::AppState;
use crate::availability::{channel_times, group_rates, rates_by_place, GroupBy, GroupRate};

/// Query string of `GET /api/v1/availability`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityParams {
    /// `county` (default: the ID's first 6 digits), `node` (the registrant
    /// each channel came through) or `department` (each department that
    /// may see it).
    pub group_by: Option<String>,
    /// Start of the window, Unix seconds (default: 24 h before `to`).
    pub from: Option<u64>,
    /// End of the window, Unix seconds (default: now).
    pub to: Option<u64>,
}

/// `GET /api/v1/availability` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AvailabilityView {
    /// The window, Unix seconds.
    pub from: u64,
    /// The window's end, Unix seconds.
    pub to: u64,
    /// How channels were grouped.
    pub group_by: String,
    /// One line per group, by name.
    pub groups: Vec<GroupRate>,
}

/// `GET /api/v1/availability?group_by=&from=&to=`.
#[utoipa::path(
    get,
    path = "/api/v1/availability",
    tag = "availability",
    params(AvailabilityParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Online rate per group over the window, from the recorded status changes", body = AvailabilityView),
        (status = 400, description = "An unknown group_by, or from not before to", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "Not an admin", body = String, content_type = "text/plain"),
        (status = 404, description = "This node keeps no history (no audit store)", body = String, content_type = "text/plain"),
        (status = 503, description = "The store cannot be read", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_availability(
    State(st): State<AppState>,
    Query(p): Query<AvailabilityParams>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&st, &headers) {
        return r.into_response();
    }
    let name = p.group_by.unwrap_or_else(|| "county".into());
    let Some(group_by) = GroupBy::parse(&name) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("group_by={name:?}: use county, node or department"),
        )
        .into_response();
    };
    let now = policy::audit::now_ms() / 1000;
    let to = p.to.unwrap_or(now);
    let from = p.from.unwrap_or(to.saturating_sub(86_400));
    if from >= to {
        return refuse(StatusCode::BAD_REQUEST, "from must be before to").into_response();
    }
    let Some(url) = st.sharing.audit_url.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "this node keeps no availability history: run it with a policy or --audit",
        )
        .into_response();
    };
    // A read connection of its own: the writer thread is never blocked.
    let read = tokio::task::spawn_blocking(move || {
        let mut store = policy::audit::open(&url)?;
        let history = store.status_history(from * 1000, to * 1000)?;
        Ok::<_, policy::audit::AuditError>(channel_times(&history, from * 1000, to * 1000))
    })
    .await;
    let times = match read {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let groups = match rates_by_place(&times, group_by) {
        Some(g) => g,
        None => {
            let channels: Vec<String> = times.iter().map(|t| t.channel.clone()).collect();
            let depts = match st
                .node
                .command(move |n, now| n.departments_seeing(&channels, now))
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
                }
            };
            let mut it = depts.into_iter();
            group_rates(&times, |_| it.next().unwrap_or_default())
        }
    };
    Json(AvailabilityView {
        from,
        to,
        group_by: name,
        groups,
    })
    .into_response()
}
