//! Camera control over HTTP: `POST /api/v1/channels/{id}/ptz` (move, zoom,
//! stop, presets), `POST /api/v1/channels/{id}/control` (record, guard,
//! alarm reset, keyframe, reboot, home position) and `GET
//! /api/v1/channels/{id}/presets`, sent down the cascade as DeviceControl
//! and PresetQuery under the caller's department, which holds the camera's
//! control lock while it steers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use policy::{Action, Subject};
use serde::{Deserialize, Serialize};
use topology::GbId;

use super::sharing::{authorize, caller, Caller};
use super::AppState;
use crate::gb::manscdp::{ControlCommand, PresetList};
use crate::gb::ptz::{Motion, PtzAction, PtzCmd};
use crate::node::{ControlOutcome, DeviceQuery, QueryAnswer, QueryError};

/// `POST /api/v1/channels/{id}/ptz` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PtzRequest {
    /// `stop`, `left`, `right`, `up`, `down`, `up_left`, `up_right`,
    /// `down_left`, `down_right`, `zoom_in`, `zoom_out`, `preset_set`,
    /// `preset_call` or `preset_delete`.
    pub action: String,
    /// Pan and tilt speed, 0–255 (default 128); zoom uses its top 4 bits.
    pub speed: Option<u8>,
    /// Preset number 1–255, for the `preset_` actions.
    pub preset: Option<u8>,
}

/// `POST /api/v1/channels/{id}/control` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ControlRequest {
    /// `record_start`, `record_stop`, `guard_set`, `guard_reset`,
    /// `alarm_reset`, `keyframe`, `reboot` or `home_position`.
    pub command: String,
    /// For `home_position`: on (default) or off.
    pub enabled: Option<bool>,
    /// For `home_position`: idle seconds before going home.
    pub reset_secs: Option<u32>,
    /// For `home_position`: the preset that is home.
    pub preset: Option<u8>,
}

/// A command's answer.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ControlView {
    /// The channel controlled.
    pub device_id: String,
    /// `OK`: the device took it.
    pub result: String,
}

/// The 409 answer: someone else steers this camera.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LockedView {
    /// The channel.
    pub device_id: String,
    /// Who holds its control lock (`dept:police`).
    pub holder: String,
    /// Seconds until the lock is free, unless its holder keeps steering.
    pub seconds_left: u32,
    /// The same, for a person.
    pub message: String,
}

/// One preset.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PresetView {
    /// Preset number.
    pub id: String,
    /// Its name, if the camera has one.
    pub name: Option<String>,
}

/// `GET /api/v1/channels/{id}/config` answer: the device's BasicParam.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    /// The device.
    pub device_id: String,
    /// `OK`, or `ERROR` when the device would not say.
    pub result: String,
    /// Its name.
    pub name: Option<String>,
    /// Registration expiry, seconds.
    pub expiration: Option<u32>,
    /// Keepalive period, seconds.
    pub heartbeat_interval: Option<u32>,
    /// Missed keepalives before it counts as offline.
    pub heartbeat_count: Option<u32>,
}

/// Query string of `GET /api/v1/channels/{id}/config`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigParams {
    /// `ConfigType` (default `BasicParam`).
    #[serde(rename = "type")]
    pub config_type: Option<String>,
}

/// `GET /api/v1/channels/{id}/presets` answer.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PresetsView {
    /// The camera.
    pub device_id: String,
    /// Its presets.
    pub presets: Vec<PresetView>,
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (status, m).into_response()
}

/// The command a PTZ request asks for, or why it is wrong.
fn ptz_command(r: &PtzRequest) -> Result<PtzCmd, String> {
    let speed = r.speed.unwrap_or(128);
    let motion = |pan, tilt, zoom| PtzAction::Move {
        motion: Motion { pan, tilt, zoom },
        pan_speed: if pan != 0 { speed } else { 0 },
        tilt_speed: if tilt != 0 { speed } else { 0 },
        zoom_speed: if zoom != 0 { (speed >> 4).max(1) } else { 0 },
    };
    let preset = || match r.preset {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{} needs \"preset\": 1-255", r.action)),
    };
    let action = match r.action.as_str() {
        "stop" => PtzAction::Stop,
        "left" => motion(-1, 0, 0),
        "right" => motion(1, 0, 0),
        "up" => motion(0, 1, 0),
        "down" => motion(0, -1, 0),
        "up_left" => motion(-1, 1, 0),
        "up_right" => motion(1, 1, 0),
        "down_left" => motion(-1, -1, 0),
        "down_right" => motion(1, -1, 0),
        "zoom_in" => motion(0, 0, 1),
        "zoom_out" => motion(0, 0, -1),
        "preset_set" => PtzAction::SetPreset(preset()?),
        "preset_call" => PtzAction::CallPreset(preset()?),
        "preset_delete" => PtzAction::DeletePreset(preset()?),
        other => {
            return Err(format!(
                "action {other:?}: use stop, left, right, up, down, up_left, up_right, down_left, down_right, zoom_in, zoom_out, preset_set, preset_call or preset_delete"
            ))
        }
    };
    Ok(PtzCmd::new(action))
}

/// The command a control request asks for, or why it is wrong.
fn control_command(r: &ControlRequest) -> Result<ControlCommand, String> {
    Ok(match r.command.as_str() {
        "record_start" => ControlCommand::Record(true),
        "record_stop" => ControlCommand::Record(false),
        "guard_set" => ControlCommand::Guard(true),
        "guard_reset" => ControlCommand::Guard(false),
        "alarm_reset" => ControlCommand::ResetAlarm,
        "keyframe" => ControlCommand::IFrame,
        "reboot" => ControlCommand::TeleBoot,
        "home_position" => ControlCommand::HomePosition {
            enabled: r.enabled.unwrap_or(true),
            reset_time: r.reset_secs,
            preset_index: r.preset,
        },
        other => {
            return Err(format!(
                "command {other:?}: use record_start, record_stop, guard_set, guard_reset, alarm_reset, keyframe, reboot or home_position"
            ))
        }
    })
}

/// Gate, then ask the node; the answer, or the response that refuses.
async fn ask(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    query: impl FnOnce(Subject) -> DeviceQuery,
) -> Result<QueryAnswer, Response> {
    // Who calls comes first: nothing is said to a caller without a token.
    let who = caller(st, headers).map_err(IntoResponse::into_response)?;
    let id = GbId::parse(id).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a 20-digit GB/T 28181 ID: {e}"),
        )
    })?;
    authorize(&st.node, &who, id, Action::Ptz)
        .await
        .map_err(IntoResponse::into_response)?;
    let by = match &who {
        Caller::Holder(h) => h.subject(),
        // Without a policy every caller is the same anonymous operator.
        Caller::Open => Subject::User("anonymous".into()),
    };
    let answer = st
        .node
        .ask_device(id, query(by))
        .await
        .map_err(|e| text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    answer.map_err(|e| {
        let status = match e {
            QueryError::NotFound => StatusCode::NOT_FOUND,
            QueryError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        };
        text(status, e.to_string())
    })
}

fn control_response(answer: QueryAnswer) -> Response {
    let QueryAnswer::Control { device_id, outcome } = answer else {
        return text(StatusCode::BAD_GATEWAY, "unexpected answer from the node");
    };
    match outcome {
        ControlOutcome::Done => Json(ControlView {
            device_id,
            result: "OK".into(),
        })
        .into_response(),
        ControlOutcome::Locked {
            holder,
            seconds_left,
        } => {
            let message = format!(
                "{holder} is steering this camera; its control lock frees in {seconds_left} s unless it keeps steering (a department with a higher ptz_priority takes it over)"
            );
            let view = LockedView {
                device_id,
                holder,
                seconds_left,
                message,
            };
            (StatusCode::CONFLICT, Json(view)).into_response()
        }
        ControlOutcome::DeviceError => text(StatusCode::BAD_GATEWAY, "the device answered ERROR"),
        ControlOutcome::Undelivered(408) => text(
            StatusCode::GATEWAY_TIMEOUT,
            "the command got no answer on its way to the device",
        ),
        ControlOutcome::Undelivered(s) => text(
            StatusCode::BAD_GATEWAY,
            format!("the command was refused on its way to the device (SIP {s})"),
        ),
    }
}

const ID_PARAM: &str = "20-digit GB/T 28181 ID of a camera below this node";

/// `POST /api/v1/channels/{id}/ptz`.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/ptz",
    tag = "control",
    params(("id" = String, Path, description = ID_PARAM, example = "34020000001320000001")),
    request_body = PtzRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The camera took the command", body = ControlView),
        (status = 400, description = "Not a 20-digit ID, or an unknown action or missing preset", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not give the caller's department `ptz` on this camera", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither online below this node nor known (the two look alike)", body = String, content_type = "text/plain"),
        (status = 409, description = "Another department holds the camera's control lock", body = LockedView),
        (status = 422, description = "The JSON lacks a field or has one of the wrong type", body = String, content_type = "text/plain"),
        (status = 502, description = "The device or a tier refused the command", body = String, content_type = "text/plain"),
        (status = 504, description = "No answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn post_ptz(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<PtzRequest>,
) -> Response {
    let command = ptz_command(&req).map(ControlCommand::Ptz);
    send_command(&st, &headers, &id, command).await
}

/// Sends `command` (or answers 400 with why it is wrong) down to `id` for
/// the caller, and answers with how it went.
async fn send_command(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    command: Result<ControlCommand, String>,
) -> Response {
    let command = match command {
        Ok(c) => c,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    match ask(st, headers, id, |by| DeviceQuery::Control { command, by }).await {
        Ok(a) => control_response(a),
        Err(r) => r,
    }
}

/// `POST /api/v1/channels/{id}/control`.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/control",
    tag = "control",
    params(("id" = String, Path, description = ID_PARAM, example = "34020000001320000001")),
    request_body = ControlRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device took the command", body = ControlView),
        (status = 400, description = "Not a 20-digit ID, or an unknown command", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not give the caller's department `ptz` on this device", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither online below this node nor known (the two look alike)", body = String, content_type = "text/plain"),
        (status = 409, description = "Another department holds the camera's control lock", body = LockedView),
        (status = 422, description = "The JSON lacks a field or has one of the wrong type", body = String, content_type = "text/plain"),
        (status = 502, description = "The device answered ERROR, or a tier refused the command", body = String, content_type = "text/plain"),
        (status = 504, description = "No answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn post_control(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<ControlRequest>,
) -> Response {
    send_command(&st, &headers, &id, control_command(&req)).await
}

/// `GET /api/v1/channels/{id}/presets`.
#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}/presets",
    tag = "control",
    params(("id" = String, Path, description = ID_PARAM, example = "34020000001320000001")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The camera's presets (PresetQuery through the cascade)", body = PresetsView),
        (status = 400, description = "Not a 20-digit ID", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not give the caller's department `ptz` on this camera", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither online below this node nor known (the two look alike)", body = String, content_type = "text/plain"),
        (status = 504, description = "No answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_presets(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match ask(&st, &headers, &id, |_| DeviceQuery::Presets).await {
        Ok(QueryAnswer::Presets(PresetList {
            device_id, items, ..
        })) => Json(PresetsView {
            device_id,
            presets: items
                .into_iter()
                .map(|p| PresetView {
                    id: p.id,
                    name: p.name,
                })
                .collect(),
        })
        .into_response(),
        Ok(_) => text(StatusCode::BAD_GATEWAY, "unexpected answer from the node"),
        Err(r) => r,
    }
}

/// `GET /api/v1/channels/{id}/config?type=BasicParam`.
#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}/config",
    tag = "control",
    params(("id" = String, Path, description = ID_PARAM, example = "34020000001320000001"), ConfigParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device's configuration (ConfigDownload through the cascade)", body = ConfigView),
        (status = 400, description = "Not a 20-digit ID, or a type that is not a ConfigType name", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not give the caller's department `ptz` on this device", body = String, content_type = "text/plain"),
        (status = 404, description = "Neither online below this node nor known (the two look alike)", body = String, content_type = "text/plain"),
        (status = 504, description = "No answer in time", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_config(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ConfigParams>,
    headers: HeaderMap,
) -> Response {
    let config_type = p.config_type.unwrap_or_else(|| "BasicParam".into());
    let name_ok = !config_type.is_empty()
        && config_type.len() <= 64
        && config_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '/');
    if !name_ok {
        return text(
            StatusCode::BAD_REQUEST,
            format!("type={config_type:?}: a ConfigType such as BasicParam"),
        );
    }
    match ask(&st, &headers, &id, |_| DeviceQuery::Config { config_type }).await {
        Ok(QueryAnswer::Config(c)) => Json(ConfigView {
            device_id: c.device_id,
            result: c.result,
            name: c.name,
            expiration: c.expiration,
            heartbeat_interval: c.heartbeat_interval,
            heartbeat_count: c.heartbeat_count,
        })
        .into_response(),
        Ok(_) => text(StatusCode::BAD_GATEWAY, "unexpected answer from the node"),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptz(action: &str, speed: Option<u8>, preset: Option<u8>) -> Result<PtzCmd, String> {
        ptz_command(&PtzRequest {
            action: action.into(),
            speed,
            preset,
        })
    }

    #[test]
    fn requests_become_the_protocol_reference_commands() {
        assert_eq!(
            ptz("stop", None, None).unwrap().to_string(),
            "A50F0100000000B5"
        );
        assert_eq!(
            ptz("right", Some(0x80), None).unwrap().to_string(),
            "A50F010180000036"
        );
        assert_eq!(
            ptz("preset_call", None, Some(3)).unwrap().to_string(),
            "A50F01820003003A"
        );
        assert!(ptz("preset_call", None, None)
            .unwrap_err()
            .contains("preset"));
        assert!(ptz("spin", None, None).unwrap_err().contains("use stop"));
        let req = |c: &str| ControlRequest {
            command: c.into(),
            enabled: None,
            reset_secs: Some(30),
            preset: Some(1),
        };
        assert_eq!(
            control_command(&req("record_start")),
            Ok(ControlCommand::Record(true))
        );
        assert_eq!(
            control_command(&req("home_position")),
            Ok(ControlCommand::HomePosition {
                enabled: true,
                reset_time: Some(30),
                preset_index: Some(1)
            })
        );
        assert!(control_command(&req("explode")).is_err());
    }
}
