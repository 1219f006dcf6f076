//! `GET /api/v1/alarms`: the alarms and mobile positions this node heard
//! from below (its own devices' and every tier's passed up), newest last,
//! only for what the caller may see. The console polls it with `after=`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::sharing::caller;
use super::AppState;
use crate::node::{DeviceEvent, DeviceEventKind};

/// Query string of `GET /api/v1/alarms`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlarmsParams {
    /// Only events after this `seq` (0: from the oldest kept).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
}

/// One alarm or position.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmView {
    /// Its number in this node's log; pass the last as `after`.
    pub seq: u64,
    /// When this node heard it, Unix milliseconds.
    pub at_ms: u64,
    /// `alarm` or `position`.
    pub kind: String,
    /// The device or channel.
    pub device_id: String,
    /// Alarms: `AlarmPriority` 1–4.
    pub priority: Option<u8>,
    /// Alarms: `AlarmMethod` 1–7.
    pub method: Option<u8>,
    /// Alarms: `Info/AlarmType`.
    pub alarm_type: Option<u8>,
    /// `AlarmTime` or the position's `Time`, as the device wrote it.
    pub time: Option<String>,
    /// Alarms: `AlarmDescription`.
    pub description: Option<String>,
    /// WGS-84.
    pub longitude: Option<f64>,
    /// WGS-84.
    pub latitude: Option<f64>,
    /// Positions: km/h.
    pub speed: Option<f64>,
}

impl From<DeviceEvent> for AlarmView {
    fn from(e: DeviceEvent) -> Self {
        let mut v = AlarmView {
            seq: e.seq,
            at_ms: e.at_ms,
            kind: String::new(),
            device_id: e.device_id,
            priority: None,
            method: None,
            alarm_type: None,
            time: None,
            description: None,
            longitude: None,
            latitude: None,
            speed: None,
        };
        match e.kind {
            DeviceEventKind::Alarm(a) => {
                v.kind = "alarm".into();
                v.priority = a.priority;
                v.method = a.method;
                v.alarm_type = a.alarm_type;
                v.time = a.time;
                v.description = a.description;
                v.longitude = a.longitude;
                v.latitude = a.latitude;
            }
            DeviceEventKind::Position(p) => {
                v.kind = "position".into();
                v.time = p.time;
                v.longitude = p.longitude;
                v.latitude = p.latitude;
                v.speed = p.speed;
            }
        }
        v
    }
}

/// `GET /api/v1/alarms?after=&limit=`.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "alarms",
    params(AlarmsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Alarms and positions heard from below that the caller may see, oldest first", body = Vec<AlarmView>),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_alarms(
    State(st): State<AppState>,
    Query(p): Query<AlarmsParams>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let after = p.after.unwrap_or(0);
    let limit = p.limit.unwrap_or(100).clamp(1, 1_000);
    let res = st
        .node
        .command(move |n, now| {
            let dept = who.subjects().map(|(d, _)| d);
            n.device_events(dept.as_ref(), after, limit, now)
        })
        .await;
    match res {
        Ok(events) => {
            Json(events.into_iter().map(AlarmView::from).collect::<Vec<_>>()).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}
