//! HTTP API (axum on hyper 1): the federated catalog, this node's place in
//! the topology, device queries down the cascade, live and playback video
//! (HTTP-FLV, MPEG-TS), Prometheus metrics, and sharing: department
//! channels and play URLs, policy and audit (sharing.rs), access requests
//! (access.rs), and the OpenAPI document describing all of it (openapi.rs,
//! generated from the handlers' annotations).

pub mod access;
mod alarms;
pub mod auth;
mod availability;
mod console;
mod control;
mod devices;
mod live;
pub mod openapi;
pub mod sharing;
pub mod video_conn;

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::catalog;
use crate::node::Node;
use crate::registry::RegistrantKind;
use crate::runtime::NodeHandle;
use crate::streams::StreamManager;
use crate::uplink::LinkState;
pub use devices::{DeviceInfoView, DeviceStatusView, RecordView, RecordsView};
pub use sharing::{ChannelView, ChannelsPage, PlayUrls, Sharing};

/// Largest catalog page served at once.
pub const MAX_PAGE: usize = 10_000;

/// What every HTTP handler shares: the node, the media plane, sharing.
#[derive(Clone)]
pub struct AppState {
    node: NodeHandle,
    metrics: Option<PrometheusHandle>,
    streams: Option<Arc<StreamManager>>,
    sharing: Sharing,
    viewers: Arc<sharing::Viewers>,
}

/// Build the router. `metrics` is the process's Prometheus recorder handle;
/// `streams` the media plane (without it the live endpoints answer 503).
pub fn router(
    node: NodeHandle,
    metrics: Option<PrometheusHandle>,
    streams: Option<Arc<StreamManager>>,
) -> Router {
    router_with(node, metrics, streams, Sharing::default())
}

/// [`router`] with sharing: tokens, play URL signing, the policy status
/// and the audit store. With a policy, every endpoint but /healthz,
/// /metrics, /api/openapi.json and the console's pages needs a token; open viewers are
/// re-checked as the policy changes (a task on the current runtime).
///
/// Every route here is described in [`openapi::ApiDoc`]; a test reads the
/// `.route(` calls of this file and fails when the two differ.
pub fn router_with(
    node: NodeHandle,
    metrics: Option<PrometheusHandle>,
    streams: Option<Arc<StreamManager>>,
    sharing: Sharing,
) -> Router {
    let viewers = Arc::new(sharing::Viewers::default());
    if sharing.enforcing() {
        tokio::spawn(
            viewers
                .clone()
                .run(node.clone(), tokio_util::sync::CancellationToken::new()),
        );
    }
    if let Some(desk) = &sharing.access {
        tokio::spawn(
            desk.clone()
                .run(node.clone(), tokio_util::sync::CancellationToken::new()),
        );
    }
    Router::new()
        .route("/api/v1/channels", get(sharing::get_channels))
        .route("/api/v1/policy", get(sharing::get_policy))
        .route("/api/v1/audit", get(sharing::get_audit))
        .route(
            "/api/v1/access-requests",
            get(access::get_requests).post(access::post_request),
        )
        .route("/api/v1/access-requests/{id}", get(access::get_request))
        .route(
            "/api/v1/access-requests/{id}/approve",
            axum::routing::post(access::post_approve),
        )
        .route(
            "/api/v1/access-requests/{id}/reject",
            axum::routing::post(access::post_reject),
        )
        .route("/api/v1/catalog", get(get_catalog))
        .route("/api/v1/topology", get(get_topology))
        .route("/api/v1/devices/{id}/info", get(devices::get_info))
        .route("/api/v1/devices/{id}/status", get(devices::get_status))
        .route("/api/v1/devices/{id}/records", get(devices::get_records))
        .route("/api/v1/channels/{id}/ptz", post(control::post_ptz))
        .route("/api/v1/channels/{id}/control", post(control::post_control))
        .route("/api/v1/channels/{id}/presets", get(control::get_presets))
        .route("/api/v1/channels/{id}/config", get(control::get_config))
        .route("/api/v1/me", get(console::get_me))
        .route("/api/v1/alarms", get(alarms::get_alarms))
        .route("/api/v1/availability", get(availability::get_availability))
        .route("/api/v1/tree", get(console::get_tree))
        .route("/console", get(console::get_console))
        .route("/console/{file}", get(console::get_console_file))
        .route(
            "/api/v1/streams",
            get(live::get_streams).post(sharing::post_streams),
        )
        .route(
            "/api/v1/playback/{session}/control",
            axum::routing::post(live::post_playback_control),
        )
        .route("/live/{file}", get(live::get_live))
        .route("/playback/{file}", get(live::get_playback))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route("/api/openapi.json", get(openapi::get_openapi))
        .with_state(AppState {
            node,
            metrics,
            streams,
            sharing,
            viewers,
        })
}

/// Serve `router` on `addr` until `shutdown` fires.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Query string of `GET /api/v1/catalog`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// Only direct children of this ID.
    pub parent: Option<String>,
    /// `ON` or `OFF`.
    pub status: Option<String>,
    /// Only entries reported through this device or child node.
    pub source: Option<String>,
    /// Only entries after this ID (entries are sorted by ID): the `next`
    /// of the previous page.
    pub after: Option<String>,
    /// At most this many (default 1000, at most 10,000).
    pub limit: Option<usize>,
}

/// One catalog entry as JSON.
#[derive(Debug, Serialize, Deserialize, Clone, utoipa::ToSchema)]
pub struct CatalogEntry {
    /// 20-digit ID (or a 2–8 digit region code).
    pub device_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Parent in the tree.
    pub parent_id: Option<String>,
    /// `ON` or `OFF`.
    pub status: String,
    /// Civil (administrative region) code.
    pub civil_code: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Address text.
    pub address: Option<String>,
    /// The registrant (device or child node) this entry came through.
    pub via: String,
}

/// `GET /api/v1/catalog` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CatalogPage {
    /// The entries.
    pub items: Vec<CatalogEntry>,
    /// Where the next page starts (pass it as `after`); absent on the last.
    pub next: Option<String>,
}

/// `GET /api/v1/catalog` (admin): the federated catalog, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/catalog",
    tag = "catalog",
    params(CatalogParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the federated catalog, sorted by ID", body = CatalogPage),
        (status = 400, description = "The query string is not understood (e.g. a number that is not one)", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
async fn get_catalog(
    State(st): State<AppState>,
    Query(p): Query<CatalogParams>,
    headers: axum::http::HeaderMap,
) -> Response {
    // The whole federated tree is for admins; departments use /api/v1/channels.
    if let Err(r) = sharing::admin(&st, &headers) {
        return r.into_response();
    }
    let limit = p.limit.unwrap_or(1000).min(MAX_PAGE);
    let status = p.status.map(|s| s.to_ascii_uppercase());
    let res = st
        .node
        .query(move |node: &Node| {
            let q = catalog::Query {
                parent: p.parent.as_deref(),
                status: status.as_deref(),
                source: p.source.as_deref(),
                after: p.after.as_deref(),
                limit,
            };
            let (entries, more) = node.catalog().query(&q);
            let next = more
                .then(|| entries.last().map(|e| e.item.device_id.clone()))
                .flatten();
            CatalogPage {
                next,
                items: entries
                    .into_iter()
                    .map(|e| CatalogEntry {
                        device_id: e.item.device_id.clone(),
                        name: e.item.name.clone(),
                        parent_id: e.item.parent_id.clone(),
                        status: e.item.status.clone().unwrap_or_default(),
                        civil_code: e.item.civil_code.clone(),
                        manufacturer: e.item.manufacturer.clone(),
                        model: e.item.model.clone(),
                        address: e.item.address.clone(),
                        via: e.source.to_string(),
                    })
                    .collect(),
            }
        })
        .await;
    match res {
        Ok(page) => Json(page).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// This node, as shown by the topology API.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// city, county, town or village.
    pub level: String,
    /// SIP address.
    pub sip: String,
}

/// A link upward: the topology's parent or an upper platform.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParentView {
    /// Parent ID.
    pub id: String,
    /// Its name ("parent" for the topology's parent).
    #[serde(default)]
    pub name: String,
    /// True for a third-party upper platform.
    #[serde(default)]
    pub upper: bool,
    /// GB2312 or UTF-8: what we write to it.
    #[serde(default)]
    pub charset: String,
    /// Why the last registration failed or ended (status code included).
    #[serde(default)]
    pub last_error: Option<String>,
    /// It refuses pushed catalog changes, so it is made to re-query.
    #[serde(default)]
    pub refuses_pushes: bool,
    /// Where it is reached.
    pub addr: String,
    /// udp or tcp.
    pub transport: String,
    /// backoff, registering, registered or stopped.
    pub state: String,
    /// Unix seconds of the current registration, if registered.
    pub registered_since: Option<u64>,
}

/// A child node or registered device.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerView {
    /// ID.
    pub id: String,
    /// Name from the topology, if a child node.
    pub name: Option<String>,
    /// device, child_node or platform.
    pub kind: String,
    /// online, offline or unregistered.
    pub state: String,
    /// Where its messages come from.
    pub addr: Option<String>,
    /// Seconds since it was last heard.
    pub last_seen_secs: Option<f64>,
}

/// `GET /api/v1/topology` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopologyView {
    /// This node.
    pub node: NodeView,
    /// The parent link, if any.
    pub parent: Option<ParentView>,
    /// Third-party upper platforms, each with its own registration state.
    #[serde(default)]
    pub upper_platforms: Vec<ParentView>,
    /// Child nodes from the topology (registered or not) and foreign platforms.
    pub children: Vec<PeerView>,
    /// Devices registered here.
    pub devices: DeviceCounts,
    /// Catalog size.
    pub catalog: CatalogCounts,
    /// The node's certificate for QUIC links, when it runs any.
    #[serde(default)]
    pub certificate: Option<crate::transport::quic::CertificateStatus>,
}

/// Device counts.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceCounts {
    /// Registered.
    pub registered: usize,
    /// Online among them.
    pub online: usize,
}

/// Catalog counts.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CatalogCounts {
    /// All entries.
    pub entries: usize,
    /// Entries whose type is a channel (131/132).
    pub channels: usize,
    /// Entries with status ON.
    pub online: usize,
}

fn unix(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Build the topology view (also used by tests in-process).
pub fn topology_view(node: &Node) -> TopologyView {
    let now = Instant::now();
    let id = node.identity();
    let view = |u: &crate::uplink::Uplink| ParentView {
        id: u.parent().to_string(),
        name: u.name().to_owned(),
        upper: u.is_upper(),
        charset: u.charset().as_xml_label().to_owned(),
        last_error: u.last_fault().map(|f| f.to_string()),
        refuses_pushes: u.refuses_pushes(),
        addr: u.peer().addr.to_string(),
        transport: u.peer().transport.via_token().to_lowercase(),
        state: serde_json::to_value(u.state())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        registered_since: if u.state() == LinkState::Registered {
            u.registered_since().and_then(unix)
        } else {
            None
        },
    };
    let parent = node.uplink().map(view);
    let upper_platforms = node
        .uplinks()
        .iter()
        .filter(|u| u.is_upper())
        .map(view)
        .collect();
    let mut children: Vec<PeerView> = id
        .children
        .iter()
        .map(|(cid, name)| {
            let r = node.registry().get(cid);
            PeerView {
                id: cid.to_string(),
                name: Some(name.clone()),
                kind: "child_node".into(),
                state: match r {
                    Some(r) if r.online => "online",
                    Some(_) => "offline",
                    None => "unregistered",
                }
                .into(),
                addr: r.map(|r| r.peer.to_string()),
                last_seen_secs: r.map(|r| now.duration_since(r.last_seen).as_secs_f64()),
            }
        })
        .collect();
    children.extend(
        node.registry()
            .iter()
            .filter(|r| r.kind == RegistrantKind::Platform)
            .map(|r| PeerView {
                id: r.id.to_string(),
                name: None,
                kind: "platform".into(),
                state: if r.online { "online" } else { "offline" }.into(),
                addr: Some(r.peer.to_string()),
                last_seen_secs: Some(now.duration_since(r.last_seen).as_secs_f64()),
            }),
    );
    children.sort_by(|a, b| a.id.cmp(&b.id));
    let devices: Vec<_> = node
        .registry()
        .iter()
        .filter(|r| r.kind == RegistrantKind::Device)
        .collect();
    let cat = node.catalog();
    TopologyView {
        node: NodeView {
            id: id.id.to_string(),
            name: id.name.clone(),
            level: id.level.clone(),
            sip: id.addr.to_string(),
        },
        parent,
        upper_platforms,
        children,
        devices: DeviceCounts {
            registered: devices.len(),
            online: devices.iter().filter(|r| r.online).count(),
        },
        catalog: CatalogCounts {
            entries: cat.len(),
            channels: cat.channel_count(),
            online: cat.online_count(),
        },
        certificate: None,
    }
}

/// `GET /api/v1/topology` (admin): this node, its links and counts.
#[utoipa::path(
    get,
    path = "/api/v1/topology",
    tag = "catalog",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This node, its parent link and upper platforms, its children, device and catalog counts", body = TopologyView),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 403, description = "The token's holder is not an admin", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
async fn get_topology(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Err(r) = sharing::admin(&st, &headers) {
        return r.into_response();
    }
    match st.node.query(topology_view).await {
        Ok(mut v) => {
            v.certificate = st
                .streams
                .as_ref()
                .and_then(|s| s.quic())
                .and_then(|q| q.certificate());
            Json(v).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition (open: no token).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics, text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 404, description = "This process installed no metrics recorder", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
async fn get_metrics(State(st): State<AppState>) -> Response {
    // Collect the scanned gauges at scrape time, the Prometheus way.
    if let Err(e) = st.node.query(Node::update_gauges).await {
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    match &st.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

/// `GET /healthz`: `ok` while the HTTP side answers (open: no token).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "`ok`", body = String, content_type = "text/plain", example = "ok\n"),
    )
)]
async fn get_healthz() -> &'static str {
    "ok\n"
}
