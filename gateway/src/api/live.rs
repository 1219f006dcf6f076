//! Viewers over HTTP: `GET /live/{channel}.flv|.ts`, `GET
//! /playback/{channel}.flv|.ts?start=&end=` and playback control. Each is a
//! long-lived chunked response fed from the channel's hub; opening one opens
//! the stream below on demand, and closing the connection leaves the hub.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use topology::GbId;

use super::sharing::{self, ViewerGuard};
use super::video_conn::{VideoBody, VideoParts};
use super::AppState;
use crate::streams::hub::{Format, Next, Viewer};
use crate::streams::{ControlOutcome, OpenError, StreamManager};
use policy::Action;

/// A refusal: status and a message for the person or player asking.
type Refusal = (StatusCode, String);

fn refusal(status: StatusCode, msg: impl Into<String>) -> Refusal {
    let mut m = msg.into();
    m.push('\n');
    (status, m)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    refusal(status, msg).into_response()
}

/// `34020000001320000001.flv` → the channel and the format.
fn parse_file(file: &str, hevc: Option<&str>) -> Result<(GbId, Format), Refusal> {
    let (name, ext) = file.rsplit_once('.').ok_or_else(|| {
        refusal(
            StatusCode::NOT_FOUND,
            "use /live/{channel}.flv or /live/{channel}.ts",
        )
    })?;
    let format = match (ext, hevc) {
        ("flv", Some("legacy")) => Format::FlvLegacyHevc,
        ("flv", _) => Format::Flv,
        ("ts", _) => Format::Ts,
        _ => {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                format!("unknown format .{ext}; use .flv or .ts"),
            ))
        }
    };
    let channel = GbId::parse(name).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a 20-digit channel ID: {e}"),
        )
    })?;
    Ok((channel, format))
}

fn open_error(e: &OpenError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    error(status, e.to_string())
}

fn streams(st: &AppState) -> Result<Arc<StreamManager>, Refusal> {
    st.streams
        .clone()
        .ok_or_else(|| refusal(StatusCode::SERVICE_UNAVAILABLE, "this node serves no media"))
}

/// The chunked body of a viewer when hyper writes it: the hub's bytes
/// until it ends, the client goes away (hyper then drops the stream, and
/// the viewer with it) or the policy revokes it. Empty when the listener's
/// fork took the video to write it itself ([`super::video_conn`]).
fn body(video: VideoBody) -> Body {
    let stream = futures_util::stream::unfold((video, None), |(video, parts)| async move {
        let mut p: VideoParts = match parts {
            Some(p) => p,
            None => video.take()?,
        };
        let next = match &p.stop {
            Some(stop) => tokio::select! {
                n = p.viewer.next() => n,
                _ = stop.cancelled() => {
                    tracing::info!(stream = %p.viewer.hub().name, "viewer ends: sharing revoked");
                    return None;
                }
            },
            None => p.viewer.next().await,
        };
        match next {
            Next::Data { bytes, .. } => {
                Some((Ok::<Bytes, std::io::Error>(bytes), (video, Some(p))))
            }
            Next::End(reason) => {
                tracing::info!(stream = %p.viewer.hub().name, %reason, "viewer stream ends");
                None
            }
        }
    });
    Body::from_stream(stream)
}

fn video_response(
    format: Format,
    viewer: Viewer,
    session: Option<u64>,
    guard: Option<ViewerGuard>,
) -> Response {
    let parts = VideoParts {
        viewer,
        format,
        stop: guard.as_ref().map(|g| g.stop.clone()),
        keep: guard.map(|g| Box::new(g) as Box<dyn Send + Sync>),
    };
    let video = VideoBody(Arc::new(std::sync::Mutex::new(Some(parts))));
    let mut r = Response::new(body(video.clone()));
    r.extensions_mut().insert(video);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    // Browser players (mpegts.js) fetch from other origins.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    if let Some(s) = session {
        if let Ok(v) = header::HeaderValue::from_str(&s.to_string()) {
            h.insert("x-playback-session", v);
        }
    }
    r
}

/// Query string of the video endpoints.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VideoParams {
    /// `legacy` writes H.265 in FLV as CodecID 12 instead of Enhanced RTMP.
    pub hevc: Option<String>,
    /// Playback: start of the range, Unix seconds.
    pub start: Option<u64>,
    /// Playback: end of the range, Unix seconds.
    pub end: Option<u64>,
    /// Playback: the session number to use (1 to 2^53-1), for a player
    /// that cannot read the `X-Playback-Session` header (a browser's
    /// MSE player); pick it at random. Taken or out of range: the node
    /// picks one, as without it.
    pub session: Option<u64>,
    /// The signed play token from `POST /api/v1/streams` (with a policy).
    /// Described as the `play_token` security scheme, not as a parameter.
    #[param(ignore)]
    pub token: Option<String>,
}

/// `GET /live/{channel}.flv|.ts`
#[utoipa::path(
    get,
    path = "/live/{file}",
    tag = "video",
    params(
        ("file" = String, Path, description = "The channel's 20-digit ID and the format: `{channel}.flv` (HTTP-FLV) or `{channel}.ts` (MPEG-TS)", example = "34020000001320000001.flv"),
        VideoParams,
    ),
    security(("bearer" = []), ("play_token" = [])),
    responses(
        (status = 200, description = "Live video, chunked, until the client closes it, the stream ends or the policy revokes it",
            content((super::openapi::Video = "video/x-flv"), (super::openapi::Video = "video/mp2t"))),
        (status = 400, description = "The file name is not a 20-digit channel ID", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or a token not known here, or a play token that is expired or for another channel or action", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not let the caller's department do this on the channel", body = String, content_type = "text/plain"),
        (status = 404, description = "Unknown format (use .flv or .ts), or the channel is not in this node's catalog", body = String, content_type = "text/plain"),
        (status = 502, description = "The device or the node below refused the call, failed it or did not answer", body = String, content_type = "text/plain"),
        (status = 503, description = "This node serves no media, is stopping, or has no room for another stream or viewer", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_live(
    State(st): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<VideoParams>,
    headers: HeaderMap,
) -> Response {
    let (channel, format) = match parse_file(&file, q.hevc.as_deref()) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let holder =
        match sharing::viewer(&st, &headers, q.token.as_deref(), channel, Action::Live).await {
            Ok(h) => h,
            Err(r) => return r.into_response(),
        };
    let streams = match streams(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let behalf = holder.as_ref().map(|h| h.subject());
    match streams.watch_live(channel, format, behalf).await {
        Ok(v) => {
            let guard = holder.map(|h| st.viewers.open(h, channel, Action::Live));
            video_response(format, v, None, guard)
        }
        Err(e) => open_error(&e),
    }
}

/// `GET /playback/{channel}.flv|.ts?start=&end=`: a private playback
/// session; its number comes back in `X-Playback-Session`.
#[utoipa::path(
    get,
    path = "/playback/{file}",
    tag = "video",
    params(
        ("file" = String, Path, description = "The channel's 20-digit ID and the format: `{channel}.flv` (HTTP-FLV) or `{channel}.ts` (MPEG-TS)", example = "34020000001320000001.ts"),
        VideoParams,
    ),
    security(("bearer" = []), ("play_token" = [])),
    responses(
        (status = 200, description = "The recording from the device that holds it, chunked; the response ends at the end of the range",
            headers(("X-Playback-Session" = u64, description = "The playback session, for `POST /api/v1/playback/{session}/control`")),
            content((super::openapi::Video = "video/x-flv"), (super::openapi::Video = "video/mp2t"))),
        (status = 400, description = "The file name is not a 20-digit channel ID, or `start`/`end` are missing or out of order", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or a token not known here, or a play token that is expired or for another channel or action", body = String, content_type = "text/plain"),
        (status = 403, description = "The policy does not let the caller's department do this on the channel", body = String, content_type = "text/plain"),
        (status = 404, description = "Unknown format (use .flv or .ts), or the channel is not in this node's catalog", body = String, content_type = "text/plain"),
        (status = 502, description = "The device or the node below refused the call, failed it or did not answer", body = String, content_type = "text/plain"),
        (status = 503, description = "This node serves no media, is stopping, or has no room for another stream or viewer", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_playback(
    State(st): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<VideoParams>,
    headers: HeaderMap,
) -> Response {
    let (channel, format) = match parse_file(&file, q.hevc.as_deref()) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let (Some(start), Some(end)) = (q.start, q.end) else {
        return error(
            StatusCode::BAD_REQUEST,
            "playback needs ?start=&end= (Unix seconds)",
        );
    };
    if end <= start {
        return error(StatusCode::BAD_REQUEST, "end must be after start");
    }
    let holder =
        match sharing::viewer(&st, &headers, q.token.as_deref(), channel, Action::Playback).await {
            Ok(h) => h,
            Err(r) => return r.into_response(),
        };
    let streams = match streams(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let behalf = holder.as_ref().map(|h| h.subject());
    match streams
        .watch_playback(channel, start, end, format, behalf, q.session)
        .await
    {
        Ok((session, v)) => {
            let guard = holder.map(|h| st.viewers.open(h, channel, Action::Playback));
            video_response(format, v, Some(session), guard)
        }
        Err(e) => open_error(&e),
    }
}

/// Body of `POST /api/v1/playback/{session}/control`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Control {
    /// `play` (resume, optionally seek or change speed) or `pause`.
    #[schema(example = "play")]
    pub action: String,
    /// Playback speed (0.25 to 8); `play` only.
    #[schema(minimum = 0.25, maximum = 8.0)]
    pub scale: Option<f64>,
    /// Seek to this many seconds from the start of the range; `play` only.
    pub position: Option<f64>,
}

static RTSP_CSEQ: AtomicU32 = AtomicU32::new(1);

/// `POST /api/v1/playback/{session}/control`: pause, resume, seek, speed.
/// Sent below as MANSRTSP in INFO.
#[utoipa::path(
    post,
    path = "/api/v1/playback/{session}/control",
    tag = "video",
    params(("session" = u64, Path, description = "The playback session, from the `X-Playback-Session` header of `GET /playback/{file}`")),
    request_body = Control,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Sent below as MANSRTSP in INFO"),
        (status = 400, description = "Unknown action, a scale outside 0.25 to 8, a session that is not a number, or a body that is not JSON", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The caller may no longer replay the session's channel", body = String, content_type = "text/plain"),
        (status = 404, description = "No such playback session", body = String, content_type = "text/plain"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = String, content_type = "text/plain"),
        (status = 422, description = "The JSON lacks a field or has one of the wrong type", body = String, content_type = "text/plain"),
        (status = 429, description = "At most one command per 200 ms per session", body = String, content_type = "text/plain"),
        (status = 503, description = "This node serves no media, or is stopping", body = String, content_type = "text/plain"),
    )
)]
pub async fn post_playback_control(
    State(st): State<AppState>,
    Path(session): Path<u64>,
    headers: HeaderMap,
    Json(c): Json<Control>,
) -> Response {
    let streams = match streams(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    // The gate: the caller must still be allowed to replay the session's
    // channel (an unknown session answers as a refused one would not:
    // sessions are random 53-bit numbers, so 404 reveals nothing).
    let who = match sharing::caller(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(channel) = streams.playback_channel(session) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no playback session {session}"),
        );
    };
    if let Err(r) = sharing::authorize(&st.node, &who, channel, Action::Playback).await {
        return r.into_response();
    }
    let cseq = RTSP_CSEQ.fetch_add(1, Ordering::Relaxed);
    let cmd = match c.action.as_str() {
        "pause" => crate::gb::mansrtsp::MansRtsp::pause(cseq),
        "play" => {
            if let Some(s) = c.scale {
                if !(0.25..=8.0).contains(&s) {
                    return error(StatusCode::BAD_REQUEST, "scale must be from 0.25 to 8");
                }
            }
            use crate::gb::mansrtsp::{MansRtsp, MansRtspCommand, NptRange, NptTime};
            MansRtsp {
                command: MansRtspCommand::Play {
                    range: Some(NptRange {
                        start: c.position.map_or(NptTime::Now, NptTime::Seconds),
                        end: None,
                    }),
                    scale: c.scale,
                },
                ..MansRtsp::resume(cseq)
            }
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}; use \"play\" or \"pause\""),
            )
        }
    };
    match streams.control_playback(session, Bytes::from(cmd.to_body())) {
        ControlOutcome::Sent => StatusCode::NO_CONTENT.into_response(),
        ControlOutcome::NoSession => error(
            StatusCode::NOT_FOUND,
            format!("no playback session {session}"),
        ),
        ControlOutcome::TooSoon => error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "one command per {:?} per session; try again shortly",
                crate::streams::MIN_CONTROL_INTERVAL
            ),
        ),
    }
}

/// `GET /api/v1/streams`: the streams open at this node (admin).
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    tag = "video",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The streams open at this node", body = Vec<crate::streams::StreamInfo>),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 503, description = "This node serves no media", body = String, content_type = "text/plain"),
    )
)]
pub async fn get_streams(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = sharing::admin(&st, &headers) {
        return r.into_response();
    }
    match streams(&st) {
        Ok(s) => Json(s.list()).into_response(),
        Err(r) => r.into_response(),
    }
}
