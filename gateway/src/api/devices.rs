//! Device queries over HTTP: `GET /api/v1/devices/{id}/info`, `/status` and
//! `/records?start=&end=&type=`, asked down the cascade like the parent's
//! SIP queries and answered with the device's own answer as JSON.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use topology::GbId;

use super::AppState;
use crate::gb::manscdp::{DeviceInfo, DeviceStatus, RecordItem, RecordList};
use crate::gb::record::parse_local_time;
use crate::node::{DeviceQuery, QueryAnswer, QueryError};

/// `GET /api/v1/devices/{id}/info` answer: the device's DeviceInfo.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceInfoView {
    /// The ID asked about.
    pub device_id: String,
    /// `DeviceName`.
    pub name: Option<String>,
    /// `Manufacturer`.
    pub manufacturer: Option<String>,
    /// `Model`.
    pub model: Option<String>,
    /// `Firmware`.
    pub firmware: Option<String>,
    /// `Channel`: number of channels.
    pub channels: Option<u32>,
    /// `Result`: `OK` or `ERROR`.
    pub result: String,
}

/// `GET /api/v1/devices/{id}/status` answer: the device's DeviceStatus.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceStatusView {
    /// The ID asked about.
    pub device_id: String,
    /// `Result`: `OK` or `ERROR`.
    pub result: String,
    /// `Online`: `ONLINE` or `OFFLINE`.
    pub online: Option<String>,
    /// `Status`: `OK` or `ERROR`.
    pub status: Option<String>,
    /// `Encode`: `ON` or `OFF`.
    pub encode: Option<String>,
    /// `Record`: `ON` or `OFF`.
    pub record: Option<String>,
    /// `DeviceTime`: the device's clock, GB local time.
    pub device_time: Option<String>,
}

/// One recording.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordView {
    /// The channel recorded.
    pub device_id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `FilePath`.
    pub file_path: Option<String>,
    /// `Address`.
    pub address: Option<String>,
    /// `StartTime`, GB local time.
    pub start_time: Option<String>,
    /// `EndTime`, GB local time.
    pub end_time: Option<String>,
    /// `Secrecy`: 0 or 1.
    pub secrecy: Option<u8>,
    /// `Type`: `time`, `alarm` or `manual`.
    #[serde(rename = "type")]
    pub record_type: Option<String>,
    /// `RecorderID`.
    pub recorder_id: Option<String>,
    /// `FileSize` in bytes.
    pub file_size: Option<u64>,
}

/// `GET /api/v1/devices/{id}/records` answer: the device's RecordInfo,
/// every part collected.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordsView {
    /// The channel asked about.
    pub device_id: String,
    /// `Name` of the channel.
    pub name: Option<String>,
    /// `SumNum`: records the device announced.
    pub sum_num: u32,
    /// False when parts stopped coming before `sum_num` records did.
    pub complete: bool,
    /// The records, in the order they came.
    pub records: Vec<RecordView>,
}

/// Query string of `GET /api/v1/devices/{id}/records`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsParams {
    /// Start of the range, GB local time `YYYY-MM-DDTHH:MM:SS`.
    #[param(required = true)]
    pub start: Option<String>,
    /// End of the range, GB local time `YYYY-MM-DDTHH:MM:SS`.
    #[param(required = true)]
    pub end: Option<String>,
    /// `all` (default), `time`, `alarm` or `manual`.
    #[serde(rename = "type")]
    pub record_type: Option<String>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (status, m).into_response()
}

/// Why a request is refused with 400: a message for whoever wrote it.
type BadRequest = String;

fn bad_request(msg: BadRequest) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

fn parse_id(id: &str) -> Result<GbId, BadRequest> {
    GbId::parse(id).map_err(|e| format!("{id:?} is not a 20-digit GB/T 28181 ID: {e}"))
}

impl From<DeviceInfo> for DeviceInfoView {
    fn from(d: DeviceInfo) -> Self {
        DeviceInfoView {
            device_id: d.device_id,
            name: d.device_name,
            manufacturer: d.manufacturer,
            model: d.model,
            firmware: d.firmware,
            channels: d.channel,
            result: d.result,
        }
    }
}

impl From<DeviceStatus> for DeviceStatusView {
    fn from(d: DeviceStatus) -> Self {
        DeviceStatusView {
            device_id: d.device_id,
            result: d.result,
            online: d.online,
            status: d.status,
            encode: d.encode,
            record: d.record,
            device_time: d.device_time,
        }
    }
}

impl From<RecordItem> for RecordView {
    fn from(r: RecordItem) -> Self {
        RecordView {
            device_id: r.device_id,
            name: r.name,
            file_path: r.file_path,
            address: r.address,
            start_time: r.start_time,
            end_time: r.end_time,
            secrecy: r.secrecy,
            record_type: r.record_type,
            recorder_id: r.recorder_id,
            file_size: r.file_size,
        }
    }
}

fn records_view(list: RecordList, complete: bool) -> RecordsView {
    RecordsView {
        device_id: list.device_id,
        name: list.name,
        sum_num: list.sum_num,
        complete,
        records: list.items.into_iter().map(RecordView::from).collect(),
    }
}

async fn ask(st: &AppState, headers: &HeaderMap, id: GbId, query: DeviceQuery) -> Response {
    // The gate first: catalog rights to read a device's info and status,
    // playback rights to list its recordings.
    let action = match query {
        DeviceQuery::Records { .. } => policy::Action::Playback,
        _ => policy::Action::Catalog,
    };
    let who = match super::sharing::caller(st, headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = super::sharing::authorize(&st.node, &who, id, action).await {
        return r.into_response();
    }
    let answer = match st.node.ask_device(id, query).await {
        Ok(a) => a,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match answer {
        Ok(QueryAnswer::Info(d)) => Json(DeviceInfoView::from(d)).into_response(),
        Ok(QueryAnswer::Status(d)) => Json(DeviceStatusView::from(d)).into_response(),
        Ok(QueryAnswer::Records { list, complete }) => {
            Json(records_view(list, complete)).into_response()
        }
        // Asked only through `control.rs`.
        Ok(QueryAnswer::Presets(_) | QueryAnswer::Config(_) | QueryAnswer::Control { .. }) => {
            error(StatusCode::BAD_GATEWAY, "unexpected answer from the node")
        }
        Err(e) => {
            let status = match e {
                QueryError::NotFound => StatusCode::NOT_FOUND,
                QueryError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                QueryError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            };
            error(status, e.to_string())
        }
    }
}

/// `GET /api/v1/devices/{id}/info`.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/info",
    tag = "devices",
    params(("id" = String, Path, description = "20-digit GB/T 28181 ID of a device or channel below this node", example = "34020000001320000001")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device's DeviceInfo, asked down the cascade", body = DeviceInfoView),
        (status = 400, description = "The ID is not a 20-digit GB/T 28181 ID", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not let the caller's department see this device in the catalog", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither this node nor online below it (unknown and offline look alike)", body = String, content_type = "text/plain"),
        (status = 503, description = "Too many queries pending, or the node is stopping", body = String, content_type = "text/plain"),
        (status = 504, description = "The device did not answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_info(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match parse_id(&id) {
        Ok(id) => ask(&st, &headers, id, DeviceQuery::Info).await,
        Err(msg) => bad_request(msg),
    }
}

/// `GET /api/v1/devices/{id}/status`.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/status",
    tag = "devices",
    params(("id" = String, Path, description = "20-digit GB/T 28181 ID of a device or channel below this node", example = "34020000001320000001")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device's DeviceStatus, asked down the cascade", body = DeviceStatusView),
        (status = 400, description = "The ID is not a 20-digit GB/T 28181 ID", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not let the caller's department see this device in the catalog", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither this node nor online below it (unknown and offline look alike)", body = String, content_type = "text/plain"),
        (status = 503, description = "Too many queries pending, or the node is stopping", body = String, content_type = "text/plain"),
        (status = 504, description = "The device did not answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_status(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match parse_id(&id) {
        Ok(id) => ask(&st, &headers, id, DeviceQuery::Status).await,
        Err(msg) => bad_request(msg),
    }
}

/// Checks the records query string; the query to ask, or a 400.
fn records_query(p: RecordsParams) -> Result<DeviceQuery, BadRequest> {
    let time = |name: &str, v: Option<String>| -> Result<(String, i64), BadRequest> {
        let v =
            v.ok_or_else(|| format!("records need ?{name}=YYYY-MM-DDTHH:MM:SS (GB local time)"))?;
        match parse_local_time(&v) {
            Some(t) => Ok((v, t)),
            None => Err(format!(
                "{name}={v:?} is not a GB local time YYYY-MM-DDTHH:MM:SS"
            )),
        }
    };
    let (start, s) = time("start", p.start)?;
    let (end, e) = time("end", p.end)?;
    if e <= s {
        return Err("end must be after start".into());
    }
    let record_type = p.record_type.unwrap_or_else(|| "all".into());
    if !["all", "time", "alarm", "manual"].contains(&record_type.as_str()) {
        return Err(format!(
            "type={record_type:?}: use all, time, alarm or manual"
        ));
    }
    Ok(DeviceQuery::Records {
        start,
        end,
        record_type,
    })
}

/// `GET /api/v1/devices/{id}/records?start=&end=&type=`.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/records",
    tag = "devices",
    params(("id" = String, Path, description = "20-digit GB/T 28181 ID of a device or channel below this node", example = "34020000001320000001"), RecordsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device's RecordInfo, every part collected at every hop", body = RecordsView),
        (status = 400, description = "The ID is not a 20-digit ID, or start, end or type are missing or wrong", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not let the caller's department replay this channel", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither this node nor online below it (unknown and offline look alike)", body = String, content_type = "text/plain"),
        (status = 503, description = "Too many queries pending, or the node is stopping", body = String, content_type = "text/plain"),
        (status = 504, description = "The device did not answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_records(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<RecordsParams>,
    headers: HeaderMap,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(msg) => return bad_request(msg),
    };
    match records_query(p) {
        Ok(q) => ask(&st, &headers, id, q).await,
        Err(msg) => bad_request(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(start: Option<&str>, end: Option<&str>, t: Option<&str>) -> RecordsParams {
        RecordsParams {
            start: start.map(str::to_owned),
            end: end.map(str::to_owned),
            record_type: t.map(str::to_owned),
        }
    }

    #[test]
    fn records_query_checks_times_and_type() {
        let q = records_query(params(
            Some("2024-05-01T00:00:00"),
            Some("2024-05-01T01:00:00"),
            None,
        ));
        assert!(
            matches!(q, Ok(DeviceQuery::Records { ref record_type, .. }) if record_type == "all")
        );
        for (s, e, t) in [
            (None, Some("2024-05-01T01:00:00"), None),
            (
                Some("2024-05-01 00:00:00"),
                Some("2024-05-01T01:00:00"),
                None,
            ),
            (
                Some("2024-05-01T01:00:00"),
                Some("2024-05-01T01:00:00"),
                None,
            ),
            (
                Some("2024-05-01T00:00:00"),
                Some("2024-05-01T01:00:00"),
                Some("video"),
            ),
        ] {
            let msg = records_query(params(s, e, t)).expect_err("refused");
            assert!(!msg.is_empty());
        }
        assert!(parse_id("123").is_err());
    }
}
